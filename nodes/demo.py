"""The offline demo: run the five example graphs with the fake LM and report.

``lift-graph demo`` (also ``python -m nodes.demo``, ``lift-graph-demo``) runs RAG,
map-reduce, self-consistency, the agent loop and the fallback race, and prints for
each its output, elapsed milliseconds, how many node executions it took and
whether the run was deterministic; explains why the fallback race is not (a race
decided its join); measures, in this process, the map-reduce graph with every
branch at once against one node at a time and prints the speed-up; maps the RAG
graph over a handful of questions as one batch (``Graph.map`` with a progress bar);
and ends with the mermaid diagram of the map-reduce graph. No network, no API key;
it takes a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from lift_graph import BatchResult, RunResult

from . import agent_loop, fallback_race, map_reduce, rag, self_consistency
from .demo_measure import explain_race, measure_speedup
from .fake_lm import FakeLM

__all__ = [
    "BATCH_QUESTIONS",
    "EXAMPLES",
    "DemoRow",
    "batch_summary",
    "main",
    "run_all",
    "run_batch",
    "show",
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


def _say(lines: Sequence[str]) -> None:
    for line in lines:
        print(textwrap.fill(line, width=92, initial_indent="   ", subsequent_indent="     "))


def show(
    names: Sequence[str] | None = None,
    *,
    mermaid: bool = True,
    batch: bool = True,
    speedup: bool = True,
) -> None:
    """Run the demo and print it (the progress bar of the batch goes to stderr)."""
    rows = asyncio.run(run_all(names))
    for row in rows:
        print(f"== {row.name}")
        print(f"   output:        {row.summary}")
        print(f"   elapsed:       {row.elapsed_ms:.1f} ms")
        print(f"   nodes run:     {row.nodes}")
        print(f"   deterministic: {row.deterministic}")
    if any(row.name == "fallback_race" for row in rows):
        print("\n== why fallback_race is not deterministic")
        _say(asyncio.run(explain_race()).lines())
    graph = None
    if speedup:
        print("\n== what parallelism bought: map_reduce, fake LM answering in 0.1 s", flush=True)
        measured = asyncio.run(measure_speedup())
        graph = measured.graph
        _say(measured.lines())
    if batch:
        print(f"\n== batch: rag over {len(BATCH_QUESTIONS)} questions (Graph.map)", flush=True)
        result = asyncio.run(run_batch())
        print(f"   {batch_summary(result)}")
        print("   (the outage question fails on purpose: the fake LM fails on 'outage')")
    if mermaid:
        print("\n== map_reduce graph (mermaid: paste into mermaid.live, or view it in Jupyter)")
        if graph is None:
            # Fork branches are known only at run time: draw the graph after a run.
            graph = map_reduce.build_graph()
            graph.run_sync(
                map_reduce.Split(),
                state=map_reduce.MapReduceState(text=map_reduce.DEFAULT_TEXT, chunk_words=20),
                deps=FakeLM(name="fake", latency=0.0),
            )
        print(graph.mermaid())


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
    parser.add_argument("--no-speedup", action="store_true", help="skip the speed-up measurement")
    args = parser.parse_args(argv)
    unknown = [name for name in args.examples if name not in EXAMPLES]
    if unknown:
        parser.error(f"unknown example(s) {', '.join(unknown)}: choose from {', '.join(EXAMPLES)}")
    show(
        args.examples or None,
        mermaid=not args.no_mermaid,
        batch=not args.no_batch,
        speedup=not args.no_speedup,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
