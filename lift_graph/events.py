"""Events of a run: the typed classes ``Graph.iter`` yields, and the sink behind them.

Every event has ``kind`` (a fixed string per class), ``execution_id``, ``key`` (the
node key, ``""`` for run-level events) and ``time`` (``time.perf_counter()``, the
clock of ``NodeRecord.started_at``, so events and records line up)::

    GraphEvent
    ├── RunStarted            run_started          graph, start
    ├── NodeStarted           node_started         node, attempt, provider
    ├── NodeRetry             node_retry           node, attempt, error, delay
    ├── NodeFinished          node_finished        record
    ├── NodeFailed            node_failed          record, error
    ├── RateLimitedEvent      rate_limited         provider, delay, retry_after, attempt
    ├── RateLimitResumed      rate_limit_resumed   provider, waited
    ├── ForkStarted           fork_started         branches, strategy
    ├── JoinFinished          join_finished        join
    ├── CustomEvent           custom               name, data     (ctx.emit)
    ├── TokenEvent            token                field, text, last (a DSPyNode)
    └── RunFinished           run_finished         result

The seam: ``RunSettings.events`` is an ``EventSink`` (a callable taking one event)
or None when nobody listens, so a plain ``graph.run`` pays one ``is None`` check per
hook. A sink is called synchronously from the task where the thing happened, so the
events of one node arrive in causal order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ._records import NodeRecord
    from .blocks import JoinResult
    from .graph import Graph, RunResult

__all__ = [
    "CustomEvent",
    "EventSink",
    "ForkStarted",
    "GraphEvent",
    "JoinFinished",
    "NodeFailed",
    "NodeFinished",
    "NodeRetry",
    "NodeStarted",
    "RateLimitResumed",
    "RateLimitedEvent",
    "RunFinished",
    "RunStarted",
    "TokenEvent",
    "emit_rate_limit_resumed",
    "emit_rate_limited",
    "iterate",
]

#: What the engine calls with each event; ``RunSettings.events`` holds one (or None).
EventSink = Callable[["GraphEvent"], None]

_COMMON = frozenset({"execution_id", "time"})


@dataclass(frozen=True, slots=True)
class GraphEvent:
    """One thing that happened during a run (the base of every event class).

    ``data`` is a dict of the event's own fields and ``key``, for code written
    before the typed classes (``event.data["record"]``).
    """

    kind: ClassVar[str] = "event"

    execution_id: str
    #: The node key; ``""`` for run-level events.
    key: str
    #: ``time.perf_counter()`` when it happened (the clock of ``NodeRecord.started_at``).
    time: float

    @property
    def data(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _COMMON
        }


@dataclass(frozen=True, slots=True)
class RunStarted(GraphEvent):
    """The run began: ``graph`` is the graph's name, ``start`` the start node's class."""

    kind: ClassVar[str] = "run_started"
    graph: str
    start: str


@dataclass(frozen=True, slots=True)
class NodeStarted(GraphEvent):
    """An attempt of node class ``node`` began (its permits acquired, ``run`` called)."""

    kind: ClassVar[str] = "node_started"
    node: str
    attempt: int
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class NodeRetry(GraphEvent):
    """Attempt ``attempt`` failed with ``error``; the next starts after ``delay`` s."""

    kind: ClassVar[str] = "node_retry"
    node: str
    attempt: int
    error: BaseException
    delay: float


@dataclass(frozen=True, slots=True)
class NodeFinished(GraphEvent):
    """A node execution succeeded (or was replayed from a journal / cache)."""

    kind: ClassVar[str] = "node_finished"
    record: NodeRecord


@dataclass(frozen=True, slots=True)
class NodeFailed(GraphEvent):
    """A node execution failed, its retries spent; ``error`` is what it raised."""

    kind: ClassVar[str] = "node_failed"
    record: NodeRecord | None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class RateLimitedEvent(GraphEvent):
    """Provider ``provider`` said "too many requests": its nodes pause ``delay`` s
    (``retry_after`` is what the provider asked for, if anything)."""

    kind: ClassVar[str] = "rate_limited"
    provider: str
    delay: float
    retry_after: float | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class RateLimitResumed(GraphEvent):
    """Provider ``provider``'s pause is over after ``waited`` s."""

    kind: ClassVar[str] = "rate_limit_resumed"
    provider: str
    waited: float


@dataclass(frozen=True, slots=True)
class ForkStarted(GraphEvent):
    """The node at ``key`` returned a fork of ``branches`` branches joined by
    ``strategy`` (a ``JoinStrategy`` name); its branches start after this event."""

    kind: ClassVar[str] = "fork_started"
    branches: int
    strategy: str


@dataclass(frozen=True, slots=True)
class JoinFinished(GraphEvent):
    """The fork after the node at ``key`` is decided (every branch settled)."""

    kind: ClassVar[str] = "join_finished"
    join: JoinResult[Any]


@dataclass(frozen=True, slots=True)
class CustomEvent(GraphEvent):
    """Sent by a node with ``ctx.emit(name, data)``."""

    kind: ClassVar[str] = "custom"
    name: str
    #: The node's payload (here ``data`` is not the dict view of the base class).
    data: Any = None


@dataclass(frozen=True, slots=True)
class TokenEvent(GraphEvent):
    """A streamed chunk ``text`` of output ``field`` of a streaming ``DSPyNode``;
    ``last`` marks the field's final chunk (its text may be empty)."""

    kind: ClassVar[str] = "token"
    field: str
    text: str
    last: bool = False


@dataclass(frozen=True, slots=True)
class RunFinished(GraphEvent):
    """The run ended; ``result`` is its ``RunResult``. Always the last event."""

    kind: ClassVar[str] = "run_finished"
    result: RunResult[Any]


# -- helpers for code that paces providers -------------------------------------------


def emit_rate_limited(
    settings: Any,
    key: str,
    provider: str,
    delay: float,
    retry_after: float | None = None,
    attempt: int = 1,
) -> None:
    """Send a ``RateLimitedEvent`` through ``settings.events`` (a ``RunSettings``),
    if anybody listens, and mark the attempt's span when the run is traced."""
    sink = settings.events
    if sink is not None:
        now = time.perf_counter()
        sink(
            RateLimitedEvent(settings.execution_id, key, now, provider, delay, retry_after, attempt)
        )
    tracing = settings.tracing
    if tracing is not None:
        tracing.rate_limited(key, provider, delay, retry_after, attempt)


def emit_rate_limit_resumed(settings: Any, key: str, provider: str, waited: float) -> None:
    """Send a ``RateLimitResumed`` through ``settings.events``, if anybody listens,
    and note it for the next attempt's span when the run is traced."""
    sink = settings.events
    if sink is not None:
        sink(RateLimitResumed(settings.execution_id, key, time.perf_counter(), provider, waited))
    tracing = settings.tracing
    if tracing is not None:
        tracing.rate_limit_resumed(key, provider, waited)


# -- Graph.iter ------------------------------------------------------------------------


async def iterate(
    graph: Graph[Any], start: Any, kwargs: dict[str, Any]
) -> AsyncGenerator[GraphEvent, None]:
    """``Graph.iter``: run ``graph.run(start, **kwargs)`` in a task and yield its events.

    The first event is ``RunStarted``, the last ``RunFinished``; if the run raises,
    the events so far are yielded and then the error is raised. Closing the
    generator (``aclose``, or leaving an ``async with contextlib.aclosing(...)``
    block) cancels the run and waits until every task of it is gone.

    The queue between the run and the consumer is unbounded: a consumer slower than
    the run makes it hold every event not yet taken (the run itself never waits).
    """
    from ._tasks import cancel_and_wait  # not at the top: _tasks imports node, which imports us

    queue: asyncio.Queue[GraphEvent | None] = asyncio.Queue()
    put = queue.put_nowait
    execution_id = kwargs.pop("execution_id", None) or uuid.uuid4().hex
    put(RunStarted(execution_id, "", time.perf_counter(), graph.name, type(start).__name__))

    async def drive() -> RunResult[Any]:
        try:
            return await graph.run(start, execution_id=execution_id, _events=put, **kwargs)
        finally:
            put(None)

    task = asyncio.ensure_future(drive())
    try:
        while True:
            event = await queue.get()
            if event is None:
                break
            yield event
        result = await task
        yield RunFinished(execution_id, "", time.perf_counter(), result)
    finally:
        if not task.done():
            # The consumer left early (or was cancelled): the run stops with it, and
            # is awaited even if we are cancelled meanwhile (then that re-raises).
            await cancel_and_wait([task])
            if not task.cancelled():
                task.exception()  # the run ended on its own just now: nobody wants it
