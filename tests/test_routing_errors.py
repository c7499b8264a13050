"""Errors raised after a node returned (routing) say which execution returned what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    FailureMode,
    Fork,
    Graph,
    InvalidReturnError,
    JoinError,
    Pipeline,
    Retry,
    RunContext,
    UnknownNodeError,
)


class S(BaseModel):
    n: int = 0


@dataclass
class Bad(BaseNode[S]):
    """Fails ``flaky`` times, then returns something that is not routable."""

    flaky: int = 0
    retry = Retry(attempts=3, backoff=0.0, jitter=0.0)

    async def run(self, ctx: RunContext[S]) -> Any:
        if ctx.attempt <= self.flaky:
            raise RuntimeError("transient")
        return 42


@dataclass
class Stranger(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[None]:
        return End()


@dataclass
class ToStranger(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Any:
        return Stranger()


@dataclass
class Ok(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[int]:
        return End(1)


@dataclass
class Plan(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Ok(), Bad()], then=Summary(), on_error=FailureMode.CONTINUE)


@dataclass
class Summary(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        assert ctx.join is not None
        return End(f"{ctx.join.failed} failed")


@dataclass
class ForkOfBad(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Bad()])


@dataclass
class MemberReturnsNode(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Any:
        return Ok()


@dataclass
class Pipe(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Pipeline[S]:
        return Pipeline([MemberReturnsNode()])


graph = Graph(nodes=[Bad, ToStranger, Ok, Plan, Summary, ForkOfBad, MemberReturnsNode, Pipe])


@pytest.mark.asyncio
@pytest.mark.parametrize("flaky", [0, 2])
async def test_invalid_return_carries_where_it_happened(flaky: int) -> None:
    with pytest.raises(InvalidReturnError) as info:
        await graph.run(Bad(flaky), state=S(), execution_id="run-1")
    err = info.value
    assert (err.node, err.node_key, err.execution_id, err.attempt) == (
        "Bad",
        "0.Bad",
        "run-1",
        flaky + 1,
    )
    assert "node_key=0.Bad" in str(err) and "returned int" in str(err)


@pytest.mark.asyncio
async def test_invalid_return_in_a_branch_names_the_branch_key() -> None:
    result = await graph.run(Plan(), state=S(), execution_id="run-2")
    assert result.output == "1 failed"
    statuses = {r.key: (r.status, r.error) for r in result.records}
    status, error = statuses["0.Plan/1/0.Bad"]
    assert status == "failed" and error is not None and error.startswith("InvalidReturnError")
    assert statuses["0.Plan/0/0.Ok"] == ("succeeded", None)


@pytest.mark.asyncio
async def test_invalid_return_in_a_branch_is_the_join_errors_entry() -> None:
    with pytest.raises(JoinError) as info:
        await graph.run(ForkOfBad(), state=S(), execution_id="run-3")
    err = info.value.errors[0]
    assert isinstance(err, InvalidReturnError)
    assert (err.node_key, err.execution_id, err.attempt) == ("0.ForkOfBad/0/0.Bad", "run-3", 1)


@pytest.mark.asyncio
async def test_invalid_return_of_a_pipeline_member() -> None:
    with pytest.raises(JoinError) as info:
        await graph.run(Pipe(), state=S(), execution_id="run-4")
    err = info.value.errors[0]
    assert isinstance(err, InvalidReturnError)
    assert (err.node_key, err.execution_id, err.attempt) == (
        "0.Pipe/p0/0.MemberReturnsNode",
        "run-4",
        1,
    )


@pytest.mark.asyncio
async def test_unknown_node_error_names_the_node_key() -> None:
    events: list[Any] = []
    with pytest.raises(UnknownNodeError) as info:
        async for event in graph.iter(ToStranger(), state=S()):
            events.append(event)
    assert info.value.node == "Stranger"
    assert "'0.ToStranger'" in str(info.value)
    # The execution that returned it failed: its record says so, and no
    # node_finished event claims otherwise.
    assert [e.kind for e in events] == ["run_started", "node_started", "node_failed"]
    record = events[-1].data["record"]
    assert record.key == "0.ToStranger" and record.status == "failed"
    assert record.error.startswith("UnknownNodeError")
