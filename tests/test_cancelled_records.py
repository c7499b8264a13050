"""A node cancelled while it runs (a race's loser) leaves a record saying so."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinStrategy,
    NodeRecord,
    Pipeline,
    RunContext,
)


class S(BaseModel):
    n: int = 0


@dataclass
class Wait(BaseNode[S]):
    seconds: float
    provider = "slowpoke"
    reads = frozenset[str]()
    writes = frozenset[str]()

    async def run(self, ctx: RunContext[S]) -> End[float]:
        await asyncio.sleep(self.seconds)
        return End(self.seconds)


@dataclass
class Fails(BaseNode[S]):
    reads = frozenset[str]()
    writes = frozenset[str]()

    async def run(self, ctx: RunContext[S]) -> End[None]:
        await asyncio.sleep(0.01)
        raise ValueError("boom")


@dataclass
class Race(BaseNode[S]):
    join: JoinStrategy

    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Wait(30.0), Wait(0.01), Wait(30.0)], join=self.join)


@dataclass
class Pipe(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Pipeline[S]:
        return Pipeline([Wait(30.0), Fails()])


@dataclass
class Outer(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Pipe()], then=Done(), on_error=FailureMode.CONTINUE)


@dataclass
class Done(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        assert ctx.join is not None
        return End(f"{ctx.join.failed} failed")


graph = Graph(nodes=[Wait, Fails, Race, Pipe, Outer, Done])


def _by_key(records: list[NodeRecord]) -> dict[str, NodeRecord]:
    return {r.key: r for r in records}


@pytest.mark.asyncio
@pytest.mark.parametrize("join", [JoinStrategy.ANY, JoinStrategy.FIRST])
async def test_race_losers_are_recorded_as_cancelled(join: JoinStrategy) -> None:
    result = await asyncio.wait_for(graph.run(Race(join), state=S()), 10)
    assert result.output == [None, 0.01, None]
    assert not result.deterministic
    records = _by_key(result.records)
    assert len(records) == len(result.records) == 4
    assert records["0.Race"].status == "succeeded"
    winner = records["0.Race/1/0.Wait"]
    assert (winner.status, winner.error) == ("succeeded", None)
    for loser in ("0.Race/0/0.Wait", "0.Race/2/0.Wait"):
        rec = records[loser]
        assert (rec.status, rec.error, rec.node, rec.provider) == (
            "cancelled",
            "cancelled",
            "Wait",
            "slowpoke",
        )
        assert rec.attempts == 1
        assert 0.0 <= rec.execution_time_ms < 10_000
    # Sorted by node key, the same order on every run.
    assert [r.key for r in result.records] == [
        "0.Race",
        "0.Race/0/0.Wait",
        "0.Race/1/0.Wait",
        "0.Race/2/0.Wait",
    ]


@pytest.mark.asyncio
async def test_pipeline_member_cancelled_by_a_failing_sibling_is_recorded() -> None:
    # Under CONTINUE the fork survives its failed branch, so the run's records show
    # what happened inside that branch's pipeline.
    result = await asyncio.wait_for(graph.run(Outer(), state=S()), 10)
    assert result.output == "1 failed"
    statuses = {r.key: r.status for r in result.records}
    assert statuses == {
        "0.Outer": "succeeded",
        "0.Outer/0/0.Pipe": "succeeded",
        "0.Outer/0/0.Pipe/p0/0.Wait": "cancelled",
        "0.Outer/0/0.Pipe/p1/0.Fails": "failed",
        "1.Done": "succeeded",
    }


def test_status_of_each_kind_of_record() -> None:
    ok = NodeRecord("0.A", "A", 0.0, 1.0, 1)
    bad = NodeRecord("0.A", "A", 0.0, 1.0, 2, "ValueError: boom")
    cut = NodeRecord("0.A", "A", 0.0, 1.0, 1, "cancelled")
    assert [r.status for r in (ok, bad, cut)] == ["succeeded", "failed", "cancelled"]


@pytest.mark.asyncio
async def test_a_failing_pipeline_member_emits_node_failed() -> None:
    failed: list[str] = []
    async for event in graph.iter(Outer(), state=S()):
        if event.kind == "node_failed":
            failed.append(event.data["record"].key)
    assert failed == ["0.Outer/0/0.Pipe/p1/0.Fails"]
