"""Graphs for tests/test_cli.py, named on the command line as ``tests.cli_graphs:NAME``.

``graph``: a deterministic fork / join (join ALL). ``noisy``: a node that writes a
random number to the state. ``racy``: a join ANY over branches with random delays.
``tiny``: one node. ``approval``: a node that asks a person (``Interrupt``).
``failing``: a branch that raises. ``not_a_graph`` / ``build_graph``: wrong targets.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    Fork,
    Graph,
    Interrupt,
    JoinStrategy,
    MergeStrategy,
    RunContext,
    append,
)


class Docs(BaseModel):
    doc_ids: list[str]
    prefix: str = "summary of"
    summaries: Annotated[list[str], append] = []


@dataclass
class Plan(BaseNode[Docs]):
    fail_on: str = ""

    async def run(self, ctx: RunContext[Docs]) -> Fork[Docs]:
        return Fork(
            [Summarize(d, fail=d == self.fail_on) for d in ctx.state.doc_ids], then=Combine()
        )


@dataclass
class Summarize(BaseNode[Docs]):
    doc_id: str = ""
    fail: bool = False
    provider = "fake"

    async def run(self, ctx: RunContext[Docs]) -> End[str]:
        await asyncio.sleep(random.uniform(0, 0.004))
        if self.fail:
            raise ValueError(f"cannot summarize {self.doc_id}")
        ctx.state.summaries.append(f"{ctx.state.prefix} {self.doc_id}")
        return End(self.doc_id)


@dataclass
class Combine(BaseNode[Docs]):
    async def run(self, ctx: RunContext[Docs]) -> End[str]:
        return End("; ".join(ctx.state.summaries))


graph = Graph(nodes=[Plan, Summarize, Combine], name="docs")
failing = graph


class Dice(BaseModel):
    roll: float = 0.0


@dataclass
class Roll(BaseNode[Dice]):
    async def run(self, ctx: RunContext[Dice]) -> End[str]:
        ctx.state.roll = random.random()
        return End("rolled")


noisy = Graph(nodes=[Roll], name="noisy")


class Race(BaseModel):
    winner: str = ""


@dataclass
class Start(BaseNode[Race]):
    async def run(self, ctx: RunContext[Race]) -> Fork[Race]:
        return Fork(
            [Runner(f"r{i}") for i in range(4)],
            then=Finish(),
            join=JoinStrategy.ANY,
            merge=MergeStrategy.FIRST_SUCCESS,
        )


@dataclass
class Runner(BaseNode[Race]):
    name: str = ""

    async def run(self, ctx: RunContext[Race]) -> End[str]:
        await asyncio.sleep(random.uniform(0, 0.01))
        ctx.state.winner = self.name
        return End(self.name)


@dataclass
class Finish(BaseNode[Race]):
    async def run(self, ctx: RunContext[Race]) -> End[str]:
        return End(ctx.state.winner)


racy = Graph(nodes=[Start, Runner, Finish], name="racy")


class Counter(BaseModel):
    count: int = 0


@dataclass
class Bump(BaseNode[Counter]):
    by: int = 1

    async def run(self, ctx: RunContext[Counter]) -> End[int]:
        ctx.state.count += self.by
        return End(ctx.state.count)


tiny = Graph(nodes=[Bump], name="tiny")


class Release(BaseModel):
    version: str
    approved_by: str = ""


@dataclass
class Approve(BaseNode[Release]):
    async def run(self, ctx: RunContext[Release]) -> Ship:
        if ctx.answer is None:
            return Interrupt(f"may we ship {ctx.state.version}?")  # type: ignore[return-value]
        ctx.state.approved_by = str(ctx.answer)
        return Ship()


@dataclass
class Ship(BaseNode[Release]):
    async def run(self, ctx: RunContext[Release]) -> End[str]:
        return End(f"shipped {ctx.state.version}, approved by {ctx.state.approved_by}")


approval = Graph(nodes=[Approve, Ship], name="approval")

not_a_graph = 42


def build_graph() -> Graph[Docs]:
    return graph
