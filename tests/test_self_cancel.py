"""A node that raises CancelledError itself fails; it is not a cancellation."""

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
    JoinError,
    NodeExecutionError,
    Pipeline,
    RunContext,
)


class S(BaseModel):
    n: int = 0


@dataclass
class RaisesCancel(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[None]:
        await asyncio.sleep(0.01)
        raise asyncio.CancelledError()


@dataclass
class Ok(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[int]:
        return End(1)


@dataclass
class ForkStart(BaseNode[S]):
    mode: FailureMode = FailureMode.FAIL_ALL

    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([RaisesCancel(), Ok()], then=Joined(), on_error=self.mode)


@dataclass
class PipeStart(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Pipeline[S]:
        return Pipeline([Ok(), RaisesCancel()])


@dataclass
class Joined(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[tuple[int, int]]:
        assert ctx.join is not None
        return End((ctx.join.succeeded, ctx.join.failed))


graph = Graph(nodes=[ForkStart, PipeStart, RaisesCancel, Ok, Joined])


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", [FailureMode.FAIL_ALL, FailureMode.FAIL_FIRST])
async def test_fork_fails_instead_of_hanging(mode: FailureMode) -> None:
    with pytest.raises(JoinError) as info:
        await asyncio.wait_for(graph.run(ForkStart(mode), state=S()), 5)
    err = info.value.errors[0]
    assert isinstance(err, NodeExecutionError)
    assert isinstance(err.__cause__, asyncio.CancelledError)
    assert "RaisesCancel" in str(err)


@pytest.mark.asyncio
async def test_continue_collects_it_as_an_error() -> None:
    result = await asyncio.wait_for(graph.run(ForkStart(FailureMode.CONTINUE), state=S()), 5)
    assert result.output == (1, 1)


@pytest.mark.asyncio
async def test_pipeline_fails_instead_of_hanging() -> None:
    with pytest.raises(JoinError):
        await asyncio.wait_for(graph.run(PipeStart(), state=S()), 5)


@pytest.mark.asyncio
async def test_top_level_node_does_not_look_like_a_cancelled_run() -> None:
    with pytest.raises(NodeExecutionError):
        await graph.run(RaisesCancel(), state=S())
