"""Workload 12: one graph over 1,000 inputs, 16 at a time, 3 of them failing.

Each input runs a chain of three async nodes (load, work, finish), each sleeping
``batch_sleep`` seconds, the last raising ``ValueError`` for the 3 injected
failures. Every engine must return the outputs in input order with the 3 failures
at their indexes (else ``BenchmarkError``), and must never have more than 16
inputs in flight (counted by the nodes themselves: first node entered to last
node left).

- lift_graph: ``Graph.map(Load(), states, max_concurrency=16)`` (a
  ``BatchResult``), and ``Graph.imap`` streaming the same batch in input order
  without keeping the results (information: the bounded-memory path);
- asyncio: ``Semaphore(16)`` + ``gather(return_exceptions=True)`` of the three
  sleeps (the floor);
- LangGraph: ``graph.abatch(inputs, config={"max_concurrency": 16},
  return_exceptions=True)``;
- pydantic-graph: no batch API, so ``Semaphore(16)`` + ``gather`` over
  ``graph.run``.

Figures: throughput in inputs/s (median of the timed runs) and the tracemalloc
peak of one more run (KB; the note gives bytes per input). tracemalloc counts
Python allocations only, and slows the run it watches, so that run is not timed.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from lift_graph import BaseNode, End, Graph, RunContext

from .._harness import (
    ASYNCIO,
    LANGGRAPH,
    LIFT,
    PYDANTIC_GRAPH,
    BenchmarkError,
    Config,
    Outcome,
    Row,
    Target,
    check,
    median_time,
    peer,
    peer_missing,
    run_async,
    skipped,
)

__all__ = ["Gauge", "bad_inputs", "run"]

Runner = Callable[[], Awaitable[list[Any]]]
LIFT_IMAP = f"{LIFT} (imap)"


@dataclass(slots=True)
class Gauge:
    """Inputs in flight, as the nodes see them."""

    now: int = 0
    peak: int = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def exit(self) -> None:
        self.now -= 1


@dataclass(slots=True)
class Deps:
    sleep: float
    bad: frozenset[int]
    gauge: Gauge = field(default_factory=Gauge)


class BatchState(BaseModel):
    x: int
    y: int = 0


@dataclass
class Load(BaseNode[BatchState]):
    async def run(self, ctx: RunContext[BatchState]) -> Work:
        ctx.deps.gauge.enter()
        await asyncio.sleep(ctx.deps.sleep)
        ctx.state.y = ctx.state.x
        return Work()


@dataclass
class Work(BaseNode[BatchState]):
    async def run(self, ctx: RunContext[BatchState]) -> Finish:
        await asyncio.sleep(ctx.deps.sleep)
        ctx.state.y *= 2
        return Finish()


@dataclass
class Finish(BaseNode[BatchState]):
    async def run(self, ctx: RunContext[BatchState]) -> End[int]:
        try:
            await asyncio.sleep(ctx.deps.sleep)
            if ctx.state.x in ctx.deps.bad:
                raise ValueError(f"input {ctx.state.x} is bad")
            return End(ctx.state.y)
        finally:
            ctx.deps.gauge.exit()


LIFT_GRAPH: Graph[BatchState] = Graph([Load, Work, Finish], name="bench-batch")


def bad_inputs(n: int, k: int) -> frozenset[int]:
    """``k`` failing inputs spread over ``range(n)``: early, middle, late."""
    return frozenset((n * (2 * j + 1)) // (2 * k) for j in range(k))


def _lift_map(n: int, slots: int, deps: Deps) -> Runner:
    async def run() -> list[Any]:
        states = (BatchState(x=i) for i in range(n))
        batch = await LIFT_GRAPH.map(Load(), states, max_concurrency=slots, deps=deps)
        return [batch.errors.get(i, out) for i, out in enumerate(batch.outputs)]

    return run


def _lift_imap(n: int, slots: int, deps: Deps) -> Runner:
    """Stream in input order and keep only what the check needs (no RunResult)."""

    async def run() -> list[Any]:
        states = (BatchState(x=i) for i in range(n))
        got: list[Any] = []
        async for i, result in LIFT_GRAPH.imap(Load(), states, max_concurrency=slots, deps=deps):
            if i != len(got):
                raise BenchmarkError(f"{LIFT_IMAP}: index {i} came at position {len(got)}")
            got.append(result if isinstance(result, BaseException) else result.output)
        return got

    return run


def _asyncio(n: int, slots: int, deps: Deps) -> Runner:
    async def chain(x: int, sem: asyncio.Semaphore) -> int:
        async with sem:
            deps.gauge.enter()
            try:
                await asyncio.sleep(deps.sleep)
                y = x
                await asyncio.sleep(deps.sleep)
                y *= 2
                await asyncio.sleep(deps.sleep)
                if x in deps.bad:
                    raise ValueError(f"input {x} is bad")
                return y
            finally:
                deps.gauge.exit()

    async def run() -> list[Any]:
        sem = asyncio.Semaphore(slots)
        return list(
            await asyncio.gather(*(chain(x, sem) for x in range(n)), return_exceptions=True)
        )

    return run


def _verify(engine: str, n: int, bad: frozenset[int], got: list[Any]) -> None:
    """Outputs in input order, the failures (ValueError) at exactly their indexes."""
    failed = [i for i, v in enumerate(got) if isinstance(v, BaseException)]
    check(engine, f"failed indexes of {n} inputs", failed, sorted(bad))
    if not all(isinstance(got[i], ValueError) for i in failed):
        raise BenchmarkError(
            f"{engine}: failures are not the nodes' ValueErrors: {got[failed[0]]!r}"
        )
    ok = [v for i, v in enumerate(got) if i not in bad]
    check(engine, f"outputs of {n} inputs", ok, [2 * i for i in range(n) if i not in bad])


def _engines(cfg: Config, n: int, slots: int, deps: Deps) -> list[tuple[str, Runner | None, str]]:
    bad, sleep, gauge = deps.bad, deps.sleep, deps.gauge
    engines: list[tuple[str, Runner | None, str]] = [
        (LIFT, _lift_map(n, slots, deps), "Graph.map -> BatchResult"),
        (LIFT_IMAP, _lift_imap(n, slots, deps), "info: Graph.imap, results not kept"),
        (ASYNCIO, _asyncio(n, slots, deps), "floor: Semaphore + gather(return_exceptions)"),
    ]
    for engine, module, note in (
        (LANGGRAPH, "langgraph_impl", 'abatch(config={"max_concurrency": 16})'),
        (PYDANTIC_GRAPH, "pydantic_graph_impl", "Semaphore + gather over graph.run"),
    ):
        missing = peer_missing(engine, cfg)
        runner = None if missing else peer(module).batch(n, slots, sleep, bad, gauge)
        engines.append((engine, runner, missing or note))
    return engines


async def _peak_bytes(make: Runner) -> int:
    """tracemalloc's peak above the baseline during one ``await make()``."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await make()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


async def _measure(cfg: Config) -> Outcome:
    n, slots = cfg.batch_n, cfg.batch_slots
    deps = Deps(sleep=cfg.batch_sleep, bad=bad_inputs(n, cfg.batch_failures))
    wl, wl_mem = f"batch {n} x{slots}", f"batch {n} x{slots} memory"
    out = Outcome()
    for engine, runner, note in _engines(cfg, n, slots, deps):
        if runner is None:
            out.add(skipped(wl, engine, "inputs/s", note), skipped(wl_mem, engine, "KB peak", note))
            continue
        deps.gauge.peak = 0
        seconds = await median_time(
            runner, cfg, verify=lambda got, e=engine: _verify(e, n, deps.bad, got)
        )
        if deps.gauge.peak > slots:
            raise BenchmarkError(f"{engine}: {deps.gauge.peak} inputs in flight, limit {slots}")
        peak = await _peak_bytes(runner)
        extra = {"peak_in_flight": float(deps.gauge.peak), "seconds": seconds}
        out.add(
            Row(wl, engine, n / seconds, "inputs/s", note, extra=extra),
            Row(wl_mem, engine, peak / 1024, "KB peak", f"{note}; {peak / n:,.0f} B/input"),
        )
    return _targets(out.compare(), wl, wl_mem, n, slots)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _targets(out: Outcome, wl: str, wl_mem: str, n: int, slots: int) -> Outcome:
    mine, floor = out.figure(wl, LIFT), out.figure(wl, ASYNCIO)
    lg = out.figure(wl, LANGGRAPH)
    mem, stream = out.figure(wl_mem, LIFT), out.figure(wl_mem, LIFT_IMAP)
    in_flight = next((r.extra["peak_in_flight"] for r in out.rows if r.workload == wl), None)
    out.targets += [
        Target(wl, "lift_graph inputs in flight (max_concurrency)", in_flight, "<=", slots),
        Target(wl, "lift_graph / asyncio throughput", _ratio(mine, floor), ">=", 0.7),
        Target(wl, "lift_graph / LangGraph throughput", _ratio(mine, lg), ">=", 1.0),
        Target(wl_mem, "lift_graph map KB/input (results kept)", mem and mem / n, "<=", 8.0),
        Target(wl_mem, "lift_graph imap peak / map peak", _ratio(stream, mem), "<=", 0.5),
    ]
    return out


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
