"""A graph for the durability tests: a fork of 4 two-node branches, a join, a
pipeline of 3 members with inferred dependencies and a final node.

Every node appends its key to ``deps.ran`` when its ``run`` completes, and a node
whose key is in ``deps.fail`` raises once (then removes itself), so a test can
fail a run at any node and resume it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel

from lift_graph import BaseNode, End, Fork, Graph, Pipeline, RunContext
from lift_graph.reducers import extend, merge_dict


class Doc(BaseModel):
    title: str
    words: int


class Report(BaseModel):
    summary: str
    total: int


class State(BaseModel):
    topic: str = ""
    drafts: Annotated[dict[str, Doc], merge_dict] = {}
    notes: Annotated[list[str], extend] = []
    outline: str = ""
    body: str = ""
    score: int = 0


@dataclass
class Deps:
    ran: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    delay: float = 0.0


async def _step(ctx: RunContext[Any]) -> None:
    deps: Deps = ctx.deps
    if deps.delay:
        await asyncio.sleep(deps.delay)
    if ctx.node_key in deps.fail:
        deps.fail.discard(ctx.node_key)
        raise RuntimeError(f"injected failure at {ctx.node_key}")


def _done(ctx: RunContext[Any]) -> None:
    ctx.deps.ran.append(ctx.node_key)


@dataclass
class Start(BaseNode[State]):
    branches: int = 4

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        await _step(ctx)
        ctx.state.notes.append(f"start {ctx.state.topic}")
        _done(ctx)
        return Fork([Draft(i=i) for i in range(self.branches)], then=Join())


@dataclass
class Draft(BaseNode[State]):
    i: int = 0

    async def run(self, ctx: RunContext[State]) -> Review:
        await _step(ctx)
        ctx.state.drafts[f"d{self.i}"] = Doc(title=f"{ctx.state.topic} #{self.i}", words=0)
        _done(ctx)
        return Review(i=self.i)


@dataclass
class Review(BaseNode[State]):
    i: int = 0

    async def run(self, ctx: RunContext[State]) -> End[Doc]:
        await _step(ctx)
        doc = ctx.state.drafts[f"d{self.i}"]
        reviewed = Doc(title=doc.title.upper(), words=10 * (self.i + 1))
        ctx.state.drafts[f"d{self.i}"] = reviewed
        ctx.state.notes.append(f"reviewed {self.i}")
        _done(ctx)
        return End(reviewed)


@dataclass
class Join(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
        await _step(ctx)
        assert ctx.join is not None
        ctx.state.notes.append(f"joined {len(ctx.join.results)}")
        _done(ctx)
        return Pipeline([Outline(), Body(), Score()], then=Finish())


@dataclass
class Outline(BaseNode[State]):
    reads = frozenset({"drafts"})
    writes = frozenset({"outline"})

    async def run(self, ctx: RunContext[State]) -> None:
        await _step(ctx)
        ctx.state.outline = " / ".join(sorted(d.title for d in ctx.state.drafts.values()))
        _done(ctx)


@dataclass
class Body(BaseNode[State]):
    reads = frozenset({"outline"})
    writes = frozenset({"body"})

    async def run(self, ctx: RunContext[State]) -> None:
        await _step(ctx)
        ctx.state.body = f"body of [{ctx.state.outline}]"
        _done(ctx)


@dataclass
class Score(BaseNode[State]):
    reads = frozenset({"drafts"})
    writes = frozenset({"score"})

    async def run(self, ctx: RunContext[State]) -> None:
        await _step(ctx)
        ctx.state.score = sum(d.words for d in ctx.state.drafts.values())
        _done(ctx)


@dataclass
class Finish(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[Report]:
        await _step(ctx)
        _done(ctx)
        return End(Report(summary=ctx.state.body, total=ctx.state.score))


graph = Graph([Start, Draft, Review, Join, Outline, Body, Score, Finish], name="durable")

#: Every node key of an uninterrupted run with 4 branches.
ALL_KEYS = sorted(
    ["0.Start", "1.Join", "2.Finish"]
    + [f"0.Start/{i}/0.Draft" for i in range(4)]
    + [f"0.Start/{i}/1.Review" for i in range(4)]
    + [f"1.Join/p{i}/0.{n}" for i, n in enumerate(["Outline", "Body", "Score"])]
)
