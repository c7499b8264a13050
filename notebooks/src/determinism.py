# %% [markdown]
# # Validating determinism
#
# The guarantee: with join `ALL` and deterministic nodes, a run's output and final
# state are **byte-identical** whatever order the branches finish in and at any
# `max_concurrency`, including 1, where nodes run one at a time. Branches work on
# isolated copies of the state, and their writes are merged in branch order.
#
# This notebook shows the guarantee holding, checks it over 100 runs with
# `check_determinism`, catches a graph that breaks it, shows how races are flagged,
# and runs the same check from a pytest test file with the pytest plugin.

# %%
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from lift_graph import (
    BaseNode,
    DeterminismError,
    End,
    Fork,
    Graph,
    JoinStrategy,
    RunContext,
    add,
    append,
    canonical_hash,
    check_determinism,
    merge_dict,
)
from nodes.fake_lm import FakeLM, ask

# %% [markdown]
# ## A map-reduce over documents
#
# Each branch summarizes one document with the fake LM, whose latency is jittered so
# the branches finish in a different order on every run. Every field a branch writes
# has a reducer: `append` for the list, `merge_dict` for the dict, `add` for the
# counter.


# %%
class Docs(BaseModel):
    docs: list[str]
    summaries: Annotated[list[str], append] = Field(default_factory=list)
    words: Annotated[dict[str, int], merge_dict] = Field(default_factory=dict)
    total_words: Annotated[int, add] = 0


@dataclass
class Summarize(BaseNode[Docs]):
    doc: str
    provider = "fake"

    async def run(self, ctx: RunContext[Docs]) -> End[str]:
        summary = await ask(ctx, f"Summarize: {self.doc}")
        ctx.state.summaries.append(summary)
        ctx.state.words[self.doc] = len(self.doc.split())
        ctx.state.total_words += len(self.doc.split())
        return End(summary)


@dataclass
class Plan(BaseNode[Docs]):
    async def run(self, ctx: RunContext[Docs]) -> Fork[Docs]:
        return Fork([Summarize(doc) for doc in ctx.state.docs], then=Reduce())


@dataclass
class Reduce(BaseNode[Docs]):
    async def run(self, ctx: RunContext[Docs]) -> End[str]:
        return End(f"{ctx.join.succeeded} summaries, {ctx.state.total_words} words")


graph = Graph(nodes=[Plan, Summarize, Reduce], name="map_reduce")
titles = ["forks", "joins merge", "limits hold", "a retry", "the state", "pipelines", "votes"]
docs = Docs(docs=[*titles, "races and timeouts"])
lm = FakeLM(latency=0.004, jitter=1.0, seed=7)

# %% [markdown]
# Two runs: the fake LM's log is in completion order, which differs; the results'
# canonical hashes (sorted-key JSON, stable across processes) do not.

# %%
finish_orders, hashes = [], []
for _ in range(2):
    calls_before = len(lm.calls)
    result = await graph.run(Plan(), state=docs, deps=lm)
    finished = [call.prompt.removeprefix("Summarize: ") for call in lm.calls[calls_before:]]
    finish_orders.append(finished)
    hashes.append((canonical_hash(result.output), canonical_hash(result.state)))
    print("finished in order:", ", ".join(finished))
print("outputs:", result.output, "| same output and state:", hashes[0] == hashes[1])
print("summaries, in branch order:", result.state.summaries[:3], "...")

# %% [markdown]
# ## `check_determinism`: 100 runs at several concurrencies
#
# `check_determinism` runs the graph `runs` times, cycling through the
# `max_concurrency` values (`None` is unlimited), and compares the canonical hashes of
# every output and final state. By default a disagreement raises `DeterminismError`;
# the report says what it saw either way.

# %%
report = await check_determinism(
    graph, Plan(), state=docs, deps=lm, runs=100, max_concurrency=(1, 2, 4, 8, None)
)
print("deterministic:", report.deterministic, "over", report.runs, "runs")
print("distinct outputs:", len(report.output_hashes), "states:", len(report.state_hashes))
for concurrency, seen in report.by_concurrency.items():
    print(f"  max_concurrency={concurrency!s:4}  distinct results: {len(seen)}")

# %% [markdown]
# ## Catching a non-deterministic graph
#
# A common mistake: something outside the state decides a value. Here the branches
# note when they finish in a log passed through `deps` (shared by every branch, so
# never isolated or merged by the engine), and the join copies that log into the state.
# Its order is the completion order, which changes from run to run.


# %%
class Logged(Docs):
    finish_order: list[str] = Field(default_factory=list)


@dataclass
class LoggedSummarize(BaseNode[Logged]):
    doc: str

    async def run(self, ctx: RunContext[Logged]) -> End[str]:
        summary = await ask(ctx, f"Summarize: {self.doc}", ctx.deps["lm"])
        ctx.deps["log"].append(self.doc)  # shared, outside the state: the bug
        ctx.state.summaries.append(summary)
        return End(summary)


@dataclass
class LoggedPlan(BaseNode[Logged]):
    async def run(self, ctx: RunContext[Logged]) -> Fork[Logged]:
        return Fork([LoggedSummarize(d) for d in ctx.state.docs], then=CopyLog())


@dataclass
class CopyLog(BaseNode[Logged]):
    async def run(self, ctx: RunContext[Logged]) -> End[int]:
        ctx.state.finish_order = list(ctx.deps["log"])
        ctx.deps["log"].clear()
        return End(len(ctx.state.finish_order))


flaky_graph = Graph(nodes=[LoggedPlan, LoggedSummarize, CopyLog], name="logged")
logged = Logged(docs=docs.docs)
try:
    await check_determinism(
        flaky_graph, LoggedPlan(), state=logged, deps={"lm": lm, "log": []}, runs=20
    )
except DeterminismError as error:
    caught = error.report
    print(textwrap.fill(str(error), 88))

# %% [markdown]
# The report says where: `first_difference` is the first field (a path into the output
# or the state) where the first divergent run differs from run 0, with both values.
# The outputs agree (8 summaries every time); the state field the join copied from the
# shared log does not. From a shell, `lift-graph check module:graph --start Plan --runs
# 100` runs the same check and exits 1 with this field.

# %%
path, in_run_0, in_that_run = caught.first_difference
print("first divergent run:", caught.first_divergent_run)
print("first difference:", path)
print("  run 0:     ", in_run_0)
print("  that run:  ", in_that_run)

# %% [markdown]
# ## Races are flagged, even when their answers agree
#
# Joins `ANY`, `FIRST` and `QUORUM` (and a fork `timeout` that fires) let timing decide,
# and a node class may declare `deterministic = False`. The engine knows when that
# happened: `result.deterministic` is False. Here three replicas give the same answer,
# so the outputs agree on every run, but `check_determinism` still refuses to call the
# graph deterministic: agreement by chance proves nothing.


# %%
@dataclass
class Replica(BaseNode[Docs]):
    name: str

    async def run(self, ctx: RunContext[Docs]) -> End[str]:
        return End(await ask(ctx, "Summarize: the same question", ctx.deps))


@dataclass
class Race(BaseNode[Docs]):
    async def run(self, ctx: RunContext[Docs]) -> Fork[Docs]:
        replicas = [Replica(n) for n in ("a", "b", "c")]
        return Fork(replicas, join=JoinStrategy.ANY, then=Winner())


@dataclass
class Winner(BaseNode[Docs]):
    async def run(self, ctx: RunContext[Docs]) -> End[str]:
        return End(ctx.join.successes()[0])  # the value of the branch that won


race_graph = Graph(nodes=[Race, Replica, Winner], name="race")
raced = await race_graph.run(Race(), state=docs, deps=lm)
print("output:", raced.output, "| result.deterministic:", raced.deterministic)

race_report = await check_determinism(
    race_graph, Race(), state=docs, deps=lm, runs=20, raise_on_failure=False
)
print("outputs agree:", race_report.results_agree, "| verdict:", race_report.deterministic)
print(textwrap.fill(race_report.reason or "", 88))

# %% [markdown]
# ## In a test suite: the pytest plugin
#
# Installing lift_graph registers a pytest plugin with a `lift_determinism` fixture and
# a `lift_deterministic(runs=..., max_concurrency=...)` marker that configures it. An
# `async def` test with the marker runs without `@pytest.mark.asyncio`. Below, a small
# test module is written to a temporary folder and run with pytest in a subprocess,
# as CI would: one test checks the map-reduce graph, one expects the race to be caught.

# %%
test_module = """
import pytest
from dataclasses import dataclass
from pydantic import BaseModel

from lift_graph import BaseNode, DeterminismError, End, Fork, Graph, JoinStrategy, RunContext


class State(BaseModel):
    docs: list[str] = ["b", "a", "c"]
    summaries: list[str] = []


@dataclass
class Summarize(BaseNode[State]):
    doc: str

    async def run(self, ctx: RunContext[State]) -> End[str]:
        ctx.state.summaries.append(self.doc.upper())
        return End(self.doc.upper())


@dataclass
class Start(BaseNode[State]):
    join: JoinStrategy = JoinStrategy.ALL

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Summarize(d) for d in ctx.state.docs], join=self.join)


graph = Graph(nodes=[Start, Summarize])


@pytest.mark.lift_deterministic(runs=100, max_concurrency=(1, 2, 8, None))
async def test_summaries_are_deterministic(lift_determinism):
    report = await lift_determinism(graph, Start(), state=State())
    assert report.deterministic and report.runs == 100


@pytest.mark.lift_deterministic(runs=20)
async def test_a_race_is_caught(lift_determinism):
    with pytest.raises(DeterminismError, match="not deterministic"):
        await lift_determinism(graph, Start(join=JoinStrategy.ANY), state=State())
"""

folder = Path(tempfile.mkdtemp())
(folder / "test_graph.py").write_text(test_module)
# The subprocess imports the same lift_graph as this notebook (the repository root).
env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
command = [sys.executable, "-m", "pytest", "-q", "--color=no", "test_graph.py"]
proc = subprocess.run(
    command, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
)
print(proc.stdout)

# %% [markdown]
# ## What this notebook showed

# %%
assert hashes[0] == hashes[1] and finish_orders[0] != finish_orders[1]
assert report.deterministic and report.runs == 100
assert all(len(seen) == 1 for seen in report.by_concurrency.values())
assert not caught.deterministic and caught.first_divergent_run is not None
assert path.startswith("state.finish_order")
assert raced.deterministic is False
assert race_report.results_agree and not race_report.deterministic
assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout + proc.stderr
print("all checks passed")
