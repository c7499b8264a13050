"""``ParallelExecutor``: run independent nodes concurrently, isolated, then merge.

The executor is the building block for callers that schedule nodes themselves;
``Graph`` uses the same node runner with a full dataflow scheduler on top.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from ._counters import Slots as _Slots
from ._declared_reducers import reducers_for, reducers_of_types
from ._merge import BranchOutcome, coerce_strategy, merge_outcomes
from ._plan import state_type_of
from ._records import NodeRecord
from ._runner import RunSettings, run_node
from ._state import Branch
from .blocks import MergeStrategy
from .errors import ConfigurationError, InvalidNodeError, MergeError, ParallelExecutionError
from .limits import Limits
from .node import End, NodeResult, RunContext, check_node, is_node

__all__ = ["ParallelExecutor"]

StateT = TypeVar("StateT")


def _iterable(obj: object) -> bool:
    try:
        iter(obj)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


class ParallelExecutor(Generic[StateT]):
    """Runs nodes concurrently, each on an isolated copy of the context's state.

    At most ``max_concurrent`` nodes run at once (across every call on this
    executor); ``limits`` adds shared global / per-provider limits on top. With
    ``strict=True`` a node that mutates a state field it did not declare in
    ``writes`` fails with ``UndeclaredMutationError``.

    :raises ConfigurationError: ``max_concurrent < 1``.
    """

    def __init__(
        self,
        max_concurrent: int = 4,
        *,
        limits: Limits | None = None,
        strict: bool = False,
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ConfigurationError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        if max_concurrent < 1:
            raise ConfigurationError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self.limits = limits
        self.strict = strict
        self._slots = _Slots(max_concurrent)

    def __repr__(self) -> str:
        return f"ParallelExecutor(max_concurrent={self.max_concurrent})"

    @property
    def peak_in_flight(self) -> int:
        """Most nodes this executor ever ran at once."""
        return self._slots.peak

    def _settings(self, ctx: RunContext[StateT]) -> RunSettings:
        return RunSettings(
            execution_id=ctx.execution_id or uuid.uuid4().hex,
            user_id=ctx.user_id,
            deps=ctx.deps,
            metadata=dict(ctx.metadata),
            limits=self.limits,
            run_slots=self._slots,
            strict=self.strict,
        )

    async def execute_single_with_isolation(
        self, node: Any, ctx: RunContext[StateT], *, key: str | None = None
    ) -> NodeResult[StateT]:
        """Run one node on an isolated copy of ``ctx.state``; never raises for the node.

        The node's exception (after its retries) is in ``NodeResult.error``;
        ``ctx`` and its state are left unchanged. Cancellation propagates.

        :raises InvalidNodeError: ``node`` is not a node.
        :raises ConfigurationError: one of the node's attributes is invalid.
        :raises InvalidStateError: ``ctx.state`` cannot be copied to isolate the node.
        """
        check_node(node, "execute_single_with_isolation")
        return await self._run_one(node, ctx, key or f"0.{type(node).__name__}")

    async def _run_one(self, node: Any, ctx: RunContext[StateT], key: str) -> NodeResult[StateT]:
        branch = Branch.fork(ctx.state)
        settings = self._settings(ctx)
        provenance = list(ctx.provenance)
        started = time.perf_counter()
        # run_node records a failed node's attempts and time inside `run` here.
        records: list[tuple[Any, ...]] = []
        try:
            out, node_ctx, record = await run_node(
                node, branch, key, settings, join=ctx.join, provenance=provenance, records=records
            )
        except asyncio.CancelledError:
            raise  # this call was cancelled (run_node turns a node's own into a failure)
        except Exception as exc:  # noqa: BLE001 - captured per node, by contract
            elapsed = (time.perf_counter() - started) * 1000.0
            attempts = 1
            if records:
                last = NodeRecord(*records[-1])
                elapsed, attempts = last.execution_time_ms, last.attempts
            failed_ctx: RunContext[StateT] = RunContext(
                state=branch.state,
                execution_id=settings.execution_id,
                user_id=ctx.user_id,
                metadata=settings.metadata,
                provenance=provenance,
                deps=ctx.deps,
                node_key=key,
            )
            return NodeResult(
                node,
                None,
                failed_ctx,
                elapsed,
                exc,
                key=key,
                attempts=attempts,
                base_context=ctx,
                branch=branch,
            )
        provenance.append(record.provenance())
        return NodeResult(
            node,
            out,
            node_ctx,
            record.execution_time_ms,
            None,
            key=key,
            attempts=record.attempts,
            base_context=ctx,
            branch=branch,
        )

    async def execute_parallel(
        self, nodes: Iterable[Any], ctx: RunContext[StateT]
    ) -> list[NodeResult[StateT]]:
        """Run ``nodes`` concurrently; results come back in input order.

        Each node's exception is captured in its ``NodeResult``. Cancelling the call
        cancels every node and waits for them.

        :raises InvalidNodeError: an element of ``nodes`` is not a node.
        :raises ConfigurationError: a node's ``timeout`` / ``retry`` / ``provider`` /
            ``reads`` / ``writes`` attribute is invalid.
        :raises InvalidStateError: ``ctx.state`` cannot be copied to isolate the nodes
            (an opaque object holding a lock, say). A state that does not fit one node
            (another model, None, a missing written field) is that node's error.
        :raises ParallelExecutionError: every node failed (``partial_results`` holds
            all results, ``failed_nodes`` the nodes).
        """
        if is_node(nodes) or isinstance(nodes, (str, bytes, type)) or not _iterable(nodes):
            raise InvalidNodeError(
                f"execute_parallel takes a list of nodes, got {nodes!r} of type "
                f"{type(nodes).__name__}: wrap a single node in a list"
            )
        nodes = list(nodes)  # a generator is consumed once: iterate a copy
        for i, node in enumerate(nodes):
            check_node(node, f"execute_parallel nodes[{i}]")
        if not nodes:
            return []
        results = await asyncio.gather(
            *(self._run_one(n, ctx, f"{i}.{type(n).__name__}") for i, n in enumerate(nodes))
        )
        if all(r.error is not None for r in results):
            first = results[0].error
            raise ParallelExecutionError(
                f"all {len(results)} nodes failed; first: {type(results[0].node).__name__}: "
                f"{type(first).__name__}: {first}",
                failed_nodes=[r.node for r in results],
                partial_results=results,
            ) from first
        return results

    def merge_states(
        self,
        results: Sequence[NodeResult[StateT]],
        strategy: MergeStrategy = MergeStrategy.FIRST_SUCCESS,
        *,
        vote_fields: Sequence[str] | None = None,
        vote_key: Callable[[Any], Any] | None = None,
    ) -> RunContext[StateT]:
        """Merge the isolated states of ``results`` into a new context.

        FIRST_SUCCESS takes the first successful result by index; ALL_SUCCESS needs
        every result to succeed and merges their changes field by field in index
        order (reducers declared on the state model apply; for a plain ``dict``
        state, those of the TypedDict the nodes declare as ``BaseNode[State]``);
        MAJORITY hashes each
        result's canonical output (its ``End`` value, the fields in ``vote_fields``,
        or else its changed fields), picks the most common, ties to the lowest index,
        and reports the agreement in ``metadata["merge"]``. ``vote_key`` (MAJORITY
        only) normalizes each vote before it is hashed, as ``Fork(vote_key=...)``.

        :raises MergeError: no success, a failure under ALL_SUCCESS, conflicting writes,
            ``vote_key`` raised.
        :raises ConfigurationError: an unknown strategy; ``vote_key`` not callable or
            given without MAJORITY.
        """
        strategy = coerce_strategy(strategy)
        if not results:
            raise MergeError("merge_states needs at least one NodeResult, got none")
        base_ctx = results[0].base_context
        if base_ctx is None or any(r.base_context is not base_ctx for r in results):
            raise MergeError(
                "merge_states needs results of one execute_parallel call (same base context)"
            )
        outcomes = [
            BranchOutcome(
                key=r.key,
                index=i,
                succeeded=r.error is None,
                value=r.value,
                has_value=isinstance(r.next_node, End),
                state=r.context.state,
                changes=r.branch.changes() if r.error is None else {},
            )
            for i, r in enumerate(results)
        ]
        merged = merge_outcomes(
            base_ctx.state,
            outcomes,
            strategy,
            reducers_for(
                base_ctx.state,
                reducers_of_types(state_type_of(type(r.node)) for r in results),
            ),
            vote_fields=vote_fields,
            vote_key=vote_key,
        )
        provenance = list(base_ctx.provenance)
        for i in merged.used:
            provenance.extend(results[i].context.provenance[len(base_ctx.provenance) :])
        info: dict[str, Any] = {
            "strategy": strategy.name,
            "used": [results[i].key for i in merged.used],
            "changed_fields": sorted(merged.changed),
        }
        if merged.winner is not None:
            info["winner"] = results[merged.winner].key
        if merged.agreement is not None:
            info.update(
                agreement=merged.agreement,
                agreement_ratio=merged.agreement_ratio,
                hash=merged.vote_hash,
            )
        return RunContext(
            state=merged.state,
            execution_id=base_ctx.execution_id,
            user_id=base_ctx.user_id,
            metadata={**base_ctx.metadata, "merge": info},
            provenance=provenance,
            deps=base_ctx.deps,
        )
