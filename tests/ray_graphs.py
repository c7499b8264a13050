"""Graphs the Ray tests send to workers (an importable module, as nodes must be).

``eval_graph``: a small evaluation pipeline per input: ``Draft`` answers, a fork
of two ``Critique`` branches (provider ``"fake"``) judges the draft, ``Verdict``
joins them. With ``deps`` a ``SharedProvider`` actor every provider node calls it
(its log is what the limits are checked against); with ``deps=None`` they only
sleep ``latency`` seconds. Every answer is a pure function of the input, so a
batch's results do not depend on where or in which order its inputs ran.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field

from benchmarks.ray_provider import ask_shared
from lift_graph import BaseNode, End, Fork, Graph, RunContext, append

LATENCY = 0.02


class EvalState(BaseModel):
    index: int
    question: str
    draft: str = ""
    critiques: Annotated[list[str], append] = Field(default_factory=list)
    verdict: str = ""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


async def call(ctx: RunContext[Any], name: str) -> None:
    if ctx.deps is None:
        await asyncio.sleep(LATENCY)
    else:
        await ask_shared(ctx.deps, f"{ctx.state.index}:{name}")


class Draft(BaseNode[EvalState]):
    provider = "fake"
    reads = frozenset({"question"})
    writes = frozenset({"draft"})

    async def run(self, ctx: RunContext[EvalState]) -> Fork[EvalState]:
        await call(ctx, "Draft")
        ctx.state.draft = f"answer {digest(ctx.state.question)}"
        return Fork([Critique("style"), Critique("facts")], then=Verdict())


@dataclass
class Critique(BaseNode[EvalState]):
    aspect: str
    provider = "fake"
    reads = frozenset({"draft"})
    writes = frozenset({"critiques"})

    async def run(self, ctx: RunContext[EvalState]) -> End[str]:
        await call(ctx, f"Critique.{self.aspect}")
        note = f"{self.aspect}: {digest(self.aspect + ctx.state.draft)}"
        ctx.state.critiques.append(note)
        return End(note)


class Verdict(BaseNode[EvalState]):
    reads = frozenset({"critiques", "draft"})
    writes = frozenset({"verdict"})

    async def run(self, ctx: RunContext[EvalState]) -> End[str]:
        ctx.state.verdict = f"{ctx.state.draft} | " + "; ".join(ctx.state.critiques)
        return End(ctx.state.verdict)


def eval_graph() -> Graph[EvalState]:
    return Graph(nodes=[Draft, Critique, Verdict], name="eval")


def states(n: int) -> list[EvalState]:
    return [EvalState(index=i, question=f"question {i}: what is {i} * {i + 1}?") for i in range(n)]


class Ask(BaseNode[EvalState]):
    """One provider call per input (the limits tests)."""

    provider = "fake"
    reads = frozenset({"question"})
    writes = frozenset({"verdict"})

    async def run(self, ctx: RunContext[EvalState]) -> End[str]:
        await call(ctx, "Ask")
        if not ctx.state.question:
            missing = LookupError("question")
            raise ValueError(f"input {ctx.state.index} has no question") from missing
        ctx.state.verdict = digest(ctx.state.question)
        return End(ctx.state.verdict)


def ask_graph() -> Graph[EvalState]:
    return Graph(nodes=[Ask], name="ask")


class Holder(EvalState):
    """A state with a field that may hold anything (the shipping tests)."""

    handle: Any = None


class Grab(BaseNode[Holder]):
    """Writes a lock into input 1's state: that result cannot travel back."""

    writes = frozenset({"handle"})

    async def run(self, ctx: RunContext[Holder]) -> End[str]:
        if ctx.state.index == 1:
            ctx.state.handle = threading.Lock()
        return End("ok")


class Fatal(BaseNode[EvalState]):
    """Kills its own process on input 5 (as a native crash or the OOM killer would)."""

    writes = frozenset({"verdict"})

    async def run(self, ctx: RunContext[EvalState]) -> End[str]:
        if ctx.state.index == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(0.05)
        ctx.state.verdict = digest(ctx.state.question)
        return End(ctx.state.verdict)
