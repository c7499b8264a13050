"""Workload 3: two unbalanced paths and a join; makespan / the longest path.

Path A is one node sleeping 0.5 s; path B is five nodes sleeping 0.1 s each; a join
waits for both. The ideal makespan is 0.5 s (ratio 1.0). An engine with a
superstep barrier runs B's second node only after A's 0.5 s step: ~0.9 s (1.8).
Sleeps scale with ``Config.unbalanced_scale`` (quick mode shortens them).
"""

from __future__ import annotations

import asyncio
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

__all__ = ["run"]

UNIT = "x ideal"
A_SECONDS = 0.5
B_SECONDS = 0.1
B_STEPS = 5


class PathState(BaseModel):
    x: int = 0


@dataclass
class PathA(BaseNode[PathState]):
    seconds: float

    async def run(self, ctx: RunContext[PathState]) -> End[str]:
        await asyncio.sleep(self.seconds)
        return End("a")


@dataclass
class PathB(BaseNode[PathState]):
    seconds: float
    step: int = 0

    async def run(self, ctx: RunContext[PathState]) -> PathB | End[str]:
        await asyncio.sleep(self.seconds)
        if self.step + 1 >= B_STEPS:
            return End("b")
        return PathB(self.seconds, self.step + 1)


@dataclass
class Both(BaseNode[PathState]):
    async def run(self, ctx: RunContext[PathState]) -> End[list[Any]]:
        assert ctx.join is not None
        return End(list(ctx.join.results))


@dataclass
class Split(BaseNode[PathState]):
    a: float
    b: float

    async def run(self, ctx: RunContext[PathState]) -> Fork[PathState]:
        return Fork({"A": PathA(self.a), "B": PathB(self.b)}, then=Both())


LIFT_GRAPH: Graph[PathState] = Graph(nodes=[Split, PathA, PathB, Both], name="bench-unbalanced")


async def _asyncio(a: float, b: float) -> list[str]:
    async def path_a() -> str:
        await asyncio.sleep(a)
        return "a"

    async def path_b() -> str:
        for _ in range(B_STEPS):
            await asyncio.sleep(b)
        return "b"

    return list(await asyncio.gather(path_a(), path_b()))


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    scale = cfg.unbalanced_scale
    a, b = A_SECONDS * scale, B_SECONDS * scale
    wl = "unbalanced A 0.5s | B 5x0.1s" + (f" (x{scale:g})" if scale != 1.0 else "")
    # Warm-ups use 1% sleeps: they exercise the code paths, not the clock.
    wa, wb = a / 100, b / 100

    async def lift(x: float, y: float) -> Any:
        return (await LIFT_GRAPH.run(Split(x, y), state=PathState())).output

    engines: list[tuple[str, Any, Any, str]] = [
        (LIFT, lambda: lift(a, b), lambda: lift(wa, wb), "Fork A | B, no barrier"),
        (ASYNCIO, lambda: _asyncio(a, b), lambda: _asyncio(wa, wb), "gather(path_a, path_b)"),
    ]
    for engine, module, note in (
        (LANGGRAPH, "langgraph_impl", "superstep barrier between B's steps"),
        (PYDANTIC_GRAPH, "pydantic_graph_impl", "broadcast to A and B, join"),
    ):
        missing = peer_missing(engine, cfg)
        if missing:
            out.add(skipped(wl, engine, UNIT, missing))
            continue
        build = peer(module).unbalanced
        engines.append((engine, build(a, b, B_STEPS), build(wa, wb, B_STEPS), note))

    expected = {
        LIFT: ["a", "b"],
        ASYNCIO: ["a", "b"],
        LANGGRAPH: sorted(["a", "join", *(f"b{k}" for k in range(B_STEPS))]),
        PYDANTIC_GRAPH: ["a", f"b{B_STEPS - 1}"],
    }
    for engine, make, warm, note in engines:
        for _ in range(cfg.warmup):
            await warm()
        t = await median_time(
            make,
            cfg,
            warmup=0,
            verify=expect(engine, "unbalanced paths", expected[engine]),
        )
        out.add(
            Row(
                wl,
                engine,
                t / a,
                UNIT,
                f"{note}; makespan {t * 1000:.0f} ms",
                extra={"makespan_s": t, "ideal_s": a},
            )
        )
    out.targets.append(Target(wl, "lift_graph makespan / 0.5 s", out.figure(wl, LIFT), "<=", 1.05))
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
