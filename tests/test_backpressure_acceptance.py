"""The issue's back-pressure acceptance, on a fake clock.

3,000 calls of provider ``llm`` under ``ProviderLimit(concurrency=64)`` against a
``FakeProvider`` that accepts R = 600 requests per sliding 60 s and refuses the rest
with HTTP 429 (``httpx.HTTPStatusError``). Every call must succeed, few requests be
refused, throughput stay at or above 0.95 R, and no request start inside a pause
(the engine's own, or one a refusal announced), nor the provider ever see more
than R accepted in a window. The graph and the figures are the benchmark's
(``benchmarks.workloads.backpressure``), so the test and the table agree.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from benchmarks.fake_provider import FakeProvider, max_in_window
from benchmarks.workloads.backpressure import (
    CALL_GRAPH,
    PROVIDER,
    SCENARIOS,
    Burst,
    CallState,
    Simulation,
    simulate,
)
from lift_graph import FakeClock, Limits, ProviderLimit

pytestmark = pytest.mark.asyncio

CALLS = 3000
R = 600
CAP = 64


def _assert_held(sim: Simulation, max_share: float) -> None:
    """What every back-pressure scenario must hold, read from the provider's log."""
    api, status = sim.api, sim.limits.status(PROVIDER)
    assert sim.succeeded == CALLS, f"{CALLS - sim.succeeded} calls failed"
    assert sim.refusals > 0, "the provider never refused: the scenario tests nothing"
    assert status.refusals == sim.refusals, "every 429 reached the engine"
    assert sim.share_429 <= max_share, f"{sim.refusals} of {sim.requests} requests were 429"
    assert sim.requests - sim.refusals == CALLS, "one accepted request per call"
    assert sim.throughput_ratio >= 0.95, f"throughput {sim.throughput_ratio:.3f} R"
    assert status.pauses, "a 429 pauses the provider"
    assert api.starts_inside(list(status.pauses)) == []
    if sim.scenario.retry_after:
        assert api.starts_inside() == [], "a request started inside an announced Retry-After"
    assert max_in_window(api.accepted, api.window) <= R
    assert sim.limits.provider_peak(PROVIDER) <= CAP


async def test_retry_after() -> None:
    sim = await simulate(SCENARIOS["retry_after"], CALLS, R)
    _assert_held(sim, 0.03)


async def test_retry_after_and_remaining_headers_reported() -> None:
    sim = await simulate(SCENARIOS["remaining"], CALLS, R)
    _assert_held(sim, 0.01)
    # The headers taught the pace before the provider had to refuse much.
    assert sim.limits.status(PROVIDER).learned_rpm is not None


async def test_no_retry_after_header() -> None:
    sim = await simulate(SCENARIOS["no_header"], CALLS, R)
    _assert_held(sim, 0.05)
    # Without a hint the engine backs off on its own, never longer than a window.
    assert all(0 < end - begin <= 60.0 for begin, end in sim.pauses)


async def test_two_runs_sharing_one_limits() -> None:
    sim = await simulate(SCENARIOS["two_runs"], CALLS, R)
    _assert_held(sim, 0.03)


async def test_two_runs_interleave_on_the_provider() -> None:
    """The shared Limits paces both runs as one: neither waits for the other."""
    clock = FakeClock()
    api = FakeProvider(clock, limit=R)
    limits = Limits(providers={PROVIDER: ProviderLimit(concurrency=CAP)}, clock=clock)
    half = CALLS // 2
    doors = [_Via(api), _Via(api)]
    results = await asyncio.gather(
        *(
            CALL_GRAPH.run(Burst(0, half), state=CallState(), deps=(door, False), limits=limits)
            for door in doors
        )
    )
    assert [r.output for r in results] == [half, half]
    for door in doors:  # each run keeps going through the whole run
        assert min(door.times) < 60.0 and max(door.times) > 180.0
    assert max_in_window(api.accepted, api.window) <= R
    assert api.refusals / len(api.log) <= 0.03
    assert api.starts_inside(list(limits.status(PROVIDER).pauses)) == []
    assert api.starts_inside() == []


async def test_fixed_window_provider() -> None:
    sim = await simulate(SCENARIOS["fixed"], CALLS, R)
    assert sim.succeeded == CALLS
    assert 0 < sim.share_429 <= 0.03
    assert sim.api.starts_inside(sim.pauses) == []
    assert sim.api.starts_inside() == []


async def test_fixed_window_provider_off_the_minute() -> None:
    """Calls that begin mid-window: the provider's minute and the engine's differ."""
    clock = FakeClock(start=37.5)
    api = FakeProvider(clock, limit=R, fixed=True)
    limits = Limits(providers={PROVIDER: ProviderLimit(concurrency=CAP)}, clock=clock)
    res: Any = await CALL_GRAPH.run(
        Burst(0, CALLS), state=CallState(), deps=(api, False), limits=limits
    )
    assert res.output == CALLS
    assert 0 < api.refusals / len(api.log) <= 0.05
    assert api.starts_inside(list(limits.status(PROVIDER).pauses)) == []
    assert api.starts_inside() == []


async def test_adaptive_concurrency_is_cut_on_the_first_429() -> None:
    clock = FakeClock()
    limits = Limits(
        providers={PROVIDER: ProviderLimit(concurrency=CAP, adaptive=True)}, clock=clock
    )
    api = _Watched(clock, limit=R, limits=limits)
    res: Any = await CALL_GRAPH.run(
        Burst(0, CALLS), state=CallState(), deps=(api, False), limits=limits
    )
    assert res.output == CALLS
    # Before the first 429 the cap is the configured one; right after it, halved.
    first = next(i for i, c in enumerate(api.log) if not c.accepted)
    before = [cap for t, cap, _ in api.seen if t <= api.log[first].time]
    after = [cap for t, cap, _ in api.seen if t > api.log[first].answered]  # type: ignore[operator]
    assert set(before) == {CAP}
    assert after and after[0] <= CAP // 2
    assert min(after) < CAP
    # Never above the cap: neither the limit nor the calls in flight.
    assert max(cap for _, cap, _ in api.seen) <= CAP
    assert max(flying for _, _, flying in api.seen) <= CAP
    assert limits.provider_peak(PROVIDER) <= CAP
    assert (limits.status(PROVIDER).concurrency or 0) <= CAP
    assert api.refusals / len(api.log) <= 0.03


async def test_adaptive_scenario_holds_the_acceptance() -> None:
    sim = await simulate(SCENARIOS["adaptive"], CALLS, R)
    _assert_held(sim, 0.03)


async def test_before_back_pressure_per_node_retry_fails_many_calls() -> None:
    """The old behaviour, as a baseline: the node wraps the 429 into a RuntimeError
    the engine does not recognize and relies on ``retry = Retry()`` (3 attempts,
    0.1 s backoff): the provider's window is still full when the retries come."""
    sim = await simulate(SCENARIOS["before"], CALLS, R)
    good = await simulate(SCENARIOS["retry_after"], CALLS, R)
    assert sim.limits.status(PROVIDER).refusals == 0, "the wrapped 429 is not recognized"
    assert sim.succeeded <= CALLS // 2, f"{sim.succeeded} succeeded"
    assert sim.refusals >= 10 * good.refusals
    assert sim.refusals >= 3 * (CALLS - sim.succeeded)  # each failed call: 3 refusals
    assert sim.share_429 > 0.5
    assert good.succeeded == CALLS


@dataclass
class _Via:
    """One run's door to a shared provider: records when that run's requests start."""

    api: FakeProvider
    times: list[float] = field(default_factory=list)

    async def complete(self, tokens: int = 0) -> dict[str, str]:
        self.times.append(self.api.clock.now())
        return await self.api.complete(tokens)


@dataclass
class _Watched(FakeProvider):
    """A FakeProvider that records, per request, the provider's cap and calls in flight."""

    limits: Limits | None = None
    seen: list[tuple[float, int, int]] = field(default_factory=list)

    async def complete(self, tokens: int = 0) -> dict[str, str]:
        assert self.limits is not None
        status = self.limits.status(PROVIDER)
        self.seen.append(
            (self.clock.now(), status.concurrency or 0, self.limits.in_flight(PROVIDER))
        )
        return await super().complete(tokens)
