"""Workload 4: n branches sleeping 10-100 ms (fixed seed) under 8 slots.

Figure: makespan / the makespan of a greedy 8-slot list schedule of the same sleeps
taken in branch order (each branch goes to the slot that frees first), computed
with a heap. 1.0 means the engine kept all 8 slots busy and added no overhead.
asyncio with ``Semaphore(8)`` is the reference; LangGraph uses its
``max_concurrency`` config key; pydantic-graph has no engine concurrency limit.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from lift_graph import BaseNode, End, Fork, Graph, RunContext

from .._harness import (
    ASYNCIO,
    LANGGRAPH,
    LIFT,
    PYDANTIC_GRAPH,
    Config,
    Outcome,
    Row,
    Target,
    expect,
    median_time,
    peer,
    peer_missing,
    run_async,
    skipped,
)

__all__ = ["greedy_bound", "run", "sleeps_for"]

UNIT = "x greedy"
SEED = 20240


def sleeps_for(n: int, scale: float = 1.0, seed: int = SEED) -> list[float]:
    """n sleeps uniform in [10, 100] ms (times ``scale``), the same for every engine."""
    rng = random.Random(seed + n)
    return [rng.uniform(0.010, 0.100) * scale for _ in range(n)]


def greedy_bound(sleeps: Sequence[float], slots: int) -> float:
    """Makespan of the list schedule: each sleep, in order, to the slot free first."""
    heap = [0.0] * slots
    for d in sleeps:
        heapq.heappush(heap, heapq.heappop(heap) + d)
    return max(heap)


class NapState(BaseModel):
    x: int = 0


@dataclass
class Nap(BaseNode[NapState]):
    i: int
    seconds: float

    async def run(self, ctx: RunContext[NapState]) -> End[int]:
        await asyncio.sleep(self.seconds)
        return End(self.i)


@dataclass
class Gather(BaseNode[NapState]):
    async def run(self, ctx: RunContext[NapState]) -> End[int]:
        assert ctx.join is not None
        return End(len(ctx.join.results))


@dataclass
class Spread(BaseNode[NapState]):
    sleeps: list[float]

    async def run(self, ctx: RunContext[NapState]) -> Fork[NapState]:
        return Fork([Nap(i, d) for i, d in enumerate(self.sleeps)], then=Gather())


LIFT_GRAPH: Graph[NapState] = Graph(nodes=[Spread, Nap, Gather], name="bench-jitter")


def _asyncio(sleeps: Sequence[float], slots: int, gauge: list[int]) -> Any:
    async def one(i: int, d: float, sem: asyncio.Semaphore) -> int:
        async with sem:
            gauge[0] += 1
            gauge[1] = max(gauge[1], gauge[0])
            try:
                await asyncio.sleep(d)
            finally:
                gauge[0] -= 1
        return i

    async def run() -> int:
        sem = asyncio.Semaphore(slots)
        return len(await asyncio.gather(*(one(i, d, sem) for i, d in enumerate(sleeps))))

    return run


def _lift(sleeps: list[float], slots: int, gauge: list[int]) -> Any:
    async def run() -> int:
        res = await LIFT_GRAPH.run(Spread(sleeps), state=NapState(), max_concurrency=slots)
        gauge[1] = max(gauge[1], res.peak_concurrency)
        return int(res.output)

    return run


async def _one_size(cfg: Config, n: int, out: Outcome) -> None:
    slots = cfg.jitter_slots
    scaled = f" (x{cfg.jitter_scale:g})" if cfg.jitter_scale != 1.0 else ""
    sleeps = sleeps_for(n, cfg.jitter_scale)
    bound = greedy_bound(sleeps, slots)
    warm = [d / 100 for d in sleeps]
    wl = f"jitter {n} @ {slots} slots{scaled}"

    # (engine, timed run, warm-up run, note, gauge [in flight, peak])
    engines: list[tuple[str, Any, Any, str, list[int]]] = []
    for engine, build, note in (
        (LIFT, _lift, f"max_concurrency={slots}"),
        (ASYNCIO, _asyncio, f"Semaphore({slots})"),
    ):
        gauge = [0, 0]
        engines.append(
            (engine, build(sleeps, slots, gauge), build(warm, slots, gauge), note, gauge)
        )
    missing = peer_missing(LANGGRAPH, cfg)
    if missing:
        out.add(skipped(wl, LANGGRAPH, UNIT, missing))
    else:
        gauge = [0, 0]
        build = peer("langgraph_impl").jitter
        note = f"Send + config max_concurrency={slots}"
        engines.append(
            (LANGGRAPH, build(sleeps, slots, gauge), build(warm, slots, gauge), note, gauge)
        )
    if peer_missing(PYDANTIC_GRAPH, cfg) is None:
        out.add(skipped(wl, PYDANTIC_GRAPH, UNIT, "N/A: no engine-level concurrency limit"))

    for engine, make, warmup, note, gauge in engines:
        for _ in range(cfg.warmup):
            await warmup()
        t = await median_time(make, cfg, warmup=0, verify=expect(engine, "jitter", n))
        peak = gauge[1]
        out.add(
            Row(
                wl,
                engine,
                t / bound,
                UNIT,
                f"{note}; makespan {t * 1000:.0f} ms, bound {bound * 1000:.0f} ms, "
                f"peak in flight {peak}" + (" (ABOVE THE LIMIT)" if peak > slots else ""),
                extra={"peak": peak, "makespan_s": t, "bound_s": bound},
            )
        )
    out.targets.append(Target(wl, "lift_graph makespan / greedy", out.figure(wl, LIFT), "<=", 1.05))


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    for n in cfg.jitter_sizes:
        await _one_size(cfg, n, out)
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
