"""The dataflow loop: paths, forks, joins and pipelines.

A *path* runs node after node in one task until a node returns ``End``. A fork
starts one task per branch, each on an isolated copy of the path's state, and the
path waits (holding no slot) until the join policy decides. Pipelines start each
member the moment its own dependencies are done. Nothing polls: branch and member
completions arrive through done-callbacks, so a join of n branches costs O(n).

Every task belongs to the fork or pipeline that created it, and that fork cancels
and awaits whatever is still running before it returns or raises, so a cancelled
or timed-out run leaves no task behind.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from ._declared_reducers import reducers_for
from ._join_journal import PAUSE, WAIT, force_statuses, forced_decision, join_entry
from ._joins import Decision, JoinTracker, Verdict, join_error, settle_above_winner
from ._merge import merge_fork
from ._pipelines import PipelineBlocks
from ._records import INTERRUPTED, NodeRecord
from ._routing import mark_failed, route, set_record_error
from ._runner import RunSettings, cancel_requested, run_node
from ._state import Branch
from ._steps import DEFAULT_MAX_STEPS, TURN_INTERVAL, cancelled_record, step_limit_error
from ._tasks import Paused, cancel_and_wait, last_record
from .blocks import BranchStatus, Fork, JoinResult, JoinStrategy, Pipeline
from .errors import GraphDefinitionError, MergeError, NodeExecutionError
from .events import ForkStarted, JoinFinished, NodeFailed, NodeFinished
from .node import End, Interrupt
from .reducers import Reducer

__all__ = ["Paused", "Scheduler"]

#: Branches a fork creates before yielding once to the event loop.
_LAUNCH_BATCH = 32


class Scheduler(PipelineBlocks):
    """Runs one graph run's paths; owns its records and determinism flag."""

    #: Reducers for a plain ``dict`` state, from the TypedDict the graph's nodes
    #: declare (``Graph`` sets them; a dict carries no annotations of its own).
    dict_reducers: Mapping[str, Reducer] = MappingProxyType({})

    def __init__(
        self,
        settings: RunSettings,
        registry: Collection[type] | None = None,
        max_steps: int | None = DEFAULT_MAX_STEPS,
    ) -> None:
        self.settings = settings
        #: Node executions one path may run; None: no limit.
        self.max_steps = max_steps
        self.registry = registry
        #: The run's event sink (``settings.events``): None when nobody listens.
        self.emit = settings.events
        #: Raw record tuples (see ``NodeRecord``), in completion order.
        self.records: list[tuple[Any, ...]] = []
        self.deterministic = True
        #: (source class, target class, kind) transitions seen, for diagrams.
        self.edges: set[tuple[str, str, str]] = set()
        #: Nodes that returned ``Interrupt`` in this run: node key -> value.
        self.interrupts: dict[str, Any] = {}
        self.durable = settings.durable

    def _pause(self, key: str, node: Any, value: Any) -> Paused:
        self.interrupts[key] = value
        set_record_error(self.records, key, INTERRUPTED)
        if self.durable is not None:
            self.durable.interrupted(key, node, value)
        return Paused(key)

    # -- paths ------------------------------------------------------------------
    async def run_path(
        self,
        node: Any,
        branch: Branch,
        prefix: str,
        join: JoinResult[Any] | None = None,
        provenance: list[dict[str, Any]] | None = None,
    ) -> Any:
        """Run from ``node`` until ``End``; returns the End value.

        :raises StepLimitError: the path ran ``max_steps`` nodes and has not ended.
        """
        step = 0
        provenance = provenance if provenance is not None else []
        settings, records, emit, max_steps = self.settings, self.records, self.emit, self.max_steps
        registry, edges, clock = self.registry, self.edges, time.perf_counter
        tracing = settings.tracing
        turn = clock()  # when this path last gave the event loop a turn
        key = ""
        while True:
            if max_steps is not None and step >= max_steps:
                raise step_limit_error(prefix, key, node, max_steps, settings.execution_id)
            began = clock()
            if began - turn >= TURN_INTERVAL:
                # Nodes that never await would hold the loop: let timeouts,
                # cancellation and sibling branches in.
                await asyncio.sleep(0)
                turn = began = clock()
            key = f"{prefix}{step}.{type(node).__name__}"
            try:
                out, _, record = await run_node(
                    node,
                    branch,
                    key,
                    settings,
                    join=join,
                    provenance=provenance,
                    records=records,
                )
            except asyncio.CancelledError:
                records.append(cancelled_record(node, key, began))
                raise
            except Exception as exc:
                if emit is not None:
                    emit(NodeFailed(settings.execution_id, key, clock(), last_record(records), exc))
                raise
            if type(out) is Interrupt:
                raise self._pause(key, node, out.value)
            provenance.append(record.provenance())
            join = None
            try:
                out = route(node, out, key, registry, edges)
            except (NodeExecutionError, GraphDefinitionError) as exc:
                self._returned_badly(exc, key, record.attempts)
                raise
            if self.durable is not None:
                self.durable.node_done(key, node, out, branch.state, record)
            if emit is not None:
                emit(NodeFinished(settings.execution_id, key, clock(), record))
            step += 1
            if isinstance(out, End):
                return out.value
            if isinstance(out, Fork):
                fork = self._fork(out, branch, key, provenance)
                join = await (fork if tracing is None else tracing.fork(fork, key, out))
                if out.then is None:
                    return list(join.results)
                node = out.then
            elif isinstance(out, Pipeline):
                pipe = self._pipeline(out, branch, key, provenance)
                join = await (pipe if tracing is None else tracing.pipeline(pipe, key, out))
                if out.then is None:
                    return None
                node = out.then
            else:
                node = out

    def _returned_badly(
        self, exc: NodeExecutionError | GraphDefinitionError, key: str, attempt: int
    ) -> None:
        """Tie an error raised after the node returned to that execution: its
        fields, its record (now failed) and a ``node_failed`` event."""
        if isinstance(exc, NodeExecutionError):
            exc.execution_id = self.settings.execution_id
            exc.node_key = key
            exc.attempt = attempt
        failed = mark_failed(self.records, key, exc)
        if self.emit is not None and failed is not None:
            now = time.perf_counter()
            record = NodeRecord._make(failed)
            self.emit(NodeFailed(self.settings.execution_id, key, now, record, exc))

    # -- forks ------------------------------------------------------------------
    async def _judged_path(
        self, accept: Callable[[Any], Any], node: Any, child: Branch, prefix: str, prov: list[Any]
    ) -> tuple[Any, bool]:
        """Run one branch of a fork with ``accept``; returns its value and the verdict.

        ``accept`` runs in the branch's own task, so what it raises fails that branch
        (recorded in ``errors``) instead of vanishing in a done-callback.
        """
        value = await self.run_path(node, child, prefix, None, prov)
        try:
            verdict = accept(value)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except asyncio.CancelledError as raised:
            if cancel_requested():
                raise  # the join (or the run) cancelled this branch
            # As for a node (see run_node): a CancelledError nobody asked for would
            # look like a cancellation to the join, which would wait forever.
            raise NodeExecutionError(
                f"accept raised CancelledError on the value of branch {prefix!r} although "
                "nothing cancelled it; return False to reject a value, or raise an "
                "ordinary exception",
                execution_id=self.settings.execution_id,
            ) from raised
        return value, bool(verdict)

    async def _fork(
        self, fork: Fork[Any], branch: Branch, key: str, provenance: list[dict[str, Any]]
    ) -> JoinResult[Any]:
        n = len(fork.branches)
        keys = fork.keys
        accept = fork.accept
        tracker = JoinTracker(
            n, fork.join, fork.on_error, fork.required_successes(), accepting=accept is not None
        )
        statuses: list[BranchStatus | None] = [None] * n
        values: list[Any] = [None] * n
        accepted: list[bool | None] = [None] * n
        errors: dict[int, BaseException] = {}
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[Any] = loop.create_future()
        # Only what the merge needs outlives a branch: its changes (and, for a
        # MAJORITY vote on fields, its state). Finished tasks are dropped at once.
        changes: list[Any] = [None] * n
        states: list[Any] = [None] * n
        keep_state = fork.vote_on is not None
        tasks: set[asyncio.Task[Any]] = set()
        # Provenance entries of finished branches, flat (branch index, entry): no
        # per-branch container outlives its branch.
        prov_index: list[int] = []
        prov_entries: list[dict[str, Any]] = []
        launched = 0
        timed_out = False
        # A join the journal recorded is decided as recorded: only the branches that
        # succeeded run (from the journal), so a race is not run again.
        forced = self.durable.forced_join(key) if self.durable is not None else None
        expected = n if forced is None else forced["statuses"].count("succeeded")
        settled = 0
        paused = False
        if self.emit is not None:
            now = time.perf_counter()
            self.emit(ForkStarted(self.settings.execution_id, key, now, n, fork.join.name))

        def on_done(
            i: int, child: Branch, prov: list[dict[str, Any]], task: asyncio.Task[Any]
        ) -> None:
            nonlocal settled, paused
            tasks.discard(task)
            settled += 1
            for entry in prov:
                prov_index.append(i)
                prov_entries.append(entry)
            if statuses[i] is not None:  # already marked timed out
                if not task.cancelled():
                    task.exception()  # retrieve, so asyncio does not log it
                return
            if task.cancelled():
                statuses[i] = BranchStatus.CANCELLED
                return
            exc = task.exception()
            decision: Decision | None
            if isinstance(exc, Paused):
                paused = True
                decision = None
            elif exc is None:
                statuses[i] = BranchStatus.SUCCEEDED
                passed = True
                if accept is None:
                    values[i] = task.result()
                else:
                    values[i], passed = task.result()
                    accepted[i] = passed
                changes[i] = child.changes()
                if keep_state:
                    states[i] = child.state
                decision = tracker.record(i, True, passed)
            else:
                statuses[i] = BranchStatus.FAILED
                errors[i] = exc
                decision = tracker.record(i, False)
            if forced is not None:
                decision = forced_decision(forced) if settled == expected else None
            if decided.done():
                return
            if decision is not None and decision.verdict is not Verdict.WAIT:
                decided.set_result(decision)
            elif paused and settled == expected:
                decided.set_result(PAUSE)  # the rest finished; the paused ones wait

        decision = tracker.start()
        if forced is not None:
            decision = forced_decision(forced)
            timed_out = force_statuses(forced, statuses, errors, accepted)
            if expected:
                decision = WAIT
        try:
            if decision.verdict is Verdict.WAIT:
                base = branch.state
                for i, (bkey, node) in enumerate(zip(keys, fork.branches, strict=True)):
                    if statuses[i] is not None:
                        continue  # forced by the journal: not run again
                    child = Branch.fork(base)
                    prov: list[dict[str, Any]] = []
                    launched = i + 1
                    prefix = f"{key}/{bkey}/"
                    path = (
                        self.run_path(node, child, prefix, None, prov)
                        if accept is None
                        else self._judged_path(accept, node, child, prefix, prov)
                    )
                    if self.settings.tracing is not None:
                        path = self.settings.tracing.branch(path, key, bkey, prefix)
                    task = loop.create_task(path)
                    task.add_done_callback(partial(on_done, i, child, prov))
                    tasks.add(task)
                    if (i + 1) % _LAUNCH_BATCH == 0 and i + 1 < n:
                        # Let launched branches take their first step before creating
                        # more: quick branches finish and free their objects, so a huge
                        # fork never holds every branch alive at once (which would make
                        # the cyclic GC's full passes, and memory, grow with n). The
                        # start order stays branch order.
                        await asyncio.sleep(0)
                        if decided.done():
                            break  # the join already decided: never start the rest
                if fork.timeout is None:
                    decision = await decided
                else:
                    deadline = asyncio.timeout(fork.timeout)
                    try:
                        async with deadline:
                            decision = await decided
                    except TimeoutError:
                        if not deadline.expired():
                            raise
                        timed_out = True
                        for i in range(launched):
                            if statuses[i] is None:
                                statuses[i] = BranchStatus.FAILED
                                errors[i] = TimeoutError(
                                    f"branch {keys[i]!r} of the fork after {key} did not "
                                    f"finish within the fork timeout of {fork.timeout} s"
                                )
                        decision = tracker.timed_out()
                if decision.cancel_rest:
                    await cancel_and_wait(tasks)
                else:
                    pending = [t for t in tasks if not t.done()]
                    if pending:
                        await asyncio.wait(pending)
        finally:
            if any(not t.done() for t in tasks):
                await cancel_and_wait(tasks)

        if decision is PAUSE:
            raise Paused(key)
        final_status = [s if s is not None else BranchStatus.CANCELLED for s in statuses]
        ordered = fork.join is JoinStrategy.FIRST_ACCEPTED
        if ordered and decision.winner is not None:
            settle_above_winner(decision.winner, final_status, values, errors, accepted)
        # ALL and FIRST_ACCEPTED do not depend on which branch finished first.
        deterministic = (fork.join is JoinStrategy.ALL or ordered) and not timed_out
        if forced is not None:
            deterministic = forced["deterministic"]
        if not deterministic:
            self.deterministic = False
        join: JoinResult[Any] = JoinResult(
            keys=list(keys),
            results=values,
            errors={keys[i]: e for i, e in sorted(errors.items())},
            statuses=final_status,
            strategy=fork.join,
            deterministic=deterministic,
            merge=fork.merge,
            timed_out=timed_out,
            accepted=accepted,
        )
        if decision.verdict is Verdict.FAIL:
            self._emit_join(key, join)
            raise join_error(key, join, errors, keys, accepting=accept is not None)
        ok = [i for i, s in enumerate(final_status) if s is BranchStatus.SUCCEEDED]
        if ok:
            reducers = reducers_for(branch.state, self.dict_reducers)
            try:
                merged = merge_fork(
                    branch.state, fork, ok, values, changes, states, reducers, decision.winner
                )
            except MergeError as exc:
                exc.join = join
                raise
            if merged.winner is not None:
                join.winner = keys[merged.winner]
            join.agreement = merged.agreement
            join.agreement_ratio = merged.agreement_ratio
            branch.state = merged.state
            branch.owned.update(merged.changed)
            used_set = set(merged.used)
            for j in sorted(range(len(prov_index)), key=prov_index.__getitem__):
                if prov_index[j] in used_set:
                    provenance.append(prov_entries[j])
        if self.durable is not None and forced is None:
            self.durable.join_done(key, join_entry(join, decision, errors))
        self._emit_join(key, join)
        return join

    def _emit_join(self, key: str, join: JoinResult[Any]) -> None:
        if self.emit is not None:
            now = time.perf_counter()
            self.emit(JoinFinished(self.settings.execution_id, key, now, join))
