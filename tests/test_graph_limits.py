"""Limits: max_concurrency, per-provider concurrency, RPM windows, shared limits, retry."""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    FakeClock,
    Fork,
    Graph,
    Limits,
    ProviderLimit,
    Retry,
    RunContext,
    add,
    append,
    canonical_json,
)


class State(BaseModel):
    done: list[int] = []
    by_key: dict[str, int] = {}
    total: Annotated[int, add] = 0
    notes: Annotated[list[str], append] = []


@dataclass
class Gauge:
    """In-flight counters measured inside the nodes, overall and per provider."""

    in_flight: dict[str | None, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str | None, int] = field(default_factory=lambda: defaultdict(int))
    events: list[tuple[str, str, float]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    clock: Any = None

    def enter(self, provider: str | None) -> None:
        for key in {provider, "*"}:
            self.in_flight[key] += 1
            self.peak[key] = max(self.peak[key], self.in_flight[key])

    def leave(self, provider: str | None) -> None:
        for key in {provider, "*"}:
            self.in_flight[key] -= 1


# -- max_concurrency: 50 branches on 8 slots ------------------------------------------


@dataclass
class Sleeper(BaseNode[State]):
    index: int
    delay: float

    async def run(self, ctx: RunContext[State]) -> End[dict[str, int]]:
        gauge: Gauge = ctx.deps
        gauge.enter(None)
        try:
            await asyncio.sleep(self.delay)
        finally:
            gauge.leave(None)
        ctx.state.done.append(self.index)
        ctx.state.by_key[f"k{self.index:02d}"] = self.index * self.index
        ctx.state.total += self.index
        ctx.state.notes.append(f"n{self.index}")
        return End({"i": self.index, "sq": self.index * self.index})


@dataclass
class FanOut(BaseNode[State]):
    delays: list[float]

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Sleeper(i, d) for i, d in enumerate(self.delays)])


FANOUT = Graph(nodes=[FanOut, Sleeper])


def greedy_makespan(durations: list[float], slots: int) -> float:
    """List schedule in the given order: each job takes the earliest free slot."""
    free = [0.0] * slots
    heapq.heapify(free)
    end = 0.0
    for d in durations:
        start = heapq.heappop(free)
        finish = start + d
        end = max(end, finish)
        heapq.heappush(free, finish)
    return end


@pytest.mark.asyncio
async def test_fifty_branches_on_eight_slots_follow_the_greedy_schedule() -> None:
    rng = random.Random(1234)
    delays = [rng.uniform(0.010, 0.100) for _ in range(50)]
    gauge = Gauge()
    began = time.perf_counter()
    result = await FANOUT.run(FanOut(delays), state=State(), deps=gauge, max_concurrency=8)
    makespan = time.perf_counter() - began
    ideal = greedy_makespan(delays, 8)
    ratio = makespan / ideal
    print(f"50 branches / 8 slots: makespan {makespan:.3f} s, greedy {ideal:.3f} s, {ratio:.3f}")
    assert gauge.peak[None] == 8
    assert result.peak_concurrency == 8
    assert ratio < 1.25
    assert ratio > 0.95  # never faster than the schedule allows: the limit held
    assert result.output == [{"i": i, "sq": i * i} for i in range(50)]


@pytest.mark.asyncio
async def test_fifty_branches_merge_identically_over_twenty_latency_seeds() -> None:
    outputs: set[str] = set()
    states: set[str] = set()
    for seed in range(20):
        rng = random.Random(seed)
        delays = [rng.uniform(0.001, 0.010) for _ in range(50)]
        result = await FANOUT.run(FanOut(delays), state=State(), deps=Gauge(), max_concurrency=8)
        outputs.add(canonical_json(result.output))
        states.add(result.state.model_dump_json())
    assert len(outputs) == 1 and len(states) == 1
    state = State.model_validate_json(states.pop())
    assert state.done == list(range(50))
    assert state.notes == [f"n{i}" for i in range(50)]
    assert state.total == sum(range(50))
    assert list(state.by_key) == sorted(state.by_key)


# -- per-provider concurrency ----------------------------------------------------------


@dataclass
class CallA(BaseNode[State]):
    index: int
    provider: ClassVar[str | None] = "a"

    async def run(self, ctx: RunContext[State]) -> End[int]:
        gauge: Gauge = ctx.deps
        gauge.enter(self.provider)
        try:
            await asyncio.sleep(0.01 + 0.002 * (self.index % 5))
        finally:
            gauge.leave(self.provider)
        return End(self.index)


@dataclass
class CallB(CallA):
    provider: ClassVar[str | None] = "b"


@dataclass
class Mixed(BaseNode[State]):
    n: int = 60

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([(CallA if i % 2 else CallB)(i) for i in range(self.n)])


@pytest.mark.asyncio
async def test_per_provider_concurrency_peaks_at_its_limit() -> None:
    limits = Limits(
        providers={"a": ProviderLimit(concurrency=4), "b": ProviderLimit(concurrency=2)}
    )
    gauge = Gauge()
    graph = Graph(nodes=[Mixed, CallA, CallB])
    result = await graph.run(Mixed(), state=State(), deps=gauge, limits=limits)
    print(f"provider peaks: a={gauge.peak['a']} b={gauge.peak['b']}")
    assert gauge.peak["a"] == 4
    assert gauge.peak["b"] == 2
    assert limits.provider_peak("a") == 4 and limits.provider_peak("b") == 2
    assert limits.in_flight("a") == 0 and limits.in_flight("b") == 0
    assert result.output == list(range(60))
    providers = {r.provider for r in result.records if r.node in ("CallA", "CallB")}
    assert providers == {"a", "b"}


# -- requests per minute, on a fake clock ----------------------------------------------


@dataclass
class Ping(BaseNode[State]):
    index: int
    provider: ClassVar[str | None] = "p"

    async def run(self, ctx: RunContext[State]) -> End[int]:
        gauge: Gauge = ctx.deps
        gauge.starts.append(gauge.clock.now())
        return End(self.index)


@dataclass
class Burst(BaseNode[State]):
    n: int

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Ping(i) for i in range(self.n)])


@pytest.mark.asyncio
async def test_rpm_limit_holds_in_every_window_and_is_used_fully() -> None:
    clock = FakeClock()
    limits = Limits(providers={"p": ProviderLimit(rpm=30)}, clock=clock)
    gauge = Gauge(clock=clock)
    graph = Graph(nodes=[Burst, Ping])
    result = await asyncio.wait_for(
        graph.run(Burst(90), state=State(), deps=gauge, limits=limits), timeout=20
    )
    assert result.output == list(range(90))
    starts = sorted(gauge.starts)
    assert len(starts) == 90
    # No sliding 60 s window holds more than 30 starts.
    worst = max(sum(1 for s in starts if t <= s < t + 60.0) for t in starts)
    assert worst <= 30
    # Throughput over the full windows between the first and the last start.
    first, last = starts[0], starts[-1]
    windows = int((last - first) // 60.0)
    assert windows >= 2
    in_full = sum(1 for s in starts if s < first + windows * 60.0)
    per_minute = in_full / windows
    print(f"rpm: {per_minute:.1f}/min of 30 ({per_minute / 30:.1%}), worst window {worst}")
    assert per_minute >= 0.95 * 30


# -- one Limits object shared by two runs ---------------------------------------------


@pytest.mark.asyncio
async def test_shared_limits_hold_across_concurrent_runs() -> None:
    limits = Limits(max_concurrency=3)
    gauge = Gauge()  # one gauge for both runs
    rng = random.Random(7)
    d1 = [rng.uniform(0.005, 0.02) for _ in range(12)]
    d2 = [rng.uniform(0.005, 0.02) for _ in range(12)]
    r1, r2 = await asyncio.gather(
        FANOUT.run(FanOut(d1), state=State(), deps=gauge, limits=limits),
        FANOUT.run(FanOut(d2), state=State(), deps=gauge, limits=limits),
    )
    assert gauge.peak[None] == 3
    assert limits.peak == 3
    assert r1.state.done == list(range(12)) and r2.state.done == list(range(12))


# -- retry ----------------------------------------------------------------------------


@dataclass
class Timeline:
    events: list[tuple[str, float]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def mark(self, what: str) -> None:
        self.events.append((what, time.perf_counter()))

    def at(self, what: str) -> float:
        return next(t for w, t in self.events if w == what)


@dataclass
class Flaky(BaseNode[State]):
    retry: ClassVar[Retry | None] = Retry(attempts=2, backoff=0.2, jitter=0.0)

    async def run(self, ctx: RunContext[State]) -> End[str]:
        tl: Timeline = ctx.deps
        tl.attempts["flaky"] += 1
        tl.mark(f"flaky{ctx.attempt}.start")
        if ctx.attempt == 1:
            ctx.state.done.append(-1)  # rolled back before the retry
            tl.mark("flaky1.fail")
            raise ConnectionError("transient")
        ctx.state.done.append(1)
        return End("flaky ok")


@dataclass
class Other(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        tl: Timeline = ctx.deps
        tl.mark("other.start")
        await asyncio.sleep(0.05)
        tl.mark("other.end")
        ctx.state.done.append(2)
        return End("other ok")


@dataclass
class RetryStart(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Flaky(), Other()])


@pytest.mark.asyncio
async def test_retry_backoff_holds_no_slot() -> None:
    graph = Graph(nodes=[RetryStart, Flaky, Other])
    tl = Timeline()
    result = await graph.run(RetryStart(), state=State(), deps=tl, max_concurrency=1)
    assert result.output == ["flaky ok", "other ok"]
    assert tl.attempts["flaky"] == 2
    # The other branch ran entirely during the flaky node's backoff.
    assert tl.at("flaky1.fail") <= tl.at("other.start")
    assert tl.at("other.end") <= tl.at("flaky2.start")
    assert tl.at("flaky2.start") - tl.at("flaky1.fail") >= 0.18
    # The failed attempt's write was rolled back.
    assert result.state.done == [1, 2]
    (flaky,) = [r for r in result.records if r.node == "Flaky"]
    assert flaky.attempts == 2 and flaky.error is None


@dataclass
class Picky(BaseNode[State]):
    exc: type[Exception]
    retry: ClassVar[Retry | None] = Retry(
        attempts=3, backoff=0.001, jitter=0.0, retry_on=(ConnectionError,)
    )

    async def run(self, ctx: RunContext[State]) -> End[str]:
        tl: Timeline = ctx.deps
        tl.attempts[self.exc.__name__] += 1
        raise self.exc("nope")


@pytest.mark.asyncio
async def test_retry_on_restricts_which_errors_retry() -> None:
    graph = Graph(nodes=[Picky])
    tl = Timeline()
    with pytest.raises(ConnectionError):
        await graph.run(Picky(ConnectionError), state=State(), deps=tl)
    with pytest.raises(ValueError):
        await graph.run(Picky(ValueError), state=State(), deps=tl)
    assert tl.attempts == {"ConnectionError": 3, "ValueError": 1}
