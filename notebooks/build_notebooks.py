"""Write the notebooks in this folder as nbformat 4 JSON (no nbformat needed).

    python notebooks/build_notebooks.py            # rewrite notebooks/*.ipynb
    python notebooks/build_notebooks.py --check    # exit 1 if a notebook is stale

Each notebook is a list of ("markdown" | "code", source) cells below; outputs are
left empty (CI executes the code cells: tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]

QUICKSTART: list[Cell] = [
    (
        "markdown",
        """# lift_graph quickstart

A graph is a set of node classes. A node's `run` returns the next node, `End(value)`,
or a `Fork` of branches that run concurrently on isolated copies of the state and
join at one node. Everything here runs offline with `FakeLM`, a deterministic fake
LLM from `nodes/`.""",
    ),
    (
        "code",
        """from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, Field

from lift_graph import (
    BaseNode, End, FailureMode, Fork, Graph, JoinError, JoinStrategy, Limits,
    ProviderLimit, RunContext, append,
)
from nodes.fake_lm import FakeLM, ask""",
    ),
    (
        "markdown",
        """## A small graph: plan, summarize each topic in parallel, combine

`summaries` uses the `append` reducer: the join concatenates each branch's appended
items **in branch order**, whatever order the branches finished in.""",
    ),
    (
        "code",
        """class State(BaseModel):
    topics: list[str]
    summaries: Annotated[list[str], append] = Field(default_factory=list)
    report: str = ""


@dataclass
class Summarize(BaseNode[State]):
    topic: str
    provider = "fake"                       # per-provider limits key on this
    reads = frozenset({"topics"})
    writes = frozenset({"summaries"})       # only what a node writes is copied

    async def run(self, ctx: RunContext[State]) -> End[str]:
        text = await ask(ctx, f"Summarize: {self.topic}")   # ctx.deps is the LM
        ctx.state.summaries.append(f"{self.topic}: {text}")
        return End(text)


@dataclass
class Combine(BaseNode[State]):
    reads = frozenset({"summaries"})
    writes = frozenset({"report"})

    async def run(self, ctx: RunContext[State]) -> End[str]:
        join = ctx.join                     # the JoinResult of the fork
        ctx.state.report = "\\n".join(ctx.state.summaries)
        return End(f"{join.succeeded}/{join.total} topics summarized")


@dataclass
class Plan(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Summarize(t) for t in ctx.state.topics], then=Combine())


graph = Graph(nodes=[Plan, Summarize, Combine], name="quickstart")
print(graph)""",
    ),
    (
        "markdown",
        """## Run it synchronously

`run_sync` works in a script and also inside Jupyter's already running event loop.""",
    ),
    (
        "code",
        """lm = FakeLM(latency=0.01, jitter=0.9, seed=1)
state = State(topics=["forks", "joins", "limits", "retries"])
result = graph.run_sync(Plan(), state=state, deps=lm)
print(result.output)
print(result.state.report)
print("deterministic:", result.deterministic, "| nodes run:", len(result.records))
print("caller's state untouched:", state.summaries == [])""",
    ),
    (
        "markdown",
        """## Or await it

The same run, awaited, with at most one node at a time: the output and state are
byte-identical at any `max_concurrency`.""",
    ),
    (
        "code",
        """result_1 = await graph.run(Plan(), state=state, deps=lm, max_concurrency=1)
assert result_1.output == result.output
assert result_1.state.model_dump_json() == result.state.model_dump_json()
for record in result_1.records:
    print(f"{record.key:32} {record.execution_time_ms:6.1f} ms  attempts={record.attempts}")""",
    ),
    ("markdown", "## The graph as a mermaid diagram"),
    (
        "code",
        """print(graph.mermaid())
graph   # in Jupyter the last expression renders the diagram (_repr_markdown_)""",
    ),
    (
        "markdown",
        """## Events, limits, failures

`graph.iter` yields typed events as they happen (node started / retried /
finished / failed, forks, joins, `ctx.emit` custom events, DSPy tokens).
`Limits` caps concurrency globally and per provider and can be shared by several
runs. A failed branch fails the join
(`FAIL_ALL`) with a `JoinError` that keeps the finished branches' values, or is
collected beside the results with `on_error=CONTINUE`.""",
    ),
    (
        "code",
        """# Typed events (docs/events.md): each has kind, execution_id, key and time.
async for event in graph.iter(Plan(), state=state, deps=lm):
    if event.kind in ("node_finished", "node_failed"):
        print(f"{event.kind:14} {event.key}  attempts={event.record.attempts}")
    elif event.kind == "fork_started":
        print(f"{event.kind:14} {event.key}: {event.branches} branches, join {event.strategy}")
    elif event.kind == "join_finished":
        print(f"{event.kind:14} {event.key}: {event.join.succeeded} succeeded")
    elif event.kind in ("run_started", "run_finished"):
        print(event.kind)

limits = Limits(max_concurrency=4, providers={"fake": ProviderLimit(concurrency=2)})
await graph.run(Plan(), state=State(topics=[f"t{i}" for i in range(8)]), deps=lm, limits=limits)
print("peak in flight for provider 'fake':", limits.provider_peak("fake"))""",
    ),
    (
        "code",
        """flaky = FakeLM(fail_if_contains=["joins"])
try:
    graph.run_sync(Plan(), state=state, deps=flaky)
except JoinError as err:
    print("join failed:", type(err.__cause__).__name__)
    print("finished branches kept:", err.join.results)


@dataclass
class Tolerant(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Summarize(t) for t in ctx.state.topics], then=Combine(),
                    on_error=FailureMode.CONTINUE)


tolerant = Graph(nodes=[Tolerant, Summarize, Combine])
print((await tolerant.run(Tolerant(), state=state, deps=flaky)).output)""",
    ),
    (
        "markdown",
        """## Ready-made examples

`nodes/` has five: RAG, map-reduce, self-consistency voting, an agent loop and a
fallback race (`python -m nodes.demo` runs them all).""",
    ),
    (
        "code",
        """from nodes import fallback_race, self_consistency

vote = await self_consistency.run_example(samples=5)
print(vote.output)

race = await fallback_race.run_example()
print(race.output.winner, "won; deterministic:", race.deterministic)""",
    ),
]

NOTEBOOKS: dict[str, list[Cell]] = {"quickstart.ipynb": QUICKSTART}


def build(name: str, cells: list[Cell]) -> str:
    """The notebook ``name`` as nbformat 4.5 JSON text."""
    out = []
    for i, (kind, source) in enumerate(cells):
        cell_id = hashlib.sha256(f"{name}:{i}".encode()).hexdigest()[:8]
        cell: dict[str, object] = {
            "cell_type": kind,
            "id": cell_id,
            "metadata": {},
            "source": source.splitlines(keepends=True),
        }
        if kind == "code":
            cell["execution_count"] = None
            cell["outputs"] = []
        out.append(cell)
    notebook = {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a notebook is stale")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = args.out / name
        text = build(name, cells)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python notebooks/build_notebooks.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
