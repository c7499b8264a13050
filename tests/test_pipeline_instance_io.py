"""Pipelines infer dependencies from a node *instance*'s reads / writes.

The runner honours an instance-level ``writes`` (a dataclass field overriding the
class default); the pipeline planner must read the same values, or members that
depend on each other run side by side on stale views.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from lift_graph import BaseNode, ConfigurationError, Graph, Pipeline, RunContext
from lift_graph._plan import declared_io, plan_pipeline


class State(BaseModel):
    a: int = 1
    b: int = 0
    c: int = 0
    d: int = 0


@dataclass
class Copy(BaseNode[State]):
    """``dst = src + 1``; what it touches is configured per instance.

    The class-level defaults (empty sets) claim it touches nothing at all.
    """

    src: str
    dst: str
    reads: frozenset[str] | None = frozenset()  # type: ignore[assignment]
    writes: frozenset[str] | None = frozenset()  # type: ignore[assignment]

    async def run(self, ctx: RunContext[State]) -> None:
        value = getattr(ctx.state, self.src)
        await asyncio.sleep(0.001 * (ord("e") - ord(self.dst)))  # later ones finish first
        setattr(ctx.state, self.dst, value + 1)


def io(src: str, dst: str) -> Copy:
    return Copy(src, dst, reads=frozenset({src}), writes=frozenset({dst}))


@dataclass
class Run(BaseNode[State]):
    members: list[Copy]
    order: str = "given"

    async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
        return Pipeline(self.members, order=self.order)


graph = Graph(nodes=[Copy, Run])


def test_declared_io_reads_the_instance() -> None:
    node = io("a", "b")
    assert Copy.reads == frozenset() and Copy.writes == frozenset()
    assert declared_io(node) == (frozenset({"a"}), frozenset({"b"}))
    as_set = Copy("a", "b", reads={"a"}, writes={"b"})  # type: ignore[arg-type]
    assert declared_io(as_set) == (frozenset({"a"}), frozenset({"b"}))
    assert declared_io(Copy("a", "b", reads=None, writes=None)) == (None, None)


def test_the_plan_follows_instance_values() -> None:
    nodes = [io("a", "b"), io("b", "c"), io("c", "d")]
    plan = plan_pipeline(tuple(map(declared_io, nodes)), frozenset())
    assert plan.deps == ((), (0,), (1,))


@pytest.mark.asyncio
async def test_instance_writes_give_the_sequential_result() -> None:
    chain = [io("a", "b"), io("b", "c"), io("c", "d")]
    result = await graph.run(Run(chain), state=State())
    # Undeclared (None) members depend on everything before them: the sequential run.
    sequential = [
        Copy("a", "b", None, None),
        Copy("b", "c", None, None),
        Copy("c", "d", None, None),
    ]
    expected = await graph.run(Run(sequential), state=State())
    assert result.state == expected.state == State(a=1, b=2, c=3, d=4)


@pytest.mark.asyncio
async def test_inferred_order_uses_instance_values() -> None:
    shuffled = [io("c", "d"), io("b", "c"), io("a", "b")]
    result = await graph.run(Run(shuffled, order="inferred"), state=State())
    assert result.state == State(a=1, b=2, c=3, d=4)


def test_a_string_instead_of_a_set_is_refused_before_planning() -> None:
    # A bare str would be planned as its letters: the member check refuses it.
    with pytest.raises(ConfigurationError, match="writes"):
        Pipeline([Copy("a", "bc", reads=frozenset({"a"}), writes="bc")])  # type: ignore[arg-type]
