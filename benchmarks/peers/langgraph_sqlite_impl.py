"""LangGraph with its SQLite checkpointers (``langgraph-checkpoint-sqlite``), for the
durability workload.

Each builder compiles the graph once without a checkpointer and returns a
``Trials`` whose ``open(path)`` compiles it again with a saver on a fresh SQLite
file (connection opened and tables created before the clock starts). A trial's
``run()`` is what is timed; ``done()`` (untimed) counts the checkpoints written,
so a saver that silently wrote nothing cannot pass for a cheap one, and closes
the connection.

- ``AsyncSqliteSaver`` (aiosqlite) with ``ainvoke`` and ``async def`` nodes: what a
  LangGraph user of an async graph uses (``SqliteSaver`` has no async methods).
  ``durability`` is LangGraph's default ``"async"`` (a step's checkpoint is written
  while the next step runs) or ``"sync"`` (written before the next step starts).
- ``SqliteSaver`` (sqlite3) with ``invoke`` and plain ``def`` nodes, for a sync graph.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

__all__ = ["AIO_MISSING", "Trial", "Trials", "async_chain", "async_fanout", "sync_chain"]

try:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
except ImportError as exc:  # aiosqlite is a dependency of the package; be safe anyway
    AIO_MISSING: str | None = f"skipped: AsyncSqliteSaver unavailable ({exc})"
else:
    AIO_MISSING = None


class ChainState(TypedDict):
    i: int


class FanState(TypedDict):
    n: int
    results: Annotated[list[int], operator.add]
    total: int


class Item(TypedDict):
    i: int


@dataclass
class Trial:
    """One timed run: ``run()`` (timed), then ``done()`` -> checkpoints written."""

    run: Callable[[], Awaitable[int]]
    done: Callable[[], Awaitable[int]]


@dataclass
class Trials:
    """``bare()``: the graph without a checkpointer; ``open(path)``: a saver trial."""

    bare: Callable[[], Awaitable[int]]
    open: Callable[[str], Awaitable[Trial]]


def _count_sync(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])


async def _count_async(conn: Any) -> int:
    async with conn.execute("SELECT COUNT(*) FROM checkpoints") as cur:
        row = await cur.fetchone()
    return int(row[0])


def _chain_builder(n: int, node: Callable[[ChainState], Any]) -> StateGraph[Any]:
    """n distinct nodes ``n0 -> n1 -> ... -> n{n-1}``, each adding 1 to ``i``."""
    b: StateGraph[Any] = StateGraph(ChainState)
    names = [f"n{k}" for k in range(n)]
    for name in names:
        b.add_node(name, node)
    b.add_edge(START, names[0])
    for x, y in itertools.pairwise(names):
        b.add_edge(x, y)
    b.add_edge(names[-1], END)
    return b


def async_chain(n: int, durability: str = "async", synchronous: str | None = None) -> Trials:
    """The chain with ``async def`` nodes, ``ainvoke``, ``AsyncSqliteSaver``.

    ``synchronous``: a ``PRAGMA synchronous`` set on the connection before the saver
    creates its tables (None: SQLite's default, FULL: an fsync per commit in WAL mode).
    """

    async def step(s: ChainState) -> dict[str, int]:
        return {"i": s["i"] + 1}

    builder = _chain_builder(n, step)
    bare_graph = builder.compile()
    limit: Any = {"recursion_limit": n + 10}

    async def bare() -> int:
        return int((await bare_graph.ainvoke({"i": 0}, limit))["i"])

    async def open_(path: str) -> Trial:
        conn = await aiosqlite.connect(path)
        if synchronous is not None:
            await conn.execute(f"PRAGMA synchronous={synchronous}")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        graph = builder.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}

        async def run() -> int:
            out = await graph.ainvoke({"i": 0}, config, durability=durability)  # type: ignore[arg-type]
            return int(out["i"])

        async def done() -> int:
            try:
                return await _count_async(conn)
            finally:
                await conn.close()

        return Trial(run, done)

    return Trials(bare, open_)


def sync_chain(n: int) -> Trials:
    """The chain with plain ``def`` nodes, ``invoke``, ``SqliteSaver`` (blocks the loop
    while it runs, as a sync graph does)."""

    def step(s: ChainState) -> dict[str, int]:
        return {"i": s["i"] + 1}

    builder = _chain_builder(n, step)
    bare_graph = builder.compile()
    limit: Any = {"recursion_limit": n + 10}

    async def bare() -> int:
        return int(bare_graph.invoke({"i": 0}, limit)["i"])

    async def open_(path: str) -> Trial:
        conn = sqlite3.connect(path, check_same_thread=False)
        saver = SqliteSaver(conn)
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}

        async def run() -> int:
            return int(graph.invoke({"i": 0}, config)["i"])

        async def done() -> int:
            try:
                return _count_sync(conn)
            finally:
                conn.close()

        return Trial(run, done)

    return Trials(bare, open_)


def async_fanout(k: int) -> Trials:
    """``Send`` k items to a worker (``operator.add`` list reducer), then a join node
    counts them; ``async def`` nodes, ``ainvoke``, ``AsyncSqliteSaver``."""

    async def fan(s: FanState) -> dict[str, Any]:
        return {}

    def sends(s: FanState) -> list[Send]:
        return [Send("work", {"i": i}) for i in range(s["n"])]

    async def work(s: Item) -> dict[str, list[int]]:
        return {"results": [s["i"]]}

    async def join(s: FanState) -> dict[str, int]:
        return {"total": len(s["results"])}

    b: StateGraph[Any] = StateGraph(FanState)
    b.add_node("fan", fan)
    b.add_node("work", work)
    b.add_node("join", join)
    b.add_edge(START, "fan")
    b.add_conditional_edges("fan", sends, ["work"])
    b.add_edge("work", "join")
    b.add_edge("join", END)
    bare_graph = b.compile()
    start = {"n": k, "results": [], "total": 0}

    async def bare() -> int:
        return int((await bare_graph.ainvoke(start))["total"])

    async def open_(path: str) -> Trial:
        conn = await aiosqlite.connect(path)
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        graph = b.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "bench"}}

        async def run() -> int:
            return int((await graph.ainvoke(start, config))["total"])

        async def done() -> int:
            try:
                # One checkpoint per superstep here; the k branches' results are
                # rows of the writes table.
                async with conn.execute("SELECT COUNT(*) FROM writes") as cur:
                    row = await cur.fetchone()
                return int(row[0])
            finally:
                await conn.close()

        return Trial(run, done)

    return Trials(bare, open_)
