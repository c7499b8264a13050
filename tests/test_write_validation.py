"""Writes are validated against the state model: reassigned and in-place ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import BaseNode, End, Graph, RunContext, StateValidationError


class State(BaseModel):
    log: list[str] = []
    count: int = 0


@dataclass
class AppendsWrongType(BaseNode[State]):
    writes: ClassVar[frozenset[str]] = frozenset({"log"})

    async def run(self, ctx: RunContext[State]) -> End[None]:
        ctx.state.log.append(5)  # type: ignore[arg-type]
        return End(None)


@dataclass
class AssignsWrongType(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[None]:
        ctx.state.count = "many"  # type: ignore[assignment]
        return End(None)


@dataclass
class AppendsFine(BaseNode[State]):
    writes: ClassVar[frozenset[str]] = frozenset({"log"})

    async def run(self, ctx: RunContext[State]) -> End[list[str]]:
        ctx.state.log.append("ok")
        return End(ctx.state.log)


def test_in_place_write_to_a_declared_field_is_validated() -> None:
    with pytest.raises(StateValidationError) as info:
        Graph(nodes=[AppendsWrongType]).run_sync(AppendsWrongType(), state=State())
    assert info.value.node == "AppendsWrongType"
    assert info.value.field == "log"
    assert "AppendsWrongType" in str(info.value) and "'log'" in str(info.value)


def test_reassignment_of_an_undeclared_field_is_validated() -> None:
    with pytest.raises(StateValidationError) as info:
        Graph(nodes=[AssignsWrongType]).run_sync(AssignsWrongType(), state=State())
    assert (info.value.node, info.value.field) == ("AssignsWrongType", "count")
    assert info.value.node_key == "0.AssignsWrongType"


def test_valid_writes_pass_and_serialize_cleanly() -> None:
    caller = State()
    result = Graph(nodes=[AppendsFine]).run_sync(AppendsFine(), state=caller)
    assert result.output == ["ok"]
    assert result.state.log == ["ok"]
    assert caller.log == []
    assert result.state.model_dump_json() == '{"log":["ok"],"count":0}'
