"""Misconfigurations fail where they are written, with the setting and value named.

Retry / ProviderLimit / Limits numbers, node class attributes (``timeout``, ``retry``,
``provider``, ``reads`` / ``writes``) and unknown providers (warned, or refused by
``Limits(strict=True)``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    ConfigurationError,
    End,
    Fork,
    Graph,
    JoinError,
    Limits,
    ParallelExecutionError,
    ParallelExecutor,
    ProviderLimit,
    Retry,
    RunContext,
    UnknownProviderWarning,
)
from lift_graph.node import validate_node_attributes

NAN = math.nan
INF = math.inf


class State(BaseModel):
    count: int = 0


# -- Retry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"attempts": 1.5}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"attempts": 0}, "attempts"),
        ({"attempts": NAN}, "attempts"),
        ({"backoff": NAN}, "backoff"),
        ({"backoff": INF}, "backoff"),
        ({"backoff": -1.0}, "backoff"),
        ({"backoff": "0.1"}, "backoff"),
        ({"max_backoff": NAN}, "max_backoff"),
        ({"max_backoff": -1}, "max_backoff"),
        ({"multiplier": NAN}, "multiplier"),
        ({"multiplier": INF}, "multiplier"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": NAN}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": True}, "jitter"),
        ({"retry_on": "ValueError"}, "retry_on"),
        ({"retry_on": (ValueError, 3)}, "retry_on"),
    ],
)
def test_retry_rejects_bad_numbers_when_built(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"Retry\.{param}") as info:
        Retry(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_retry_accepts_good_values_and_a_single_exception_class() -> None:
    retry = Retry(attempts=2, backoff=0, max_backoff=1, multiplier=1, jitter=0, retry_on=KeyError)
    assert retry.retry_on == (KeyError,)
    assert retry.should_retry(KeyError("x"), 1) and not retry.should_retry(ValueError(), 1)


def test_retry_delay_never_overflows_with_many_attempts() -> None:
    retry = Retry(attempts=10_000, backoff=1.0, max_backoff=5.0, jitter=0.5)
    assert retry.delay(5_000, 0.0) == 5.0
    assert retry.delay(5_000, 0.5) == 3.75


# -- ProviderLimit and Limits ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"concurrency": 1.5}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"rpm": 1.5}, "rpm"),
        ({"rpm": NAN}, "rpm"),
        ({"rpm": INF}, "rpm"),
        ({"rpm": -5}, "rpm"),
        ({"tpm": 2.5}, "tpm"),
        ({"tpm": "100"}, "tpm"),
        ({"window": NAN}, "window"),
        ({"window": INF}, "window"),
        ({"window": 0}, "window"),
        ({"window": -1.0}, "window"),
    ],
)
def test_provider_limit_rejects_bad_numbers(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"ProviderLimit\.{param}") as info:
        ProviderLimit(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize("value", [2.5, 1.0, True, 0, -1, NAN, INF, "4"])
def test_limits_rejects_a_non_int_max_concurrency(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"Limits\.max_concurrency") as info:
        Limits(max_concurrency=value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"providers": {1: ProviderLimit()}}, r"Limits\.providers keys"),
        ({"providers": {"": ProviderLimit()}}, r"Limits\.providers keys"),
        ({"providers": {"a": 3}}, r"Limits\.providers\['a'\]"),
        ({"providers": [("a", ProviderLimit())]}, r"Limits\.providers must be a mapping"),
        ({"strict": "yes"}, r"Limits\.strict"),
        ({"clock": 3}, r"Limits\.clock"),
    ],
)
def test_limits_rejects_bad_providers_strict_and_clock(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Limits(**kwargs)


# -- node class attributes --------------------------------------------------------------


def _node_class(attr: str, value: Any) -> type[BaseNode[Any]]:
    # Untyped: with a state model, Graph(...) checks reads / writes names itself.
    class Bad(BaseNode[Any]):
        async def run(self, ctx: RunContext[Any]) -> End[int]:
            return End(1)

    setattr(Bad, attr, value)
    return Bad


BAD_ATTRIBUTES = [
    ("timeout", -1.0),
    ("timeout", 0),
    ("timeout", NAN),
    ("timeout", INF),
    ("timeout", True),
    ("timeout", "5"),
    ("retry", 3),
    ("retry", {"attempts": 3}),
    ("provider", 1),
    ("provider", ""),
    ("writes", "count"),
    ("writes", ["count"]),
    ("writes", frozenset({1})),
    ("reads", "count"),
]


@pytest.mark.parametrize(("attr", "value"), BAD_ATTRIBUTES)
def test_validate_node_attributes_names_node_attribute_and_value(attr: str, value: Any) -> None:
    cls = _node_class(attr, value)
    for target in (cls, cls()):
        with pytest.raises(ConfigurationError, match=rf"node Bad: attribute `{attr}`") as info:
            validate_node_attributes(target)
        assert repr(value) in str(info.value)


@pytest.mark.asyncio
@pytest.mark.parametrize(("attr", "value"), BAD_ATTRIBUTES)
async def test_graph_run_refuses_a_start_node_with_a_bad_attribute(attr: str, value: Any) -> None:
    cls = _node_class(attr, value)
    with pytest.raises(ConfigurationError, match=rf"node Bad: attribute `{attr}`"):
        await Graph(nodes=[cls]).run(cls(), state=State())


@dataclass
class Start(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> PerInstance:
        return PerInstance(timeout=-2.0)


@dataclass
class PerInstance(BaseNode[State]):
    """An instance field overrides the class attribute (checked per instance)."""

    timeout: float | None = None  # type: ignore[misc]

    async def run(self, ctx: RunContext[State]) -> End[int]:
        return End(1)


@pytest.mark.asyncio
async def test_a_bad_attribute_of_a_later_node_fails_when_it_runs() -> None:
    graph = Graph(nodes=[Start, PerInstance])
    assert (await graph.run(PerInstance(), state=State())).output == 1  # class default: fine
    with pytest.raises(ConfigurationError, match=r"node PerInstance: attribute `timeout`"):
        await graph.run(Start(), state=State())
    # The valid class values were cached; the bad instance is still caught every time.
    with pytest.raises(ConfigurationError, match=r"-3\.0"):
        validate_node_attributes(PerInstance(timeout=-3.0))


@pytest.mark.asyncio
async def test_execute_parallel_refuses_a_node_with_a_bad_attribute() -> None:
    cls = _node_class("timeout", NAN)
    with pytest.raises(ConfigurationError, match=r"node Bad: attribute `timeout`"):
        await ParallelExecutor().execute_parallel([cls()], RunContext(State(), "x"))


# -- unknown providers ------------------------------------------------------------------


class Typo(BaseNode[State]):
    provider: ClassVar[str | None] = "opnai"

    async def run(self, ctx: RunContext[State]) -> End[str]:
        return End("ran")


def _limits(**kwargs: Any) -> Limits:
    return Limits(providers={"openai": ProviderLimit(concurrency=2)}, **kwargs)


@pytest.mark.asyncio
async def test_unknown_provider_warns_once_naming_node_provider_and_known_ones() -> None:
    limits = _limits()
    graph = Graph(nodes=[Typo])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert (await graph.run(Typo(), state=State(), limits=limits)).output == "ran"
    unknown = [w for w in caught if issubclass(w.category, UnknownProviderWarning)]
    assert len(unknown) == 1
    text = str(unknown[0].message)
    assert "Typo" in text and "'opnai'" in text and "['openai']" in text
    assert "strict=True" in text


@pytest.mark.asyncio
async def test_unknown_provider_is_an_error_under_strict_limits() -> None:
    graph = Graph(nodes=[Typo])
    with pytest.raises(ConfigurationError, match=r"node Typo uses provider 'opnai'") as info:
        await graph.run(Typo(), state=State(), limits=_limits(strict=True))
    assert "['openai']" in str(info.value)


@pytest.mark.asyncio
async def test_unknown_provider_under_strict_limits_in_the_executor() -> None:
    executor: ParallelExecutor[State] = ParallelExecutor(limits=_limits(strict=True))
    with pytest.raises(ParallelExecutionError) as info:
        await executor.execute_parallel([Typo()], RunContext(State(), "x"))
    error = info.value.partial_results[0].error
    assert isinstance(error, ConfigurationError) and "opnai" in str(error)
    assert info.value.partial_results[0].attempts == 0  # refused before running


@pytest.mark.asyncio
async def test_unknown_provider_in_a_fork_branch_fails_the_join_under_strict() -> None:
    @dataclass
    class Fan(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> list[Typo]:
            return [Typo(), Typo()]

    graph = Graph(nodes=[Fan, Typo])
    with pytest.raises(JoinError) as info:
        await graph.run(Fan(), state=State(), limits=_limits(strict=True))
    assert isinstance(info.value.__cause__, ConfigurationError)


@pytest.mark.asyncio
async def test_known_providers_and_limits_without_providers_do_not_warn() -> None:
    class Known(BaseNode[State]):
        provider: ClassVar[str | None] = "openai"

        async def run(self, ctx: RunContext[State]) -> End[int]:
            return End(1)

    # pytest's filterwarnings = "error" turns any warning here into a failure.
    assert (await Graph(nodes=[Known]).run(Known(), state=State(), limits=_limits())).output == 1
    plain = Limits(max_concurrency=2)
    assert (await Graph(nodes=[Typo]).run(Typo(), state=State(), limits=plain)).output == "ran"
    with pytest.raises(ConfigurationError, match="opnai"):
        await Graph(nodes=[Typo]).run(Typo(), state=State(), limits=Limits(strict=True))


@dataclass(slots=True)
class Slotted(BaseNode[State]):
    """A slotted dataclass field is a descriptor on the class: checked per instance."""

    timeout: float | None = 5.0  # type: ignore[misc]

    async def run(self, ctx: RunContext[State]) -> End[int]:
        return End(1)


@pytest.mark.asyncio
async def test_slotted_dataclass_attributes_are_checked_per_instance() -> None:
    validate_node_attributes(Slotted)  # the class itself holds no value to check
    graph = Graph(nodes=[Slotted])
    assert (await graph.run(Slotted(), state=State())).output == 1
    with pytest.raises(ConfigurationError, match=r"node Slotted: attribute `timeout`"):
        await graph.run(Slotted(timeout=0.0), state=State())


def test_graph_refuses_an_invalid_class_attribute_when_built() -> None:
    class Negative(BaseNode[None]):
        timeout = -1.0

        async def run(self, ctx: RunContext[None]) -> End[None]:
            return End(None)

    with pytest.raises(ConfigurationError, match=r"Negative.*timeout"):
        Graph(nodes=[Negative])


@pytest.mark.parametrize("timeout", ["5", math.nan, math.inf, 0, -1.0, True])
def test_fork_timeout_is_checked_when_built(timeout: Any) -> None:
    class Leaf(BaseNode[None]):
        async def run(self, ctx: RunContext[None]) -> End[None]:
            return End(None)

    with pytest.raises(ConfigurationError, match="Fork timeout"):
        Fork([Leaf()], timeout=timeout)


@pytest.mark.parametrize("timeout", ["5", math.nan, math.inf, 0, -1.0])
def test_run_timeout_is_checked_before_anything_runs(timeout: Any) -> None:
    class Leaf(BaseNode[None]):
        async def run(self, ctx: RunContext[None]) -> End[None]:
            return End(None)

    with pytest.raises(ConfigurationError, match="timeout"):
        Graph(nodes=[Leaf]).run_sync(Leaf(), state=None, timeout=timeout)
