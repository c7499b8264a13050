"""Map-reduce summarizer: split a text, summarize every chunk in parallel, reduce.

::

    Split --Fork([MapChunk(0), ..., MapChunk(n-1)])--> Reduce --> End(summary)

The number of branches is known only at run time (one per chunk). Each
``MapChunk`` appends its summary to ``summaries``, a field declared with the
``append`` reducer, so the join concatenates the appends in chunk order, never in
completion order: the reduced summary lists every chunk's summary in order, and
the run is byte-identical at any ``max_concurrency``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, Field

from lift_graph import BaseNode, End, Fork, Graph, Limits, RunContext, RunResult, append

from .fake_lm import FakeLM, TextLM, ask

__all__ = [
    "DEFAULT_TEXT",
    "MapChunk",
    "MapReduceState",
    "Reduce",
    "Split",
    "build_graph",
    "chunk_text",
    "run_example",
]

DEFAULT_TEXT = " ".join(
    f"Paragraph {i} explains how part {i} of the engine schedules nodes, isolates "
    f"branch state, merges writes in branch order and respects provider limits."
    for i in range(1, 9)
)


class MapReduceState(BaseModel):
    text: str
    chunk_words: int = 20
    chunks: list[str] = Field(default_factory=list)
    summaries: Annotated[list[str], append] = Field(default_factory=list)
    summary: str = ""


def chunk_text(text: str, chunk_words: int) -> list[str]:
    """``text`` cut into chunks of at most ``chunk_words`` words."""
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be >= 1, got {chunk_words}")
    words = text.split()
    return [" ".join(words[i : i + chunk_words]) for i in range(0, len(words), chunk_words)]


@dataclass
class Split(BaseNode[MapReduceState]):
    reads = frozenset({"text", "chunk_words"})
    writes = frozenset({"chunks"})

    async def run(self, ctx: RunContext[MapReduceState]) -> Fork[MapReduceState]:
        ctx.state.chunks = chunk_text(ctx.state.text, ctx.state.chunk_words)
        return Fork([MapChunk(i) for i in range(len(ctx.state.chunks))], then=Reduce())


@dataclass
class MapChunk(BaseNode[MapReduceState]):
    index: int
    provider = "fake"
    reads = frozenset({"chunks"})
    writes = frozenset({"summaries"})

    async def run(self, ctx: RunContext[MapReduceState]) -> End[str]:
        chunk = ctx.state.chunks[self.index]
        summary = await ask(ctx, f"Summarize chunk {self.index}: {chunk}")
        line = f"{self.index}: {summary}"
        ctx.state.summaries.append(line)
        return End(line)


@dataclass
class Reduce(BaseNode[MapReduceState]):
    provider = "fake"
    reads = frozenset({"summaries"})
    writes = frozenset({"summary"})

    async def run(self, ctx: RunContext[MapReduceState]) -> End[str]:
        # ctx.join.results holds the same lines, also in chunk order.
        notes = "\n".join(ctx.state.summaries)
        n = len(ctx.state.summaries)
        headline = await ask(ctx, f"Summaries:\n{notes}\nOne headline for all {n} chunks")
        ctx.state.summary = f"{headline}\n{notes}" if notes else headline
        return End(ctx.state.summary)


def build_graph() -> Graph[MapReduceState]:
    return Graph(nodes=[Split, MapChunk, Reduce], name="map_reduce")


async def run_example(
    text: str = DEFAULT_TEXT,
    *,
    chunk_words: int = 20,
    lm: TextLM | None = None,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
) -> RunResult[MapReduceState]:
    """Summarize ``text`` offline; the output lists every chunk's summary in order."""
    return await build_graph().run(
        Split(),
        state=MapReduceState(text=text, chunk_words=chunk_words),
        deps=lm if lm is not None else FakeLM(name="fake", latency=0.01, jitter=0.9, seed=7),
        max_concurrency=max_concurrency,
        limits=limits,
    )
