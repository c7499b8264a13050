"""The limiter actor's logic, driven directly on one event loop (no Ray processes):
leases granted in batches, taken back from silent clients, windows widened."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("ray", reason="Ray could not be installed on this platform")

from lift_graph import ProviderLimit
from lift_graph._rate_signals import RateSignal
from lift_graph.ray._limiter import LimiterConfig, LimiterCore

pytestmark = pytest.mark.asyncio


def core(ttl: float = 60.0, margin: float = 0.0, **limit: int) -> LimiterCore:
    providers = {"p": ProviderLimit(**limit)}
    return LimiterCore(LimiterConfig(None, providers, margin, ttl))


async def test_one_call_grants_what_is_free_and_no_more() -> None:
    limiter = core(concurrency=3)
    leases, *_ = await limiter.acquire("a", "p", 0, 5)
    assert len(leases) == 3  # asked for 5: the cap is 3
    assert limiter.gauges().in_flight["p"] == 3
    waiting = asyncio.ensure_future(limiter.acquire("b", "p", 0, 2))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing free: it waits for the first permit
    limiter.apply("a", [("release", leases[0], 0)])
    more, *_ = await asyncio.wait_for(waiting, 1)
    assert len(more) == 1  # the one given back; the second is not free
    gauges = limiter.gauges()
    assert (gauges.calls, gauges.granted, gauges.provider_peaks["p"]) == (2, 4, 3)


async def test_rpm_batches_stop_at_the_window() -> None:
    limiter = core(rpm=4, window=60.0)
    leases, *_ = await limiter.acquire("a", "p", 0, 10)
    assert len(leases) == 4
    assert limiter.limits.try_acquire("p") is None


async def test_leases_of_a_silent_client_are_taken_back() -> None:
    limiter = core(ttl=0.2, concurrency=2)
    held, *_ = await limiter.acquire("dead", "p", 0, 2)
    assert len(held) == 2
    # The live client waits; the dead one never renews: its leases return after ~ttl.
    got, *_ = await asyncio.wait_for(limiter.acquire("live", "p", 0, 1), 2.0)
    assert len(got) == 1
    assert limiter.gauges().reclaimed == 2
    # A release of a reclaimed lease is ignored (not counted twice).
    limiter.apply("dead", [("release", held[0], 0)])
    assert limiter.gauges().in_flight["p"] == 1
    await limiter.stop()


async def test_forget_gives_back_every_lease_of_a_client() -> None:
    limiter = core(concurrency=4)
    await limiter.acquire("w1", "p", 0, 3)
    await limiter.acquire("w2", "p", 0, 1)
    assert limiter.forget("w1") == 3
    assert limiter.gauges().in_flight["p"] == 1


async def test_margin_widens_every_window_and_throttle_pauses() -> None:
    limiter = core(margin=0.25, rpm=1, window=1.0)
    assert limiter.limits.providers["p"].window == 1.25
    (lease,), *_ = await limiter.acquire("a", "p", 0, 1)
    pause = await limiter.throttle("a", lease, "p", RateSignal(retry_after=2.0), 0.5)
    assert pause == pytest.approx(2.0)
    assert 1.9 < limiter.wait_time("a", "p") <= 2.0
    assert limiter.gauges().status["p"].refusals == 1


async def test_a_late_start_is_counted_from_when_it_started() -> None:
    limiter = core(rpm=2, tpm=100, window=10.0)
    (first,), *_ = await limiter.acquire("a", "p", 30, 1)
    (second,), *_ = await limiter.acquire("a", "p", 30, 1)
    rate = limiter.limits._rates["p"]
    counted = list(rate.requests)
    # The first grant reached its worker 4 s late: its request (and its tokens) now
    # leave the window 4 s later than the second's.
    limiter.apply("a", [("late", first, 4.0)])
    assert list(rate.requests) == [counted[1], counted[0] + 4.0]
    assert [e[0] for e in rate.tokens] == [counted[1], counted[0] + 4.0]
    assert rate.tokens[1] is limiter._leases[first][1].reservation
    # 10.5 s on, the second call left the windows; the first holds its 30 tokens
    # until 14 s, so 80 more must wait ~3.5 s.
    later = counted[0] + 10.5
    assert rate.wait_time(later, 80) == pytest.approx(3.5, abs=0.01)
    # A second report of the same lease, or one for a lease given back, does nothing.
    limiter.apply("a", [("late", first, 1.0), ("release", second, 30), ("late", second, 2.0)])
    assert list(rate.requests) == [counted[0] + 4.0]  # (the second left at `later`)
