"""Loops that never await stay stoppable, and every path has a step limit.

Nodes here never await, so nothing but the engine gives the event loop a turn.
Each infinite node carries a wall-clock backstop (it fails after ``_BACKSTOP``
seconds) so that a regression makes these tests fail instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    ConfigurationError,
    End,
    Fork,
    Graph,
    JoinError,
    JoinStrategy,
    Pipeline,
    RunContext,
    RunTimeoutError,
    StepLimitError,
)

_BACKSTOP = 20.0


class S(BaseModel):
    n: int = 0


def _spin_guard(since: float) -> None:
    if time.monotonic() - since > _BACKSTOP:
        raise AssertionError("the engine never stopped a non-awaiting loop")


@dataclass
class Loop(BaseNode[S]):
    """Returns itself forever and never awaits."""

    since: float = 0.0

    async def run(self, ctx: RunContext[S]) -> Loop:
        _spin_guard(self.since)
        return self


@dataclass
class Count(BaseNode[S]):
    """A chain of ``n`` node executions, none of which awaits."""

    i: int
    n: int

    async def run(self, ctx: RunContext[S]) -> Count | End[int]:
        if self.i + 1 >= self.n:
            return End(self.i + 1)
        return Count(self.i + 1, self.n)


@dataclass
class Sleepy(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        await asyncio.sleep(0.02)
        return End("slept")


@dataclass
class ForkOneLoop(BaseNode[S]):
    """Branch 1 loops forever; branches 0 and 2 end after three nodes."""

    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Count(0, 3), Loop(time.monotonic()), Count(0, 3)])


@dataclass
class ForkOfTwos(BaseNode[S]):
    """Five branches of two nodes each, then a join node: two steps per path."""

    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Count(0, 2) for _ in range(5)], then=Gather())


@dataclass
class Gather(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[list[int | None]]:
        assert ctx.join is not None
        return End(list(ctx.join.results))


@dataclass
class PipeOfOnes(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Pipeline[S]:
        return Pipeline([Count(0, 1) for _ in range(4)], then=Count(0, 1))


@dataclass
class Race(BaseNode[S]):
    """A non-awaiting infinite branch against one that sleeps briefly."""

    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Loop(time.monotonic()), Sleepy()], join=JoinStrategy.FIRST)


graph = Graph(nodes=[Loop, Count, Sleepy, ForkOneLoop, ForkOfTwos, Gather, PipeOfOnes, Race])


@pytest.mark.asyncio
async def test_self_loop_hits_the_default_step_limit() -> None:
    with pytest.raises(StepLimitError) as info:
        await graph.run(Loop(time.monotonic()), state=S())
    err = info.value
    assert err.max_steps == 10_000
    assert (err.path, err.node, err.node_key) == ("", "Loop", "9999.Loop")
    assert err.execution_id
    assert "max_steps=" in str(err) and "main path" in str(err)


@pytest.mark.asyncio
async def test_self_loop_hits_a_small_step_limit() -> None:
    with pytest.raises(StepLimitError) as info:
        await graph.run(Loop(time.monotonic()), state=S(), max_steps=5, execution_id="e1")
    err = info.value
    assert (err.node_key, err.max_steps, err.execution_id) == ("4.Loop", 5, "e1")
    assert isinstance(err, RecursionError)


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [1, 7, 10_000])
async def test_a_chain_of_exactly_max_steps_nodes_succeeds(limit: int) -> None:
    result = await graph.run(Count(0, limit), state=S(), max_steps=limit)
    assert result.output == limit
    assert len(result.records) == limit
    with pytest.raises(StepLimitError) as info:
        await graph.run(Count(0, limit + 1), state=S(), max_steps=limit)
    assert info.value.node_key == f"{limit - 1}.Count"


@pytest.mark.asyncio
async def test_max_steps_none_disables_the_limit() -> None:
    result = await graph.run(Count(0, 10_050), state=S(), max_steps=None)
    assert result.output == 10_050


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_max_steps_must_be_a_positive_int_or_none(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_steps"):
        graph.run_sync(Count(0, 1), state=S(), max_steps=bad)  # type: ignore[arg-type]


def test_run_sync_takes_max_steps() -> None:
    with pytest.raises(StepLimitError):
        graph.run_sync(Loop(time.monotonic()), state=S(), max_steps=3)


@pytest.mark.asyncio
async def test_iter_takes_max_steps() -> None:
    kinds: list[str] = []
    with pytest.raises(StepLimitError):
        async for event in graph.iter(Count(0, 4), state=S(), max_steps=3):
            kinds.append(event.kind)
    assert kinds.count("node_finished") == 3


@pytest.mark.asyncio
async def test_run_timeout_stops_a_loop_that_never_awaits() -> None:
    began = time.monotonic()
    with pytest.raises(RunTimeoutError):
        await graph.run(Loop(time.monotonic()), state=S(), timeout=0.1, max_steps=None)
    assert time.monotonic() - began < 2.0


@pytest.mark.asyncio
async def test_cancelling_a_loop_that_never_awaits() -> None:
    task = asyncio.ensure_future(graph.run(Loop(time.monotonic()), state=S(), max_steps=None))
    await asyncio.sleep(0.05)
    assert not task.done()
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - began < 2.0
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.asyncio
async def test_a_looping_fork_branch_fails_with_its_own_path() -> None:
    with pytest.raises(JoinError) as info:
        await graph.run(ForkOneLoop(), state=S(), max_steps=50)
    err = info.value.errors[1]
    assert isinstance(err, StepLimitError)
    assert (err.path, err.node, err.node_key) == (
        "0.ForkOneLoop/1/",
        "Loop",
        "0.ForkOneLoop/1/49.Loop",
    )
    assert "'0.ForkOneLoop/1/'" in str(err)


@pytest.mark.asyncio
async def test_each_branch_and_pipeline_member_is_a_path_of_its_own() -> None:
    # The parent path runs two nodes, each branch two: a limit of 2 holds everywhere.
    result = await graph.run(ForkOfTwos(), state=S(), max_steps=2)
    assert result.output == [2] * 5
    result = await graph.run(PipeOfOnes(), state=S(), max_steps=2)
    assert result.output == 1


@pytest.mark.asyncio
async def test_a_non_awaiting_branch_does_not_starve_its_siblings() -> None:
    result = await asyncio.wait_for(graph.run(Race(), state=S(), max_steps=None), 10)
    assert result.output == [None, "slept"]


@pytest.mark.asyncio
async def test_a_long_self_loop_stays_small() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(StepLimitError):
            await graph.run(Loop(time.monotonic()), state=S(), max_steps=10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One record (and one provenance entry) per step, a few hundred bytes each.
    assert peak / 10_000 < 2_000
