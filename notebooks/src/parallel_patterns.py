# %% [markdown]
# # Parallel patterns: joins, failures, merges, limits, back-pressure
#
# A `Fork` runs its branches concurrently; its **join** decides when the path goes on,
# its **failure mode** what a failed branch does to the others, its **merge** how the
# branches' states become one. `Limits` bound how much runs at once and a provider's
# "429 Too Many Requests" pauses that whole provider. This notebook shows each of them
# on branches whose timing is known, then draws a run's timeline.
#
# The branches sleep instead of calling an LLM, so the timings are what the text says.

# %%
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from lift_graph import (
    BaseNode,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinError,
    JoinResult,
    JoinStrategy,
    Limits,
    MergeError,
    MergeStrategy,
    ProviderLimit,
    RateLimited,
    Retry,
    RunContext,
    append,
)

# %% [markdown]
# ## The pieces
#
# `Ask` stands for one LLM call: it takes `seconds`, then appends its answer to the
# state and returns it, or raises when it is `broken`. `Fanout` forks over a mapping
# of named branches (the names become the branch keys) with whatever `Fork` options it
# is given, and `Report` returns the fork's `JoinResult` as the run's output.


# %%
class State(BaseModel):
    answers: Annotated[list[str], append] = Field(default_factory=list)
    best: str = ""


@dataclass
class Ask(BaseNode[State]):
    answer: str
    seconds: float
    broken: bool = False
    provider = "llm"

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(self.seconds)
        if self.broken:
            raise ConnectionError(f"{self.answer}: provider went away")
        ctx.state.answers.append(self.answer)
        return End(self.answer)


@dataclass
class Fanout(BaseNode[State]):
    branches: dict[str, BaseNode[State]]
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of Fork

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork(dict(self.branches), then=Report(), **self.options)


@dataclass
class Report(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[JoinResult[Any]]:
        return End(ctx.join)


graph = Graph(nodes=[Fanout, Ask, Report], name="patterns")


def four() -> dict[str, BaseNode[State]]:
    """Four branches; they finish (or fail) in this order."""
    return {
        "broken": Ask("broken", 0.01, broken=True),
        "fast": Ask("fast", 0.04),
        "medium": Ask("medium", 0.12),
        "slow": Ask("slow", 0.25),
    }


def describe(join: JoinResult[Any]) -> str:
    """Each branch's status (and value), in branch order."""
    parts = []
    for key, status, value in zip(join.keys, join.statuses, join.results, strict=True):
        parts.append(f"{key}={status.name.lower()}" + (f"({value})" if value else ""))
    winner = f" winner={join.winner}" if join.winner is not None else ""
    return " ".join(parts) + winner


async def fanout(branches: dict[str, BaseNode[State]], **options: Any) -> str:
    """Run one fork; say how each branch ended and whether the run is deterministic."""
    try:
        result = await graph.run(Fanout(branches, options), state=State())
    except JoinError as error:
        return f"JoinError, caused by {error.__cause__!r}\n    {describe(error.join)}"
    return f"{describe(result.output)}\n    deterministic={result.deterministic}"


# %% [markdown]
# ## Join strategies
#
# | `join` | the path goes on when | the others |
# |---|---|---|
# | `ALL` (default) | every branch has finished | — |
# | `ANY` | the first branch *succeeds* | cancelled |
# | `FIRST` | the first branch *finishes*, success or not | cancelled |
# | `QUORUM` | `quorum` branches succeeded (a count or a fraction) | cancelled |
# | `FIRST_ACCEPTED` | the lowest-index branch whose value passes `accept` is known | cancelled |
#
# Under `ANY` and `QUORUM` a failed branch only counts against the quorum. `FIRST` takes
# whoever finishes first, so here the broken branch fails the join. `ANY`, `FIRST` and
# `QUORUM` are races: the run says it is not deterministic. `FIRST_ACCEPTED` is not a
# race: the winner is the first *in branch order* that passes (`fast` is rejected
# below, `medium` accepted), as `dspy.BestOfN` picks, with the branches running at once.

# %%
joins = {
    "ALL, CONTINUE": dict(join=JoinStrategy.ALL, on_error=FailureMode.CONTINUE),
    "ANY": dict(join=JoinStrategy.ANY),
    "FIRST": dict(join=JoinStrategy.FIRST),
    "QUORUM of 2": dict(join=JoinStrategy.QUORUM, quorum=2),
    "FIRST_ACCEPTED": dict(join=JoinStrategy.FIRST_ACCEPTED, accept=lambda v: len(v) > 4),
}
seen = {}
for title, options in joins.items():
    seen[title] = await fanout(four(), **options)
    print(f"{title:15} {seen[title]}")

# %% [markdown]
# ## Failure modes
#
# `on_error` says what a failed branch does under join `ALL`:
#
# - `FAIL_ALL` (default): the first error cancels the running siblings and fails the join;
# - `FAIL_FIRST`: the failed branch is marked, the siblings run to the end, then the join
#   fails (their values are kept in `JoinError.join`);
# - `CONTINUE`: errors are collected beside the results and the path goes on (above).
#
# A failed join raises `JoinError`; its `__cause__` is the lowest-index failed branch's
# error. A fork `timeout` cancels the branches still running and counts them as failed
# (`TimeoutError`) before `on_error` applies.

# %%
modes = {
    "FAIL_ALL": dict(on_error=FailureMode.FAIL_ALL),
    "FAIL_FIRST": dict(on_error=FailureMode.FAIL_FIRST),
    "timeout 0.08 s": dict(on_error=FailureMode.CONTINUE, timeout=0.08),
}
for title, options in modes.items():
    seen[title] = await fanout(four(), **options)
    print(f"{title:15} {seen[title]}")

# %% [markdown]
# A node can also retry on its own: `retry = Retry(...)` re-runs a failed attempt
# after an exponential backoff with jitter, rolling back what the attempt wrote. The
# node holds no concurrency slot while it backs off. `ctx.attempt` counts from 1.


# %%
@dataclass
class Unreliable(Ask):
    retry = Retry(attempts=3, backoff=0.01)

    async def run(self, ctx: RunContext[State]) -> End[str]:
        if ctx.attempt < 3:
            await asyncio.sleep(self.seconds)
            raise TimeoutError(f"{self.answer}: attempt {ctx.attempt} timed out")
        return await super().run(ctx)


retry_graph = Graph(nodes=[Fanout, Ask, Unreliable, Report], name="retries")
retried = await retry_graph.run(
    Fanout({"steady": Ask("steady", 0.03), "shaky": Unreliable("shaky", 0.01)}), state=State()
)
print(describe(retried.output))
for record in retried.records:
    print(f"{record.key:28} attempts={record.attempts}")

# %% [markdown]
# ## Merge strategies
#
# A join merges the branches' states into the path's state. Branch writes are applied
# against the state at the fork, in **branch order**, never in completion order:
# `answers` below lists the slow branch first because it is branch 0.
#
# - `ALL_SUCCESS` (default) merges every successful branch field by field. A list gets
#   each branch's appended items; a scalar written by two branches is a `MergeError`
#   naming the field and the branches, even when they wrote the same value (declare a
#   reducer such as `Annotated[int, add]` to combine such writes).
# - `FIRST_SUCCESS` keeps the first successful branch by index and drops the others.
# - `MAJORITY` hashes each branch's value (normalized by `vote_key`), keeps the state
#   of the most common one (ties to the lowest index) and reports the agreement.


# %%
@dataclass
class Pick(Ask):
    """An Ask that also sets the scalar field ``best``."""

    async def run(self, ctx: RunContext[State]) -> End[str]:
        ctx.state.best = self.answer
        return await super().run(ctx)


merge_graph = Graph(nodes=[Fanout, Ask, Pick, Report], name="merges")

in_order = await merge_graph.run(
    Fanout({"slow": Ask("slow", 0.03), "fast": Ask("fast", 0.01)}), state=State()
)
print("ALL_SUCCESS answers:", in_order.state.answers)

try:
    await merge_graph.run(Fanout({"a": Pick("same", 0.01), "b": Pick("same", 0.02)}), state=State())
except MergeError as error:
    print("MergeError:", error)

first = await merge_graph.run(
    Fanout(four(), {"merge": MergeStrategy.FIRST_SUCCESS, "on_error": FailureMode.CONTINUE}),
    state=State(),
)
print("FIRST_SUCCESS answers:", first.state.answers)

votes = {
    "a": Pick("Lyon", 0.01),
    "b": Pick(" paris", 0.02),
    "c": Pick("Paris.", 0.03),
}
vote = await merge_graph.run(
    Fanout(
        votes,
        {"merge": MergeStrategy.MAJORITY, "vote_key": lambda v: v.strip(" .").lower()},
    ),
    state=State(),
)
voted = vote.output
print(
    f"MAJORITY: winner {voted.winner!r}, best={vote.state.best!r}, "
    f"agreement {voted.agreement}/{voted.succeeded} ({voted.agreement_ratio:.2f})"
)

# %% [markdown]
# ## Limits
#
# `Limits(max_concurrency=..., providers={...})` caps the nodes running at once, and per
# provider the concurrent calls, requests per minute (`rpm`) and tokens per minute
# (`tpm`). A node waits for a slot before it starts; a parent waiting for its branches
# holds none, so nested forks cannot deadlock. Twelve `llm` calls and six `search`
# calls, at most three `llm` and two `search` at a time:


# %%
@dataclass
class Search(Ask):
    provider = "search"


limited_graph = Graph(nodes=[Fanout, Ask, Search, Report], name="limited")


def mixed() -> Fanout:
    calls: dict[str, BaseNode[State]] = {f"llm{i}": Ask(f"llm{i}", 0.02) for i in range(12)}
    calls |= {f"search{i}": Search(f"search{i}", 0.02) for i in range(6)}
    return Fanout(calls)


limits = Limits(
    max_concurrency=4,
    providers={"llm": ProviderLimit(concurrency=3), "search": ProviderLimit(concurrency=2)},
)
limited = await limited_graph.run(mixed(), state=State(), limits=limits)
unlimited = await limited_graph.run(mixed(), state=State())
print(f"limited: {limited.elapsed_ms:.0f} ms, unlimited: {unlimited.elapsed_ms:.0f} ms")
print("peak in flight: all", limits.peak, "| llm", limits.provider_peak("llm"), end=" ")
print("| search", limits.provider_peak("search"))

# %% [markdown]
# One `Limits` object shared by several runs holds across all of them: two runs at once
# still never have more than three `llm` calls in flight together.

# %%
shared = Limits(
    providers={"llm": ProviderLimit(concurrency=3), "search": ProviderLimit(concurrency=2)}
)
both = await asyncio.gather(
    limited_graph.run(mixed(), state=State(), limits=shared),
    limited_graph.run(mixed(), state=State(), limits=shared),
)
print("two runs,", sum(len(r.records) for r in both), "nodes;", end=" ")
print("llm peak:", shared.provider_peak("llm"))

# %% [markdown]
# ## Back-pressure: a 429 pauses the provider
#
# Limits you configure are kept; limits you did not know about come back as HTTP 429.
# A node that raises `RateLimited(retry_after=...)` (or lets through an error with
# status 429 from httpx, openai, litellm / DSPy or pydantic-ai) is not failed: no node
# of that provider starts until the pause is over, in every run sharing the `Limits`,
# and the refused node runs again afterwards. The engine also learns the provider's
# pace and spreads later calls out so fewer are refused.
#
# `Quota` is a provider that accepts four calls per 0.3 seconds and refuses the rest,
# saying when to come back:


# %%
@dataclass
class Quota:
    per_window: int
    window: float
    accepted: list[float] = field(default_factory=list)

    async def call(self, seconds: float) -> None:
        now = time.monotonic()
        recent = [t for t in self.accepted if t > now - self.window]
        if len(recent) >= self.per_window:
            raise RateLimited(retry_after=recent[0] + self.window - now)
        self.accepted.append(now)
        await asyncio.sleep(seconds)


@dataclass
class Call(Ask):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        await ctx.deps.call(self.seconds)
        ctx.state.answers.append(self.answer)
        return End(self.answer)


quota = Quota(per_window=4, window=0.3)
pressure = Limits(providers={"llm": ProviderLimit(concurrency=4)})
quota_graph = Graph(nodes=[Fanout, Call, Report], name="quota")
calls = {f"c{i}": Call(f"c{i}", 0.02) for i in range(10)}
pressed = await quota_graph.run(Fanout(calls), state=State(), deps=quota, limits=pressure)

status = pressure.status("llm")
print(f"{pressed.output.succeeded}/{pressed.output.total} calls succeeded")
print(f"refusals: {status.refusals}, pauses: {len(status.pauses)}", end=", ")
print(f"took {pressed.elapsed_ms:.0f} ms")

# %% [markdown]
# ## The timeline of a run
#
# `result.timeline()` draws what overlapped: a lane per path (the main path, each
# branch), a bar per node attempt coloured by provider, the waits for a slot (grey),
# retries and 429 pauses, and where the fork split and joined. It renders inline in
# Jupyter (a saved notebook keeps the picture), and `save(path)` writes it to a file.
#
# The limited run above: never more than four nodes at once (the global cap), of which
# at most three `llm` and two `search`; every other branch waits for a slot.

# %%
limited.timeline()

# %% [markdown]
# The retry run: the shaky branch's two failed attempts, each followed by its backoff,
# then the attempt that succeeded.

# %%
retried.timeline()

# %% [markdown]
# The back-pressure run: the call the provider refused, the provider's pause (no
# `llm` call starts during it), and the calls after it, spread out at the pace the
# engine learned.

# %%
pressed_timeline = pressed.timeline()
pressed_timeline

# %%
saved = Path(tempfile.mkdtemp()) / "backpressure.svg"
pressed_timeline.save(saved)
print(saved.name, saved.stat().st_size > 0)

# %% [markdown]
# ## What this notebook showed

# %%
assert seen["ANY"].startswith("broken=failed fast=succeeded(fast) medium=cancelled")
assert "winner=medium" in seen["FIRST_ACCEPTED"]
assert seen["FIRST"].startswith("JoinError, caused by ConnectionError")
assert "medium=succeeded(medium) slow=cancelled" in seen["QUORUM of 2"]
assert "deterministic=True" in seen["FIRST_ACCEPTED"]
assert "deterministic=False" in seen["ANY"]
assert "slow=cancelled" in seen["FAIL_ALL"] and "slow=succeeded" in seen["FAIL_FIRST"]
assert [r.attempts for r in retried.records if r.node == "Unreliable"] == [3]
assert in_order.state.answers == ["slow", "fast"]
assert first.state.answers == ["fast"]
assert (voted.winner, voted.agreement, vote.state.best) == ("b", 2, " paris")
assert (limits.provider_peak("llm"), limits.provider_peak("search")) == (3, 2)
assert shared.provider_peak("llm") == 3
assert pressed.output.succeeded == 10 and status.refusals >= 1
print("all checks passed")
