"""Ray: a batch of fake-LM calls on two Ray workers against the same batch locally,
and what one permit of the shared limiter costs.

**Throughput.** ``ray_n`` inputs, each one node on provider ``"fake"`` that awaits
``asyncio.sleep(ray_latency)`` (a 50 ms LM call) and answers a digest of its
question, run three ways in this process:

- lift_graph: ``graph.map(Ask(), states, max_concurrency=64, limits=Limits(providers=
  {"fake": ProviderLimit(concurrency=64)}))``;
- lift_graph on Ray: the same map with ``backend=RayBackend(num_workers=2,
  concurrency=32)`` and ``limits=RayLimits(...)`` (same arguments): 64 inputs in
  flight over two worker processes, every permit a lease from the limiter actor;
- asyncio: ``Semaphore(64)`` + ``gather`` of the sleeps (the floor).

Outputs must be identical between the local and the Ray batch (else
``BenchmarkError``). Each node stamps ``time.time()`` into the state when it starts
and ends (one clock for every process of the host), so a Ray map call splits into
start-up (call to the first node starting: the worker actors are created, load the
batch and answer a ping; paid by every map call), the runs (first node start to last
node end) and closing (the workers give back their leases and are killed). The
throughput row is the whole call, as a user waits for it; the "runs only" row leaves
start-up and closing out.

**The limiter.** ``await limits.acquire("fake")`` / ``limits.release(permit)`` on a
``RayLimits(providers={"fake": ProviderLimit(concurrency=64)})`` from the driver:
one at a time (a round trip to the actor per permit; the release is sent without
waiting), and by 64 acquirers looping at once, with ``lease_batch=32`` (the default:
one actor call grants every permit free for the acquirers waiting) and
``lease_batch=1``. The actor's ``calls`` / ``granted`` counters give the permits per
actor call. The floor is the local ``Limits`` doing the same in one process.

Peers are not run: neither LangGraph nor pydantic-graph runs a batch on Ray.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from lift_graph import BaseNode, End, Graph, Limits, ProviderLimit, RunContext

from .._harness import (
    ASYNCIO,
    LIFT,
    BenchmarkError,
    Config,
    Outcome,
    Row,
    Target,
    check,
    median_time,
    run_async,
    skipped,
)

__all__ = [
    "ACTOR_CALL",
    "ON_RAY",
    "RAY_BATCHED",
    "RAY_RUNS",
    "RAY_SEQUENTIAL",
    "RAY_SINGLE",
    "run",
]

PROVIDER = "fake"
#: Inputs in flight, the provider's concurrency and the asyncio semaphore alike.
SLOTS = 64
WORKERS = 2
ON_RAY = f"{LIFT} (RayBackend, {WORKERS} workers)"
RAY_RUNS = f"{LIFT} (RayBackend, runs only)"
RAY_SEQUENTIAL = "RayLimits"
RAY_BATCHED = "RayLimits (lease_batch=32)"
RAY_SINGLE = "RayLimits (lease_batch=1)"
ACTOR_CALL = "Ray actor call (no-op)"
SKIPPED = "skipped: Ray is not installed (pip install 'lift_graph[ray]')"


class AskState(BaseModel):
    index: int
    question: str
    #: ``time.time()`` when the node started and ended: comparable across processes.
    began: float = 0.0
    ended: float = 0.0


class Ask(BaseNode[AskState]):
    """A fake LM call: sleeps ``deps`` seconds, answers a pure function of the input."""

    provider = PROVIDER

    async def run(self, ctx: RunContext[AskState]) -> End[str]:
        ctx.state.began = time.time()
        await asyncio.sleep(ctx.deps)
        ctx.state.ended = time.time()
        return End(answer(ctx.state.question))


GRAPH: Graph[AskState] = Graph([Ask], name="bench-ray")


class Echo:
    """A no-op async actor: the round trip every limiter call pays at least."""

    async def ping(self) -> None:
        return None


def answer(question: str) -> str:
    return hashlib.sha256(question.encode()).hexdigest()[:12]


def _states(n: int) -> list[AskState]:
    return [AskState(index=i, question=f"question {i}: what is {i} * {i + 1}?") for i in range(n)]


def _provider_limit() -> dict[str, ProviderLimit]:
    return {PROVIDER: ProviderLimit(concurrency=SLOTS)}


def _ray_missing() -> str | None:
    try:
        import ray  # noqa: F401

        import lift_graph.ray  # noqa: F401
    except ImportError:
        return SKIPPED
    return None


# -- throughput ------------------------------------------------------------------------
class _Split:
    """Where the wall time of each map call went."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.runs: list[float] = []
        self.startup: list[float] = []
        self.closing: list[float] = []
        self.elapsed: list[float] = []

    def add(self, called: float, returned: float, batch: Any) -> None:
        states = [r.state for r in batch.results]
        first = min(s.began for s in states)
        last = max(s.ended for s in states)
        self.wall.append(returned - called)
        self.runs.append(last - first)
        self.startup.append(first - called)
        self.closing.append(returned - last)
        self.elapsed.append(batch.elapsed_ms / 1000)

    def drop(self, calls: int) -> None:
        """Forget the first ``calls`` (the untimed warm-up calls)."""
        for samples in (self.wall, self.runs, self.startup, self.closing, self.elapsed):
            del samples[:calls]

    def median(self, what: str) -> float:
        return statistics.median(getattr(self, what))


def _map_runner(n: int, latency: float, split: _Split, **options: Any) -> Callable[[], Any]:
    async def once() -> list[Any]:
        called = time.time()
        batch = await GRAPH.map(Ask(), _states(n), deps=latency, **options)
        split.add(called, time.time(), batch)
        if batch.failed:
            first = next(iter(batch.errors.values()))
            raise BenchmarkError(f"{batch.failed} of {n} inputs failed, first: {first!r}")
        return list(batch.outputs)

    return once


def _asyncio_runner(n: int, latency: float) -> Callable[[], Awaitable[list[str]]]:
    async def call(state: AskState, sem: asyncio.Semaphore) -> str:
        async with sem:
            await asyncio.sleep(latency)
            return answer(state.question)

    async def once() -> list[str]:
        sem = asyncio.Semaphore(SLOTS)
        return list(await asyncio.gather(*(call(s, sem) for s in _states(n))))

    return once


async def _throughput(cfg: Config, out: Outcome) -> dict[str, float]:
    from lift_graph.ray import RayBackend, RayLimits

    n, latency = cfg.ray_n, cfg.ray_latency
    wl = f"ray {n} x{SLOTS}"
    expected = [answer(s.question) for s in _states(n)]
    local_split, ray_split = _Split(), _Split()

    local = _map_runner(
        n, latency, local_split, max_concurrency=SLOTS, limits=Limits(providers=_provider_limit())
    )
    got_local: list[Any] = []

    def keep_local(got: list[Any]) -> None:
        check(LIFT, f"outputs of {n} inputs", got, expected)
        got_local[:] = got

    local_s = await median_time(local, cfg, verify=keep_local)
    local_split.drop(cfg.warmup)

    limits = RayLimits(providers=_provider_limit())
    backend = RayBackend(num_workers=WORKERS, concurrency=SLOTS // WORKERS)
    on_ray = _map_runner(n, latency, ray_split, backend=backend, limits=limits)
    try:
        before = limits.gauges()
        ray_s = await median_time(
            on_ray,
            cfg,
            verify=lambda got: check(ON_RAY, "outputs (vs the local batch)", got, got_local),
            warmup=cfg.ray_warmup,
            reps=cfg.ray_reps,
        )
        after = limits.gauges()
    finally:
        await limits.detach()
        limits.shutdown()
    ray_split.drop(cfg.ray_warmup)
    if after.leases:
        raise BenchmarkError(f"{ON_RAY}: {after.leases} leases not given back after the batches")
    batch_calls = after.calls - before.calls
    batch_per_call = (after.granted - before.granted) / batch_calls if batch_calls else 0.0

    floor_s = await median_time(
        _asyncio_runner(n, latency),
        cfg,
        verify=lambda got: check(ASYNCIO, "answers", got, expected),
    )

    ideal = n * latency / SLOTS
    startup, closing = ray_split.median("startup"), ray_split.median("closing")
    runs, elapsed = ray_split.median("runs"), ray_split.median("elapsed")
    out.add(
        Row(
            wl,
            LIFT,
            n / local_s,
            "inputs/s",
            f"graph.map, Limits(fake: concurrency={SLOTS}); ideal {n / ideal:,.0f}/s",
            extra={"seconds": local_s, "runs_s": local_split.median("runs")},
        ),
        Row(
            wl,
            ON_RAY,
            n / ray_s,
            "inputs/s",
            f"whole map call: start-up {startup * 1000:,.0f} ms + runs {runs * 1000:,.0f} ms "
            f"+ closing {closing * 1000:,.0f} ms (BatchResult.elapsed_ms "
            f"{elapsed * 1000:,.0f}, start-up included); {batch_per_call:.1f} permits per "
            "limiter call",
            extra={
                "seconds": ray_s,
                "startup_s": startup,
                "runs_s": runs,
                "closing_s": closing,
                "elapsed_s": elapsed,
                "permits_per_call": batch_per_call,
            },
        ),
        Row(
            wl,
            RAY_RUNS,
            n / runs,
            "inputs/s",
            "info: first node start to last node end, on both workers",
        ),
        Row(
            wl,
            ASYNCIO,
            n / floor_s,
            "inputs/s",
            f"floor: Semaphore({SLOTS}) + gather of the sleeps",
            extra={"seconds": floor_s},
        ),
        Row(
            f"ray {n} start-up",
            ON_RAY,
            startup * 1000,
            "ms",
            f"map call to first node start: {WORKERS} worker actors created, batch "
            f"loaded, pinged; closing {closing * 1000:,.0f} ms",
            extra={"closing_ms": closing * 1000},
        ),
    )
    return {"local": n / local_s, "ray": n / ray_s, "runs": n / runs, "floor": n / floor_s}


# -- the limiter ------------------------------------------------------------------------
async def _sequential(limits: Limits, permits: int) -> float:
    """µs per acquire + release, one permit at a time."""
    began = time.perf_counter()
    for _ in range(permits):
        permit = await limits.acquire(PROVIDER)
        limits.release(permit)
    return (time.perf_counter() - began) / permits * 1e6


async def _concurrent(limits: Limits, permits: int) -> float:
    """µs per permit with ``SLOTS`` acquirers looping at once (the provider's limit)."""

    async def acquirer(count: int) -> None:
        for _ in range(count):
            permit = await limits.acquire(PROVIDER)
            await asyncio.sleep(0)  # hold it across a loop turn, as a call would
            limits.release(permit)

    share = permits // SLOTS
    began = time.perf_counter()
    await asyncio.gather(*(acquirer(share) for _ in range(SLOTS)))
    return (time.perf_counter() - began) / (share * SLOTS) * 1e6


async def _ray_limits(
    lease_batch: int, measure: Callable[[Any], Awaitable[float]]
) -> tuple[float, float]:
    """µs per permit through a fresh limiter actor, and permits per acquire call."""
    from lift_graph.ray import RayLimits

    limits = RayLimits(providers=_provider_limit(), lease_batch=lease_batch)
    try:
        limits.connect()
        for _ in range(3):  # the actor's first calls set up its loop and reaper
            limits.release(await limits.acquire(PROVIDER))
        before = limits.gauges()
        cost = await measure(limits)
        await limits.detach()  # sends the last releases; anything still lent is reclaimed
        after = limits.gauges()
    finally:
        limits.shutdown()
    calls = after.calls - before.calls
    if after.reclaimed or after.provider_peaks.get(PROVIDER, 0) > SLOTS:
        raise BenchmarkError(f"RayLimits(lease_batch={lease_batch}): counters off: {after}")
    return cost, (after.granted - before.granted) / calls if calls else 0.0


async def _actor_call(calls: int) -> float:
    """µs per awaited call of a no-op async actor method, one at a time."""
    import ray

    actor = ray.remote(Echo).options(num_cpus=0).remote()
    try:
        for _ in range(3):
            await actor.ping.remote()
        began = time.perf_counter()
        for _ in range(calls):
            await actor.ping.remote()
        return (time.perf_counter() - began) / calls * 1e6
    finally:
        ray.kill(actor)


async def _best_local(measure: Callable[[Any], Awaitable[float]]) -> float:
    best = float("inf")
    for _ in range(5):
        best = min(best, await measure(Limits(providers=_provider_limit())))
    return best


async def _limiter(cfg: Config, out: Outcome) -> dict[str, float]:
    seq, conc = cfg.ray_permits_sequential, cfg.ray_permits_concurrent
    wl_seq, wl_conc = f"ray permits {seq:,} sequential", f"ray permits {conc:,} x{SLOTS} at once"

    async def one_by_one(limits: Any) -> float:
        return await _sequential(limits, seq)

    async def at_once(limits: Any) -> float:
        return await _concurrent(limits, conc)

    ray_seq, seq_per_call = await _ray_limits(32, one_by_one)
    batched, batched_per_call = await _ray_limits(32, at_once)
    single, single_per_call = await _ray_limits(1, at_once)
    floor = await _actor_call(seq)
    local_seq = await _best_local(one_by_one)
    local_conc = await _best_local(at_once)
    local_note = "local Limits, one process: acquire + release"
    out.add(
        Row(wl_seq, LIFT, local_seq, "µs/permit", local_note),
        Row(
            wl_seq,
            RAY_SEQUENTIAL,
            ray_seq,
            "µs/permit",
            f"an acquire round trip + a release sent without waiting; {seq_per_call:.2f} "
            "permits per call",
            extra={"permits_per_call": seq_per_call},
        ),
        Row(wl_seq, ACTOR_CALL, floor, "µs/call", "floor: await one no-op async actor method"),
        Row(wl_conc, LIFT, local_conc, "µs/permit", local_note),
        Row(
            wl_conc,
            RAY_BATCHED,
            batched,
            "µs/permit",
            f"{batched_per_call:.1f} permits per actor call",
            extra={"permits_per_call": batched_per_call},
        ),
        Row(
            wl_conc,
            RAY_SINGLE,
            single,
            "µs/permit",
            f"{single_per_call:.2f} permits per actor call (at most 4 calls in flight)",
            extra={"permits_per_call": single_per_call},
        ),
    )
    return {"batched_per_call": batched_per_call}


# -- the workload ------------------------------------------------------------------------
def _skipped(cfg: Config) -> Outcome:
    out = Outcome()
    wl = f"ray {cfg.ray_n} x{SLOTS}"
    seq = f"ray permits {cfg.ray_permits_sequential:,} sequential"
    conc = f"ray permits {cfg.ray_permits_concurrent:,} x{SLOTS} at once"
    out.add(
        skipped(wl, ON_RAY, "inputs/s", SKIPPED),
        skipped(seq, RAY_SEQUENTIAL, "µs/permit", SKIPPED),
        skipped(conc, RAY_BATCHED, "µs/permit", SKIPPED),
        skipped(conc, RAY_SINGLE, "µs/permit", SKIPPED),
    )
    return _targets(out, wl, conc, {}, {})


def _targets(
    out: Outcome, wl: str, wl_conc: str, rates: dict[str, float], lim: dict[str, float]
) -> Outcome:
    ray, local, floor = rates.get("runs"), rates.get("local"), rates.get("floor")
    out.targets += [
        # The runs, without the start-up every map call pays (~1 s here, whatever the
        # batch's size): the driver, two workers and the limiter actor share 2 cores,
        # and each input costs them a Ray task and part of a lease call.
        Target(
            wl,
            "RayBackend (runs only) / local throughput",
            ray / local if ray and local else None,
            ">=",
            0.3,
        ),
        Target(
            wl, "local / asyncio throughput", local / floor if local and floor else None, ">=", 0.8
        ),
        Target(
            wl_conc,
            "RayLimits permits per actor call (lease_batch=32)",
            lim.get("batched_per_call"),
            ">=",
            2.0,
        ),
    ]
    return out


async def _measure(cfg: Config) -> Outcome:
    import ray

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = Outcome()
    try:
        rates = await _throughput(cfg, out)
        lim = await _limiter(cfg, out)
    finally:
        if started:
            ray.shutdown()
    wl = f"ray {cfg.ray_n} x{SLOTS}"
    wl_conc = f"ray permits {cfg.ray_permits_concurrent:,} x{SLOTS} at once"
    return _targets(out.compare(), wl, wl_conc, rates, lim)


def run(cfg: Config) -> Outcome:
    if _ray_missing() is not None:
        return _skipped(cfg)
    return run_async(_measure(cfg))
