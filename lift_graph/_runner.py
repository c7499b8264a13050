"""Running one node: isolation, limits, timeout, retry, validation, records.

Shared by ``ParallelExecutor`` and the graph scheduler, so both apply the same
policies. Effects (the clock, the limiter) come in as arguments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ._counters import Slots as _Slots
from ._durable import Replay
from ._plan import state_type_of
from ._rate_signals import RateSignal, rate_limit_of
from ._records import NodeRecord
from ._state import (
    Branch,
    NodeGuard,
    copy_value,
    field_names,
    get_field,
    set_field,
    validation_error_field,
)
from ._text import short_repr
from .errors import (
    ConfigurationError,
    InvalidStateError,
    NodeExecutionError,
    NodeTimeoutError,
    StateValidationError,
)
from .events import (
    EventSink,
    NodeRetry,
    NodeStarted,
    emit_rate_limit_resumed,
    emit_rate_limited,
)
from .limits import Limits, Permit
from .node import RunContext, validate_node_attributes

__all__ = ["RunSettings", "check_state", "run_node"]

_JITTER = random.Random()


@dataclass(slots=True)
class RunSettings:
    """What every node of one run shares."""

    execution_id: str
    user_id: str | None = None
    deps: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: Limits | None = None
    run_slots: _Slots | None = None
    strict: bool = False
    #: Jitter for retry backoff and rate-limit pauses. One generator serves every
    #: run: seeding one per run (from os.urandom) cost 8 µs, a fifth of a short run.
    rng: random.Random = field(default_factory=lambda: _JITTER)
    #: The run's journal and cache (``_durable.Durable``), when it has either.
    durable: Any = None
    #: Where the run's events go (``Graph.iter``); None when nobody listens.
    events: EventSink | None = None
    #: The run's OpenTelemetry spans (``_tracing.RunTracing``); None when not traced.
    tracing: Any = None


def _retry_snapshot(branch: Branch, writes: frozenset[str] | None) -> dict[str, Any]:
    """Copies of what an attempt may change in place: the fields the branch owns for it.

    Fields not owned (shared with the fork's state, or uncopyable) are not copied: an
    attempt may only reassign them, which ``NodeGuard.rollback`` undoes.
    """
    state = branch.state
    names: Iterable[str] = field_names(state) if writes is None else writes
    if isinstance(state, dict):
        names = [n for n in names if n in state]  # keys an attempt adds are removed
    return {n: copy_value(get_field(state, n)) for n in names if n not in branch.shared}


def check_state(node: Any, state: Any) -> None:
    """:raises InvalidStateError: ``state`` is a class, or not the node's declared model."""
    name = type(node).__name__
    if isinstance(state, type):
        raise InvalidStateError(
            f"node {name} got the class {state.__name__} as its state, not an instance: "
            f"pass {state.__name__}(...) as graph.run(state=...) / ctx.state",
            node=name,
        )
    declared = _declared_state(type(node))
    if declared is not None and not isinstance(state, declared):
        raise InvalidStateError(
            f"node {name} works on {declared.__name__} states (BaseNode[{declared.__name__}]), "
            f"but got {type(state).__name__} {short_repr(state)}: pass a {declared.__name__} as "
            "graph.run(state=...) / ctx.state",
            node=name,
        )


def _declared_state(cls: type) -> type | None:
    """The node's ``BaseNode[State]`` when an ``isinstance`` check of it is meaningful."""
    declared = state_type_of(cls)
    if declared is None or typing.get_origin(declared) is not None:
        return None
    if declared is dict or issubclass(declared, BaseModel) or dataclasses.is_dataclass(declared):
        return declared
    return None  # a protocol, a TypedDict, a plain class: duck-typed, not checked


#: Per node class: its (provider, reads, writes, retry, timeout, state class) last
#: found valid, so the checks cost one lookup per execution.
_READY: dict[type, tuple[Any, ...]] = {}


def _prepare(node: Any, name: str, branch: Branch, settings: RunSettings) -> tuple[Any, ...]:
    """The checks before a node's first attempt, then ownership of what it may write.

    Returns the node's ``(provider, reads, writes, retry, timeout, state class)``, read
    through the instance: a dataclass field may override the class default (one node
    class serving several providers, say).
    """
    values = (
        getattr(node, "provider", None),
        getattr(node, "reads", None),
        getattr(node, "writes", None),
        getattr(node, "retry", None),
        getattr(node, "timeout", None),
        type(branch.state),
    )
    ready = _READY.get(type(node))
    # Tuple equality tries identity first: one C-level pass for the usual case.
    if values != ready:
        validate_node_attributes(node)
        check_state(node, branch.state)
        if len(_READY) > 4096:  # classes made in a loop: do not keep them all alive
            _READY.clear()
        _READY[type(node)] = values
    provider = values[0]
    if provider is not None and settings.limits is not None:
        settings.limits.check_provider(provider, name)
    branch.own(values[2], name)
    return values


def _refused(
    exc: Exception,
    key: str,
    name: str,
    provider: str | None,
    settings: RunSettings,
    records: list[tuple[Any, ...]] | None,
) -> None:
    """Record a node refused before its first attempt (``attempts`` 0, no time)."""
    if isinstance(exc, NodeExecutionError):
        exc.execution_id = settings.execution_id
        exc.node_key = key
        if exc.node is None:
            exc.node = name
    if records is not None:
        now = time.perf_counter()
        error = f"{type(exc).__name__}: {exc}"
        records.append((key, name, now, 0.0, 0, error, provider, now, ()))


async def _call_within(node: Any, ctx: RunContext[Any], name: str, timeout: float) -> Any:
    """``node.run(ctx)`` within the node's own ``timeout``."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await node.run(ctx)
    except TimeoutError:
        # Only our own deadline is a node timeout; a TimeoutError the node raised
        # itself stays what it was.
        if not deadline.expired():
            raise
        raise NodeTimeoutError(
            f"node {name} did not finish within its timeout of {timeout} s", node=name
        ) from None


def _attempt_error(
    raised: BaseException, name: str, key: str, attempt: int, branch: Branch, settings: RunSettings
) -> tuple[Exception, Exception]:
    """What a failed attempt raised (``exc``) and the error it counts as (``error``).

    A ``CancelledError`` nobody asked for (the node raised it itself) becomes the
    node's failure: left to propagate it would look like a cancellation to the join,
    which would then wait for an outcome that never comes. A pydantic
    ``ValidationError`` of a state write becomes a ``StateValidationError`` naming
    the field.
    """
    if isinstance(raised, asyncio.CancelledError):
        exc: Exception = NodeExecutionError(
            f"node {name} raised CancelledError although nothing cancelled it; "
            "raise an ordinary exception to fail a node",
            node=name,
        )
        exc.__cause__ = raised
    else:
        assert isinstance(raised, Exception)
        exc = raised
    error: Exception = exc
    if isinstance(exc, ValidationError):
        fld = validation_error_field(exc, branch.state)
        if fld is not None:
            error = StateValidationError(
                f"node {name} wrote an invalid value to state field {fld!r}: "
                f"{exc.errors()[0]['msg']}",
                node=name,
                field=fld,
            )
            error.__cause__ = exc
    if isinstance(error, NodeExecutionError):
        error.execution_id = settings.execution_id
        error.node_key = key
        error.attempt = attempt
        if error.node is None:
            error.node = name
    return exc, error


async def _throttle(
    error: Exception,
    signal: RateSignal,
    throttled: int,
    permit: Permit | None,
    name: str,
    target: str | None,
    settings: RunSettings,
) -> float | None:
    """A 429: pause provider ``target``; returns the pause, or None when its budget
    (``max_rate_limit_retries``) is spent and the node fails with the error (its
    ``Retry`` does not apply)."""
    limits = settings.limits
    assert limits is not None
    if throttled >= limits.max_rate_limit_retries(target):
        error.add_note(
            f"node {name} was refused by provider {target!r} {throttled + 1} times; "
            "raise ProviderLimit(max_rate_limit_retries=...) or lower the load"
        )
        return None
    return await limits.throttle(permit, target, signal, settings.rng)


def _estimate(node: Any, name: str, state: Any, provider: str | None, limits: Limits) -> int:
    """Tokens to reserve for ``node``'s call: 0 unless its provider has a tpm limit.

    :raises ConfigurationError: the estimate is not an int >= 0, or can never fit
        the provider's tpm.
    """
    if provider is None or not limits.reserves_tokens(provider):
        return 0
    estimate = getattr(node, "estimate_tokens", None)
    value = estimate(state) if callable(estimate) else getattr(node, "estimated_tokens", None)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"node {name}'s estimated_tokens must be an int >= 0 or None, got {value!r}",
        )
    limits.check_tokens(provider, value, f"node {name}")
    return value


def cancel_requested() -> bool:
    """Whether a ``CancelledError`` caught in this task was asked for (the task is
    being cancelled), not raised by user code on its own."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def run_node(
    node: Any,
    branch: Branch,
    key: str,
    settings: RunSettings,
    *,
    join: Any = None,
    provenance: list[dict[str, Any]] | None = None,
    records: list[tuple[Any, ...]] | None = None,
) -> tuple[Any, RunContext[Any], NodeRecord]:
    """Run ``node`` on ``branch`` until it returns or its retries are spent.

    Slots are held only while ``run`` executes: they are given back before a retry
    backoff. A failed attempt's writes are rolled back before the next one.

    :raises NodeTimeoutError: the node's class ``timeout`` expired (after retries).
    :raises StateValidationError: the node wrote a value the state model rejects.
    :raises Exception: whatever the node raised, once retries are spent; a
        ``NodeExecutionError`` gets ``execution_id``, ``node_key`` and ``attempt``.
    """
    name = type(node).__name__
    queued = time.perf_counter()
    try:
        provider, _, writes, retry, timeout, _ = _prepare(node, name, branch, settings)
    except Exception as refused:
        _refused(refused, key, name, getattr(node, "provider", None), settings, records)
        raise
    limits = settings.limits
    ctx: RunContext[Any] = RunContext(
        state=branch.state,
        execution_id=settings.execution_id,
        user_id=settings.user_id,
        metadata=settings.metadata,
        provenance=provenance if provenance is not None else [],
        deps=settings.deps,
        join=join,
        node_key=key,
    )
    events, tracing = settings.events, settings.tracing
    if events is not None:
        ctx._events = events
    pending = None
    if settings.durable is not None:
        early = settings.durable.before(node, key, branch, ctx)
        if isinstance(early, Replay):
            # Journaled, re-asked or cached: `run` is not called, no slot is taken.
            now = time.perf_counter()
            replayed = ((now, now, "replayed"),)
            record = NodeRecord(
                key, name, now, early.ms, early.attempts, None, provider, queued, replayed
            )
            if records is not None:
                records.append(tuple(record))
            if tracing is not None:
                tracing.replayed(key, name, provider, early)
            return early.out, ctx, record
        pending = early
    # A provider's node may be refused (429) and run again: it gets a snapshot too.
    again = retry is not None or provider is not None
    snapshot = _retry_snapshot(branch, writes) if again else None
    # execution_time_ms counts time inside `run` only: not slot waits, not backoff.
    started: float | None = None
    running = 0.0
    attempt = 0
    #: Attempts the provider refused (429): they spend its budget, not `retry`'s.
    throttled = 0
    tokens = -1  # the tpm reservation, estimated once when first needed
    pause_began: float | None = None  # on the limits' clock, while a 429 pauses us
    log: list[tuple[float, float, str]] | None = None  # attempts, once there are two
    target = provider
    while True:
        attempt += 1
        ctx.attempt = attempt
        ctx.tokens_used = 0
        permit = None
        paused = False
        if limits is not None:
            if tokens < 0:
                tokens = _estimate(node, name, branch.state, provider, limits)
            if pause_began is not None and target != provider:
                await limits.wait_out(target)  # refused on another provider's behalf
            permit = await limits.acquire(provider, settings.run_slots, tokens)
            if pause_began is not None:
                waited = limits.clock.now() - pause_began
                emit_rate_limit_resumed(settings, key, target or "", waited)
                pause_began = None
        elif settings.run_slots is not None:
            await settings.run_slots.acquire()
        began = time.perf_counter()
        if started is None:
            started = began
        if events is not None:
            events(NodeStarted(settings.execution_id, key, began, name, attempt, provider))
        guard: NodeGuard | None = None
        span = None if tracing is None else tracing.attempt(ctx, name, provider, queued, settings)
        try:
            guard = NodeGuard(branch, writes, settings.strict)
            if timeout is None:  # inline: a wrapper coroutine costs ~0.3 µs a node
                out = await node.run(ctx)
            else:
                out = await _call_within(node, ctx, name, timeout)
            guard.check(name)
        except (Exception, asyncio.CancelledError) as raised:
            if isinstance(raised, asyncio.CancelledError) and cancel_requested():
                raise  # a real cancellation of this run / branch: never swallowed
            exc, error = _attempt_error(raised, name, key, attempt, branch, settings)
            if span is not None:
                tracing.attempt_failed(span, error)
            signal = rate_limit_of(error)
            if signal is not None:
                if limits is None:  # back-pressure needs somewhere to pause: its own
                    limits = settings.limits = Limits()
                target = signal.provider or provider
                refused_at = limits.clock.now()  # no later than the pause's own start
                delay = await _throttle(error, signal, throttled, permit, name, target, settings)
                if delay is not None:
                    paused = True
                    throttled += 1
                    pause_began = refused_at
                    emit_rate_limited(
                        settings, key, target or "", delay, signal.retry_after, attempt
                    )
            if not paused and (
                signal is not None
                or retry is None
                or not retry.should_retry(error, attempt - throttled)
            ):
                if records is not None:
                    now = time.perf_counter()
                    if log is not None:
                        log.append((began, now, "failed"))
                    records.append(
                        (
                            key,
                            name,
                            started,
                            (running + now - began) * 1000.0,
                            attempt,
                            f"{type(error).__name__}: {error}",
                            provider,
                            queued,
                            tuple(log) if log is not None else (),
                        )
                    )
                if error is raised:
                    raise
                if error is exc:
                    raise error from raised  # a wrapped CancelledError
                raise error from exc
            if log is None:
                log = []
            log.append((began, time.perf_counter(), "rate_limited" if paused else "retry"))
            # Undo everything the attempt changed before the next one: reassigned,
            # added or deleted fields (even undeclared ones), then in-place changes of
            # the fields it owns, from their copies.
            if guard is not None:
                guard.rollback()
            if snapshot is not None:
                for fname, value in snapshot.items():
                    set_field(branch.state, fname, copy_value(value))
        else:
            if pending is not None:
                settings.durable.after(pending, node, key, out, branch)
            now = time.perf_counter()
            if log is not None:
                log.append((began, now, "succeeded"))
            record = NodeRecord(
                key,
                name,
                started,
                (running + now - began) * 1000.0,
                attempt,
                provider=provider,
                queued_at=queued,
                attempt_log=tuple(log) if log is not None else (),
            )
            if records is not None:
                # A plain tuple of flat values: the cyclic GC untracks it, so 100,000
                # records add nothing to its full passes (a NamedTuple stays tracked).
                records.append(tuple(record))
            return out, ctx, record
        finally:
            running += time.perf_counter() - began
            if span is not None:
                tracing.attempt_ended(span, ctx)
            if permit is not None:
                assert limits is not None
                if ctx._rate_report is not None:
                    limits.reported(permit, ctx._rate_report)
                    ctx._rate_report = None
                limits.release(permit, ctx.tokens_used)
            elif settings.run_slots is not None:
                settings.run_slots.release()
        if paused:
            continue  # the provider's pause is waited out in `acquire`, holding no slot
        # Back off holding no slot (released in `finally` above).
        delay = retry.delay(attempt - throttled, settings.rng.random())
        if events is not None:
            now = time.perf_counter()
            events(NodeRetry(settings.execution_id, key, now, name, attempt, error, delay))
        if tracing is not None:
            tracing.retry(key, attempt, delay)
        if limits is not None:
            await limits.clock.sleep(delay)
        else:
            await asyncio.sleep(delay)
