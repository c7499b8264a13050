"""Running a node on bad states: named errors, full retry rollback, uncopyable fields.

Each case goes through ``graph.run`` and through ``ParallelExecutor`` (they share the
node runner).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from lift_graph import (
    BaseNode,
    End,
    Fork,
    Graph,
    InvalidStateError,
    JoinError,
    MissingFieldError,
    ParallelExecutionError,
    ParallelExecutor,
    Retry,
    RunContext,
    UncopyableFieldError,
    UndeclaredMutationError,
    UnknownFieldError,
)

# -- a state of the wrong type ------------------------------------------------------------


class Model(BaseModel):
    count: int = 0


class Other(BaseModel):
    label: str = ""


@dataclass
class DataState:
    count: int = 0


class Typed(BaseNode[Model]):
    writes: ClassVar[frozenset[str] | None] = frozenset({"count"})

    async def run(self, ctx: RunContext[Model]) -> End[int]:
        ctx.state.count += 1
        return End(ctx.state.count)


class Untyped(BaseNode[Any]):
    writes: ClassVar[frozenset[str] | None] = frozenset({"count"})

    async def run(self, ctx: RunContext[Any]) -> End[str]:
        return End("ran")


WRONG_STATES = [Other(), None, 5, "count", (1, 2), Model, DataState]


def _ctx(state: Any) -> RunContext[Any]:
    return RunContext(state=state, execution_id="hardening")


@pytest.mark.asyncio
@pytest.mark.parametrize("state", WRONG_STATES)
@pytest.mark.parametrize("node", [Typed, Untyped])
async def test_wrong_state_type_is_an_invalid_state_error(node: type, state: Any) -> None:
    if node is Untyped and isinstance(state, Other):
        return  # a model without the field: MissingFieldError, tested below
    with pytest.raises(InvalidStateError) as info:
        await Graph(nodes=[node]).run(node(), state=state)
    error = info.value
    assert isinstance(error, TypeError) and error.node == node.__name__
    text = str(error)
    assert node.__name__ in text and "graph.run(state=...)" in text
    if node is Typed and not isinstance(state, type):
        assert "Model" in text


@pytest.mark.asyncio
@pytest.mark.parametrize("state", WRONG_STATES)
async def test_wrong_state_type_through_the_executor(state: Any) -> None:
    with pytest.raises(ParallelExecutionError) as info:
        await ParallelExecutor().execute_parallel([Typed(), Typed()], _ctx(state))
    for result in info.value.partial_results:
        assert isinstance(result.error, InvalidStateError)
        assert result.error.node == "Typed" and result.attempts == 0
    assert isinstance(info.value.__cause__, InvalidStateError)


@pytest.mark.asyncio
@pytest.mark.parametrize("state", [Other(), DataState()])
async def test_a_write_missing_from_the_state_names_node_and_field(state: Any) -> None:
    class WritesMissing(BaseNode[Any]):
        writes: ClassVar[frozenset[str] | None] = frozenset({"missing"})

        async def run(self, ctx: RunContext[Any]) -> End[int]:
            return End(1)

    with pytest.raises(MissingFieldError) as info:
        await Graph(nodes=[WritesMissing]).run(WritesMissing(), state=state)
    error = info.value
    assert isinstance(error, UnknownFieldError)
    assert (error.node, error.field) == ("WritesMissing", "missing")
    assert "'missing'" in str(error) and type(state).__name__ in str(error)
    single = await ParallelExecutor().execute_single_with_isolation(WritesMissing(), _ctx(state))
    assert isinstance(single.error, MissingFieldError) and single.error.field == "missing"


@pytest.mark.asyncio
async def test_a_dict_state_may_gain_a_declared_key() -> None:
    class AddsKey(BaseNode[Any]):
        writes: ClassVar[frozenset[str] | None] = frozenset({"new"})

        async def run(self, ctx: RunContext[Any]) -> End[int]:
            ctx.state["new"] = 1
            return End(1)

    result = await Graph(nodes=[AddsKey]).run(AddsKey(), state={"old": 0})
    assert result.state == {"old": 0, "new": 1}


# -- a failed attempt is rolled back completely -------------------------------------------


class Pair(BaseModel):
    a: str = "a0"
    b: int = 0
    log: list[str] = []


@dataclass
class Flaky(BaseNode[Pair]):
    """Attempt 1 writes `a`, assigns undeclared `b`, appends to `log`, then fails."""

    writes: ClassVar[frozenset[str] | None] = frozenset({"a", "log"})
    retry: ClassVar[Retry | None] = Retry(attempts=3, backoff=0.0)
    fail_by_raising: bool = True
    calls: list[int] = field(default_factory=list)

    async def run(self, ctx: RunContext[Pair]) -> End[str]:
        self.calls.append(ctx.attempt)
        ctx.state.log.append(f"attempt {ctx.attempt}")
        ctx.state.a = f"a{ctx.attempt}"
        if ctx.attempt == 1:
            ctx.state.b = 1  # undeclared
            if self.fail_by_raising:
                raise RuntimeError("attempt 1 fails")
        return End(ctx.state.a)


@pytest.mark.asyncio
@pytest.mark.parametrize("strict", [False, True])
async def test_retry_rolls_back_an_undeclared_assignment(strict: bool) -> None:
    node = Flaky()
    result = await Graph(nodes=[Flaky]).run(node, state=Pair(), strict=strict)
    assert node.calls == [1, 2]
    assert result.state.b == 0  # the failed attempt's undeclared write is gone
    assert result.state.a == "a2" and result.state.log == ["attempt 2"]


@pytest.mark.asyncio
async def test_strict_mode_error_is_retried_after_rolling_back() -> None:
    # Attempt 1 returns normally: strict mode fails it for assigning `b`, and the
    # rollback must still happen before attempt 2 (whose guard would otherwise take
    # b == 1 as its starting point and let it through).
    node = Flaky(fail_by_raising=False)
    result = await Graph(nodes=[Flaky]).run(node, state=Pair(), strict=True)
    assert node.calls == [1, 2]
    assert result.state.b == 0 and result.state.log == ["attempt 2"]
    assert result.records[0].attempts == 2


@pytest.mark.asyncio
async def test_retry_rollback_through_the_executor() -> None:
    state = Pair()
    out = await ParallelExecutor(strict=True).execute_single_with_isolation(Flaky(), _ctx(state))
    assert out.error is None and out.attempts == 2
    assert out.context.state.b == 0 and out.context.state.log == ["attempt 2"]
    assert state == Pair()  # the caller's state is untouched


@pytest.mark.asyncio
async def test_retry_rolls_back_dict_keys_and_undeclared_writes_of_any_node() -> None:
    @dataclass
    class FlakyDict(BaseNode[Any]):
        retry: ClassVar[Retry | None] = Retry(attempts=2, backoff=0.0)

        async def run(self, ctx: RunContext[Any]) -> End[int]:
            ctx.state["items"].append(ctx.attempt)
            if ctx.attempt == 1:
                ctx.state["tmp"] = "left over"
                del ctx.state["gone"]
                raise RuntimeError("attempt 1 fails")
            return End(len(ctx.state["items"]))

    state = {"items": [0], "gone": "kept"}
    result = await Graph(nodes=[FlakyDict]).run(FlakyDict(), state=state)
    assert result.state == {"items": [0, 2], "gone": "kept"}
    assert state == {"items": [0], "gone": "kept"}


# -- fields that cannot be copied ---------------------------------------------------------


class LockModel(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    lock: Any = None
    items: list[int] = []
    count: int = 0


@dataclass
class LockData:
    lock: Any = None
    items: list[int] = field(default_factory=list)
    count: int = 0


def _get(state: Any, name: str) -> Any:
    return state[name] if isinstance(state, dict) else getattr(state, name)


def _set(state: Any, name: str, value: Any) -> None:
    if isinstance(state, dict):
        state[name] = value
    else:
        setattr(state, name, value)


def lock_states() -> list[Any]:
    return [
        LockModel(lock=threading.Lock(), items=[1]),
        LockData(lock=threading.Lock(), items=[1]),
        {"lock": threading.Lock(), "items": [1], "count": 0},
    ]


@dataclass
class UsesLock(BaseNode[Any]):
    """Declares no writes: the engine would deep-copy every field it can."""

    add: int = 1
    retry: ClassVar[Retry | None] = Retry(attempts=2, backoff=0.0)

    async def run(self, ctx: RunContext[Any]) -> End[int]:
        with _get(ctx.state, "lock"):
            _set(ctx.state, "items", [*_get(ctx.state, "items"), self.add])
        if ctx.attempt == 1 and self.add == 1:
            raise RuntimeError("retried once")
        return End(self.add)


class WritesLock(BaseNode[Any]):
    writes: ClassVar[frozenset[str] | None] = frozenset({"lock"})

    async def run(self, ctx: RunContext[Any]) -> End[int]:
        return End(1)


@dataclass
class FanOut(BaseNode[Any]):
    bad: bool = False

    async def run(self, ctx: RunContext[Any]) -> Fork[Any]:
        branches: list[Any] = [UsesLock(add=i) for i in (2, 3)]
        if self.bad:
            branches.append(WritesLock())
        return Fork(branches)


@pytest.mark.asyncio
@pytest.mark.parametrize("state", lock_states(), ids=["pydantic", "dataclass", "dict"])
async def test_an_uncopyable_field_stays_shared_when_the_node_does_not_write_it(
    state: Any,
) -> None:
    lock = _get(state, "lock")
    graph = Graph(nodes=[UsesLock, FanOut, WritesLock])
    result = await graph.run(UsesLock(), state=state)
    assert result.output == 1 and _get(result.state, "items") == [1, 1]
    assert _get(result.state, "lock") is lock and _get(state, "items") == [1]
    forked = await graph.run(FanOut(), state=state)
    assert forked.output == [2, 3] and _get(forked.state, "items") == [1, 2, 3]
    assert _get(forked.state, "lock") is lock


@pytest.mark.asyncio
@pytest.mark.parametrize("state", lock_states(), ids=["pydantic", "dataclass", "dict"])
async def test_declaring_a_write_of_an_uncopyable_field_says_use_deps(state: Any) -> None:
    graph = Graph(nodes=[UsesLock, FanOut, WritesLock])
    with pytest.raises(UncopyableFieldError) as info:
        await graph.run(WritesLock(), state=state)
    error = info.value
    assert isinstance(error, InvalidStateError)
    assert (error.node, error.field) == ("WritesLock", "lock")
    assert "deps" in str(error) and "lock" in str(error)
    with pytest.raises(JoinError) as joined:
        await graph.run(FanOut(bad=True), state=state)
    assert isinstance(joined.value.__cause__, UncopyableFieldError)


@pytest.mark.asyncio
async def test_a_node_that_owned_everything_still_refuses_a_declared_uncopyable_write() -> None:
    @dataclass
    class First(BaseNode[Any]):
        async def run(self, ctx: RunContext[Any]) -> WritesLock:
            return WritesLock()

    with pytest.raises(UncopyableFieldError, match="WritesLock"):
        await Graph(nodes=[First, WritesLock]).run(First(), state=lock_states()[0])


@pytest.mark.asyncio
async def test_reassigning_an_uncopyable_field_is_a_normal_write() -> None:
    class NewLock(BaseNode[Any]):
        async def run(self, ctx: RunContext[Any]) -> WritesLock:
            ctx.state.lock = threading.Lock()
            return WritesLock()  # the branch now owns the new lock: no copy needed

    state = lock_states()[0]
    result = await Graph(nodes=[NewLock, WritesLock]).run(NewLock(), state=state)
    assert result.state.lock is not state.lock


@pytest.mark.asyncio
@pytest.mark.parametrize("state", lock_states(), ids=["pydantic", "dataclass", "dict"])
async def test_uncopyable_fields_through_the_executor(state: Any) -> None:
    executor: ParallelExecutor[Any] = ParallelExecutor(strict=True)
    results = await executor.execute_parallel([UsesLock(add=2), UsesLock(add=3)], _ctx(state))
    assert [r.error for r in results] == [None, None]
    merged = executor.merge_states(results, "all_success")
    assert _get(merged.state, "items") == [1, 2, 3]
    assert _get(merged.state, "lock") is _get(state, "lock")
    bad = await executor.execute_single_with_isolation(WritesLock(), _ctx(state))
    assert isinstance(bad.error, UncopyableFieldError)


@pytest.mark.asyncio
async def test_an_opaque_state_that_cannot_be_copied_is_a_named_error() -> None:
    class Opaque:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    with pytest.raises(InvalidStateError, match="deps"):
        await Graph(nodes=[UsesLock]).run(UsesLock(), state=Opaque())
    # The context's state is the problem, not one node's: the call itself fails.
    with pytest.raises(InvalidStateError, match="Opaque"):
        await ParallelExecutor().execute_parallel([UsesLock()], _ctx(Opaque()))


@pytest.mark.asyncio
async def test_strict_mode_sees_in_place_changes_of_a_shared_uncopyable_field() -> None:
    class Locked:
        """Cannot be copied (holds a lock) and has data a node might change."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.hits: list[int] = []

        def __repr__(self) -> str:
            return f"Locked(hits={self.hits})"

    class Touches(BaseNode[Any]):
        async def run(self, ctx: RunContext[Any]) -> End[int]:
            ctx.state.lock.hits.append(1)  # shared with the caller's state
            return End(1)

    graph = Graph(nodes=[Touches])
    with pytest.raises(UndeclaredMutationError, match="deps") as info:
        await graph.run(Touches(), state=LockModel(lock=Locked()), strict=True)
    assert (info.value.node, info.value.field) == ("Touches", "lock")
    assert (await graph.run(Touches(), state=LockModel(lock=Locked()))).output == 1


@pytest.mark.asyncio
async def test_strict_mode_sees_an_undeclared_key_added_to_a_dict_state() -> None:
    class AddsKey(BaseNode[Any]):
        writes: ClassVar[frozenset[str] | None] = frozenset({"a"})

        async def run(self, ctx: RunContext[Any]) -> End[int]:
            ctx.state["a"] = 1
            ctx.state["b"] = 2
            return End(1)

    with pytest.raises(UndeclaredMutationError, match="'b'"):
        await Graph(nodes=[AddsKey]).run(AddsKey(), state={"a": 0}, strict=True)


@pytest.mark.asyncio
async def test_a_timed_out_attempt_is_rolled_back_before_the_retry() -> None:
    @dataclass
    class Slow(BaseNode[Pair]):
        writes: ClassVar[frozenset[str] | None] = frozenset({"log"})
        retry: ClassVar[Retry | None] = Retry(attempts=2, backoff=0.0)
        timeout: ClassVar[float | None] = 0.2

        async def run(self, ctx: RunContext[Pair]) -> End[int]:
            ctx.state.log.append(f"attempt {ctx.attempt}")
            if ctx.attempt == 1:
                ctx.state.b = 7  # undeclared, then cancelled by the timeout
                await asyncio.sleep(30)
            return End(ctx.attempt)

    result = await Graph(nodes=[Slow]).run(Slow(), state=Pair())
    assert result.output == 2
    assert result.state.b == 0 and result.state.log == ["attempt 2"]
