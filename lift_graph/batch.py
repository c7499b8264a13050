"""Batches: one graph over many inputs (``Graph.map`` / ``map_sync`` / ``imap``).

Every input is one run of the graph, with an execution id derived from the
batch's id (``f"{batch_id}-{index}"``). Runs share one ``Limits``; at most
``max_concurrency`` inputs run at once; the source (a list, any iterable, or an
async iterable) is pulled lazily, an item only when its run can start. A failed
input is collected by index and does not stop the others. ``imap`` streams the
results in input order and holds at most ``window`` of them; ``map`` gathers them
into a ``BatchResult``.

With a ``store`` a batch is resumable: run it again with the same ``batch_id``
and store, and inputs whose run finished are not run again (their stored result
is replayed), runs that stopped midway resume from their journal, and inputs that
never started run fresh.

``backend=`` runs the inputs elsewhere (``lift_graph.ray.RayBackend``): everything
above stays on the caller's side, and only ``_Runs.run_one`` moves to the workers.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._batching import Batcher, Source
from ._config import check_count, check_number
from ._progress import Progress, open_progress
from ._runs import check_store
from ._steps import DEFAULT_MAX_STEPS, check_max_steps
from ._sync import _run_blocking
from ._text import short_repr
from ._tracing import resolve_tracer
from .errors import ConfigurationError
from .limits import Limits
from .node import is_node
from .store import Store

if TYPE_CHECKING:
    from .graph import Graph, RunResult

__all__ = [
    "DEFAULT_BATCH_CONCURRENCY",
    "Backend",
    "BackendSession",
    "BatchResult",
    "graph_imap",
    "graph_map",
    "graph_map_sync",
]

StateT = TypeVar("StateT")

#: Inputs running at once when ``max_concurrency`` is None: a bound, so that an
#: endless source never means endless tasks or memory.
DEFAULT_BATCH_CONCURRENCY = 16

#: ``imap``'s default ``window``, in multiples of ``max_concurrency``.
WINDOW_FACTOR = 4


@dataclass(slots=True, repr=False, eq=False)
class BatchResult(Generic[StateT]):
    """The outcome of ``Graph.map``: one entry per input, in input order.

    ``results[i]`` is input ``i``'s ``RunResult``, or None where it failed;
    ``errors`` maps each failed input's index to its exception (in index order);
    ``outputs[i]`` is ``results[i].output`` (None where it failed, and for a run
    paused by an ``Interrupt``). ``batch_id`` is the id to pass again to resume the
    batch with the same store.
    """

    results: list[RunResult[StateT] | None]
    errors: dict[int, BaseException]
    batch_id: str
    elapsed_ms: float = 0.0
    #: Most inputs that were running at once.
    peak_concurrency: int = 0
    _outputs: list[Any] | None = field(default=None, repr=False)

    @property
    def outputs(self) -> list[Any]:
        if self._outputs is None:
            self._outputs = [None if r is None else r.output for r in self.results]
        return self._outputs

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def succeeded(self) -> int:
        return len(self.results) - len(self.errors)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def raise_errors(self) -> None:
        """Raise the failures as one exception group (by index), if there are any.

        :raises ExceptionGroup: ``errors`` is not empty; its message names the
            failed indexes.
        """
        if self.errors:
            shown = ", ".join(map(str, list(self.errors)[:10]))
            more = ", ..." if len(self.errors) > 10 else ""
            raise BaseExceptionGroup(
                f"{self.failed} of {self.total} inputs of batch {self.batch_id} failed "
                f"(indexes {shown}{more})",
                list(self.errors.values()),
            )

    def __repr__(self) -> str:
        first = ", ".join(f"{i}: {type(e).__name__}" for i, e in list(self.errors.items())[:3])
        more = ", ..." if len(self.errors) > 3 else ""
        return (
            f"BatchResult(batch_id={self.batch_id!r}, total={self.total}, "
            f"succeeded={self.succeeded}, failed={self.failed}, errors={{{first}{more}}}, "
            f"elapsed_ms={self.elapsed_ms:.1f})"
        )


class BackendSession(Protocol):
    """One batch on a backend: runs input ``index``, and stops when the batch ends."""

    async def run_one(self, index: int, state: Any) -> RunResult[Any]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    """Where a batch's inputs run (``graph.map(..., backend=...)``), e.g. ``RayBackend``."""

    #: Inputs in flight when ``graph.map`` is given no ``max_concurrency``.
    @property
    def capacity(self) -> int: ...

    def prepare(self, limits: Limits | None, tracer: Any) -> Limits:
        """Check the options before anything starts; returns the batch's limits."""
        ...

    async def start(self, runs: _Runs) -> BackendSession: ...


@dataclass(frozen=True, slots=True)
class _Runs:
    """How each input of a batch runs: what every run shares, and ``run_one``."""

    graph: Graph[Any]
    start: Any
    batch_id: str
    store: Store | None
    run_kwargs: dict[str, Any]

    def execution_id(self, index: int) -> str:
        return f"{self.batch_id}-{index}"

    def start_node(self, index: int, state: Any) -> Any:
        if is_node(self.start):
            # A shallow copy per input: what a run rebinds on its start node
            # (`self.count += 1`) does not leak into the next input's run.
            return copy.copy(self.start)
        return self.start(index, state)

    async def run_one(self, index: int, state: Any) -> RunResult[Any]:
        """Run input ``index``; with a store, resume its run if the store has it."""
        execution_id = self.execution_id(index)
        kw = self.run_kwargs
        if self.store is not None and self.store.load_run(execution_id) is not None:
            # Finished: the stored result, nothing runs. Stopped midway or failed:
            # the journaled nodes are replayed, the rest run.
            return await self.graph.resume(
                execution_id,
                store=self.store,
                deps=kw["deps"],
                limits=kw["limits"],
                timeout=kw["timeout"],
                cache=kw["cache"],
                max_steps=kw["max_steps"],
                strict=kw["strict"],
                tracer=kw["tracer"],
            )
        return await self.graph.run(
            self.start_node(index, state),
            state=state,
            execution_id=execution_id,
            store=self.store,
            metadata={"batch_id": self.batch_id, "batch_index": index},
            **kw,
        )


def _check_start(graph: Graph[Any], start: Any) -> None:
    """:raises InvalidNodeError / UnknownNodeError / ConfigurationError: ``start``
    is not a node of ``graph`` nor a callable ``(index, state) -> node``."""
    if is_node(start):
        graph._check_start(start, "Graph.map start")
    elif isinstance(start, type) or not callable(start):
        raise ConfigurationError(
            f"Graph.map start must be a node instance (e.g. `Start()`) or a callable "
            f"(index, state) -> node, got {short_repr(start)}"
        )


def _settings(
    graph: Graph[Any],
    start: Any,
    *,
    max_concurrency: int | None,
    limits: Limits | None,
    store: Store | None,
    batch_id: str | None,
    deps: Any,
    timeout: float | None,
    max_steps: int | None,
    cache: Store | None,
    strict: bool,
    tracer: Any,
    backend: Backend | None = None,
) -> tuple[_Runs, int]:
    """Check the options (before anything is pulled) and bundle them.

    :raises ConfigurationError: naming the option that is wrong.
    """
    _check_start(graph, start)
    check_count("max_concurrency (inputs running at once)", max_concurrency)
    if limits is not None and not isinstance(limits, Limits):
        raise ConfigurationError(f"limits must be a Limits object, got {type(limits).__name__}")
    check_number("timeout (seconds per run)", timeout, strictly_above=True, optional=True)
    check_store("store", store)
    check_store("cache", cache)
    if batch_id is not None and (not isinstance(batch_id, str) or not batch_id):
        raise ConfigurationError(f"batch_id must be a non-empty str or None, got {batch_id!r}")
    resolve_tracer(tracer)  # a wrong tracer fails here, before anything is pulled
    if backend is not None:
        if not callable(getattr(backend, "start", None)):
            raise ConfigurationError(
                f"backend must be a batch backend such as lift_graph.ray.RayBackend(...), "
                f"got {short_repr(backend)}"
            )
        limits = backend.prepare(limits, tracer)
    run_kwargs = {
        "deps": deps,
        # One Limits for the whole batch even when none is given: a 429 in one input's
        # run then pauses the provider for every input, not for that run alone.
        "limits": limits if limits is not None else Limits(),
        "timeout": timeout,
        "max_steps": check_max_steps(max_steps),
        "cache": cache,
        "strict": strict,
        "tracer": tracer,
    }
    runs = _Runs(graph, start, batch_id or uuid.uuid4().hex, store, run_kwargs)
    default = backend.capacity if backend is not None else DEFAULT_BATCH_CONCURRENCY
    return runs, max_concurrency or default


async def _open(
    runs: _Runs,
    states: Any,
    limit: int,
    window: int | None,
    progress: Any,
    backend: Backend | None,
) -> tuple[Batcher, Progress | None, BackendSession | None]:
    source = Source(states)
    bar = open_progress(progress, total=source.total, desc=runs.graph.name)
    try:
        # Last: nothing after it may fail and leave the backend's workers running.
        session = await backend.start(runs) if backend is not None else None
    except BaseException:
        if bar is not None:
            bar.close()
        raise
    run_one = session.run_one if session is not None else runs.run_one
    on_done = bar.step if bar is not None else None
    batcher = Batcher(run_one, source, limit=limit, window=window, on_done=on_done)
    return batcher, bar, session


async def _close(batcher: Batcher, bar: Progress | None, session: BackendSession | None) -> None:
    try:
        await batcher.aclose()
    finally:
        try:
            if session is not None:
                await session.aclose()
        finally:
            if bar is not None:
                bar.close()


async def graph_map(
    self: Graph[StateT],
    start: Any,
    states: Iterable[StateT] | AsyncIterable[StateT],
    *,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
    progress: Any = False,
    store: Store | None = None,
    batch_id: str | None = None,
    deps: Any = None,
    timeout: float | None = None,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    cache: Store | None = None,
    strict: bool = False,
    tracer: Any = None,
    backend: Backend | None = None,
) -> BatchResult[StateT]:
    """Run the graph once per input of ``states``; returns a ``BatchResult``.

    ``start`` is a node (copied for each input) or a callable ``(index, state) ->
    node``. ``states`` is a list, any iterable or an async iterable; it is pulled
    lazily, one item when its run can start, so a slow item or a slow run never
    keeps the others from starting. ``max_concurrency``: inputs running at once
    (None: ``DEFAULT_BATCH_CONCURRENCY``, 16). ``limits`` is shared by every run of
    the batch (node slots, provider limits, back-pressure: a 429 in one input pauses
    its provider for all); without one the batch shares a ``Limits()`` of its own.
    ``progress=True`` shows a ``tqdm.auto`` bar (done / total, failed, rate, ETA); a
    tqdm class, factory or bar works too. ``deps``, ``timeout`` (per run),
    ``max_steps``, ``cache``, ``strict`` and ``tracer`` go to each run as in
    ``Graph.run`` (each input's run is its own ``lift_graph.run`` span).

    ``backend``: where the runs happen, here by default. With
    ``lift_graph.ray.RayBackend(...)`` they run on Ray workers, and ``max_concurrency``
    defaults to the backend's capacity (see ``RayBackend``).

    With a ``store``, input ``i`` runs as ``execution_id=f"{batch_id}-{i}"``;
    ``batch_id`` is generated when None (``BatchResult.batch_id``). To resume after
    a crash, pass your own ``batch_id`` and the same store and inputs again:
    finished inputs are not run again, interrupted ones resume from their journal.

    An input's ``Exception`` (its run failed, its start callable raised) is kept in
    ``errors`` under its index; the other inputs go on. Every result is kept: for a
    source too long to hold, use ``imap``.

    :raises ConfigurationError: a bad option (before anything is pulled).
    :raises Exception: the source's own error: the runs in flight are cancelled.
    :raises asyncio.CancelledError: the caller was cancelled; every run was
        cancelled and awaited first (``KeyboardInterrupt`` likewise).
    """
    runs, limit = _settings(
        self,
        start,
        max_concurrency=max_concurrency,
        limits=limits,
        store=store,
        batch_id=batch_id,
        deps=deps,
        timeout=timeout,
        max_steps=max_steps,
        cache=cache,
        strict=strict,
        tracer=tracer,
        backend=backend,
    )
    began = time.perf_counter()
    batcher, bar, session = await _open(runs, states, limit, None, progress, backend)
    results: list[Any] = []
    errors: dict[int, BaseException] = {}
    try:
        batcher.admit()
        while (got := await batcher.next_outcome(ordered=False)) is not None:
            index, outcome = got
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            if isinstance(outcome, BaseException):
                errors[index] = outcome
            else:
                results[index] = outcome
    finally:
        await _close(batcher, bar, session)
    results.extend([None] * (batcher.admitted - len(results)))
    return BatchResult(
        results=results,
        errors=dict(sorted(errors.items())),
        batch_id=runs.batch_id,
        elapsed_ms=(time.perf_counter() - began) * 1000.0,
        peak_concurrency=batcher.peak_running,
    )


def graph_map_sync(
    self: Graph[StateT],
    start: Any,
    states: Iterable[StateT] | AsyncIterable[StateT],
    *,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
    progress: Any = False,
    store: Store | None = None,
    batch_id: str | None = None,
    deps: Any = None,
    timeout: float | None = None,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    cache: Store | None = None,
    strict: bool = False,
    tracer: Any = None,
    backend: Backend | None = None,
) -> BatchResult[StateT]:
    """``map`` for synchronous callers; also inside a running loop (see ``run_sync``).

    Inside a running loop the batch runs on a fresh loop in a helper thread: an
    async source must not be tied to the caller's loop.
    """
    return _run_blocking(
        lambda: graph_map(
            self,
            start,
            states,
            max_concurrency=max_concurrency,
            limits=limits,
            progress=progress,
            store=store,
            batch_id=batch_id,
            deps=deps,
            timeout=timeout,
            max_steps=max_steps,
            cache=cache,
            strict=strict,
            tracer=tracer,
            backend=backend,
        )
    )


async def graph_imap(
    self: Graph[StateT],
    start: Any,
    states: Iterable[StateT] | AsyncIterable[StateT],
    *,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
    progress: Any = False,
    store: Store | None = None,
    batch_id: str | None = None,
    deps: Any = None,
    timeout: float | None = None,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    cache: Store | None = None,
    strict: bool = False,
    window: int | None = None,
    tracer: Any = None,
    backend: Backend | None = None,
) -> AsyncIterator[tuple[int, RunResult[StateT] | BaseException]]:
    """Like ``map``, but yields ``(index, RunResult | exception)`` in input order as
    results come, holding at most ``window`` of them.

    Input ``i`` starts only while ``i < next index to yield + window`` (default
    ``4 * max_concurrency``), so a slow input holds back at most ``window``
    finished results; runs go on while the consumer works on a result. A failed
    input yields its exception (it is not raised). Leaving the loop early does not
    close the generator until it is garbage-collected, so wrap it: closing cancels
    and awaits every run still in flight::

        async with contextlib.aclosing(graph.imap(Start(), states)) as results:
            async for index, result in results:
                ...

    :raises ConfigurationError: a bad option (at the first iteration).
    :raises Exception: the source's own error, after the runs in flight are cancelled.
    """
    runs, limit = _settings(
        self,
        start,
        max_concurrency=max_concurrency,
        limits=limits,
        store=store,
        batch_id=batch_id,
        deps=deps,
        timeout=timeout,
        max_steps=max_steps,
        cache=cache,
        strict=strict,
        tracer=tracer,
        backend=backend,
    )
    check_count("window (results held for input order)", window)
    batcher, bar, session = await _open(
        runs, states, limit, window or WINDOW_FACTOR * limit, progress, backend
    )
    try:
        batcher.admit()
        while (got := await batcher.next_outcome(ordered=True)) is not None:
            yield got
    finally:
        await _close(batcher, bar, session)
