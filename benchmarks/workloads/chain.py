"""Workload 1: a chain of n no-op nodes, in µs per node.

Every engine runs the same shape: one node that counts and hands over to itself
until the count reaches n (n node executions on one path). lift_graph and
pydantic-graph return a fresh node instance each step; LangGraph loops one node
through a conditional edge with the counter in its state (``recursion_limit``
raised above n). Two asyncio floors: awaiting n no-op coroutines in sequence (what
a single-task engine cannot beat) and one task per step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pydantic import BaseModel

from lift_graph import BaseNode, End, Graph, RunContext

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

UNIT = "µs/node"


class ChainState(BaseModel):
    x: int = 0


@dataclass
class Step(BaseNode[ChainState]):
    i: int
    n: int

    async def run(self, ctx: RunContext[ChainState]) -> Step | End[int]:
        if self.i + 1 >= self.n:
            return End(self.i + 1)
        return Step(self.i + 1, self.n)


LIFT_GRAPH: Graph[ChainState] = Graph(nodes=[Step], name="bench-chain")


async def _noop() -> None:
    return None


async def _asyncio_await(n: int) -> int:
    for _ in range(n):
        await _noop()
    return n


async def _asyncio_tasks(n: int) -> int:
    for _ in range(n):
        await asyncio.create_task(_noop())
    return n


async def _measure(cfg: Config) -> Outcome:
    n = cfg.chain_n
    wl = f"chain {n}"
    what = f"chain of {n}"
    out = Outcome()

    def per_node(seconds: float) -> float:
        return seconds / n * 1e6

    async def lift() -> int:
        return int((await LIFT_GRAPH.run(Step(0, n), state=ChainState())).output)

    t = await median_time(lift, cfg, verify=expect(LIFT, what, n))
    out.add(Row(wl, LIFT, per_node(t), UNIT, "one node looping, one task"))
    t = await median_time(lambda: _asyncio_await(n), cfg, verify=expect(ASYNCIO, what, n))
    out.add(Row(wl, f"{ASYNCIO} (await)", per_node(t), UNIT, "floor: await n no-op coroutines"))
    t = await median_time(lambda: _asyncio_tasks(n), cfg, verify=expect(ASYNCIO, what, n))
    out.add(Row(wl, f"{ASYNCIO} (task/step)", per_node(t), UNIT, "one task per step"))

    for engine, module, note in (
        (LANGGRAPH, "langgraph_impl", "one node + conditional edge, recursion_limit > n"),
        (PYDANTIC_GRAPH, "pydantic_graph_impl", "BaseNode returning itself (GraphBuilder)"),
    ):
        missing = peer_missing(engine, cfg)
        if missing:
            out.add(skipped(wl, engine, UNIT, missing))
            continue
        t = await median_time(peer(module).chain(n), cfg, verify=expect(engine, what, n))
        out.add(Row(wl, engine, per_node(t), UNIT, note))

    mine = out.figure(wl, LIFT)
    lg, pg = out.figure(wl, LANGGRAPH), out.figure(wl, PYDANTIC_GRAPH)
    out.targets += [
        Target(wl, "lift_graph µs/node", mine, "<=", 25.0),
        Target(wl, "LangGraph / lift_graph", lg / mine if lg and mine else None, ">=", 6.0),
        Target(wl, "pydantic-graph / lift_graph", pg / mine if pg and mine else None, ">", 1.0),
    ]
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
