# %% [markdown]
# # lift_graph quickstart
#
# A graph is a set of node classes. A node's `run` returns the next node, `End(value)`,
# or a `Fork` of branches that run concurrently, each on an isolated copy of the state,
# and meet again at a join node. This notebook builds a small graph, runs it, looks at
# what happened, watches its events, sets limits, makes a branch fail, and drives a
# node with DSPy.
#
# Everything runs offline: `FakeLM` (from `nodes/fake_lm.py`) is a fake LLM with
# latency whose answer is a pure function of the prompt.

# %%
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, Field

from lift_graph import (
    BaseNode,
    DSPyNode,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinError,
    Limits,
    ProviderLimit,
    RunContext,
    append,
)
from nodes.fake_lm import FakeLM, ask, dummy_lm

# %% [markdown]
# ## State and nodes
#
# The state is a pydantic model. `summaries` carries the `append` reducer: when the
# branches join, each branch's appended items are concatenated **in branch order**,
# whatever order the branches finished in.
#
# Nodes are dataclasses. Their fields are parameters (`Summarize("forks")`); class
# attributes tell the engine how to run them: `provider` names the limits that apply,
# `reads` / `writes` say which fields the node touches (only what it writes is copied
# for it). `ctx.deps` is whatever the run was given as `deps`, here the LM, and
# `ask(ctx, prompt)` calls it and charges its tokens to the node.


# %%
class State(BaseModel):
    topics: list[str]
    summaries: Annotated[list[str], append] = Field(default_factory=list)
    report: str = ""


@dataclass
class Plan(BaseNode[State]):
    on_error: FailureMode = FailureMode.FAIL_ALL

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        branches = [Summarize(topic) for topic in ctx.state.topics]
        return Fork(branches, then=Combine(), on_error=self.on_error)


@dataclass
class Summarize(BaseNode[State]):
    topic: str
    provider = "fake"
    reads = frozenset({"topics"})
    writes = frozenset({"summaries"})

    async def run(self, ctx: RunContext[State]) -> End[str]:
        text = await ask(ctx, f"Summarize: {self.topic}")
        ctx.state.summaries.append(f"{self.topic}: {text}")
        return End(text)


@dataclass
class Combine(BaseNode[State]):
    reads = frozenset({"summaries"})
    writes = frozenset({"report"})

    async def run(self, ctx: RunContext[State]) -> End[str]:
        join = ctx.join  # the JoinResult of the fork that led here
        ctx.state.report = "\n".join(ctx.state.summaries)
        failed = f", failed: {sorted(join.errors)}" if join.errors else ""
        return End(f"{join.succeeded}/{join.total} topics summarized{failed}")


graph = Graph(nodes=[Plan, Summarize, Combine], name="quickstart")
graph

# %% [markdown]
# `Graph(...)` checks the classes when it is built (an `async def run`, return
# annotations naming classes of the graph, `reads` / `writes` naming real fields).
# The last expression of a cell is displayed: a graph shows itself as a mermaid
# diagram (JupyterLab 4.1+ and GitHub draw it; other front ends show the text), drawn
# before anything has run from what the code declares: return annotations, and the
# fork `Plan.run` builds with its branch class, join node and strategy. `on_error`
# is a field of `Plan`, known only at run time, so the diagram shows it as `?`.
#
# ## Run it
#
# A notebook cell already runs inside an event loop, so `await` works at the top level.
# `result.output` is the value of the final `End`, `result.state` the final state; the
# caller's `state` object is never modified.

# %%
lm = FakeLM(latency=0.02, jitter=0.9, seed=1)
state = State(topics=["forks", "joins", "limits", "retries"])

result = await graph.run(Plan(), state=state, deps=lm)

print(result.output)
print(result.state.report)
print("deterministic:", result.deterministic)
print("caller's state untouched:", state.summaries == [])

# %% [markdown]
# `result.records` has one record per node execution, sorted by key. A key says
# where the execution sits in the graph: `0.Plan/2/0.Summarize` is step 0 of branch 2
# of the fork that `Plan` (step 0) returned. The branches overlapped: the run took
# about as long as its slowest branch, not the sum.

# %%
for record in result.records:
    print(f"{record.key:24} {record.status:9} {record.execution_time_ms:6.1f} ms")
branch_ms = sum(r.execution_time_ms for r in result.records if r.node == "Summarize")
print(f"run: {result.elapsed_ms:.0f} ms; the four branches alone: {branch_ms:.0f} ms")

# %% [markdown]
# The same records as a picture: `result.timeline()` draws a lane per path, a bar per
# node attempt, and where the fork split and joined (more in the parallel patterns
# notebook).

# %%
result.timeline()

# %% [markdown]
# `run_sync` takes the same arguments. It works in a script and also here, inside the
# notebook's running loop (it runs the graph on a helper thread and waits). With
# join `ALL` the output and the final state are byte-identical at any
# `max_concurrency`, including 1, where nodes run one at a time.

# %%
one_at_a_time = graph.run_sync(Plan(), state=state, deps=lm, max_concurrency=1)
print(one_at_a_time.output)
print("same state:", one_at_a_time.state.model_dump_json() == result.state.model_dump_json())

# %% [markdown]
# ## Limits
#
# `Limits` caps how many nodes run at once, globally and per provider (concurrency,
# requests and tokens per minute). One `Limits` object can be shared by several runs;
# its counters then hold across all of them. Eight topics, at most two `fake` calls
# at a time:

# %%
limits = Limits(max_concurrency=4, providers={"fake": ProviderLimit(concurrency=2)})
eight = State(topics=[f"topic {i}" for i in range(8)])

limited = await graph.run(Plan(), state=eight, deps=lm, limits=limits)

print(limited.output)
print("most 'fake' calls in flight at once:", limits.provider_peak("fake"))
print("most nodes in flight at once:", limited.peak_concurrency)

# %% [markdown]
# ## Watching a run
#
# `graph.iter(...)` takes the same arguments as `run` and yields typed events as they
# happen: `run_started`, `node_started` / `node_finished` / `node_failed` /
# `node_retry`, `fork_started`, `join_finished`, `custom` ones a node sends with
# `ctx.emit(name, data)`, and last `run_finished`, which carries the `RunResult`.
# The branches' events come in the order the branches finish.

# %%
async for event in graph.iter(Plan(), state=state, deps=lm):
    if event.kind in ("fork_started", "node_finished", "join_finished"):
        print(f"{event.kind:14} {event.key}")
    elif event.kind == "run_finished":
        print(f"{event.kind:14} {event.result.output}")

# %% [markdown]
# ## A failing branch
#
# By default (`on_error=FailureMode.FAIL_ALL`) the first failed branch cancels its
# running siblings and fails the join with a `JoinError`. The error keeps what the
# finished branches returned, and its `__cause__` is the failed branch's exception.
# This LM fails every prompt that mentions "joins":

# %%
flaky = FakeLM(latency=0.02, fail_if_contains=["joins"])

try:
    await graph.run(Plan(), state=state, deps=flaky)
except JoinError as error:
    print("join failed:", error.__cause__)
    print("failed branches:", sorted(error.errors))

# %% [markdown]
# With `on_error=FailureMode.CONTINUE` the errors are collected beside the results,
# the state merges the branches that succeeded, and the path goes on to `Combine`,
# which reads `ctx.join.errors`. (`FAIL_FIRST`, the third mode, lets the siblings
# finish before failing the join.)

# %%
tolerant = await graph.run(Plan(on_error=FailureMode.CONTINUE), state=state, deps=flaky)
print(tolerant.output)
print(tolerant.state.report)

# %% [markdown]
# ## A DSPy node
#
# A `DSPyNode` runs a DSPy module on its signature: inputs come from the node's own
# fields, then from the state; outputs are written to the state, here mapped to the
# `summaries` field (so each branch's summary is appended, in branch order). Its
# `reads` / `writes` come from the signature. `dummy_lm` builds DSPy's `DummyLM` in dict
# mode, which answers by prompt content, so the run is deterministic. With a real
# model you would pass `lm=dspy.LM("openai/gpt-4o-mini", num_retries=0)`.


# %%
@dataclass
class Headline(DSPyNode[State]):
    topic: str
    signature = "topic -> headline"
    outputs = {"headline": "summaries"}


@dataclass
class PlanHeadlines(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Headline(topic=t, lm=headline_lm) for t in ctx.state.topics])


headline_lm = dummy_lm(
    {
        "forks": {"headline": "Forks run branches at once"},
        "joins": {"headline": "Joins merge in branch order"},
    }
)
headline_lm.cache = False  # DSPy caches answers by default; measure the model, not the cache

dspy_graph = Graph(nodes=[PlanHeadlines, Headline], name="headlines")
headlines = await dspy_graph.run(PlanHeadlines(), state=State(topics=["forks", "joins"]))
print(headlines.state.summaries)
print("reads:", sorted(Headline.reads), "writes:", sorted(Headline.writes))

# %% [markdown]
# ## What this notebook showed
#
# The checks below run with the notebook, so a change that breaks what the text
# says fails the build.

# %%
assert result.output == "4/4 topics summarized"
assert [s.split(":")[0] for s in result.state.summaries] == state.topics
assert one_at_a_time.state == result.state
assert limits.provider_peak("fake") == 2
assert tolerant.output == "3/4 topics summarized, failed: [1]"
assert headlines.state.summaries == ["Forks run branches at once", "Joins merge in branch order"]
print("all checks passed")
