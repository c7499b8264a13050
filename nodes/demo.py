"""The offline demo: run the five example graphs with the fake LM and report.

``python -m nodes.demo`` (or ``lift-graph-demo``) runs RAG, map-reduce,
self-consistency, the agent loop and the fallback race, and prints for each its
output, elapsed milliseconds, how many node executions it took and whether the
run was deterministic; then maps the RAG graph over a handful of questions as one
batch (``Graph.map`` with a progress bar) and prints a one-line summary; then the
mermaid diagram of the map-reduce graph. No network, no API key; it takes well
under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from lift_graph import BatchResult, RunResult

from . import agent_loop, fallback_race, map_reduce, rag, self_consistency
from .fake_lm import FakeLM

__all__ = [
    "BATCH_QUESTIONS",
    "EXAMPLES",
    "DemoRow",
    "batch_summary",
    "main",
    "run_all",
    "run_batch",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class DemoRow:
    name: str
    summary: str
    elapsed_ms: float
    nodes: int
    deterministic: bool


def summarize(output: Any, width: int = 72) -> str:
    """A one-line summary of a run's output."""
    if isinstance(output, BaseModel):
        text = ", ".join(f"{k}={v!r}" for k, v in output.model_dump().items())
    else:
        text = " / ".join(str(output).splitlines()) if output is not None else "None"
    return text if len(text) <= width else text[: width - 3] + "..."


EXAMPLES: dict[str, Callable[[], Awaitable[RunResult[Any]]]] = {
    "rag": rag.run_example,
    "map_reduce": map_reduce.run_example,
    "self_consistency": self_consistency.run_example,
    "agent_loop": agent_loop.run_example,
    "fallback_race": fallback_race.run_example,
}


async def run_all(names: Sequence[str] | None = None) -> list[DemoRow]:
    """Run the named examples (default: all five), one after the other."""
    rows = []
    for name in names or list(EXAMPLES):
        result = await EXAMPLES[name]()
        rows.append(
            DemoRow(
                name=name,
                summary=summarize(result.output),
                elapsed_ms=result.elapsed_ms,
                nodes=len(result.records),
                deterministic=result.deterministic,
            )
        )
    return rows


#: The batch step's inputs; the one mentioning an outage fails on purpose (the
#: fake LM fails prompts that contain "outage"), to show a failure kept by index.
BATCH_QUESTIONS = (
    "How does a fork merge branch state in a join?",
    "What do provider limits cap?",
    "How do DSPy programs call language models?",
    "What validates the state that nodes read?",
    "Do provider limits cap requests during an outage?",
    "How does asyncio run coroutines?",
)


async def run_batch(progress: Any = True) -> BatchResult[rag.RagState]:
    """Map the RAG graph over ``BATCH_QUESTIONS``, 4 at a time, offline."""
    lm = FakeLM(name="fake", latency=0.01, fail_if_contains=("outage",))
    states = [rag.RagState(question=q) for q in BATCH_QUESTIONS]
    return await rag.build_graph().map(
        rag.Retrieve(), states, max_concurrency=4, deps=lm, progress=progress
    )


def batch_summary(batch: BatchResult[Any]) -> str:
    """One line: inputs, successes, failures by index, time, inputs at once."""
    failed = ", ".join(f"[{i}] {type(e).__name__}" for i, e in batch.errors.items())
    return (
        f"{batch.total} inputs: {batch.succeeded} succeeded, {batch.failed} failed"
        + (f" ({failed})" if failed else "")
        + f" in {batch.elapsed_ms:.0f} ms, {batch.peak_concurrency} at once"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.demo", description=__doc__)
    parser.add_argument(
        "examples",
        nargs="*",
        metavar="EXAMPLE",
        help=f"any of {', '.join(EXAMPLES)} (default: all)",
    )
    parser.add_argument("--no-mermaid", action="store_true", help="skip the diagram")
    parser.add_argument("--no-batch", action="store_true", help="skip the batch step")
    args = parser.parse_args(argv)
    unknown = [name for name in args.examples if name not in EXAMPLES]
    if unknown:
        parser.error(f"unknown example(s) {', '.join(unknown)}: choose from {', '.join(EXAMPLES)}")
    rows = asyncio.run(run_all(args.examples or None))
    for row in rows:
        print(f"== {row.name}")
        print(f"   output:        {row.summary}")
        print(f"   elapsed:       {row.elapsed_ms:.1f} ms")
        print(f"   nodes run:     {row.nodes}")
        print(f"   deterministic: {row.deterministic}")
    if not args.no_batch:
        print(f"\n== batch: rag over {len(BATCH_QUESTIONS)} questions (Graph.map)", flush=True)
        batch = asyncio.run(run_batch())
        print(f"   {batch_summary(batch)}")
        print("   (the outage question fails on purpose: the fake LM fails on 'outage')")
    if not args.no_mermaid:
        print("\n== map_reduce graph (mermaid)")
        # Fork branches are known only at run time: draw the graph after a run.
        graph = map_reduce.build_graph()
        graph.run_sync(
            map_reduce.Split(),
            state=map_reduce.MapReduceState(text=map_reduce.DEFAULT_TEXT, chunk_words=20),
            deps=FakeLM(name="fake", latency=0.0),
        )
        print(graph.mermaid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
