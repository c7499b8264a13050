"""A 429 pauses the whole provider; tpm is reserved before a call and settled after.

Everything waits through a ``FakeClock``, so pauses of seconds take milliseconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    ConfigurationError,
    End,
    FakeClock,
    Fork,
    Graph,
    Limits,
    ProviderLimit,
    RateLimited,
    Retry,
    RunContext,
)

pytestmark = pytest.mark.asyncio


class S(BaseModel):
    log: list[str] = []


@dataclass
class Probe:
    """The side channel: virtual start times per node, and scripted refusals."""

    clock: FakeClock
    starts: list[tuple[str, float]] = field(default_factory=list)
    refuse: dict[str, list[BaseException]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    #: Limits whose provider "p" concurrency cap each start records in ``caps``.
    watch: Limits | None = None
    caps: list[int | None] = field(default_factory=list)


@dataclass
class Call(BaseNode[S]):
    name: str
    provider: ClassVar[str | None] = "p"
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[S]) -> End[str]:
        probe: Probe = ctx.deps
        probe.starts.append((self.name, probe.clock.now()))
        if probe.watch is not None:
            probe.caps.append(probe.watch.status("p").concurrency)
        pending = probe.refuse.get(self.name)
        if pending:
            raise pending.pop(0)
        if self.name in probe.tokens:
            ctx.record_tokens(probe.tokens[self.name])
        await probe.clock.sleep(1.0)
        return End(self.name)


@dataclass
class OtherCall(Call):
    provider: ClassVar[str | None] = "q"


@dataclass
class Big(Call):
    estimated_tokens: ClassVar[int | None] = 2_000


@dataclass
class Many(BaseNode[S]):
    calls: list[Any]
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork(list(self.calls))


GRAPH = Graph([Many, Call, OtherCall, Big])


def _limits(clock: FakeClock, **provider: Any) -> Limits:
    return Limits(providers={"p": ProviderLimit(**provider), "q": ProviderLimit()}, clock=clock)


async def test_a_429_pauses_every_node_of_the_provider_not_the_others() -> None:
    clock = FakeClock()
    probe = Probe(clock, refuse={"a": [RateLimited(retry_after=30.0)]})
    limits = _limits(clock, concurrency=1)
    calls = [Call("a"), Call("b"), Call("c"), OtherCall("x"), OtherCall("y")]
    result = await GRAPH.run(Many(calls), state=S(), deps=probe, limits=limits)
    assert result.output == ["a", "b", "c", "x", "y"]
    starts = dict(reversed(probe.starts))  # the first start of each name
    last_a = max(t for n, t in probe.starts if n == "a")
    # `a` was refused at t=0: nothing of provider p starts before t=30, q goes on.
    assert starts["a"] == 0.0 and last_a == pytest.approx(30.0)
    assert starts["b"] >= 30.0 and starts["c"] >= 30.0
    assert starts["x"] < 30.0 and starts["y"] < 30.0
    status = limits.status("p")
    assert status.refusals == 1
    assert status.pauses == ((0.0, 30.0),)
    assert limits.status("q").refusals == 0


async def test_rate_limit_retries_do_not_spend_the_nodes_retry() -> None:
    clock = FakeClock()
    refusals: list[BaseException] = [RateLimited(retry_after=1.0) for _ in range(3)]
    probe = Probe(clock, refuse={"a": refusals})
    result = await GRAPH.run(Many([Call("a")]), state=S(), deps=probe, limits=_limits(clock))
    assert result.output == ["a"]
    record = next(r for r in result.records if r.node == "Call")
    assert record.attempts == 4 and record.status == "succeeded"


async def test_the_providers_budget_spent_fails_the_node_without_its_retry() -> None:
    @dataclass
    class Stubborn(Call):
        retry: ClassVar[Retry | None] = Retry(attempts=5, backoff=0.0, jitter=0.0)

    clock = FakeClock()
    probe = Probe(clock, refuse={"a": [RateLimited(retry_after=1.0) for _ in range(10)]})
    graph = Graph([Many, Stubborn])
    limits = _limits(clock, max_rate_limit_retries=2)
    with pytest.raises(Exception) as caught:
        await graph.run(Many([Stubborn("a")]), state=S(), deps=probe, limits=limits)
    error = caught.value.__cause__ or caught.value
    assert isinstance(error, RateLimited)
    assert any("refused by provider 'p' 3 times" in note for note in error.__notes__)
    assert len(probe.starts) == 3  # 1 + 2 rate-limit retries, none of the node's Retry


async def test_recognized_http_429_pauses_with_its_retry_after_header() -> None:
    request = httpx.Request("POST", "https://api.invalid/v1/chat")
    response = httpx.Response(429, headers={"Retry-After": "12"}, request=request)
    refused = httpx.HTTPStatusError("429", request=request, response=response)
    clock = FakeClock()
    probe = Probe(clock, refuse={"a": [refused]})
    limits = _limits(clock)
    await GRAPH.run(Many([Call("a"), Call("b")]), state=S(), deps=probe, limits=limits)
    assert limits.status("p").pauses == ((0.0, 12.0),)
    assert [t for n, t in probe.starts if n == "a"] == [0.0, 12.0]


async def test_other_http_errors_are_the_nodes_own_failures() -> None:
    request = httpx.Request("POST", "https://api.invalid/v1/chat")
    response = httpx.Response(500, request=request)
    broken = httpx.HTTPStatusError("500", request=request, response=response)
    clock = FakeClock()
    probe = Probe(clock, refuse={"a": [broken]})
    limits = _limits(clock)
    with pytest.raises(Exception, match="500"):
        await GRAPH.run(Many([Call("a")]), state=S(), deps=probe, limits=limits)
    assert limits.status("p").refusals == 0


async def test_without_a_hint_the_provider_backs_off_exponentially_with_jitter() -> None:
    clock = FakeClock()
    # Each refusal comes after the previous pause ended: a new episode every time.
    probe = Probe(clock, refuse={"a": [RateLimited() for _ in range(4)]})
    limits = _limits(clock)
    await GRAPH.run(Many([Call("a")]), state=S(), deps=probe, limits=limits)
    lengths = [end - begin for begin, end in limits.status("p").pauses]
    assert len(lengths) == 4
    for n, length in enumerate(lengths):
        assert 0.5 * 2**n <= length <= 2**n  # base 1 s, doubled, jitter in [0.5, 1]


async def test_a_node_without_limits_still_waits_out_the_pause() -> None:
    clock_free = asyncio.get_running_loop().time
    probe = Probe(FakeClock(), refuse={"a": [RateLimited(retry_after=0.2)]})

    @dataclass
    class Plain(BaseNode[S]):
        name: str
        writes: ClassVar[frozenset[str]] = frozenset()

        async def run(self, ctx: RunContext[S]) -> End[str]:
            probe.starts.append((self.name, clock_free()))
            pending = probe.refuse.get(self.name)
            if pending:
                raise pending.pop(0)
            return End(self.name)

    result = await Graph([Plain]).run(Plain("a"), state=S())
    assert result.output == "a"
    (_, first), (_, second) = probe.starts
    assert second - first >= 0.15  # generous: it waited for the hint, not 0.2% of it


async def test_rate_limited_naming_another_provider_pauses_that_one() -> None:
    clock = FakeClock()
    probe = Probe(clock, refuse={"a": [RateLimited(retry_after=5.0, provider="q")]})
    limits = _limits(clock)
    calls = [Call("a"), OtherCall("x")]
    await GRAPH.run(Many(calls), state=S(), deps=probe, limits=limits)
    assert limits.status("q").pauses == ((0.0, 5.0),)
    assert limits.status("p").refusals == 0
    # `a` itself runs again only once q's pause is over.
    assert [t for n, t in probe.starts if n == "a"] == [0.0, 5.0]


async def test_cancelling_a_run_during_a_pause_leaves_nothing_held() -> None:
    clock = FakeClock()
    probe = Probe(clock, refuse={"a": [RateLimited(retry_after=1e6)]})
    limits = Limits(max_concurrency=4, providers={"p": ProviderLimit(concurrency=2)}, clock=clock)
    task = asyncio.ensure_future(
        GRAPH.run(Many([Call("a"), Call("b")]), state=S(), deps=probe, limits=limits)
    )
    while not limits.status("p").refusals:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limits.in_flight() == 0 and limits.in_flight("p") == 0


async def test_adaptive_concurrency_halves_on_a_429_and_grows_back_to_the_cap() -> None:
    clock = FakeClock()
    probe = Probe(clock, refuse={"c0": [RateLimited(retry_after=1.0)]})
    limits = _limits(clock, concurrency=8, adaptive=True)
    probe.watch = limits
    calls = [Call(f"c{i}") for i in range(200)]
    await GRAPH.run(Many(calls), state=S(), deps=probe, limits=limits)
    assert limits.provider_peak("p") <= 8
    # Cut to 4 at the refusal, then +1 per round of accepted calls: back to 8.
    assert probe.caps[0] == 8 and min(c for c in probe.caps if c is not None) == 4
    assert limits.status("p").concurrency == 8
    in_flight_after_cut = _max_concurrent([t for n, t in probe.starts if n != "c0"], 1.0, 1.0)
    assert in_flight_after_cut <= 8


def _max_concurrent(starts: list[float], after: float, duration: float) -> int:
    times = sorted(t for t in starts if t >= after)
    return max((sum(1 for u in times if t <= u < t + duration) for t in times), default=0)


async def test_adaptive_needs_a_cap() -> None:
    with pytest.raises(ConfigurationError, match="give the cap"):
        ProviderLimit(adaptive=True)
    with pytest.raises(ConfigurationError, match="max_rate_limit_retries"):
        ProviderLimit(max_rate_limit_retries=-1)


# -- tokens per minute ------------------------------------------------------------
async def test_a_burst_of_large_nodes_never_exceeds_tpm_reserved_settled_or_measured() -> None:
    clock = FakeClock()
    # Each call reserves 2,000 and really spends 1,200..2,000.
    spent = {f"b{i}": 1_200 + (i * 97) % 801 for i in range(50)}
    probe = Probe(clock, tokens=spent)
    limits = _limits(clock, tpm=10_000)
    calls = [Big(name) for name in spent]
    result = await GRAPH.run(Many(calls), state=S(), deps=probe, limits=limits)
    assert len(result.output) == 50
    assert limits.status("p").peak_tokens <= 10_000
    starts = sorted((t, spent[n]) for n, t in probe.starts)
    assert _most_in_window(starts, 60.0) <= 10_000  # as the provider would count them
    # Settling to less than reserved lets more calls in per window than 10,000 / 2,000.
    first_window = [t for t, _ in starts if t < 60.0]
    assert len(first_window) >= 5


def _most_in_window(starts: list[tuple[float, int]], window: float) -> int:
    return max(sum(n for u, n in starts if t - window < u <= t) for t, _ in starts)


async def test_without_reservations_a_burst_overshoots() -> None:
    # The old way: no estimate, so every call of the burst starts before any reports.
    clock = FakeClock()
    spent = {f"b{i}": 2_000 for i in range(20)}
    probe = Probe(clock, tokens=spent)
    limits = _limits(clock, tpm=10_000)
    await GRAPH.run(Many([Call(n) for n in spent]), state=S(), deps=probe, limits=limits)
    assert limits.status("p").peak_tokens > 10_000


async def test_an_estimate_larger_than_tpm_is_refused_naming_the_provider() -> None:
    clock = FakeClock()
    with pytest.raises(ConfigurationError, match=r"node Big .* 2000 tokens .* tpm=1000"):
        await GRAPH.run(Big("a"), state=S(), deps=Probe(clock), limits=_limits(clock, tpm=1_000))


async def test_a_bad_estimate_names_the_node() -> None:
    @dataclass
    class Odd(Call):
        estimated_tokens: ClassVar[Any] = "many"

    clock = FakeClock()
    with pytest.raises(ConfigurationError, match="node Odd's estimated_tokens"):
        await Graph([Odd]).run(Odd("a"), state=S(), deps=Probe(clock), limits=_limits(clock, tpm=1))


# -- headers of accepted calls ------------------------------------------------------
async def test_reported_headers_teach_the_pace_before_any_refusal() -> None:
    @dataclass
    class Reporting(Call):
        async def run(self, ctx: RunContext[S]) -> End[str]:
            ctx.report_rate_limit({"X-RateLimit-Limit-Requests": "7"})
            return await super().run(ctx)

    clock = FakeClock()
    limits = _limits(clock, concurrency=1)
    calls = [Reporting(f"r{i}") for i in range(20)]
    probe = Probe(clock)
    await Graph([Many, Reporting]).run(Many(calls), state=S(), deps=probe, limits=limits)
    assert limits.status("p").learned_rpm == 7
    starts = sorted(t for _, t in probe.starts)
    # Once the first call reported, at most 7 start in any 60 s.
    assert max(sum(1 for u in starts if t - 60 < u <= t) for t in starts) <= 7


# -- batches ----------------------------------------------------------------------
async def test_a_429_in_one_input_of_a_batch_pauses_the_provider_for_all() -> None:
    loop_time = asyncio.get_running_loop().time
    starts: list[tuple[int, float]] = []
    refused = {0: [RateLimited(retry_after=0.3)]}

    @dataclass
    class Ask(BaseNode[S]):
        n: int
        provider: ClassVar[str | None] = "p"

        async def run(self, ctx: RunContext[S]) -> End[int]:
            starts.append((self.n, loop_time()))
            if refused.get(self.n):
                raise refused[self.n].pop()
            await asyncio.sleep(0.01)
            return End(self.n)

    graph = Graph([Ask])
    # Input 0 is refused at once; inputs 2.. start after it, inside its pause.
    batch = await graph.map(lambda i, s: Ask(i), [S() for _ in range(6)], max_concurrency=2)
    assert batch.outputs == [0, 1, 2, 3, 4, 5] and not batch.errors
    refused_at = starts[0][1]
    later = [t for n, t in starts[1:] if n >= 2]
    assert later and min(later) - refused_at >= 0.25  # generous: the pause was 0.3 s


async def test_a_burst_of_refusals_does_not_talk_the_pace_down() -> None:
    # Ten calls accepted at t=0 reach the provider late: at t=1.01 they have left our
    # one-second window but not the provider's, so a burst at t=1.01 is refused.
    import random

    from lift_graph._backpressure import Pressure
    from lift_graph._rate_signals import RateSignal

    pressure = Pressure(window=1.0)
    for _ in range(10):
        pressure.start(0.0)
    burst = [pressure.start(1.01) for _ in range(10)]
    for entry in burst:
        pressure.refused(1.03, entry, RateSignal(), random.Random(0))
    assert pressure.learned == 10
