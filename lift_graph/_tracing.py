"""OpenTelemetry spans of a run (the ``[otel]`` extra): run → fork → branch → node.

The only module that touches opentelemetry, and only once a run is traced or a
tracer is passed: ``lift_graph`` imports and runs without it. ``open_tracing``
turns ``Graph.run(tracer=...)`` into a ``RunTracing`` (one per run) or None; the
graph, scheduler and runner call it only behind ``is not None``, so a run that is
not traced pays one attribute check per node.

Parents come from the run's structure, never from whichever context a task
happened to copy: node key ``"0.Plan/web/1.Ask"`` lives on path ``"0.Plan/web/"``,
and a path's span context is registered when its branch (or pipeline member)
starts, under the span of the fork that made it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import typing
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._records import key_path
from ._tasks import Paused
from .errors import ConfigurationError

if TYPE_CHECKING:
    from types import ModuleType

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "SPAN_BRANCH",
    "SPAN_FORK",
    "SPAN_NODE",
    "SPAN_RUN",
    "Attempt",
    "RunTracing",
    "open_tracing",
]

SPAN_RUN = "lift_graph.run"
SPAN_FORK = "lift_graph.fork"
SPAN_BRANCH = "lift_graph.branch"
SPAN_NODE = "lift_graph.node"

_P = "lift_graph."
STATUS = _P + "status"

T = TypeVar("T")

#: The last provider asked for a tracer, and its tracer: one run after another
#: under one provider gets its tracer without a call into the SDK.
_last: tuple[Any, Any] = (None, None)


def _api() -> ModuleType | None:
    """``opentelemetry.trace``, or None when the extra is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def _context_api() -> ModuleType:
    from opentelemetry import context

    return context


def _tracer_of(provider: Any) -> Tracer:
    global _last
    if _last[0] is not provider:
        from . import __version__

        _last = (provider, provider.get_tracer("lift_graph", __version__))
    return _last[1]  # type: ignore[no-any-return]


def _global_tracer() -> Tracer | None:
    """The global provider's tracer, or None when no real provider is set."""
    if "opentelemetry.trace" not in sys.modules and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ:
        # Nobody imported the API, so nobody set a provider: do not import it either.
        return None
    trace = _api()
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    # The API's default (a proxy to nothing, or a no-op) records nothing: skip it.
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return _tracer_of(provider)


def resolve_tracer(tracer: object) -> Tracer | None:
    """The tracer ``Graph.run(tracer=...)`` means, or None for no tracing.

    :raises ConfigurationError: ``tracer`` is not None, False, a ``Tracer`` or a
        ``TracerProvider``; or it is given and opentelemetry is not installed.
    """
    if tracer is None:
        return _global_tracer()
    if tracer is False:
        return None
    trace = _api()
    if trace is None:
        raise ConfigurationError(
            f"tracer was given ({type(tracer).__name__}) but opentelemetry is not installed: "
            "pip install 'lift_graph[otel]', or leave tracer=None"
        )
    if isinstance(tracer, trace.Tracer):
        return typing.cast("Tracer", tracer)
    if isinstance(tracer, trace.TracerProvider):
        return _tracer_of(tracer)
    raise ConfigurationError(
        "tracer must be an opentelemetry.trace.Tracer, a TracerProvider, None (the global "
        f"tracer provider, if one is configured) or False (no tracing), got {tracer!r}"
    )


def open_tracing(tracer: object, graph: str, execution_id: str) -> RunTracing | None:
    """One run's ``RunTracing``, or None when the run is not traced.

    :raises ConfigurationError: see ``resolve_tracer``.
    """
    resolved = resolve_tracer(tracer)
    if resolved is None:
        return None
    trace = _api()
    assert trace is not None
    return RunTracing(resolved, trace, _context_api(), graph, execution_id)


def _attribute(value: Any) -> str | int:
    """A branch key as a span attribute (an int stays an int)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value)


@dataclass(slots=True, eq=False)
class Attempt:
    """One node attempt's span, while ``run`` executes (the runner holds it)."""

    span: Span
    token: object
    key: str
    #: The exception already being handled where the attempt started (a caller's
    #: ``except`` block): not the attempt's own outcome.
    outer: BaseException | None
    error: BaseException | None = None
    refused: bool = False  # its provider answered 429


@dataclass(slots=True, eq=False)
class RunTracing:
    """The spans of one run; the seam the graph, scheduler and runner call."""

    tracer: Tracer
    trace: Any  # the opentelemetry.trace module
    context: Any  # the opentelemetry.context module
    graph: str
    execution_id: str
    #: Path prefix -> the context its nodes' spans are children of.
    paths: dict[str, Context] = field(default_factory=dict)
    #: Fork key -> the fork span's context, while its branches start.
    forks: dict[str, Context] = field(default_factory=dict)
    #: Node key -> its attempt that is running.
    running: dict[str, Attempt] = field(default_factory=dict)
    #: Node key -> events for its next attempt's span (a retry, a resumed pause).
    pending: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    #: Node key -> when its next attempt was ready to start (perf_counter).
    ready: dict[str, float] = field(default_factory=dict)

    def _start(self, name: str, parent: Context | None, attributes: dict[str, Any]) -> Span:
        return self.tracer.start_span(name, context=parent, attributes=attributes)

    def _context(self, span: Span) -> Context:
        return self.trace.set_span_in_context(span)  # type: ignore[no-any-return]

    def _fail(self, span: Span, exc: BaseException) -> None:
        """End status of a span whose work raised ``exc``."""
        if isinstance(exc, asyncio.CancelledError):
            span.set_attribute(STATUS, "cancelled")  # not an error: a race lost, a timeout
            return
        span.set_attribute(STATUS, "interrupted" if _is_pause(exc) else "failed")
        if not _is_pause(exc):
            span.record_exception(exc)
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, _describe(exc)))

    # -- run ---------------------------------------------------------------------
    async def run(self, execute: Awaitable[T], start: Any) -> T:
        """Await the run (``Graph._execute``) inside a ``lift_graph.run`` span, a child
        of whatever span is current (a request's, the caller's own)."""
        attributes = {
            _P + "graph": self.graph,
            _P + "execution_id": self.execution_id,
            _P + "start_node": type(start).__name__,
        }
        span = self._start(SPAN_RUN, None, attributes)
        self.paths[""] = self._context(span)
        try:
            result = await execute
        except BaseException as exc:
            self._fail(span, exc)
            raise
        else:
            span.set_attribute(_P + "deterministic", bool(getattr(result, "deterministic", True)))
            interrupted = bool(getattr(result, "interrupts", None))
            span.set_attribute(STATUS, "interrupted" if interrupted else "succeeded")
            return result
        finally:
            self.paths.pop("", None)
            span.end()

    # -- forks, branches, pipelines ----------------------------------------------
    async def fork(self, block: Awaitable[T], key: str, fork: Any) -> T:
        """Await a fork (``Scheduler._fork``) inside a ``lift_graph.fork`` span."""
        attributes = {
            _P + "fork.key": key,
            _P + "fork.kind": "fork",
            _P + "fork.branches": len(fork.branches),
            _P + "join.strategy": fork.join.name,
        }
        span = self._start(SPAN_FORK, self.paths.get(key_path(key)), attributes)
        self.forks[key] = self._context(span)
        try:
            return await self._block(span, block)
        finally:
            self.forks.pop(key, None)

    async def pipeline(self, block: Awaitable[T], key: str, pipe: Any) -> T:
        """Await a pipeline inside a ``lift_graph.fork`` span of kind ``pipeline``;
        its members' node spans are its children (a member is a path of one node)."""
        n = len(pipe.nodes)
        attributes = {
            _P + "fork.key": key,
            _P + "fork.kind": "pipeline",
            _P + "fork.branches": n,
        }
        span = self._start(SPAN_FORK, self.paths.get(key_path(key)), attributes)
        members = [f"{key}/p{i}/" for i in range(n)]  # the scheduler's member keys
        context = self._context(span)
        for prefix in members:
            self.paths[prefix] = context
        try:
            return await self._block(span, block)
        finally:
            for prefix in members:
                self.paths.pop(prefix, None)

    async def _block(self, span: Span, block: Awaitable[T]) -> T:
        try:
            join = await block
        except BaseException as exc:
            self._counts(span, getattr(exc, "join", None))
            self._fail(span, exc)
            span.end()
            raise
        self._counts(span, join)
        span.set_attribute(STATUS, "succeeded")
        span.end()
        return join

    def _counts(self, span: Span, join: Any) -> None:
        """The join's tallies (a ``JoinResult``; absent when the block raised early)."""
        if join is None:
            return
        span.set_attributes(
            {
                _P + "join.succeeded": join.succeeded,
                _P + "join.failed": join.failed,
                _P + "join.cancelled": join.cancelled,
                _P + "join.deterministic": bool(join.deterministic),
            }
        )

    async def branch(self, path: Awaitable[T], fork_key: str, branch_key: Any, prefix: str) -> T:
        """Await one fork branch's path inside a ``lift_graph.branch`` span."""
        attributes = {_P + "branch.key": _attribute(branch_key), _P + "fork.key": fork_key}
        span = self._start(SPAN_BRANCH, self.forks.get(fork_key), attributes)
        self.paths[prefix] = self._context(span)
        try:
            value = await path
        except BaseException as exc:
            self._fail(span, exc)
            raise
        else:
            span.set_attribute(STATUS, "succeeded")
            return value
        finally:
            self.paths.pop(prefix, None)
            span.end()

    # -- node attempts (the runner) ------------------------------------------------
    def attempt(
        self, ctx: Any, name: str, provider: str | None, queued: float, settings: Any
    ) -> Attempt:
        """Start the span of attempt ``ctx.attempt`` (its slot acquired) and make it
        current, so what ``node.run`` traces (an instrumented LLM client) nests under
        it. ``queued``: when the node was handed to the runner."""
        now = time.perf_counter()
        key, attempt = ctx.node_key, ctx.attempt
        ready = queued if attempt == 1 else self.ready.pop(key, now)
        attributes: dict[str, Any] = {
            _P + "node.key": key,
            _P + "node.class": name,
            _P + "attempt": attempt,
        }
        if provider is not None:
            attributes[_P + "provider"] = provider
        span = self._start(SPAN_NODE, self.paths.get(key_path(key)), attributes)
        for event, event_attributes in self.pending.pop(key, ()):
            span.add_event(event, event_attributes)
        if settings.limits is not None or settings.run_slots is not None:
            wait_ms = max(0.0, now - ready) * 1000.0
            span.add_event("slot_acquired", {_P + "wait_ms": wait_ms})
        token = self.context.attach(self._context(span))
        handle = Attempt(span, token, key, sys.exc_info()[1])
        self.running[key] = handle
        return handle

    def attempt_failed(self, handle: Attempt, error: BaseException) -> None:
        """The attempt raised ``error`` (it may still be retried)."""
        handle.error = error

    def attempt_ended(self, handle: Attempt, ctx: Any) -> None:
        """End the attempt's span (called from the runner's ``finally``).

        What propagates from the ``finally`` tells the outcome: the attempt's own
        error (the node failed), a ``CancelledError`` (a race lost, a timeout), or
        nothing (it succeeded, or failed and will be retried).
        """
        raised = sys.exc_info()[1]
        if raised is handle.outer:
            raised = None
        self.context.detach(handle.token)
        self.running.pop(handle.key, None)
        span = handle.span
        # One call for them all: the SDK takes a lock per call.
        outcome: dict[str, Any] = {_P + "tokens": int(ctx.tokens_used), _P + "cache_hit": False}
        if raised is not None:
            self.ready.pop(handle.key, None)
            self._fail(span, raised)
        elif handle.error is not None:
            outcome[STATUS] = "rate_limited" if handle.refused else "retry"
            span.record_exception(handle.error)
            span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, _describe(handle.error)))
            self.ready[handle.key] = time.perf_counter()
        else:
            outcome[STATUS] = "succeeded"
        span.set_attributes(outcome)
        span.end()

    def retry(self, key: str, attempt: int, delay: float) -> None:
        """Attempt ``attempt`` failed; the next one starts after ``delay`` s."""
        self.ready[key] = time.perf_counter() + delay
        attributes = {_P + "delay_ms": delay * 1000.0, _P + "after_attempt": attempt}
        self.pending.setdefault(key, []).append(("retry", attributes))

    def rate_limited(
        self, key: str, provider: str, delay: float, retry_after: float | None, attempt: int
    ) -> None:
        """The provider refused the running attempt at ``key`` (a 429)."""
        handle = self.running.get(key)
        if handle is None:
            return
        handle.refused = True
        attributes: dict[str, Any] = {_P + "provider": provider, _P + "pause_ms": delay * 1000.0}
        if retry_after is not None:
            attributes[_P + "retry_after_ms"] = retry_after * 1000.0
        handle.span.add_event("rate_limited", attributes)

    def rate_limit_resumed(self, key: str, provider: str, waited: float) -> None:
        """The pause is over: the event goes on the next attempt's span."""
        attributes = {_P + "provider": provider, _P + "waited_ms": waited * 1000.0}
        self.pending.setdefault(key, []).append(("rate_limit_resumed", attributes))

    def replayed(self, key: str, name: str, provider: str | None, replay: Any) -> None:
        """A node answered without running: from the journal, the cache, or an
        interrupt asked again. Its span has no duration."""
        attributes: dict[str, Any] = {
            _P + "node.key": key,
            _P + "node.class": name,
            _P + "attempt": replay.attempts,
            _P + "cache_hit": replay.source != "interrupt",
            _P + "replay": replay.source,
            _P + "tokens": 0,
            STATUS: "interrupted" if replay.source == "interrupt" else "succeeded",
        }
        if provider is not None:
            attributes[_P + "provider"] = provider
        self._start(SPAN_NODE, self.paths.get(key_path(key)), attributes).end()


def _is_pause(exc: BaseException) -> bool:
    # The scheduler's pause signal (a node returned Interrupt) travels as an exception.
    return isinstance(exc, Paused)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
