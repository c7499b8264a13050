"""LangGraph versions of the workloads (``StateGraph`` compiled, run with ``ainvoke``).

Each builder compiles its graph once and returns ``run()``, an async callable that
invokes it and returns what the workload checks. Nodes are ``async def`` so that
LangGraph runs them on the event loop, as lift_graph's are.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

__all__ = ["batch", "chain", "fanout", "jitter", "unbalanced"]

Runner = Callable[[], Awaitable[Any]]


class ChainState(TypedDict):
    i: int


class FanState(TypedDict):
    n: int
    results: Annotated[list[int], operator.add]
    total: int


class Item(TypedDict):
    i: int


class PathState(TypedDict):
    done: Annotated[list[str], operator.add]


class JitterState(TypedDict):
    results: Annotated[list[int], operator.add]
    total: int


class Sleep(TypedDict):
    i: int
    d: float


def chain(n: int) -> Runner:
    """One node looping through a conditional edge until its counter reaches n."""

    async def step(s: ChainState) -> dict[str, int]:
        return {"i": s["i"] + 1}

    def route(s: ChainState) -> str:
        return "step" if s["i"] < n else END

    b = StateGraph(ChainState)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", route, ["step", END])
    graph = b.compile()
    config: Any = {"recursion_limit": n + 10}

    async def run() -> int:
        return int((await graph.ainvoke({"i": 0}, config))["i"])

    return run


def fanout(n: int) -> Runner:
    """``Send`` n items from a conditional edge to a worker; an ``operator.add`` list
    reducer collects them; a join node counts them."""

    async def fan(s: FanState) -> dict[str, Any]:
        return {}

    def sends(s: FanState) -> list[Send]:
        return [Send("work", {"i": i}) for i in range(s["n"])]

    async def work(s: Item) -> dict[str, list[int]]:
        return {"results": [s["i"]]}

    async def join(s: FanState) -> dict[str, int]:
        return {"total": len(s["results"])}

    b = StateGraph(FanState)
    b.add_node("fan", fan)
    b.add_node("work", work)
    b.add_node("join", join)
    b.add_edge(START, "fan")
    b.add_conditional_edges("fan", sends, ["work"])
    b.add_edge("work", "join")
    b.add_edge("join", END)
    graph = b.compile()

    async def run() -> int:
        return int((await graph.ainvoke({"n": n, "results": [], "total": 0}))["total"])

    return run


def unbalanced(a: float, b: float, steps: int) -> Runner:
    """Path A: one node sleeping ``a``; path B: ``steps`` nodes sleeping ``b``; a join
    waits for both (``add_edge([...], "join")``)."""

    def sleeper(name: str, seconds: float) -> Callable[[PathState], Awaitable[dict[str, Any]]]:
        async def node(s: PathState) -> dict[str, Any]:
            await asyncio.sleep(seconds)
            return {"done": [name]}

        return node

    async def join(s: PathState) -> dict[str, Any]:
        return {"done": ["join"]}

    g = StateGraph(PathState)
    g.add_node("a", sleeper("a", a))
    names = [f"b{k}" for k in range(steps)]
    for name in names:
        g.add_node(name, sleeper(name, b))
    g.add_node("join", join)
    g.add_edge(START, "a")
    g.add_edge(START, names[0])
    for x, y in itertools.pairwise(names):
        g.add_edge(x, y)
    g.add_edge(["a", names[-1]], "join")
    g.add_edge("join", END)
    graph = g.compile()

    async def run() -> list[str]:
        return sorted((await graph.ainvoke({"done": []}))["done"])

    return run


def jitter(sleeps: Sequence[float], slots: int, gauge: list[int]) -> Runner:
    """``Send`` one sleeping worker per entry of ``sleeps`` under the
    ``max_concurrency`` config key; ``gauge`` is [in flight, peak]."""

    def sends(s: JitterState) -> list[Send]:
        return [Send("work", {"i": i, "d": d}) for i, d in enumerate(sleeps)]

    async def work(s: Sleep) -> dict[str, list[int]]:
        gauge[0] += 1
        gauge[1] = max(gauge[1], gauge[0])
        try:
            await asyncio.sleep(s["d"])
        finally:
            gauge[0] -= 1
        return {"results": [s["i"]]}

    async def join(s: JitterState) -> dict[str, int]:
        return {"total": len(s["results"])}

    b = StateGraph(JitterState)
    b.add_node("work", work)
    b.add_node("join", join)
    b.add_conditional_edges(START, sends, ["work"])
    b.add_edge("work", "join")
    b.add_edge("join", END)
    graph = b.compile()
    config: Any = {"max_concurrency": slots}

    async def run() -> int:
        return int((await graph.ainvoke({"results": [], "total": 0}, config))["total"])

    return run


class BatchState(TypedDict):
    x: int
    y: int


def batch(n: int, slots: int, sleep: float, bad: frozenset[int], gauge: Any) -> Runner:
    """Three async nodes (load, work, finish; each sleeps ``sleep``; finish raises
    for inputs in ``bad``) run over n inputs with ``abatch`` (``max_concurrency``
    ``slots``, ``return_exceptions=True``). ``gauge.enter()`` / ``exit()`` count the
    inputs in flight."""

    async def load(s: BatchState) -> dict[str, int]:
        gauge.enter()
        await asyncio.sleep(sleep)
        return {"y": s["x"]}

    async def work(s: BatchState) -> dict[str, int]:
        await asyncio.sleep(sleep)
        return {"y": s["y"] * 2}

    async def finish(s: BatchState) -> dict[str, int]:
        try:
            await asyncio.sleep(sleep)
            if s["x"] in bad:
                raise ValueError(f"input {s['x']} is bad")
            return {}
        finally:
            gauge.exit()

    g = StateGraph(BatchState)
    for name, fn in (("load", load), ("work", work), ("finish", finish)):
        g.add_node(name, fn)
    g.add_edge(START, "load")
    g.add_edge("load", "work")
    g.add_edge("work", "finish")
    g.add_edge("finish", END)
    graph = g.compile()
    config: Any = {"max_concurrency": slots}

    async def run() -> list[Any]:
        inputs: list[Any] = [{"x": i, "y": 0} for i in range(n)]
        out = await graph.abatch(inputs, config=config, return_exceptions=True)
        return [o if isinstance(o, BaseException) else o["y"] for o in out]

    return run
