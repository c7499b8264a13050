"""check_determinism and the pytest plugin's fixture / marker."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Annotated

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    DeterminismError,
    End,
    Fork,
    Graph,
    JoinStrategy,
    RunContext,
    append,
    check_determinism,
    check_determinism_sync,
)


class State(BaseModel):
    items: Annotated[list[str], append] = []
    tags: set[str] = set()


@dataclass
class Work(BaseNode[State]):
    i: int

    async def run(self, ctx: RunContext[State]) -> End[int]:
        await asyncio.sleep(random.uniform(0, 0.003))
        ctx.state.items.append(f"w{self.i}")
        return End(self.i * self.i)


@dataclass
class Start(BaseNode[State]):
    join: JoinStrategy = JoinStrategy.ALL

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Work(i) for i in range(6)], then=Collect(), join=self.join)


@dataclass
class Collect(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[list[int | None]]:
        assert ctx.join is not None
        return End(list(ctx.join.results))


graph = Graph(nodes=[Start, Work, Collect])


@pytest.mark.asyncio
async def test_all_join_is_deterministic_over_100_runs() -> None:
    report = await check_determinism(graph, Start(), state=State(tags={"b", "a"}), runs=100)
    assert report.deterministic
    assert report.runs == 100
    assert sum(report.output_hashes.values()) == 100
    assert len(report.output_hashes) == 1 and len(report.state_hashes) == 1
    assert set(report.by_concurrency) == {1, 2, 8, None}
    assert report.engine_deterministic
    assert report.agreement == 1.0


@pytest.mark.asyncio
async def test_a_race_is_caught() -> None:
    with pytest.raises(DeterminismError) as info:
        await check_determinism(graph, Start(JoinStrategy.FIRST), state=State(), runs=40)
    report = info.value.report
    assert not report.deterministic
    assert not report.engine_deterministic
    assert report.first_divergent_run is not None
    assert "not deterministic" in str(info.value)


def test_sync_variant_outside_a_loop() -> None:
    report = check_determinism_sync(graph, Start(), state=State(), runs=5)
    assert report.deterministic


@pytest.mark.asyncio
@pytest.mark.lift_deterministic(runs=12, max_concurrency=(1, 3))
async def test_plugin_fixture_reads_the_marker(lift_determinism) -> None:  # type: ignore[no-untyped-def]
    report = await lift_determinism(graph, Start(), state=State())
    assert report.runs == 12
    assert set(report.by_concurrency) == {1, 3}
    assert report.deterministic
