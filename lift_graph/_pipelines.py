"""Pipelines: each member starts the moment the members it depends on are done.

A mixin of ``Scheduler``: a pipeline is one of the blocks a path may return.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from ._declared_reducers import reducers_for
from ._joins import join_error
from ._merge import apply_sequential
from ._plan import declared_io, plan_pipeline
from ._routing import member_value
from ._runner import RunSettings, run_node
from ._state import Branch
from ._steps import cancelled_record
from ._tasks import Paused, cancel_and_wait, last_record
from .blocks import BranchStatus, JoinResult, Pipeline
from .errors import MergeError, NodeExecutionError
from .events import EventSink, NodeFailed, NodeFinished
from .node import Interrupt
from .reducers import Reducer

__all__ = ["PipelineBlocks"]


class PipelineBlocks:
    """Runs ``Pipeline`` blocks for the scheduler (which provides these attributes)."""

    settings: RunSettings
    records: list[tuple[Any, ...]]
    emit: EventSink | None
    durable: Any
    dict_reducers: Mapping[str, Reducer]

    def _pause(self, key: str, node: Any, value: Any) -> Paused:
        raise NotImplementedError

    def _returned_badly(self, exc: Any, key: str, attempt: int) -> None:
        raise NotImplementedError

    async def _member(self, node: Any, child: Branch, key: str, prov: list[Any]) -> Any:
        """Run pipeline member ``node`` (a path of one node); returns its End value."""
        began = time.perf_counter()
        try:
            out, _, record = await run_node(
                node, child, key, self.settings, provenance=prov, records=self.records
            )
        except asyncio.CancelledError:
            self.records.append(cancelled_record(node, key, began))
            raise
        except Exception as exc:
            if self.emit is not None:
                failed = last_record(self.records)
                now = time.perf_counter()
                self.emit(NodeFailed(self.settings.execution_id, key, now, failed, exc))
            raise
        if type(out) is Interrupt:
            raise self._pause(key, node, out.value)
        prov.append(record.provenance())
        try:
            value = member_value(node, out)
        except NodeExecutionError as exc:
            self._returned_badly(exc, key, record.attempts)
            raise
        if self.durable is not None:
            self.durable.node_done(key, node, out, child.state, record)
        if self.emit is not None:
            now = time.perf_counter()
            self.emit(NodeFinished(self.settings.execution_id, key, now, record))
        return value

    async def _pipeline(
        self, pipe: Pipeline[Any], branch: Branch, key: str, provenance: list[dict[str, Any]]
    ) -> JoinResult[Any]:
        nodes = pipe.nodes
        n = len(nodes)
        base = branch.state
        reducers = reducers_for(base, self.dict_reducers)
        plan = plan_pipeline(tuple(map(declared_io, nodes)), frozenset(reducers))
        statuses: list[BranchStatus | None] = [None] * n
        values: list[Any] = [None] * n
        changes: list[Any] = [None] * n
        errors: dict[int, BaseException] = {}
        waiting = [len(d) for d in plan.deps]
        provs: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        tasks: list[asyncio.Task[Any]] = []
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        finished = 0
        paused = 0

        def start(i: int) -> None:
            anc = plan.ancestors[i]
            view = base
            if anc:
                view = apply_sequential(base, [changes[a] for a in anc], reducers, keys=anc)[0]
            child = Branch.fork(view)
            task = loop.create_task(
                self._member(nodes[i], child, f"{key}/p{i}/0.{type(nodes[i]).__name__}", provs[i])
            )
            task.add_done_callback(partial(on_done, i, child))
            tasks.append(task)

        def on_done(i: int, child: Branch, task: asyncio.Task[Any]) -> None:
            nonlocal finished, paused
            if task.cancelled():
                statuses[i] = BranchStatus.CANCELLED
                return
            exc = task.exception()
            if isinstance(exc, Paused):
                paused += 1
                if finished + paused == len(tasks) and not done.done():
                    done.set_exception(exc)  # nothing else can start: pause the block
                return
            if exc is not None:
                statuses[i] = BranchStatus.FAILED
                errors[i] = exc
                if not done.done():
                    done.set_result(False)
                return
            statuses[i] = BranchStatus.SUCCEEDED
            values[i] = task.result()
            changes[i] = child.changes()
            finished += 1
            if done.done():
                return
            ready = [j for j in plan.dependents[i] if _dec(waiting, j) == 0]
            try:
                for j in plan.ready_order(ready):
                    start(j)
            except MergeError as merge_exc:
                # A reducer failed building a member's view: raised in a callback it
                # would only be logged, and the pipeline would wait forever.
                done.set_exception(merge_exc)
                return
            if finished == n:
                done.set_result(True)
            elif paused and finished + paused == len(tasks):
                done.set_exception(Paused(key))

        ok = True
        try:
            if n:
                for i in plan.ready_order(i for i in range(n) if not plan.deps[i]):
                    start(i)
                ok = await done
        finally:
            await cancel_and_wait(tasks)
        final_status = [s if s is not None else BranchStatus.CANCELLED for s in statuses]
        join: JoinResult[Any] = JoinResult(
            keys=list(range(n)),
            results=values,
            errors=dict(sorted(errors.items())),
            statuses=final_status,
        )
        if not ok:
            raise join_error(key, join, errors, list(range(n)))
        merged, changed = apply_sequential(base, changes, reducers)
        branch.state = merged
        branch.owned.update(changed)
        for p in provs:
            provenance.extend(p)
        return join


def _dec(counts: list[int], j: int) -> int:
    counts[j] -= 1
    return counts[j]
