"""pydantic-graph versions of the workloads (its ``GraphBuilder`` API).

The installed pydantic-graph (2.x) has the parallel builder API (what was
``pydantic_graph.beta``): steps, ``.map()`` fan-out, broadcast, and joins with
reducers. Its ``BaseNode`` classes run inside the builder through ``NodeStep``.
It has no engine-level concurrency limit, so the jitter workload is N/A here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic_graph import (
    BaseNode,
    End,
    GraphBuilder,
    GraphRunContext,
    StepContext,
    reduce_list_append,
)
from pydantic_graph.step import NodeStep

__all__ = ["batch", "chain", "fanout", "unbalanced"]

Runner = Callable[[], Awaitable[Any]]


@dataclass
class ChainState:
    n: int


@dataclass
class Step(BaseNode[ChainState, None, int]):
    i: int = 0

    async def run(self, ctx: GraphRunContext[ChainState, None]) -> Step | End[int]:
        if self.i + 1 >= ctx.state.n:
            return End(self.i + 1)
        return Step(self.i + 1)


@dataclass
class Empty:
    pass


def chain(n: int) -> Runner:
    """A ``BaseNode`` that returns itself until its counter reaches n."""
    g = GraphBuilder(state_type=ChainState, input_type=Step, output_type=int)
    g.add(g.node(Step), g.edge_from(g.start_node).to(NodeStep(Step)))
    graph = g.build()

    async def run() -> int:
        return int(await graph.run(state=ChainState(n), inputs=Step(0)))

    return run


def fanout(n: int) -> Runner:
    """``.map()`` a list of n items to a no-op step; ``reduce_list_append`` joins."""
    g = GraphBuilder(state_type=Empty, input_type=int, output_type=list[int])

    @g.step
    async def items(ctx: StepContext[Empty, None, int]) -> list[int]:
        return list(range(ctx.inputs))

    @g.step
    async def work(ctx: StepContext[Empty, None, int]) -> int:
        return ctx.inputs

    collect = g.join(reduce_list_append, initial_factory=list[int])
    g.add(
        g.edge_from(g.start_node).to(items),
        g.edge_from(items).map().to(work),
        g.edge_from(work).to(collect),
        g.edge_from(collect).to(g.end_node),
    )
    graph = g.build()

    async def run() -> int:
        return len(await graph.run(state=Empty(), inputs=n))

    return run


def unbalanced(a: float, b: float, steps: int) -> Runner:
    """Broadcast to path A (one step sleeping ``a``) and path B (``steps`` steps
    sleeping ``b``); a join collects both paths' last outputs."""
    g = GraphBuilder(state_type=Empty, output_type=list[str])

    def sleeper(name: str, seconds: float) -> Any:
        async def body(ctx: StepContext[Empty, None, Any]) -> str:
            await asyncio.sleep(seconds)
            return name

        return g.step(body, node_id=name)

    step_a = sleeper("a", a)
    path_b = [sleeper(f"b{k}", b) for k in range(steps)]
    collect = g.join(reduce_list_append, initial_factory=list[str])
    g.add(
        g.edge_from(g.start_node).to(step_a, path_b[0]),
        *(g.edge_from(x).to(y) for x, y in itertools.pairwise(path_b)),
        g.edge_from(step_a, path_b[-1]).to(collect),
        g.edge_from(collect).to(g.end_node),
    )
    graph = g.build()

    async def run() -> list[str]:
        return sorted(await graph.run(state=Empty()))

    return run


def batch(n: int, slots: int, sleep: float, bad: frozenset[int], gauge: Any) -> Runner:
    """Three steps (load, work, finish; each sleeps ``sleep``; finish raises for
    inputs in ``bad``) in one graph, run over n inputs: pydantic-graph has no batch
    API, so an ``asyncio.Semaphore(slots)`` and ``gather(return_exceptions=True)``
    over ``graph.run``. ``gauge.enter()`` / ``exit()`` count the inputs in flight."""
    g = GraphBuilder(state_type=Empty, input_type=int, output_type=int)

    @g.step
    async def load(ctx: StepContext[Empty, None, int]) -> int:
        gauge.enter()
        await asyncio.sleep(sleep)
        return ctx.inputs

    @g.step
    async def work(ctx: StepContext[Empty, None, int]) -> int:
        await asyncio.sleep(sleep)
        return ctx.inputs

    @g.step
    async def finish(ctx: StepContext[Empty, None, int]) -> int:
        try:
            await asyncio.sleep(sleep)
            if ctx.inputs in bad:
                raise ValueError(f"input {ctx.inputs} is bad")
            return ctx.inputs * 2
        finally:
            gauge.exit()

    g.add(
        g.edge_from(g.start_node).to(load),
        g.edge_from(load).to(work),
        g.edge_from(work).to(finish),
        g.edge_from(finish).to(g.end_node),
    )
    graph = g.build()

    async def run() -> list[Any]:
        sem = asyncio.Semaphore(slots)

        async def one(x: int) -> int:
            async with sem:
                return int(await graph.run(state=Empty(), inputs=x))

        return list(await asyncio.gather(*(one(x) for x in range(n)), return_exceptions=True))

    return run
