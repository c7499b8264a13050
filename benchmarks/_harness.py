"""What every workload shares: sizes, result rows, targets, timing and peer look-up.

A workload is a function ``run(cfg: Config) -> Outcome``. It times lift_graph and
the peers in this process, checks that every engine really did the work (a wrong
answer raises ``BenchmarkError`` instead of producing a fast, meaningless figure),
and states the issue's targets as ``Target`` objects.

Peers (LangGraph, pydantic-graph) are imported lazily by the workloads, only after
``peer_missing`` said they are installed; a missing peer becomes a row with no
figure and a note.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ASYNCIO",
    "LANGGRAPH",
    "LIFT",
    "PYDANTIC_GRAPH",
    "BenchmarkError",
    "Config",
    "Outcome",
    "Row",
    "Target",
    "check",
    "expect",
    "median_time",
    "peer",
    "peer_missing",
    "run_async",
    "skipped",
]

LIFT = "lift_graph"
ASYNCIO = "asyncio"
LANGGRAPH = "LangGraph"
PYDANTIC_GRAPH = "pydantic-graph"

_PEER_MODULES = {LANGGRAPH: "langgraph", PYDANTIC_GRAPH: "pydantic_graph"}


T = TypeVar("T")

_MIN_REPS = 3
_BUDGET_S = 8.0


class BenchmarkError(RuntimeError):
    """An engine returned a wrong answer, so its timing would mean nothing."""


@dataclass(frozen=True, slots=True)
class Config:
    """Sizes and repetitions of one benchmark run.

    ``full()`` is the issue's sizes; ``quick()`` is small enough for CI; tests may
    shrink further with ``dataclasses.replace``.
    """

    quick: bool = False
    reps: int = 5
    warmup: int = 1
    peers: bool = True
    chain_n: int = 1000
    fan_sizes: tuple[int, ...] = (1000, 10000)
    #: Multiplies the sleeps of the unbalanced-paths workload.
    unbalanced_scale: float = 1.0
    jitter_sizes: tuple[int, ...] = (50, 100, 200)
    #: Multiplies the jitter sleeps. Below 1 the loop's ~1 ms timer overshoot per
    #: sleep becomes a visible share of the makespan, for asyncio itself too.
    jitter_scale: float = 1.0
    jitter_slots: int = 8
    iso_docs: int = 10000
    iso_nodes: int = 50
    rpm_nodes: int = 3000
    rpm_limit: int = 600
    mem_branches: int = 100000
    #: Branches of the reducer-merge fork (append / merge_dict vs writing nothing).
    #: Not much below 20,000 in quick mode: the writing forks keep n changes alive
    #: until the join, and whether one full GC pass falls inside a small run (on a
    #: heap holding the peers' modules) would decide the ratio.
    merge_branches: int = 100000
    #: DSPy RAG: questions, slots (max_concurrency / threads), LM latency (s);
    #: BestOfN rollouts.
    dspy_questions: int = 128
    dspy_slots: int = 16
    dspy_latency: float = 0.05
    dspy_rollouts: int = 8
    #: Durability: nodes of the journaled chain (and branches of the journaled fan-out).
    durability_n: int = 200
    #: Crash workload: random SIGKILL points, each followed by a resume in a fresh
    #: process (two interpreter starts per kill).
    crash_kills: int = 40
    #: Batch: inputs, inputs at once, seconds each of the 3 nodes sleeps, failing inputs.
    batch_n: int = 1000
    batch_slots: int = 16
    batch_sleep: float = 0.001
    batch_failures: int = 3
    #: Back-pressure: calls and provider limit (per virtual minute) on the fake
    #: clock, and calls against the local HTTP fake (10 per real second).
    bp_calls: int = 3000
    bp_limit: int = 600
    bp_http_calls: int = 100
    #: Ray: inputs of the batch (one 50 ms fake-LM call each, 64 at a time), the
    #: call's seconds, timed map calls on Ray and untimed ones first (each starts its
    #: own workers); permits through the shared limiter one at a time and by 64
    #: acquirers at once.
    ray_n: int = 2000
    ray_latency: float = 0.05
    ray_reps: int = 5
    ray_warmup: int = 1
    ray_permits_sequential: int = 1000
    ray_permits_concurrent: int = 6400
    #: Also measure the peers' memory (minutes at 100,000 branches).
    memory_peers: bool = False

    @classmethod
    def full(cls) -> Config:
        return cls()

    @classmethod
    def quick_mode(cls) -> Config:
        return cls(
            quick=True,
            reps=3,
            chain_n=1000,
            fan_sizes=(200, 1000),
            unbalanced_scale=0.2,
            jitter_sizes=(50,),
            iso_docs=2000,
            iso_nodes=20,
            rpm_nodes=600,
            rpm_limit=120,
            mem_branches=20000,
            merge_branches=20000,
            dspy_questions=32,
            dspy_slots=8,
            dspy_rollouts=4,
            durability_n=50,
            crash_kills=5,
            batch_n=1000,
            bp_calls=600,
            bp_limit=120,
            bp_http_calls=20,
            ray_n=640,
            ray_reps=2,
            ray_permits_sequential=300,
            ray_permits_concurrent=1280,
        )


@dataclass(slots=True)
class Row:
    """One figure of one engine on one workload (``figure=None``: not measured)."""

    workload: str
    engine: str
    figure: float | None
    unit: str
    note: str = ""
    #: This figure divided by lift_graph's on the same workload (``Outcome.compare``).
    versus_lift: float | None = None
    #: Machine-readable side figures (peak in flight, makespan, ...), for tests.
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Target:
    """One of the issue's targets: ``value`` against ``limit`` with ``op``.

    ``ok`` is None when the target could not be evaluated (a peer is missing).
    """

    workload: str
    what: str
    value: float | None
    op: str
    limit: float
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.value is None:
            return None
        v, lim = self.value, self.limit
        return {"<=": v <= lim, ">=": v >= lim, "<": v < lim, ">": v > lim}[self.op]

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]


@dataclass(slots=True)
class Outcome:
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def figure(self, workload: str, engine: str) -> float | None:
        for r in self.rows:
            if r.workload == workload and r.engine == engine:
                return r.figure
        return None

    def compare(self) -> Outcome:
        """Fill ``versus_lift``: each figure divided by lift_graph's on that workload."""
        lift = {r.workload: r.figure for r in self.rows if r.engine == LIFT}
        for r in self.rows:
            base = lift.get(r.workload)
            # A ratio to a figure that is zero or negative (a cost below run-to-run
            # noise) means nothing: leave the column empty.
            if r.figure is not None and base is not None and base > 0:
                r.versus_lift = r.figure / base
        return self


def peer_missing(engine: str, cfg: Config) -> str | None:
    """Why ``engine`` cannot run here (None: it can). Never imports it."""
    if engine not in _PEER_MODULES:
        return None
    if not cfg.peers:
        return "skipped: peers disabled"
    if importlib.util.find_spec(_PEER_MODULES[engine]) is None:
        return (
            f"skipped: {_PEER_MODULES[engine]} is not installed (pip install 'lift_graph[bench]')"
        )
    return None


def peer(module: str) -> Any:
    """Import ``benchmarks.peers.<module>`` (which imports its peer)."""
    return importlib.import_module(f"benchmarks.peers.{module}")


def skipped(workload: str, engine: str, unit: str, reason: str) -> Row:
    return Row(workload, engine, None, unit, reason)


def check(engine: str, what: str, got: Any, expected: Any) -> None:
    """:raises BenchmarkError: ``got != expected``."""
    if got != expected:
        shown = repr(got)
        shown = shown if len(shown) < 80 else shown[:77] + "..."
        raise BenchmarkError(f"{engine}: {what} gave {shown}, expected {expected!r}")


def expect(engine: str, what: str, expected: Any) -> Callable[[Any], None]:
    """A ``verify`` for ``median_time``: the result must equal ``expected``."""
    return lambda got: check(engine, what, got, expected)


async def median_time(
    make: Callable[[], Awaitable[Any]],
    cfg: Config,
    *,
    verify: Callable[[Any], None] | None = None,
    warmup: int | None = None,
    reps: int | None = None,
) -> float:
    """Median wall time in seconds of ``await make()`` over ``cfg.reps`` runs.

    Runs ``warmup`` untimed calls first (``cfg.warmup`` by default) and collects
    garbage before each timed call, so one run's garbage is not charged to the
    next. ``verify`` checks the first result. Stops early, after at least three
    samples, once they add up to more than ``_BUDGET_S`` (slow peers at large sizes).
    """
    for _ in range(cfg.warmup if warmup is None else warmup):
        await make()
    samples: list[float] = []
    wanted = cfg.reps if reps is None else reps
    while len(samples) < wanted:
        gc.collect()
        began = time.perf_counter()
        out = await make()
        samples.append(time.perf_counter() - began)
        if len(samples) == 1 and verify is not None:
            verify(out)
        if len(samples) >= _MIN_REPS and sum(samples) > _BUDGET_S:
            break  # slow engine at a large size: the median of 3 will do
    return statistics.median(samples)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a workload's coroutine on a fresh event loop (one per workload)."""
    return asyncio.run(coro)
