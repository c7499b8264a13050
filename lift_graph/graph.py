"""``Graph``: built from node classes, run with ``run`` / ``run_sync`` / ``iter``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import _diagram
from . import batch as _batch
from ._config import check_count, check_number
from ._counters import Slots as _Slots
from ._declared_reducers import reducers_of_types
from ._plan import state_type_of, validate_node_classes
from ._records import NodeRecord, record_order
from ._runner import RunSettings
from ._runs import check_store, close_run, open_resume, open_run, output_summary
from ._scheduler import Paused, Scheduler
from ._state import Branch
from ._steps import DEFAULT_MAX_STEPS, check_max_steps
from ._sync import _run_blocking
from ._tracing import open_tracing
from .errors import ConfigurationError, RunTimeoutError, UnknownNodeError
from .events import EventSink, GraphEvent, iterate
from .limits import Limits
from .node import BaseNode, check_node
from .store import GraphState, Store
from .timeline import Timeline

__all__ = ["Graph", "GraphEvent", "RunResult"]

StateT = TypeVar("StateT")


@dataclass(slots=True)
class RunResult(Generic[StateT]):
    """The outcome of one run.

    ``records`` holds one ``NodeRecord`` per node execution, sorted by node key
    (the node's position in the graph, numeric parts as numbers), so two runs list
    them in the same order; it is built on first access.
    ``deterministic`` is False when a race (a join ANY / FIRST / QUORUM, a fork
    timeout that fired) or a node declared non-deterministic took part.
    ``output`` is None for a run paused by ``interrupts``. ``cache_hits`` /
    ``cache_misses`` count lookups of cached nodes (``graph.run(..., cache=store)``).
    """

    output: Any
    state: StateT
    execution_id: str
    deterministic: bool
    elapsed_ms: float
    peak_concurrency: int = 0
    #: Nodes that returned ``Interrupt``: node key -> value (empty when none). The
    #: run is paused; ``Graph.resume(execution_id, store=..., answers=...)`` goes on.
    interrupts: dict[str, Any] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    _raw_records: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    _records: list[NodeRecord] | None = field(default=None, repr=False)
    #: When the run began (``perf_counter``): time 0 of its timeline.
    _began: float | None = field(default=None, repr=False)

    @property
    def records(self) -> list[NodeRecord]:
        if self._records is None:
            self._records = sorted(map(NodeRecord._make, self._raw_records), key=record_order)
        return self._records

    def timeline(self, *, width: int = 960, max_lanes: int = 40) -> Timeline:
        """What overlapped in this run, drawn as SVG (see ``lift_graph.Timeline``)."""
        return Timeline.of(self, width=width, max_lanes=max_lanes)


class Graph(Generic[StateT]):
    """A graph of node classes; validated when built.

    Edges come from each node's ``run`` return annotation (``A | B | End[str]``),
    from forks' branches, and for pipelines from ``reads`` / ``writes``.

    :raises InvalidNodeError: an entry of ``nodes`` is not a BaseNode subclass, or
        its ``run`` is a plain ``def`` (declare it ``async def run``).
    :raises UnknownNodeError: a return annotation names a class not in ``nodes``.
    :raises UnknownFieldError: a node's reads / writes name a field its state lacks.
    :raises GraphDefinitionError: the nodes' TypedDict states declare different
        reducers for one key.
    """

    def __init__(self, nodes: Sequence[type[BaseNode[StateT]]], *, name: str | None = None) -> None:
        self.name = name or "graph"
        self._by_name = validate_node_classes(nodes)
        self.node_classes: frozenset[type] = frozenset(self._by_name.values())
        # A TypedDict state is a plain dict at run time: its Annotated reducers
        # come from the nodes' `BaseNode[State]` parameter, as LangGraph users expect.
        self._dict_reducers = reducers_of_types(state_type_of(c) for c in self._by_name.values())
        # Transitions seen in runs: forks name their branch classes only at run time.
        self._observed: set[tuple[str, str, str]] = set()
        self._all_deterministic = all(
            getattr(cls, "deterministic", True) for cls in self.node_classes
        )

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, nodes={sorted(self._by_name)})"

    # -- batches: one graph over many inputs (lift_graph.batch) -------------------
    map = _batch.graph_map
    map_sync = _batch.graph_map_sync
    imap = _batch.graph_imap

    # -- running ----------------------------------------------------------------
    def _check_start(self, start: Any, what: str) -> None:
        """:raises InvalidNodeError / UnknownNodeError: ``start`` is not a node of this
        graph."""
        check_node(start, what)
        if type(start) not in self.node_classes:
            raise UnknownNodeError(
                f"start node {type(start).__name__} is not in this graph: add it to "
                "Graph(nodes=[...])",
                node=type(start).__name__,
            )

    def _prepare(
        self,
        start: Any,
        max_concurrency: int | None,
        limits: Limits | None,
        timeout: float | None,
    ) -> _Slots | None:
        self._check_start(start, "Graph.run start")
        check_count("max_concurrency", max_concurrency)
        if limits is not None and not isinstance(limits, Limits):
            raise ConfigurationError(f"limits must be a Limits object, got {type(limits).__name__}")
        check_number("timeout (seconds)", timeout, strictly_above=True, optional=True)
        return _Slots(max_concurrency) if max_concurrency else None

    async def run(
        self,
        start: Any,
        *,
        state: StateT,
        deps: Any = None,
        max_concurrency: int | None = None,
        limits: Limits | None = None,
        timeout: float | None = None,
        user_id: str | None = None,
        execution_id: str | None = None,
        strict: bool = False,
        metadata: dict[str, Any] | None = None,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        store: Store | None = None,
        cache: Store | None = None,
        tracer: Any = None,
        _events: EventSink | None = None,
    ) -> RunResult[StateT]:
        """Run from ``start`` until its path ends; returns a ``RunResult``.

        The run works on its own shallow copy of ``state``, owning (deep-copying) the
        fields each node declares in ``writes`` and every field of a node that
        declares none; a node that mutates in place a field it did not declare
        changes the shared object (``strict=True`` turns that into an error). ``max_concurrency``
        caps nodes running at once in this run; ``limits`` adds limits shared with
        every other run given the same object. ``strict`` fails a node that mutates
        a state field it did not declare in ``writes``. ``max_steps`` bounds the node
        executions of each path (the main path, each fork branch, each pipeline
        member); ``None`` disables it.

        With a ``store`` the run is durable: each completed node is journaled before
        anything that depends on it starts, and ``resume(result.execution_id,
        store=store)`` continues the run after a crash without running a journaled
        node again. ``cache`` (a store) serves nodes whose class sets
        ``cache = CachePolicy(...)``.

        ``tracer`` (OpenTelemetry, the ``[otel]`` extra): None uses the global tracer
        provider when one is configured, a ``Tracer`` or ``TracerProvider`` is used as
        given, False turns tracing off (see docs/tracing.md).

        :raises RunTimeoutError: ``timeout`` expired; every task of the run has been
            cancelled and awaited.
        :raises StepLimitError: a path ran ``max_steps`` nodes without ending (in a
            fork branch, it fails that branch, and so usually the join).
        :raises ConfigurationError: a bad ``max_concurrency``, ``limits``,
            ``timeout``, ``max_steps`` or ``tracer``.
        :raises JoinError: a fork's join failed (finished branches' values kept).
        :raises MergeError: branch writes conflict (``join`` attached).
        :raises CheckpointError: with a store: a node, return or state field that
            has no JSON form (naming node and field), or a taken ``execution_id``.
        :raises Exception: a node's own error, once its retries are spent.
        """
        run_slots = self._prepare(start, max_concurrency, limits, timeout)
        max_steps = check_max_steps(max_steps)
        settings = RunSettings(
            execution_id=execution_id or uuid.uuid4().hex,
            user_id=user_id,
            deps=deps,
            metadata=dict(metadata or {}),
            limits=limits,
            run_slots=run_slots,
            strict=strict,
            events=_events,
        )
        settings.tracing = open_tracing(tracer, self.name, settings.execution_id)
        row = None
        if store is not None or cache is not None:
            check_store("store", store)
            check_store("cache", cache)
            settings.durable, row = open_run(
                by_name=self._by_name,
                graph_name=self.name,
                start=start,
                state=state,
                execution_id=settings.execution_id,
                store=store,
                cache=cache,
                user_id=user_id,
                metadata=settings.metadata,
            )
        execute = self._execute(start, state, settings, timeout, max_steps, row)
        return await (execute if settings.tracing is None else settings.tracing.run(execute, start))

    async def _execute(
        self,
        start: Any,
        state: StateT,
        settings: RunSettings,
        timeout: float | None,
        max_steps: int | None,
        row: GraphState | None,
    ) -> RunResult[StateT]:
        scheduler = Scheduler(settings, self.node_classes, max_steps)
        scheduler.dict_reducers = self._dict_reducers
        root = Branch.fork(state)
        provenance: list[dict[str, Any]] = []
        began = time.perf_counter()
        output: Any = None
        try:
            if timeout is None:
                output = await scheduler.run_path(start, root, "", None, provenance)
            else:
                deadline = asyncio.timeout(timeout)
                try:
                    async with deadline:
                        output = await scheduler.run_path(start, root, "", None, provenance)
                except TimeoutError as exc:
                    if not deadline.expired():
                        raise
                    raise RunTimeoutError(
                        f"run {settings.execution_id} did not finish within {timeout} s"
                    ) from exc
        except Paused:
            pass  # scheduler.interrupts says where; the result carries them
        except Exception as exc:
            if row is not None:
                close_run(
                    settings.durable,
                    row,
                    "failed",
                    root.state,
                    provenance=provenance,
                    result={"error": f"{type(exc).__name__}: {exc}"},
                )
            raise
        if row is not None:
            if scheduler.interrupts:
                close_run(
                    settings.durable,
                    row,
                    "interrupted",
                    root.state,
                    provenance=provenance,
                    result={"interrupts": output_summary(scheduler.interrupts)},
                )
            else:
                close_run(
                    settings.durable,
                    row,
                    "finished",
                    root.state,
                    provenance=provenance,
                    result={"output": output_summary(output)},
                )
        self._observed |= scheduler.edges
        # Deterministic by construction: no race decided a join, and every node
        # class that ran vouches for itself.
        deterministic = scheduler.deterministic
        if deterministic and not self._all_deterministic:
            ran = {r[1] for r in scheduler.records}
            deterministic = all(
                getattr(self._by_name.get(name), "deterministic", True) for name in ran
            )
        run_slots, limits = settings.run_slots, settings.limits
        peak = run_slots.peak if run_slots is not None else (limits.peak if limits else 0)
        return RunResult(
            output=output,
            state=root.state,
            execution_id=settings.execution_id,
            _raw_records=scheduler.records,
            deterministic=deterministic,
            elapsed_ms=(time.perf_counter() - began) * 1000.0,
            _began=began,
            peak_concurrency=peak,
            interrupts=dict(scheduler.interrupts),
            cache_hits=settings.durable.hits if settings.durable is not None else 0,
            cache_misses=settings.durable.misses if settings.durable is not None else 0,
        )

    def run_sync(
        self,
        start: Any,
        *,
        state: StateT,
        deps: Any = None,
        max_concurrency: int | None = None,
        limits: Limits | None = None,
        timeout: float | None = None,
        user_id: str | None = None,
        execution_id: str | None = None,
        strict: bool = False,
        metadata: dict[str, Any] | None = None,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        store: Store | None = None,
        cache: Store | None = None,
        tracer: Any = None,
    ) -> RunResult[StateT]:
        """``run`` for synchronous callers; also works inside a running loop (Jupyter).

        With no running loop it uses ``asyncio.run``. Inside one (a notebook cell) it
        runs the graph on a fresh loop in a helper thread, with the caller's context
        variables, and blocks until it is done.
        """
        return _run_blocking(
            lambda: self.run(
                start,
                state=state,
                deps=deps,
                max_concurrency=max_concurrency,
                limits=limits,
                timeout=timeout,
                user_id=user_id,
                execution_id=execution_id,
                strict=strict,
                metadata=metadata,
                max_steps=max_steps,
                store=store,
                cache=cache,
                tracer=tracer,
            )
        )

    async def resume(
        self,
        execution_id: str,
        *,
        store: Store,
        answers: dict[str, Any] | None = None,
        deps: Any = None,
        limits: Limits | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        cache: Store | None = None,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        strict: bool = False,
        tracer: Any = None,
        _events: EventSink | None = None,
    ) -> RunResult[StateT]:
        """Continue run ``execution_id`` from ``store``: after a crash, a failure or
        an ``Interrupt``.

        The run is replayed from its start: every node whose completion the journal
        holds (in forks and pipelines too) is not run again, its recorded writes and
        return are applied instead, so output and state equal those of a run that
        was never interrupted. Nodes that were in flight when the process died run
        again (side effects are at-least-once). ``answers`` maps the key of a node
        that returned ``Interrupt`` to a person's answer: that node runs again with
        ``ctx.answer`` set; interrupts not answered stay pending. A finished run
        returns its stored result without running anything. ``deps`` are not
        stored: pass them again. ``tracer`` as in ``run``: replayed nodes get spans
        with ``lift_graph.cache_hit`` set.

        :raises RunNotFoundError: the store has no such run.
        :raises IncompatibleRunError: a journaled node class is not in this graph, or
            the state model changed.
        :raises CheckpointError: a stored row is corrupt, edited or not JSON; an
            answer names no pending interrupt.
        """
        check_store("store", store)
        check_store("cache", cache)
        tracing = open_tracing(tracer, self.name, execution_id)
        resumed = open_resume(
            by_name=self._by_name,
            store=store,
            execution_id=execution_id,
            answers=answers,
            cache=cache,
        )
        run_slots = self._prepare(resumed.start, max_concurrency, limits, timeout)
        max_steps = check_max_steps(max_steps)
        row = resumed.row
        settings = RunSettings(
            execution_id=execution_id,
            user_id=row.user_id,
            deps=deps,
            metadata=dict(row.metadata),
            limits=limits,
            run_slots=run_slots,
            strict=strict,
            durable=resumed.durable,
            events=_events,
            tracing=tracing,
        )
        keep = None if resumed.durable.finished else row
        execute = self._execute(resumed.start, resumed.state, settings, timeout, max_steps, keep)
        return await (execute if tracing is None else tracing.run(execute, resumed.start))

    def resume_sync(
        self,
        execution_id: str,
        *,
        store: Store,
        answers: dict[str, Any] | None = None,
        deps: Any = None,
        limits: Limits | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        cache: Store | None = None,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        strict: bool = False,
        tracer: Any = None,
    ) -> RunResult[StateT]:
        """``resume`` for synchronous callers (see ``run_sync``)."""
        return _run_blocking(
            lambda: self.resume(
                execution_id,
                store=store,
                answers=answers,
                deps=deps,
                limits=limits,
                timeout=timeout,
                max_concurrency=max_concurrency,
                cache=cache,
                max_steps=max_steps,
                strict=strict,
                tracer=tracer,
            )
        )

    def iter(self, start: Any, **kwargs: Any) -> AsyncGenerator[GraphEvent, None]:
        """Run (``run``'s arguments) and yield typed events as they happen (see
        ``lift_graph.events``): ``run_started`` first, ``run_finished`` with the
        ``RunResult`` last; a failed run raises after the events so far.

        Closing the generator cancels the run and waits for it. An ``async for``
        left early closes it only when it is garbage-collected, so wrap it::

            async with contextlib.aclosing(graph.iter(start, state=s)) as events:
                async for event in events:
                    ...
        """
        return iterate(self, start, kwargs)

    # -- pictures ---------------------------------------------------------------
    def mermaid(self) -> str:
        """A mermaid flowchart, drawn before any run: return annotations, the forks
        and pipelines ``run`` builds (branch classes, join node and strategy, member
        dependencies), and dotted, transitions seen only in this graph's runs."""
        return _diagram.render(self._by_name, self._observed, self._dict_reducers)

    def _repr_markdown_(self) -> str:
        return _diagram.markdown(self.mermaid())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        text = self.mermaid()  # markdown: JupyterLab >= 4.1 draws it; text elsewhere
        return {"text/markdown": _diagram.markdown(text), "text/plain": text}
