"""Nodes: the unit of work, its run context, its result and its retry policy.

A node is a class (usually a dataclass) with an ``async run(ctx)`` method. What
``run`` returns routes the path: another node runs next, ``End(value)`` ends the
path, and a ``Fork`` / ``Pipeline`` (or a plain list of nodes) starts a parallel
block. Class attributes tell the engine what the node touches and how to run it::

    @dataclass
    class Summarize(BaseNode[State]):
        doc_id: str
        provider: ClassVar[str | None] = "openai"
        reads: ClassVar[frozenset[str]] = frozenset({"docs"})
        writes: ClassVar[frozenset[str]] = frozenset({"summaries"})
        retry: ClassVar[Retry | None] = Retry(attempts=3)
        timeout: ClassVar[float | None] = 30.0
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from ._config import check_count, check_number
from ._rate_signals import RateSignal, signal_from_headers
from ._state import MISSING
from .errors import ConfigurationError, InvalidNodeError, MissingInputError
from .events import CustomEvent, EventSink

if TYPE_CHECKING:
    from .blocks import JoinResult

__all__ = [
    "BaseNode",
    "DerivedFields",
    "End",
    "Interrupt",
    "Node",
    "NodeResult",
    "Retry",
    "RunContext",
    "is_node",
    "read_input",
    "validate_node_attributes",
]

StateT = TypeVar("StateT")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Retry:
    """Per-node retry policy: exponential backoff with jitter.

    Attempt ``n`` (1-based) that fails with an exception in ``retry_on`` is retried
    after ``min(max_backoff, backoff * multiplier ** (n - 1))`` seconds, scaled by a
    random factor in ``[1 - jitter, 1]``. The node holds no concurrency slot while
    backing off. ``asyncio.CancelledError`` is never retried.
    """

    attempts: int = 3
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 30.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        check_count("Retry.attempts", self.attempts, optional=False)
        check_number("Retry.backoff", self.backoff)
        check_number("Retry.max_backoff", self.max_backoff)
        check_number("Retry.multiplier", self.multiplier, minimum=1.0)
        check_number("Retry.jitter", self.jitter, maximum=1.0)
        retry_on = self.retry_on
        if isinstance(retry_on, type):
            # `retry_on=ValueError` reads naturally; `isinstance` wants a tuple.
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in retry_on
        ):
            raise ConfigurationError(
                f"Retry.retry_on must be a tuple of exception classes, got {retry_on!r}"
            )

    def delay(self, attempt: int, random_unit: float) -> float:
        """Backoff before the attempt after ``attempt``; ``random_unit`` is in [0, 1)."""
        try:
            grown = self.backoff * self.multiplier ** (attempt - 1)
        except OverflowError:  # a float power past ~1e308: far beyond any cap
            grown = self.max_backoff
        base = min(self.max_backoff, grown)
        return base * (1.0 - self.jitter * random_unit)

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        return attempt < self.attempts and isinstance(exc, self.retry_on)


@dataclass(slots=True)
class End(Generic[T_co]):
    """Ends a path; ``value`` becomes the path's (and, at the top, the run's) output."""

    value: T_co = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Returned by a node to ask a person: the run pauses at this node.

    Other branches carry on; the run then ends with ``RunResult.interrupts`` mapping
    this node's key to ``value``. ``graph.resume(id, store=..., answers={key: a})``
    runs the node again with ``ctx.answer == a``. ``value`` and the answer are
    stored as JSON, so give plain data (str, numbers, lists, dicts).
    """

    value: Any = None


@dataclass(slots=True)
class RunContext(Generic[StateT]):
    """What a node sees while it runs.

    ``state`` is the node's isolated view of the state; ``join`` is the
    ``JoinResult`` of the fork that led to this node (None elsewhere);
    ``deps`` are the run's dependencies (passed to ``Graph.run``), shared, not copied.
    """

    state: StateT
    execution_id: str
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    deps: Any = None
    join: JoinResult[Any] | None = None
    node_key: str = ""
    attempt: int = 1
    tokens_used: int = 0
    #: A person's answer to this node's ``Interrupt``, given on resume; else None.
    answer: Any = None
    #: The latest rate-limit headers the node reported (``report_rate_limit``).
    _rate_report: RateSignal | None = field(default=None, repr=False, compare=False)
    #: The run's event sink (``Graph.iter``); None when nobody listens.
    _events: EventSink | None = field(default=None, repr=False, compare=False)

    def record_tokens(self, tokens: int) -> None:
        """Report tokens a node spent, charged against the provider's tokens/min limit."""
        self.tokens_used += max(0, int(tokens))

    def report_rate_limit(self, headers: Mapping[str, Any]) -> None:
        """Pass the headers of a provider's (accepted) response to the engine.

        ``x-ratelimit-limit-requests`` / ``x-ratelimit-remaining-requests`` (and the
        same in the spellings ``Limits`` knows) teach it the provider's pace before the
        provider refuses anything, so a provider's rate is held without a single 429.
        Headers of a refused call need not be reported: the error carries them.
        """
        self._rate_report = signal_from_headers(headers)

    def emit(self, name: str, data: Any = None) -> None:
        """Send a ``CustomEvent(name, data)``, tagged with this node's key, to whoever
        iterates the run (``Graph.iter``); does nothing when nobody listens
        (``graph.run``). ``data`` is passed as is, not copied.

        :raises ConfigurationError: ``name`` is not a non-empty str.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"node {self.node_key or '?'}: ctx.emit(name, data) takes a non-empty str "
                f"name, got {name!r}"
            )
        sink = self._events
        if sink is not None:
            sink(CustomEvent(self.execution_id, self.node_key, time.perf_counter(), name, data))


@runtime_checkable
class Node(Protocol[StateT]):
    """The structural protocol of a node: anything with ``async run(ctx)``."""

    async def run(self, ctx: RunContext[StateT]) -> Any: ...


class BaseNode(Generic[StateT]):
    """Base class of nodes, with the defaults of every optional attribute.

    Subclasses override ``run``. The defaults of ``extract_inputs`` / ``update_state``
    move the fields named in ``reads`` / ``writes`` between the state and a dict, which
    is what signature-driven nodes (see ``DSPyNode``) build on.
    """

    #: A DSPy signature (see ``DSPyNode``); an instance may carry its own.
    signature: Any = None
    provider: ClassVar[str | None] = None
    reads: ClassVar[frozenset[str] | None] = None
    writes: ClassVar[frozenset[str] | None] = None
    retry: ClassVar[Retry | None] = None
    timeout: ClassVar[float | None] = None
    #: Tokens one call is expected to spend: reserved against the provider's tpm
    #: before ``run`` starts, settled with ``ctx.record_tokens`` after it.
    estimated_tokens: ClassVar[int | None] = None
    #: Set to False for nodes whose output is not a function of their input.
    deterministic: ClassVar[bool] = True

    @classmethod
    def node_name(cls) -> str:
        return cls.__name__

    def estimate_tokens(self, state: StateT) -> int | None:
        """Tokens to reserve against the provider's tpm before a call (default:
        ``estimated_tokens``). Only asked when the node's provider has a tpm limit."""
        return self.estimated_tokens

    def extract_inputs(self, state: StateT) -> dict[str, Any]:
        """The node's inputs, read from ``state`` (default: every field in ``reads``).

        :raises MissingInputError: a declared input is not a field of the state.
        """
        return {name: read_input(self, state, name) for name in sorted(self.reads or ())}

    def update_state(self, state: StateT, result: Any) -> None:
        """Write ``result`` (a mapping or an object with attributes) into ``state``.

        Writes every field in ``writes`` that ``result`` provides.
        """
        for name in sorted(self.writes or ()):
            value = result_value(result, name)
            if value is not MISSING:
                write_output(state, name, value)

    async def run(self, ctx: RunContext[StateT]) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__}.run is not implemented: override "
            "`async def run(self, ctx)` and return the next node, End(value), a Fork "
            "or a Pipeline"
        )


def result_value(result: Any, name: str) -> Any:
    """``result[name]`` of a mapping, else attribute ``name``; ``MISSING`` when the
    result provides neither."""
    if isinstance(result, Mapping):
        return result.get(name, MISSING)
    return getattr(result, name, MISSING)


def write_output(state: Any, name: str, value: Any) -> None:
    """Assign a node's output to state field ``name`` (validated like any write)."""
    if isinstance(state, dict):
        state[name] = value
    else:
        setattr(state, name, value)


class DerivedFields:
    """A node's ``reads`` / ``writes`` derived from other attributes of the node asked.

    Read on an instance, the instance's values count (a dataclass field overriding
    the class default); read on the class (``Graph(...)`` checks field names), the
    class's. A non-data descriptor: a subclass or an instance that sets ``reads`` /
    ``writes`` itself replaces it.
    """

    def __init__(self, derive: Callable[[object], frozenset[str] | None]) -> None:
        self._derive = derive

    def __get__(self, instance: object | None, owner: type) -> frozenset[str] | None:
        return self._derive(owner if instance is None else instance)


def read_input(node: object, state: object, name: str) -> Any:
    """State field ``name``, an input of ``node``.

    :raises MissingInputError: the state has no such field.
    """
    if isinstance(state, Mapping):
        if name not in state:
            raise _missing(node, name, state)
        return state[name]
    try:
        return getattr(state, name)
    except AttributeError:
        raise _missing(node, name, state) from None


def _missing(node: object, name: str, state: object) -> MissingInputError:
    return MissingInputError(
        f"node {type(node).__name__} needs input {name!r}, which the state "
        f"{type(state).__name__} does not have: add the field to the state model or "
        "remove it from the node's reads / signature",
        node=type(node).__name__,
        field=name,
    )


def is_node(obj: object) -> bool:
    """True for node instances: a ``BaseNode`` or any object with ``async run(ctx)``."""
    if isinstance(obj, BaseNode):
        return True
    if isinstance(obj, type):
        return False
    run = getattr(obj, "run", None)
    return run is not None and inspect.iscoroutinefunction(run)


def check_node(obj: object, where: str) -> None:
    """:raises InvalidNodeError: ``obj`` is not a node instance, or its ``run`` is
    a plain ``def``.
    :raises ConfigurationError: a node attribute is invalid (see
        ``validate_node_attributes``)."""
    if not is_node(obj):
        hint = (
            " (a class was given: instantiate it, e.g. `Node()`)" if isinstance(obj, type) else ""
        )
        raise InvalidNodeError(
            f"{where}: {obj!r} of type {type(obj).__name__} is not a node; a node is a "
            f"BaseNode instance or has `async def run(self, ctx)`{hint}"
        )
    if isinstance(obj, BaseNode):
        check_async_run(type(obj), where)
    validate_node_attributes(obj)


#: Per class, the attribute values last found valid.
_VALIDATED: dict[type, tuple[Any, ...]] = {}


def validate_node_attributes(node: object) -> None:
    """Check a node's ``provider``, ``reads``, ``writes``, ``retry`` and ``timeout``.

    Takes a node class or instance (an instance's own fields may override the class
    attributes). Cheap to call per node execution: the values last found valid are
    remembered per class and only checked again when they differ.

    :raises ConfigurationError: naming the node, the attribute and its value.
    """
    cls: type = node if isinstance(node, type) else type(node)
    is_class = cls is node
    # Spelled out rather than a generator: this runs for every fork branch.
    values: tuple[Any, ...] = (
        getattr(node, "provider", None),
        getattr(node, "reads", None),
        getattr(node, "writes", None),
        getattr(node, "retry", None),
        getattr(node, "timeout", None),
    )
    if is_class:
        # A slotted dataclass field (or a property) is a descriptor on the class:
        # its value is the instance's, checked when the node runs.
        values = tuple(None if hasattr(type(v), "__get__") else v for v in values)
    if values == _VALIDATED.get(cls):  # equal values are just as valid
        return
    provider, reads, writes, retry, timeout = values
    name = cls.__name__
    if provider is not None and (not isinstance(provider, str) or not provider):
        raise _bad_attribute(name, "provider", provider, "a non-empty str or None")
    for attr, names in (("reads", reads), ("writes", writes)):
        if names is not None and (
            not isinstance(names, (set, frozenset)) or not all(isinstance(n, str) for n in names)
        ):
            raise _bad_attribute(
                name, attr, names, 'a frozenset of field names, e.g. frozenset({"a"})'
            )
    if retry is not None and not isinstance(retry, Retry):
        raise _bad_attribute(name, "retry", retry, "a Retry(...) or None")
    if timeout is not None and not (
        isinstance(timeout, (int, float))
        and not isinstance(timeout, bool)
        and math.isfinite(timeout)
        and timeout > 0
    ):
        raise _bad_attribute(
            name, "timeout", timeout, "a finite number of seconds > 0, or None for no timeout"
        )
    if len(_VALIDATED) > 4096:  # classes made in a loop: do not keep them all alive
        _VALIDATED.clear()
    _VALIDATED[cls] = values


def _bad_attribute(node: str, attr: str, value: object, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"node {node}: attribute `{attr}` must be {expected}, got {value!r} "
        f"({type(value).__name__})"
    )


#: Node class -> whether its ``run`` is a coroutine function (checked once per class).
_ASYNC_RUN: dict[type, bool] = {}


def check_async_run(cls: type, where: str) -> None:
    """Refuse a node class whose ``run`` is not a coroutine function.

    The engine awaits ``run(ctx)``, so a plain ``def run`` would only fail once it
    ran. Accepted: ``async def run``, a ``functools.wraps`` wrapper of one, and on
    Python 3.12+ a function marked with ``inspect.markcoroutinefunction``.

    :raises InvalidNodeError: names the class and says to use ``async def run``.
    """
    ok = _ASYNC_RUN.get(cls)
    if ok is None:
        run = getattr(cls, "run", None)
        ok = run is not None and (
            inspect.iscoroutinefunction(run) or inspect.iscoroutinefunction(inspect.unwrap(run))
        )
        _ASYNC_RUN[cls] = ok
    if not ok:
        raise InvalidNodeError(
            f"{where}: node class {cls.__name__} defines `run` without `async`; the engine "
            f"awaits run(ctx), so declare it `async def run(self, ctx)`"
        )


@dataclass(slots=True)
class NodeResult(Generic[StateT]):
    """The outcome of running one node in isolation.

    ``next_node`` is what ``run`` returned (a node, ``End``, a block) when it
    succeeded; ``error`` is the exception when it failed (never raised per node).
    ``context`` is the node's isolated context after it ran.
    """

    node: Any
    next_node: Any
    context: RunContext[StateT]
    execution_time_ms: float
    error: BaseException | None = None
    key: str = ""
    attempts: int = 1
    # The context the node was isolated from; merges diff against its state.
    base_context: RunContext[StateT] | None = field(default=None, repr=False)
    # The isolated branch (state + ownership) the node ran on.
    branch: Any = field(default=None, repr=False)

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def value(self) -> Any:
        """The ``End`` value the node returned, else None."""
        return self.next_node.value if isinstance(self.next_node, End) else None
