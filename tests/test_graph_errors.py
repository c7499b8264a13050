"""Bad input gets a specific error naming the node / field, and nothing is lost."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    BranchStatus,
    End,
    FailureMode,
    Fork,
    Graph,
    GraphDefinitionError,
    InvalidNodeError,
    InvalidReturnError,
    JoinError,
    MergeError,
    NodeTimeoutError,
    Pipeline,
    PipelineCycleError,
    RunContext,
    StateValidationError,
    UnknownFieldError,
    UnknownNodeError,
)


class State(BaseModel):
    count: int = 0
    label: str = ""
    log: list[str] = []


@dataclass
class Stranger(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[None]:
        return End(None)


@dataclass
class ReturnsStranger(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Any:
        return Stranger()


@dataclass
class ForksToStranger(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Any:
        return Fork([Done(), Stranger()])


@dataclass
class Done(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        return End("done")


@pytest.mark.asyncio
async def test_returning_an_unregistered_node_names_it() -> None:
    graph = Graph(nodes=[ReturnsStranger, ForksToStranger, Done])
    with pytest.raises(UnknownNodeError) as info:
        await graph.run(ReturnsStranger(), state=State())
    assert info.value.node == "Stranger"
    assert "Stranger" in str(info.value) and "ReturnsStranger" in str(info.value)

    with pytest.raises(UnknownNodeError) as info:
        await graph.run(ForksToStranger(), state=State())
    assert info.value.node == "Stranger"

    with pytest.raises(UnknownNodeError) as info:
        await graph.run(Stranger(), state=State())
    assert info.value.node == "Stranger"


@dataclass
class ReturnsText(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Any:
        return "oops"


@pytest.mark.asyncio
async def test_returning_a_wrong_type_names_node_and_type() -> None:
    graph = Graph(nodes=[ReturnsText])
    with pytest.raises(InvalidReturnError) as info:
        await graph.run(ReturnsText(), state=State())
    err = info.value
    assert isinstance(err, TypeError)
    assert err.node == "ReturnsText"
    assert "ReturnsText" in str(err) and "str" in str(err)


def test_graph_refuses_non_nodes() -> None:
    with pytest.raises(InvalidNodeError) as info:
        Graph(nodes=[Done, "Done"])  # type: ignore[list-item]
    assert "'Done'" in str(info.value)
    with pytest.raises(InvalidNodeError) as info:
        Graph(nodes=[Done()])  # type: ignore[list-item]
    assert "class" in str(info.value)

    class NotANode:
        async def run(self, ctx: Any) -> None: ...

    with pytest.raises(InvalidNodeError):
        Graph(nodes=[NotANode])  # type: ignore[list-item]


@dataclass
class PointsAtStranger(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Stranger | End[None]:
        return End(None)


def test_annotation_naming_an_unknown_class_fails_at_build() -> None:
    with pytest.raises(UnknownNodeError) as info:
        Graph(nodes=[PointsAtStranger])
    assert info.value.node == "Stranger"
    assert "PointsAtStranger" in str(info.value)
    Graph(nodes=[PointsAtStranger, Stranger])  # fine once registered


@dataclass
class ReadsGhost(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"count", "ghost"})

    async def run(self, ctx: RunContext[State]) -> End[None]:
        return End(None)


@dataclass
class WritesGhost(BaseNode[State]):
    writes: ClassVar[frozenset[str]] = frozenset({"phantom"})

    async def run(self, ctx: RunContext[State]) -> End[None]:
        return End(None)


def test_reads_or_writes_of_a_missing_field_fail_at_build() -> None:
    with pytest.raises(UnknownFieldError) as info:
        Graph(nodes=[ReadsGhost])
    assert (info.value.node, info.value.field) == ("ReadsGhost", "ghost")
    assert "ghost" in str(info.value)
    with pytest.raises(UnknownFieldError) as info:
        Graph(nodes=[WritesGhost])
    assert (info.value.node, info.value.field) == ("WritesGhost", "phantom")


@dataclass
class SetLabel(BaseNode[State]):
    value: str
    delay: float = 0.0

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(self.delay)
        ctx.state.label = self.value
        ctx.state.log.append(self.value)
        return End(self.value)


@dataclass
class Conflict(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork({"left": SetLabel("L", 0.01), "right": SetLabel("R")}, then=Done())


@dataclass
class Agree(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([SetLabel("same", 0.01), SetLabel("same")], then=Done())


@pytest.mark.asyncio
async def test_parallel_writes_that_conflict_raise_merge_error_with_results() -> None:
    graph = Graph(nodes=[Conflict, Agree, SetLabel, Done])
    with pytest.raises(MergeError) as info:
        await graph.run(Conflict(), state=State())
    err = info.value
    assert err.field == "label"
    assert err.branches == ["left", "right"]
    assert "label" in str(err) and "left" in str(err) and "right" in str(err)
    assert err.join is not None
    assert err.join.results == ["L", "R"]
    assert err.join.statuses == [BranchStatus.SUCCEEDED, BranchStatus.SUCCEEDED]

    # Equal values conflict too (three `count += 1` must never give 1); the
    # message points at the reducer that allows them.
    with pytest.raises(MergeError) as agreed:
        await graph.run(Agree(), state=State())
    assert agreed.value.field == "label" and agreed.value.branches == [0, 1]
    assert "same_value" in str(agreed.value)


@dataclass
class WritesBadType(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[None]:
        ctx.state.count = "many"  # type: ignore[assignment]
        return End(None)


@dataclass
class BadInFork(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork(
            [SetLabel("fine", 0.02), WritesBadType()], then=Done(), on_error=FailureMode.FAIL_FIRST
        )


@pytest.mark.asyncio
async def test_invalid_state_write_names_node_and_field() -> None:
    graph = Graph(nodes=[WritesBadType, BadInFork, SetLabel, Done])
    with pytest.raises(StateValidationError) as info:
        await graph.run(WritesBadType(), state=State())
    err = info.value
    assert (err.node, err.field) == ("WritesBadType", "count")
    assert "WritesBadType" in str(err) and "count" in str(err)

    # Inside a fork the finished branch's value is kept in the JoinError.
    with pytest.raises(JoinError) as jinfo:
        await graph.run(BadInFork(), state=State())
    assert isinstance(jinfo.value.__cause__, StateValidationError)
    assert jinfo.value.join.results == ["fine", None]
    assert jinfo.value.join.statuses[1] is BranchStatus.FAILED


@dataclass
class P1(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"label"})
    writes: ClassVar[frozenset[str]] = frozenset({"count"})

    async def run(self, ctx: RunContext[State]) -> None:
        ctx.state.count = len(ctx.state.label)


@dataclass
class P2(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"count"})
    writes: ClassVar[frozenset[str]] = frozenset({"label"})

    async def run(self, ctx: RunContext[State]) -> None:
        ctx.state.label = str(ctx.state.count)


@dataclass
class Cyclic(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
        return Pipeline([P1(), P2()], order="inferred")


@pytest.mark.asyncio
async def test_a_cyclic_pipeline_names_its_nodes() -> None:
    graph = Graph(nodes=[Cyclic, P1, P2])
    with pytest.raises(PipelineCycleError) as info:
        await graph.run(Cyclic(), state=State())
    assert isinstance(info.value, GraphDefinitionError)
    assert sorted(info.value.cycle) == ["P1", "P2"]
    assert "P1" in str(info.value) and "P2" in str(info.value)


@dataclass
class BadPipelineMember(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Any:
        return Done()


@dataclass
class RunsBadPipeline(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
        return Pipeline([BadPipelineMember()])


@pytest.mark.asyncio
async def test_a_pipeline_member_routing_elsewhere_is_refused() -> None:
    graph = Graph(nodes=[RunsBadPipeline, BadPipelineMember, Done])
    with pytest.raises(JoinError) as info:
        await graph.run(RunsBadPipeline(), state=State())
    cause = info.value.__cause__
    assert isinstance(cause, InvalidReturnError)
    assert cause.node == "BadPipelineMember"
    assert "BadPipelineMember" in str(info.value)


@dataclass
class Hangs(BaseNode[State]):
    timeout: ClassVar[float | None] = 0.05

    async def run(self, ctx: RunContext[State]) -> End[None]:
        await asyncio.sleep(10)
        return End(None)


@pytest.mark.asyncio
async def test_a_node_timeout_names_the_node() -> None:
    graph = Graph(nodes=[Hangs])
    with pytest.raises(NodeTimeoutError) as info:
        await asyncio.wait_for(graph.run(Hangs(), state=State()), timeout=5)
    assert isinstance(info.value, TimeoutError)
    assert info.value.node == "Hangs"
    assert info.value.node_key == "0.Hangs"
