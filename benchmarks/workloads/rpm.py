"""Workload 6: a provider's requests-per-minute limit, on a fake clock.

A fork of N instant nodes of provider ``p`` runs under
``Limits(providers={"p": ProviderLimit(rpm=R)}, clock=FakeClock())``; each node
records the virtual time it started. Figures:

* throughput / limit, where throughput = N / ((last start - first start) + 60 s)
  per virtual minute. The last start still occupies its window for 60 s, so a
  limiter that starts exactly R requests per window scores 1.00 (N a multiple of R);
  a lazy one scores less; one that lets more through would need fewer windows and
  score above 1.
* the most starts in any sliding 60 s window (t - 60, t], which must be <= R.

No peer has an engine-level RPM limit, so this workload is lift_graph only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from lift_graph import BaseNode, End, FakeClock, Fork, Graph, Limits, ProviderLimit, RunContext

from .._harness import LIFT, Config, Outcome, Row, Target, check, run_async

__all__ = ["max_in_window", "run"]

WINDOW = 60.0


class RateState(BaseModel):
    x: int = 0


@dataclass
class Call(BaseNode[RateState]):
    i: int
    provider: ClassVar[str | None] = "p"
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[RateState]) -> End[int]:
        clock, starts = ctx.deps
        starts.append(clock.now())
        return End(self.i)


@dataclass
class Tally(BaseNode[RateState]):
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[RateState]) -> End[int]:
        assert ctx.join is not None
        return End(ctx.join.succeeded)


@dataclass
class Burst(BaseNode[RateState]):
    n: int
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[RateState]) -> Fork[RateState]:
        return Fork([Call(i) for i in range(self.n)], then=Tally())


LIFT_GRAPH: Graph[RateState] = Graph(nodes=[Burst, Call, Tally], name="bench-rpm")


def max_in_window(starts: list[float], window: float = WINDOW) -> int:
    """The most start times in any half-open window (t - window, t]."""
    ts = sorted(starts)
    best = lo = 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    n, rpm = cfg.rpm_nodes, cfg.rpm_limit
    wl = f"rpm {n:,} nodes @ {rpm}/min"
    clock = FakeClock()
    limits = Limits(providers={"p": ProviderLimit(rpm=rpm)}, clock=clock)
    starts: list[float] = []
    began = time.perf_counter()
    res: Any = await LIFT_GRAPH.run(
        Burst(n), state=RateState(), limits=limits, deps=(clock, starts)
    )
    real = time.perf_counter() - began
    check(LIFT, "rpm fork", res.output, n)
    check(LIFT, "starts recorded", len(starts), n)
    span = max(starts) - min(starts)
    throughput = n / ((span + WINDOW) / 60.0)
    peak = max_in_window(starts)
    out.add(
        Row(
            wl,
            LIFT,
            throughput / rpm,
            "x limit",
            f"{throughput:.1f} starts/virtual min over {span + WINDOW:.0f} virtual s "
            f"({real:.2f} s real)",
        ),
        Row(wl + " peak window", LIFT, float(peak), "starts/60s", f"limit {rpm}"),
    )
    out.targets += [
        Target(wl, "throughput / limit", throughput / rpm, ">=", 0.95),
        Target(wl, "throughput / limit (never above)", throughput / rpm, "<=", 1.0),
        Target(wl, "max starts in any 60 s window", float(peak), "<=", float(rpm)),
    ]
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
