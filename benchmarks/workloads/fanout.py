"""Workload 2: a fan-out of n no-op branches and a join, in µs per branch.

lift_graph: a node returns ``Fork`` of n nodes each returning ``End(i)``, then a
join node counts ``ctx.join.results``. LangGraph: ``Send`` n items from a
conditional edge to a worker with an ``operator.add`` list reducer, then a join
node. pydantic-graph: ``.map()`` to a step and a ``reduce_list_append`` join.
asyncio: ``gather`` of n no-op coroutines (one task each: the floor).
"lift_graph (gc.freeze)" is information: the same run with the process's existing
heap frozen, which shows how much of the figure is the cyclic GC's full passes
over objects that are not lift_graph's (the peers' modules share this process).

Each size is timed separately (warm-up at the smallest size); the growth row is
µs/branch at the largest size over µs/branch at the smallest (1.0 = linear).
"""

from __future__ import annotations

import asyncio
import gc
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

__all__ = ["LIFT_GRAPH", "Fan", "FanState", "run"]

UNIT = "µs/branch"


class FanState(BaseModel):
    x: int = 0


@dataclass
class Leaf(BaseNode[FanState]):
    i: int

    async def run(self, ctx: RunContext[FanState]) -> End[int]:
        return End(self.i)


@dataclass
class Count(BaseNode[FanState]):
    async def run(self, ctx: RunContext[FanState]) -> End[int]:
        assert ctx.join is not None
        return End(len(ctx.join.results))


@dataclass
class Fan(BaseNode[FanState]):
    n: int

    async def run(self, ctx: RunContext[FanState]) -> Fork[FanState]:
        return Fork([Leaf(i) for i in range(self.n)], then=Count())


LIFT_GRAPH: Graph[FanState] = Graph(nodes=[Fan, Leaf, Count], name="bench-fanout")


async def _noop(i: int) -> int:
    return i


def _lift(n: int) -> Any:
    async def run() -> int:
        return int((await LIFT_GRAPH.run(Fan(n), state=FanState())).output)

    return run


def _lift_frozen(n: int) -> Any:
    """lift_graph with the heap that existed before the run frozen (``gc.freeze()``),
    so the cyclic GC's full collections skip it: information, not a target."""

    async def run() -> int:
        gc.freeze()
        try:
            return int((await LIFT_GRAPH.run(Fan(n), state=FanState())).output)
        finally:
            gc.unfreeze()

    return run


def _asyncio(n: int) -> Any:
    async def run() -> int:
        return len(await asyncio.gather(*(_noop(i) for i in range(n))))

    return run


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    sizes = cfg.fan_sizes
    engines: list[tuple[str, Any, str]] = [
        (LIFT, _lift, "Fork of n nodes -> join node"),
        (
            f"{LIFT} (gc.freeze)",
            _lift_frozen,
            "info: heap frozen before the run, so full GC passes skip the peers' modules",
        ),
        (ASYNCIO, _asyncio, "floor: gather of n no-op coroutines"),
    ]
    for engine, module, note in (
        (LANGGRAPH, "langgraph_impl", "Send from a conditional edge, operator.add reducer"),
        (PYDANTIC_GRAPH, "pydantic_graph_impl", "GraphBuilder .map() + reduce_list_append"),
    ):
        missing = peer_missing(engine, cfg)
        if missing:
            engines.append((engine, None, missing))
        else:
            engines.append((engine, peer(module).fanout, note))

    for engine, factory, note in engines:
        per_branch: dict[int, float] = {}
        for k, n in enumerate(sizes):
            wl = f"fan-out {n}"
            if factory is None:
                out.add(skipped(wl, engine, UNIT, note))
                continue
            t = await median_time(
                factory(n),
                cfg,
                warmup=cfg.warmup if k == 0 else 0,
                verify=expect(engine, f"fan-out of {n}", n),
            )
            per_branch[n] = t / n * 1e6
            out.add(Row(wl, engine, per_branch[n], UNIT, note))
        if len(per_branch) >= 2:
            lo, hi = sizes[0], sizes[-1]
            out.add(
                Row(
                    f"fan-out growth {hi // 1000}k/{lo // 1000}k"
                    if lo >= 1000
                    else f"fan-out growth {hi}/{lo}",
                    engine,
                    per_branch[hi] / per_branch[lo],
                    "x",
                    "µs/branch at the largest size / at the smallest",
                )
            )

    for n in sizes:
        wl = f"fan-out {n}"
        mine = out.figure(wl, LIFT)
        lg, pg = out.figure(wl, LANGGRAPH), out.figure(wl, PYDANTIC_GRAPH)
        out.targets += [
            Target(wl, "lift_graph µs/branch", mine, "<=", 25.0),
            Target(wl, "LangGraph / lift_graph", lg / mine if lg and mine else None, ">=", 6.0),
            Target(wl, "pydantic-graph / lift_graph", pg / mine if pg and mine else None, ">", 1.0),
        ]
    growth = [r for r in out.rows if r.workload.startswith("fan-out growth") and r.engine == LIFT]
    if growth:
        out.targets.append(
            Target(growth[0].workload, "lift_graph growth", growth[0].figure, "<=", 1.3)
        )
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
