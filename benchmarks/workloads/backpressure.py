"""Workload 12: a provider that refuses (HTTP 429) above R requests per window.

Two parts, each lift_graph's back-pressure against what callers did before it.

*Fake clock.* A fork of N calls (``bp_calls``) of provider ``llm`` under
``ProviderLimit(concurrency=64)``, against ``benchmarks.fake_provider.FakeProvider``
on a ``FakeClock``: R (``bp_limit``) requests per sliding 60 s, one second per
accepted call, a 429 as ``httpx.HTTPStatusError`` with ``Retry-After``. Scenarios:

- ``Retry-After``: the 429 reaches the engine, which pauses the whole provider and
  learns its pace;
- ``+ remaining headers``: accepted answers also carry
  ``x-ratelimit-remaining-requests``, which the node passes on with
  ``ctx.report_rate_limit``;
- ``no Retry-After``: the 429 says nothing about when to come back;
- ``two runs, one Limits``: two concurrent runs of N/2 share one ``Limits``;
- ``fixed window`` (the provider counts per fixed minute) and ``adaptive``
  (``ProviderLimit(adaptive=True)``: concurrency halved on a 429);
- ``before``: the node turns the 429 into an error the engine does not recognize
  (``RuntimeError``) and declares ``retry = Retry()`` (defaults: 3 attempts,
  0.1 s backoff doubling), which is how a 429 was handled before back-pressure.

Figures per scenario: calls that succeeded (%), 429 responses and their share of
requests, throughput / R (accepted per window, the last one's window counted in
full, as ``FakeProvider.throughput``), and requests that started inside a pause
(the engine's own, or one a refusal announced with ``Retry-After``). Targets:
success 100 %, 429 share <= 3 % (<= 1 % with remaining headers, <= 5 % without
``Retry-After``), throughput >= 0.95 R, no start inside a pause.

*Real time, through DSPy.* ``bp_http_calls`` questions against
``benchmarks.fake_http_provider.FakeHTTPProvider`` (an OpenAI-compatible server on
127.0.0.1) that accepts 10 requests per 1 s window, i.e. R = 10/s:

- ``dspy.Parallel(num_threads=16)`` over ``dspy.Predict("question -> answer")``
  with the LM's own retries (``dspy.LM`` default ``num_retries=3``, which sleeps
  the ``Retry-After`` it is given, else ``2**attempt`` s);
- a lift_graph fork of ``DSPyNode`` (provider ``llm``, LM ``num_retries=0``) under
  ``ProviderLimit(concurrency=16, window=1.0)``;
- the same fork whose node re-raises DSPy's ``LMRateLimitError`` as
  ``RateLimited(retry_after=exc.retry_after)``: DSPy 3.4's error carries the
  provider's ``Retry-After`` as an attribute, which the engine does not read yet
  (it recognizes the 429 from ``status`` and backs off without the hint).

Figures: success (%), 429 count, throughput / R. Wall time is real: at least
``bp_http_calls / 10`` seconds per engine.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, Field

from lift_graph import (
    BaseNode,
    DSPyNode,
    End,
    FailureMode,
    FakeClock,
    Fork,
    Graph,
    Limits,
    ProviderLimit,
    RateLimited,
    Retry,
    RunContext,
)

from .._harness import LIFT, Config, Outcome, Row, Target, check, run_async, skipped
from ..fake_provider import FakeProvider, max_in_window

__all__ = ["SCENARIOS", "Scenario", "Simulation", "http_lift", "http_parallel", "run", "simulate"]

PROVIDER = "llm"
CAP = 64
WINDOW = 60.0
BEFORE = f"{LIFT}, per-node Retry() (before)"
DSPY_PARALLEL = "dspy.Parallel"
HINTED = f"{LIFT} (DSPy's retry_after passed on)"
#: Real-time part: the provider's window (s), requests per window, slots / threads.
HTTP_WINDOW = 1.0
HTTP_LIMIT = 10
HTTP_SLOTS = 16


@dataclass(frozen=True, slots=True)
class Scenario:
    """One way of meeting the provider (see the module docstring)."""

    label: str
    retry_after: bool = True
    remaining: bool = False
    runs: int = 1
    fixed: bool = False
    adaptive: bool = False
    #: The 429 wrapped into an unrecognized error, with ``Retry()`` on the node.
    wrapped: bool = False
    #: Target on the share of 429 responses (None: shown, not targeted).
    max_429_share: float | None = 0.03


SCENARIOS: dict[str, Scenario] = {
    "retry_after": Scenario("Retry-After"),
    "remaining": Scenario("Retry-After + remaining headers", remaining=True, max_429_share=0.01),
    "no_header": Scenario("no Retry-After", retry_after=False, max_429_share=0.05),
    "two_runs": Scenario("two runs, one Limits", runs=2),
    "fixed": Scenario("fixed-window provider", fixed=True),
    "adaptive": Scenario("adaptive concurrency", adaptive=True),
    "before": Scenario("429 wrapped, Retry()", wrapped=True, max_429_share=None),
}


# -- the fake-clock graph -------------------------------------------------------------
class CallState(BaseModel):
    x: int = 0


@dataclass
class Call(BaseNode[CallState]):
    """One request; the 429 (``httpx.HTTPStatusError``) reaches the engine as is."""

    i: int
    provider: ClassVar[str | None] = PROVIDER
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[CallState]) -> End[int]:
        api, report = ctx.deps
        headers = await api.complete()
        if report:
            ctx.report_rate_limit(headers)
        return End(self.i)


class ProviderRefused(RuntimeError):
    """What a node made of a 429 before back-pressure: an error like any other."""


@dataclass
class WrappedCall(BaseNode[CallState]):
    """The same request, its 429 turned into an unrecognized error, retried by ``Retry()``."""

    i: int
    provider: ClassVar[str | None] = PROVIDER
    writes: ClassVar[frozenset[str]] = frozenset()
    retry: ClassVar[Retry | None] = Retry()

    async def run(self, ctx: RunContext[CallState]) -> End[int]:
        api, _ = ctx.deps
        try:
            await api.complete()
        except httpx.HTTPStatusError as exc:
            # No `from exc`: the engine must not see the 429 behind it.
            raise ProviderRefused(f"provider answered {exc.response.status_code}") from None
        return End(self.i)


@dataclass
class Tally(BaseNode[CallState]):
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[CallState]) -> End[int]:
        assert ctx.join is not None
        return End(ctx.join.succeeded)


@dataclass
class Burst(BaseNode[CallState]):
    first: int
    n: int
    wrapped: bool = False
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[CallState]) -> Fork[CallState]:
        kind = WrappedCall if self.wrapped else Call
        calls = [kind(self.first + i) for i in range(self.n)]
        return Fork(calls, then=Tally(), on_error=FailureMode.CONTINUE)


CALL_GRAPH: Graph[CallState] = Graph(
    nodes=[Burst, Call, WrappedCall, Tally], name="bench-backpressure"
)


@dataclass
class Simulation:
    """One scenario's run, with what the provider and the engine saw."""

    scenario: Scenario
    calls: int
    limit: int
    succeeded: int
    api: FakeProvider
    limits: Limits
    real_s: float

    @property
    def requests(self) -> int:
        return len(self.api.log)

    @property
    def refusals(self) -> int:
        return self.api.refusals

    @property
    def share_429(self) -> float:
        return self.refusals / self.requests if self.requests else 0.0

    @property
    def success(self) -> float:
        return self.succeeded / self.calls

    @property
    def throughput_ratio(self) -> float:
        return self.api.throughput() / self.limit

    @property
    def pauses(self) -> list[tuple[float, float]]:
        return list(self.limits.status(PROVIDER).pauses)

    @property
    def inside_pauses(self) -> int:
        """Requests that started inside one of the engine's own pauses."""
        return starts_inside(self.api, self.pauses)

    @property
    def inside_hints(self) -> int:
        """Requests that started inside a wait a refusal announced (0 without one)."""
        if not self.scenario.retry_after:
            return 0
        api = self.api
        announced = [
            (c.answered, c.answered + math.ceil(c.retry_after - api.refusal_latency))
            for c in api.log
            if not c.accepted and c.answered is not None and c.retry_after is not None
        ]
        return starts_inside(api, announced)

    @property
    def peak_window(self) -> int:
        """Most accepted requests in any sliding window of the provider's length."""
        return max_in_window(self.api.accepted, self.api.window)


def starts_inside(api: FakeProvider, pauses: list[tuple[float, float]]) -> int:
    """Distinct requests that started strictly inside any of ``pauses`` (as
    ``FakeProvider.starts_inside``, but each start counted once however many
    overlapping pauses hold it)."""
    merged: list[list[float]] = []
    for begin, end in sorted(pauses):
        if merged and begin < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    starts = sorted(c.time for c in api.log)
    inside = 0
    for begin, end in merged:
        inside += bisect.bisect_left(starts, end) - bisect.bisect_right(starts, begin)
    return inside


async def simulate(
    scenario: Scenario, calls: int = 3000, limit: int = 600, cap: int = CAP
) -> Simulation:
    """Run ``calls`` requests of ``scenario`` against a fake provider allowing
    ``limit`` per 60 virtual seconds, ``cap`` at a time."""
    clock = FakeClock()
    api = FakeProvider(
        clock,
        limit=limit,
        window=WINDOW,
        retry_after=scenario.retry_after,
        remaining=scenario.remaining,
        fixed=scenario.fixed,
    )
    limits = Limits(
        providers={PROVIDER: ProviderLimit(concurrency=cap, adaptive=scenario.adaptive)},
        clock=clock,
    )
    sizes = [
        calls // scenario.runs + (1 if r < calls % scenario.runs else 0)
        for r in range(scenario.runs)
    ]
    firsts = [sum(sizes[:r]) for r in range(scenario.runs)]
    began = time.perf_counter()
    results: list[Any] = await asyncio.gather(
        *(
            CALL_GRAPH.run(
                Burst(first, size, scenario.wrapped),
                state=CallState(),
                deps=(api, scenario.remaining),
                limits=limits,
            )
            for first, size in zip(firsts, sizes, strict=True)
        )
    )
    real = time.perf_counter() - began
    succeeded = sum(int(r.output) for r in results)
    return Simulation(scenario, calls, limit, succeeded, api, limits, real)


def _fake_clock_rows(cfg: Config, sims: Mapping[str, Simulation], out: Outcome) -> None:
    n, limit = cfg.bp_calls, cfg.bp_limit
    wl = f"backpressure {n:,} calls @ {limit}/min, cap {CAP}"

    def engine(key: str) -> str:
        if key == "retry_after":
            return LIFT
        if key == "before":
            return BEFORE
        return f"{LIFT} ({SCENARIOS[key].label})"

    for key, sim in sims.items():
        accepted = sim.requests - sim.refusals
        check(engine(key), "accepted requests", accepted >= sim.succeeded, True)
        extra = {
            "success": sim.success,
            "refusals": float(sim.refusals),
            "requests": float(sim.requests),
            "share_429": sim.share_429,
            "throughput_ratio": sim.throughput_ratio,
            "inside_pauses": float(sim.inside_pauses),
            "inside_hints": float(sim.inside_hints),
            "peak_window": float(sim.peak_window),
        }
        note = (
            f"{sim.succeeded:,}/{n:,} ok; {sim.refusals:,} of {sim.requests:,} requests 429 "
            f"({sim.share_429:.2%}); throughput {sim.throughput_ratio:.3f} R; "
            f"starts inside a pause: {sim.inside_pauses} (engine's), {sim.inside_hints} "
            f"(announced); {len(sim.pauses)} pauses; {sim.real_s:.2f} s real"
        )
        name = engine(key)
        out.add(
            Row(f"{wl}: success", name, 100.0 * sim.success, "%", note, extra=extra),
            Row(f"{wl}: 429 responses", name, float(sim.refusals), "429s"),
            Row(f"{wl}: 429 share", name, 100.0 * sim.share_429, "% of requests"),
            Row(f"{wl}: throughput", name, sim.throughput_ratio, "x R"),
        )
        if sim.scenario.wrapped:
            continue
        label = f"{wl}, {sim.scenario.label}"
        out.targets.append(Target(label, "calls succeeded (%)", 100.0 * sim.success, ">=", 100.0))
        if sim.scenario.max_429_share is not None:
            out.targets.append(
                Target(
                    label,
                    "429 share (%)",
                    100.0 * sim.share_429,
                    "<=",
                    100.0 * sim.scenario.max_429_share,
                )
            )
        out.targets += [
            Target(label, "throughput / R", sim.throughput_ratio, ">=", 0.95),
            Target(
                label,
                "requests started inside a pause",
                float(sim.inside_pauses + sim.inside_hints),
                "<=",
                0.0,
            ),
        ]


async def _fake_clock(cfg: Config) -> dict[str, Simulation]:
    return {
        key: await simulate(scenario, cfg.bp_calls, cfg.bp_limit)
        for key, scenario in SCENARIOS.items()
    }


# -- the real-time part, through DSPy -------------------------------------------------
def _dspy() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    return dspy


class QAState(BaseModel):
    answers: list[str] = Field(default_factory=list)


@dataclass
class Answer(DSPyNode[QAState]):
    question: str
    signature = "question -> answer"
    provider: ClassVar[str | None] = PROVIDER
    outputs = {"answer": "answers"}  # noqa: RUF012


@dataclass
class HintedAnswer(Answer):
    """``Answer`` passing on the wait DSPy's rate-limit error carries.

    DSPy 3.4 raises ``dspy.LMRateLimitError`` with ``status=429`` and ``retry_after``
    (seconds, from the response's headers) but no ``headers`` / ``response``; the
    engine recognizes the 429 from ``status`` and does not read ``retry_after``
    (it backs off instead). This node hands the hint over as ``RateLimited``.
    """

    async def run(self, ctx: RunContext[QAState]) -> Any:
        dspy = _dspy()
        try:
            return await super().run(ctx)
        except dspy.LMRateLimitError as exc:
            raise RateLimited(retry_after=exc.retry_after) from exc


@dataclass
class AskAll(BaseNode[QAState]):
    questions: list[str]
    lm: Any
    hinted: bool = False

    async def run(self, ctx: RunContext[QAState]) -> Fork[QAState]:
        kind = HintedAnswer if self.hinted else Answer
        branches = [kind(question=q, lm=self.lm) for q in self.questions]  # type: ignore[call-arg]
        return Fork(branches, then=Count(), on_error=FailureMode.CONTINUE)


@dataclass
class Count(BaseNode[QAState]):
    async def run(self, ctx: RunContext[QAState]) -> End[int]:
        assert ctx.join is not None
        return End(ctx.join.succeeded)


QA_GRAPH: Graph[QAState] = Graph(
    nodes=[AskAll, Answer, HintedAnswer, Count], name="bench-backpressure-dspy"
)


def questions(n: int) -> list[str]:
    return [f"Question {i}: what is {i} + {i}?" for i in range(n)]


@dataclass
class HttpFigures:
    """One engine's real-time run against the HTTP fake."""

    calls: int
    succeeded: int
    requests: int
    refusals: int
    throughput_ratio: float
    peak_window: int
    wall_s: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def success(self) -> float:
        return self.succeeded / self.calls


def fake_lm(base_url: str, num_retries: int) -> Any:
    """A ``dspy.LM`` on the local fake: no cache, the given retries."""
    dspy = _dspy()
    return dspy.LM(
        "openai/fake-model", api_base=base_url, api_key="fake", num_retries=num_retries, cache=False
    )


def _figures(api: Any, calls: int, succeeded: int, wall: float, **extra: float) -> HttpFigures:
    log = api.snapshot()
    return HttpFigures(
        calls=calls,
        succeeded=succeeded,
        requests=len(log),
        refusals=sum(1 for r in log if not r.accepted),
        throughput_ratio=api.throughput() / api.limit,
        peak_window=api.max_in_window(),
        wall_s=wall,
        extra=dict(extra),
    )


def http_lift(
    calls: int,
    limit: int = HTTP_LIMIT,
    window: float = HTTP_WINDOW,
    slots: int = HTTP_SLOTS,
    *,
    hinted: bool = False,
) -> HttpFigures:
    """A fork of ``calls`` DSPyNodes (LM ``num_retries=0``) under back-pressure;
    ``hinted``: the nodes pass DSPy's ``retry_after`` on (``HintedAnswer``)."""
    from ..fake_http_provider import FakeHTTPProvider

    with FakeHTTPProvider(limit=limit, window=window) as api:
        lm = fake_lm(api.base_url, num_retries=0)
        limits = Limits(providers={PROVIDER: ProviderLimit(concurrency=slots, window=window)})
        began = time.perf_counter()
        res: Any = run_async(
            QA_GRAPH.run(AskAll(questions(calls), lm, hinted), state=QAState(), limits=limits)
        )
        wall = time.perf_counter() - began
        status = limits.status(PROVIDER)
        return _figures(
            api,
            calls,
            int(res.output),
            wall,
            engine_refusals=float(status.refusals),
            pauses=float(len(status.pauses)),
            learned=float(status.learned_rpm or 0),
        )


def http_parallel(
    calls: int, limit: int = HTTP_LIMIT, window: float = HTTP_WINDOW, threads: int = HTTP_SLOTS
) -> HttpFigures:
    """``dspy.Parallel`` over ``dspy.Predict``, the LM retrying by itself (3 times)."""
    from ..fake_http_provider import FakeHTTPProvider

    dspy = _dspy()
    with FakeHTTPProvider(limit=limit, window=window) as api:
        lm = fake_lm(api.base_url, num_retries=3)
        predict = dspy.Predict("question -> answer")
        parallel = dspy.Parallel(
            num_threads=threads,
            max_errors=calls + 1,  # attempt every call; count the failures
            return_failed_examples=True,
            disable_progress_bar=True,
        )
        pairs = [(predict, {"question": q}) for q in questions(calls)]
        # dspy.Parallel logs every failed call at ERROR: the count is the figure.
        log = logging.getLogger("dspy.utils.parallelizer")
        level = log.level
        log.setLevel(logging.CRITICAL)
        began = time.perf_counter()
        try:
            with dspy.context(lm=lm):
                results, _failed, _errors = parallel(pairs)
        finally:
            log.setLevel(level)
        wall = time.perf_counter() - began
        succeeded = sum(1 for r in results if r is not None and getattr(r, "answer", None))
        return _figures(api, calls, succeeded, wall)


def _http_rows(cfg: Config, out: Outcome) -> None:
    n = cfg.bp_http_calls
    wl = f"backpressure HTTP {n} calls @ {HTTP_LIMIT}/{HTTP_WINDOW:g} s, {HTTP_SLOTS} slots"
    try:
        import dspy  # noqa: F401
    except ImportError:
        for engine in (LIFT, DSPY_PARALLEL, HINTED):
            out.add(skipped(wl, engine, "%", "skipped: dspy is not installed"))
        return
    runs = [
        (DSPY_PARALLEL, http_parallel(n), "dspy.Parallel(num_threads=16), dspy.LM num_retries=3"),
        (
            LIFT,
            http_lift(n),
            "Fork of DSPyNode, num_retries=0, ProviderLimit(concurrency=16, window=1)",
        ),
        (
            HINTED,
            http_lift(n, hinted=True),
            "the same, the node raising RateLimited(retry_after=LMRateLimitError.retry_after)",
        ),
    ]
    for engine, fig, how in runs:
        note = (
            f"{how}: {fig.succeeded}/{n} ok; {fig.refusals} of {fig.requests} requests 429; "
            f"throughput {fig.throughput_ratio:.2f} R; {fig.wall_s:.1f} s wall"
        )
        extra = {
            "success": fig.success,
            "refusals": float(fig.refusals),
            "requests": float(fig.requests),
            "throughput_ratio": fig.throughput_ratio,
            "peak_window": float(fig.peak_window),
            **fig.extra,
        }
        out.add(
            Row(f"{wl}: success", engine, 100.0 * fig.success, "%", note, extra=extra),
            Row(f"{wl}: 429 responses", engine, float(fig.refusals), "429s"),
            Row(f"{wl}: throughput", engine, fig.throughput_ratio, "x R"),
        )
        if engine == LIFT:
            out.targets.append(
                Target(wl, "lift_graph calls succeeded (%)", 100.0 * fig.success, ">=", 100.0)
            )


def run(cfg: Config) -> Outcome:
    out = Outcome()
    _fake_clock_rows(cfg, run_async(_fake_clock(cfg)), out)
    _http_rows(cfg, out)
    return out.compare()
