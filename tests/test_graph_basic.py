"""Graph basics: dataflow without a barrier, fork shapes, run_sync, iter, MAJORITY."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    Fork,
    Graph,
    GraphEvent,
    JoinResult,
    JoinStrategy,
    MergeStrategy,
    RunContext,
    RunResult,
)


class State(BaseModel):
    log: list[str] = []
    marks: dict[str, int] = {}
    pick: str = ""


@dataclass
class Clock:
    """Start / end times (perf_counter) of named node executions."""

    t0: float = field(default_factory=time.perf_counter)
    starts: dict[str, float] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self.starts[name] = time.perf_counter() - self.t0

    def end(self, name: str) -> None:
        self.ends[name] = time.perf_counter() - self.t0


# -- two paths from the start: no superstep barrier -----------------------------------


@dataclass
class TwoPaths(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([SlowA(), StepB(1)], then=JoinBoth())


@dataclass
class SlowA(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        clock: Clock = ctx.deps
        clock.start("A")
        await asyncio.sleep(0.5)
        clock.end("A")
        return End("a")


@dataclass
class StepB(BaseNode[State]):
    i: int

    async def run(self, ctx: RunContext[State]) -> StepB | End[str]:
        clock: Clock = ctx.deps
        clock.start(f"B{self.i}")
        await asyncio.sleep(0.1)
        clock.end(f"B{self.i}")
        if self.i < 5:
            return StepB(self.i + 1)
        return End("b5")


@dataclass
class JoinBoth(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[list[Any]]:
        assert ctx.join is not None
        return End(list(ctx.join.results))


@pytest.mark.asyncio
async def test_two_paths_run_without_a_barrier() -> None:
    graph = Graph(nodes=[TwoPaths, SlowA, StepB, JoinBoth])
    clock = Clock()
    began = time.perf_counter()
    result = await graph.run(TwoPaths(), state=State(), deps=clock)
    makespan = time.perf_counter() - began
    assert result.output == ["a", "b5"]
    ratio = makespan / 0.5
    print(f"two paths: makespan {makespan:.3f} s, ratio to 0.5 s = {ratio:.3f}")
    assert ratio < 1.2, f"makespan {makespan:.3f} s: paths did not overlap"
    # B's steps follow one another at once, never waiting for A (no superstep barrier).
    for i in range(2, 6):
        gap = clock.starts[f"B{i}"] - clock.ends[f"B{i - 1}"]
        assert gap < 0.05, f"B{i} waited {gap:.3f} s after B{i - 1}"
    assert clock.starts["B2"] < clock.ends["A"] - 0.2
    assert clock.starts["B5"] < clock.ends["A"]
    assert result.deterministic is True
    # One record per node execution: start, A, B1..B5, join.
    assert sorted(r.node for r in result.records) == sorted(
        ["TwoPaths", "SlowA", "JoinBoth"] + ["StepB"] * 5
    )
    assert all(r.error is None and r.attempts == 1 for r in result.records)
    assert result.execution_id


# -- fork shapes ----------------------------------------------------------------------


@dataclass
class Leaf(BaseNode[State]):
    name: str
    delay: float = 0.0

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(self.delay)
        ctx.state.log.append(self.name)
        ctx.state.marks[self.name] = len(self.name)
        return End(self.name.upper())


@dataclass
class Collect(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[dict[str, Any]]:
        j = ctx.join
        assert j is not None
        return End(
            {
                "keys": list(j.keys),
                "results": list(j.results),
                "total": j.total,
                "succeeded": j.succeeded,
                "log": list(ctx.state.log),
            }
        )


@dataclass
class DictFork(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        # Completion order differs from key order: "zeta" finishes first.
        return Fork(
            {"alpha": Leaf("alpha", 0.05), "beta": Leaf("beta", 0.02), "zeta": Leaf("zeta")},
            then=Collect(),
        )


@pytest.mark.asyncio
async def test_dict_keyed_fork_names_branches() -> None:
    seen: list[JoinResult[Any]] = []

    @dataclass
    class Inspect(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> End[None]:
            assert ctx.join is not None
            seen.append(ctx.join)
            return End(None)

    @dataclass
    class Start(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> Fork[State]:
            return Fork({"x": Leaf("xx", 0.03), "y": Leaf("y")}, then=Inspect())

    graph = Graph(nodes=[DictFork, Leaf, Collect])
    result = await graph.run(DictFork(), state=State())
    assert result.output == {
        "keys": ["alpha", "beta", "zeta"],
        "results": ["ALPHA", "BETA", "ZETA"],
        "total": 3,
        "succeeded": 3,
        # Merge in branch order, not completion order.
        "log": ["alpha", "beta", "zeta"],
    }
    assert result.state.marks == {"alpha": 5, "beta": 4, "zeta": 4}

    graph2 = Graph(nodes=[Start, Leaf, Inspect])
    await graph2.run(Start(), state=State())
    (j,) = seen
    assert j["x"] == "XX" and j["y"] == "Y"
    assert dict(j.items()) == {"x": "XX", "y": "Y"}
    # Branch keys also name the records.
    assert j.errors == {}


@dataclass
class ListStart(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> list[BaseNode[State]]:
        return [Leaf("one", 0.02), Leaf("two"), Leaf("three", 0.01)]


@dataclass
class ForkStart(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Leaf("one", 0.02), Leaf("two"), Leaf("three", 0.01)])


@pytest.mark.asyncio
async def test_plain_list_is_a_fork_and_then_none_ends_with_the_values() -> None:
    graph = Graph(nodes=[ListStart, ForkStart, Leaf])
    from_list = await graph.run(ListStart(), state=State())
    from_fork = await graph.run(ForkStart(), state=State())
    # then=None: End(list of branch values), in branch order.
    assert from_list.output == ["ONE", "TWO", "THREE"]
    assert from_fork.output == from_list.output
    assert from_list.state.model_dump_json() == from_fork.state.model_dump_json()
    assert from_list.state.log == ["one", "two", "three"]


# -- MAJORITY merge -------------------------------------------------------------------


@dataclass
class Vote(BaseNode[State]):
    index: int
    answer: str

    async def run(self, ctx: RunContext[State]) -> End[str]:
        # Later indices finish first: the vote must not depend on completion order.
        await asyncio.sleep(0.005 * (5 - self.index))
        ctx.state.pick = f"{self.answer}-{self.index}"
        return End(self.answer)


@dataclass
class Ballot(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        answers = ["b", "a", "c", "a", "a"]
        return Fork(
            [Vote(i, a) for i, a in enumerate(answers)],
            then=Tally(),
            merge=MergeStrategy.MAJORITY,
        )


@dataclass
class Tally(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[dict[str, Any]]:
        j = ctx.join
        assert j is not None
        return End(
            {
                "winner": j.winner,
                "agreement": j.agreement,
                "ratio": j.agreement_ratio,
                "merge": j.merge,
                "pick": ctx.state.pick,
            }
        )


@pytest.mark.asyncio
async def test_majority_merge_reports_agreement() -> None:
    graph = Graph(nodes=[Ballot, Vote, Tally])
    result = await graph.run(Ballot(), state=State())
    assert result.output == {
        "winner": 1,  # lowest index of the "a" group
        "agreement": 3,
        "ratio": pytest.approx(0.6),
        "merge": MergeStrategy.MAJORITY,
        "pick": "a-1",  # only the winner's writes are merged
    }
    assert result.state.pick == "a-1"


# -- nested forks: no deadlock --------------------------------------------------------


@dataclass
class Nest(BaseNode[State]):
    depth: int
    path: str = "r"

    async def run(self, ctx: RunContext[State]) -> Fork[State] | End[str]:
        probe: Probe = ctx.deps
        probe.enter()
        try:
            await asyncio.sleep(0.002)
        finally:
            probe.leave()
        if self.depth == 0:
            ctx.state.log.append(self.path)
            return End(self.path)
        return Fork(
            [Nest(self.depth - 1, f"{self.path}.{i}") for i in range(3)],
            then=Gather(self.path),
            join=JoinStrategy.ALL,
        )


@dataclass
class Gather(BaseNode[State]):
    path: str

    async def run(self, ctx: RunContext[State]) -> End[str]:
        assert ctx.join is not None
        return End(f"{self.path}[{','.join(ctx.join.results)}]")


@dataclass
class Probe:
    in_flight: int = 0
    peak: int = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("max_concurrency", [1, 2])
async def test_nested_forks_three_deep_complete_under_a_small_limit(max_concurrency: int) -> None:
    graph = Graph(nodes=[Nest, Gather])
    probe = Probe()
    result = await asyncio.wait_for(
        graph.run(Nest(3), state=State(), deps=probe, max_concurrency=max_concurrency),
        timeout=30,
    )
    leaves = [f"r.{a}.{b}.{c}" for a in range(3) for b in range(3) for c in range(3)]
    assert result.state.log == leaves

    def expected(path: str, depth: int) -> str:
        if depth == 0:
            return path
        inner = ",".join(expected(f"{path}.{i}", depth - 1) for i in range(3))
        return f"{path}[{inner}]"

    assert result.output == expected("r", 3)
    assert probe.peak <= max_concurrency
    assert result.peak_concurrency <= max_concurrency
    assert len(result.records) == 1 + 3 + 9 + 27 + 13  # Nest nodes + Gather nodes


# -- run_sync and iter ----------------------------------------------------------------


def test_run_sync_without_a_loop() -> None:
    graph = Graph(nodes=[ListStart, Leaf])
    result = graph.run_sync(ListStart(), state=State(), max_concurrency=2)
    assert isinstance(result, RunResult)
    assert result.output == ["ONE", "TWO", "THREE"]
    assert result.state.log == ["one", "two", "three"]


@pytest.mark.asyncio
async def test_run_sync_inside_a_running_loop() -> None:
    graph = Graph(nodes=[ListStart, Leaf])
    asyncio.get_running_loop()  # we are inside one, as in a notebook cell
    result = graph.run_sync(ListStart(), state=State())
    assert result.output == ["ONE", "TWO", "THREE"]
    assert result.state.log == ["one", "two", "three"]
    # The loop is still usable afterwards.
    await asyncio.sleep(0)
    again = await graph.run(ListStart(), state=State())
    assert again.output == result.output


@pytest.mark.asyncio
async def test_iter_yields_node_events_and_ends_with_the_result() -> None:
    graph = Graph(nodes=[DictFork, Leaf, Collect])
    events: list[GraphEvent] = []
    async for event in graph.iter(DictFork(), state=State()):
        events.append(event)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "run_finished"
    assert kinds.count("run_finished") == 1
    finished = [e.data["record"].node for e in events if e.kind == "node_finished"]
    assert sorted(finished) == ["Collect", "DictFork", "Leaf", "Leaf", "Leaf"]
    # DictFork finishes first, Collect last.
    assert finished[0] == "DictFork" and finished[-1] == "Collect"
    result = events[-1].data["result"]
    assert isinstance(result, RunResult)
    assert result.output["results"] == ["ALPHA", "BETA", "ZETA"]
