"""Join strategies, failure modes, fork timeouts and cancellation.

Each test shows which siblings ran to the end, which were cancelled, and what the
join node (or the ``JoinError``) saw.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    BranchStatus,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinError,
    JoinResult,
    JoinStrategy,
    MergeStrategy,
    RunContext,
    RunTimeoutError,
)


class State(BaseModel):
    log: list[str] = []


class Boom(Exception):
    pass


@dataclass
class Tracker:
    """What the branches did, shared through ``deps``."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    joins: list[JoinResult[Any]] = field(default_factory=list)
    all_started: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0


@dataclass
class Work(BaseNode[State]):
    """Sleeps ``delay``, then returns ``End(name)`` or raises ``Boom`` if ``fail``."""

    name: str
    delay: float = 0.0
    fail: bool = False

    async def run(self, ctx: RunContext[State]) -> End[str]:
        t: Tracker = ctx.deps
        t.started.append(self.name)
        if t.expected and len(t.started) >= t.expected:
            t.all_started.set()
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            t.cancelled.append(self.name)
            raise
        if self.fail:
            t.finished.append(self.name)
            raise Boom(f"{self.name} failed")
        ctx.state.log.append(self.name)
        t.finished.append(self.name)
        return End(self.name)


@dataclass
class After(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[list[Any]]:
        assert ctx.join is not None
        t: Tracker = ctx.deps
        t.joins.append(ctx.join)
        return End(list(ctx.join.results))


@dataclass
class Start(BaseNode[State]):
    fork: Fork[State]

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return self.fork


GRAPH = Graph(nodes=[Start, Work, After])


async def run_fork(fork: Fork[State], tracker: Tracker | None = None) -> tuple[Any, Tracker]:
    t = tracker or Tracker()
    result = await asyncio.wait_for(GRAPH.run(Start(fork), state=State(), deps=t), timeout=20)
    return result, t


def no_engine_tasks() -> None:
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    assert others == [], f"tasks left behind: {others}"


# -- ALL ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_all_fail_all_cancels_running_siblings() -> None:
    fork = Fork(
        [Work("fast"), Work("bad", 0.05, fail=True), Work("slow", 10.0)],
        then=After(),
        on_error=FailureMode.FAIL_ALL,
    )
    with pytest.raises(JoinError) as info:
        await run_fork(fork, t := Tracker())
    err = info.value
    assert t.cancelled == ["slow"]
    assert "slow" not in t.finished
    assert t.joins == []  # the join node never ran
    assert set(err.errors) == {1}
    assert isinstance(err.errors[1], Boom)
    assert err.__cause__ is err.errors[1]
    j = err.join
    assert j.results == ["fast", None, None]  # the finished branch's value is kept
    assert j.statuses == [BranchStatus.SUCCEEDED, BranchStatus.FAILED, BranchStatus.CANCELLED]
    assert (j.total, j.succeeded, j.failed, j.cancelled) == (3, 1, 1, 1)
    assert "bad" in str(err) or "Boom" in str(err)
    no_engine_tasks()


@pytest.mark.asyncio
async def test_all_fail_first_lets_siblings_finish_then_fails() -> None:
    fork = Fork(
        [
            Work("ok0"),
            Work("late-bad", 0.15, fail=True),
            Work("slow-ok", 0.25),
            Work("early-bad", 0.01, fail=True),
        ],
        then=After(),
        on_error=FailureMode.FAIL_FIRST,
    )
    with pytest.raises(JoinError) as info:
        await run_fork(fork, t := Tracker())
    err = info.value
    assert t.cancelled == []
    assert sorted(t.finished) == ["early-bad", "late-bad", "ok0", "slow-ok"]
    assert t.joins == []
    assert set(err.errors) == {1, 3}
    # The cause is the lowest-index failed branch's error, not the first to fail.
    assert err.__cause__ is err.errors[1]
    assert str(err.__cause__) == "late-bad failed"
    j = err.join
    assert j.results == ["ok0", None, "slow-ok", None]
    assert (j.total, j.succeeded, j.failed, j.cancelled) == (4, 2, 2, 0)


@pytest.mark.asyncio
async def test_all_continue_shows_errors_beside_results() -> None:
    fork = Fork(
        [Work("a", 0.02), Work("b", 0.01, fail=True), Work("c")],
        then=After(),
        on_error=FailureMode.CONTINUE,
    )
    result, t = await run_fork(fork)
    (j,) = t.joins
    assert result.output == ["a", None, "c"]
    assert j.results == ["a", None, "c"]
    assert set(j.errors) == {1} and isinstance(j.errors[1], Boom)
    assert (j.total, j.succeeded, j.failed, j.cancelled) == (3, 2, 1, 0)
    assert j.statuses[1] is BranchStatus.FAILED
    assert t.cancelled == []
    # The merge takes the branches that succeeded.
    assert result.state.log == ["a", "c"]
    assert j.deterministic is True and result.deterministic is True


# -- ANY / FIRST / QUORUM --------------------------------------------------------------


@pytest.mark.asyncio
async def test_any_continues_at_first_success_and_cancels_losers() -> None:
    fork = Fork(
        [Work("fails", 0.01, fail=True), Work("wins", 0.05), Work("loser", 10.0)],
        then=After(),
        join=JoinStrategy.ANY,
    )
    result, t = await run_fork(fork)
    (j,) = t.joins
    assert j.results == [None, "wins", None]
    assert j.statuses == [BranchStatus.FAILED, BranchStatus.SUCCEEDED, BranchStatus.CANCELLED]
    assert isinstance(j.errors[0], Boom)
    assert t.cancelled == ["loser"]
    assert j.deterministic is False
    assert result.deterministic is False
    assert result.state.log == ["wins"]
    no_engine_tasks()


@pytest.mark.asyncio
async def test_any_fails_when_every_branch_fails() -> None:
    fork = Fork(
        [Work("x", 0.02, fail=True), Work("y", 0.01, fail=True)],
        then=After(),
        join=JoinStrategy.ANY,
    )
    with pytest.raises(JoinError) as info:
        await run_fork(fork, t := Tracker())
    assert t.joins == []
    assert set(info.value.errors) == {0, 1}
    assert info.value.__cause__ is info.value.errors[0]
    assert info.value.join.failed == 2


@pytest.mark.asyncio
async def test_first_continues_at_first_finisher() -> None:
    fork = Fork(
        [Work("slow", 10.0), Work("quick", 0.01), Work("medium", 0.3)],
        then=After(),
        join=JoinStrategy.FIRST,
    )
    result, t = await run_fork(fork)
    (j,) = t.joins
    assert j.results == [None, "quick", None]
    assert sorted(t.cancelled) == ["medium", "slow"]
    assert j.cancelled == 2 and j.succeeded == 1
    assert j.deterministic is False and result.deterministic is False


@pytest.mark.asyncio
async def test_first_failing_first_finisher_fails_the_join_unless_continue() -> None:
    branches = [Work("slow", 10.0), Work("quick-bad", 0.01, fail=True)]
    with pytest.raises(JoinError) as info:
        await run_fork(Fork(list(branches), then=After(), join=JoinStrategy.FIRST), t := Tracker())
    assert t.cancelled == ["slow"]
    assert isinstance(info.value.__cause__, Boom)
    assert info.value.join.statuses == [BranchStatus.CANCELLED, BranchStatus.FAILED]

    fork = Fork(
        [Work("slow", 10.0), Work("quick-bad", 0.01, fail=True)],
        then=After(),
        join=JoinStrategy.FIRST,
        on_error=FailureMode.CONTINUE,
    )
    result, t2 = await run_fork(fork)
    (j,) = t2.joins
    assert j.results == [None, None]
    assert isinstance(j.errors[1], Boom)
    assert t2.cancelled == ["slow"]
    assert result.output == [None, None]


@pytest.mark.asyncio
@pytest.mark.parametrize("quorum", [2, 0.5])
async def test_quorum_continues_once_k_succeeded(quorum: int | float) -> None:
    fork = Fork(
        [
            Work("q0", 0.05),
            Work("bad", 0.01, fail=True),
            Work("q2", 0.02),
            Work("slow", 10.0),
        ],
        then=After(),
        join=JoinStrategy.QUORUM,
        quorum=quorum,
    )
    result, t = await run_fork(fork)
    (j,) = t.joins
    assert j.results == ["q0", None, "q2", None]
    assert j.succeeded == 2 and j.failed == 1 and j.cancelled == 1
    assert t.cancelled == ["slow"]
    assert result.state.log == ["q0", "q2"]
    assert result.deterministic is False


@pytest.mark.asyncio
async def test_quorum_fails_as_soon_as_it_is_impossible() -> None:
    fork = Fork(
        [Work("bad0", 0.01, fail=True), Work("bad1", 0.02, fail=True), Work("slow", 10.0)],
        then=After(),
        join=JoinStrategy.QUORUM,
        quorum=2,
    )
    with pytest.raises(JoinError) as info:
        await run_fork(fork, t := Tracker())
    # Two failures of three make a quorum of two impossible: no waiting for "slow".
    assert t.cancelled == ["slow"]
    assert set(info.value.errors) == {0, 1}
    assert info.value.__cause__ is info.value.errors[0]


# -- fork timeout ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fork_timeout_records_timeout_errors_then_on_error_applies() -> None:
    fork = Fork(
        [Work("quick", 0.01), Work("stuck", 10.0), Work("stuck2", 10.0)],
        then=After(),
        timeout=0.2,
        on_error=FailureMode.CONTINUE,
    )
    result, t = await run_fork(fork)
    (j,) = t.joins
    assert j.results == ["quick", None, None]
    assert set(j.errors) == {1, 2}
    assert all(isinstance(e, TimeoutError) for e in j.errors.values())
    assert j.timed_out is True
    assert sorted(t.cancelled) == ["stuck", "stuck2"]
    assert result.deterministic is False

    fork = Fork(
        [Work("quick", 0.01), Work("stuck", 10.0)],
        then=After(),
        timeout=0.2,
        on_error=FailureMode.FAIL_ALL,
    )
    with pytest.raises(JoinError) as info:
        await run_fork(fork, t2 := Tracker())
    assert isinstance(info.value.errors[1], TimeoutError)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert info.value.join.results == ["quick", None]
    assert t2.cancelled == ["stuck"]
    no_engine_tasks()


# -- cancellation ---------------------------------------------------------------------


@dataclass
class Deep(BaseNode[State]):
    """Forks two levels down, to branches that sleep forever."""

    level: int

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        if self.level == 0:
            return Fork([Work(f"leaf{i}", 100.0) for i in range(3)], then=After())
        return Fork([Deep(self.level - 1), Work(f"mid{self.level}", 100.0)], then=After())


DEEP = Graph(nodes=[Deep, Work, After])


@pytest.mark.asyncio
async def test_cancelling_a_run_leaves_no_task_behind() -> None:
    t = Tracker(expected=5)  # leaf0..2, mid1, mid2
    task = asyncio.create_task(DEEP.run(Deep(2), state=State(), deps=t))
    await asyncio.wait_for(t.all_started.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(t.cancelled) == sorted(t.started) == ["leaf0", "leaf1", "leaf2", "mid1", "mid2"]
    assert t.finished == []
    no_engine_tasks()


@pytest.mark.asyncio
async def test_run_timeout_raises_and_leaves_no_task_behind() -> None:
    t = Tracker()
    with pytest.raises(RunTimeoutError) as info:
        await DEEP.run(Deep(2), state=State(), deps=t, timeout=0.2, max_concurrency=2)
    assert isinstance(info.value, TimeoutError)
    assert t.started and sorted(t.cancelled) == sorted(t.started)
    no_engine_tasks()


# -- named branches and FIRST_SUCCESS --------------------------------------------------


@pytest.mark.asyncio
async def test_named_branches_key_errors_and_results() -> None:
    fork = Fork(
        {"good": Work("good", 0.01), "bad": Work("bad", fail=True)},
        then=After(),
        on_error=FailureMode.CONTINUE,
    )
    _, t = await run_fork(fork)
    (j,) = t.joins
    assert j.keys == ["good", "bad"]
    assert j["good"] == "good" and j["bad"] is None
    assert list(j.errors) == ["bad"] and isinstance(j.errors["bad"], Boom)

    fork = Fork({"good": Work("good", 0.05), "bad": Work("bad", fail=True)}, then=After())
    with pytest.raises(JoinError) as info:
        await run_fork(fork, t2 := Tracker())
    assert list(info.value.errors) == ["bad"]
    assert info.value.join.keys == ["good", "bad"]
    assert "'bad'" in str(info.value)
    assert t2.cancelled == ["good"]


@pytest.mark.asyncio
async def test_first_success_merge_takes_the_lowest_successful_index() -> None:
    fork = Fork(
        [Work("zero", fail=True), Work("one", 0.03), Work("two")],
        then=After(),
        on_error=FailureMode.CONTINUE,
        merge=MergeStrategy.FIRST_SUCCESS,
    )
    result, t = await run_fork(fork)
    (j,) = t.joins
    assert j.results == [None, "one", "two"]
    assert j.winner == 1
    # Only the winner's writes are merged, although "two" finished first.
    assert result.state.log == ["one"]
