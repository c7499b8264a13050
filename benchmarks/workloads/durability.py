"""Workload 10: what journaling a run to SQLite costs per node, beside LangGraph's
SQLite checkpointer.

The same linear chain of n nodes on both engines, each node adding 1 to one int
field of the state (no sleeps). lift_graph: a node class returning the next
instance until the n-th returns ``End``, run with and without
``store=SQLiteStore(path)``. LangGraph: n distinct nodes joined by edges, compiled
without a checkpointer and with ``AsyncSqliteSaver`` (``ainvoke``, ``async def``
nodes: what a user of an async graph picks, ``SqliteSaver`` having no async
methods), at LangGraph's default ``durability="async"``. Information rows:
``durability="sync"`` (each step's checkpoint written before the next step, as
lift_graph commits each node before the next starts), ``PRAGMA synchronous=NORMAL``
on the saver's connection (SQLite's default is FULL, an fsync per commit in WAL
mode; ``SQLiteStore`` sets NORMAL), ``SqliteSaver`` with ``invoke`` on a sync graph,
lift_graph's ``MemoryStore`` (the journal without the disk), and two raw sqlite3
floors: one INSERT + COMMIT per node in WAL mode at synchronous FULL and NORMAL.

Per-node cost = (median time with the store - median time without) / n. Every
repeat gets a fresh database file, opened and set up (tables created) before the
clock starts; the variants run interleaved, one round per repeat, so a slow
stretch of the machine hits them alike. Each run is checked: the chain's answer,
and that the store really holds at least one journal entry / checkpoint per node.

A fan-out of k branches and a join is measured the same way (µs per branch):
lift_graph ``Fork`` vs LangGraph ``Send`` with ``AsyncSqliteSaver``.
"""

from __future__ import annotations

import gc
import importlib.util
import inspect
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from lift_graph import BaseNode, End, Graph, RunContext

from .._harness import (
    LANGGRAPH,
    LIFT,
    Config,
    Outcome,
    Row,
    Target,
    check,
    peer,
    peer_missing,
    run_async,
    skipped,
)
from .fanout import LIFT_GRAPH as FAN_GRAPH
from .fanout import Fan, FanState

try:  # being built: the workload reports "store not available" rows until it lands
    from lift_graph import SQLiteStore
except ImportError:
    SQLiteStore = None

try:
    from lift_graph import MemoryStore
except ImportError:
    try:
        from lift_graph.store import MemoryStore
    except ImportError:
        MemoryStore = None

__all__ = ["BumpState", "run", "store_missing"]

UNIT = "µs/node"
FAN_UNIT = "µs/branch"
#: The issue's target: lift_graph's journaling cost per node on SQLite.
LIMIT_US = 100.0

SQLITE_ASYNC = f"{LANGGRAPH} (AsyncSqliteSaver)"
SQLITE_ASYNC_SYNC = f"{LANGGRAPH} (AsyncSqliteSaver, durability=sync)"
SQLITE_ASYNC_NORMAL = f"{LANGGRAPH} (AsyncSqliteSaver, synchronous=NORMAL)"
SQLITE_SYNC = f"{LANGGRAPH} (SqliteSaver, invoke)"
LANGGRAPH_INVOKE = f"{LANGGRAPH} (invoke)"
LIFT_SQLITE = f"{LIFT} (SQLiteStore)"
LIFT_MEMORY = f"{LIFT} (MemoryStore)"


class BumpState(BaseModel):
    x: int = 0


@dataclass
class Bump(BaseNode[BumpState]):
    """Node i of the chain: adds 1 to ``x``; the n-th ends the run with ``x``."""

    i: int
    n: int
    reads: ClassVar[frozenset[str]] = frozenset({"x"})
    writes: ClassVar[frozenset[str]] = frozenset({"x"})

    async def run(self, ctx: RunContext[BumpState]) -> Bump | End[int]:
        ctx.state.x += 1
        if self.i + 1 >= self.n:
            return End(ctx.state.x)
        return Bump(self.i + 1, self.n)


CHAIN_GRAPH: Graph[BumpState] = Graph(nodes=[Bump], name="bench-durability")


def store_missing() -> str | None:
    """Why lift_graph cannot journal here (None: it can)."""
    if SQLiteStore is None:
        return "skipped: store not available (lift_graph has no SQLiteStore yet)"
    if "store" not in inspect.signature(Graph.run).parameters:
        return "skipped: store not available (Graph.run takes no store= yet)"
    return None


def sqlite_peer_missing(cfg: Config) -> str | None:
    """Why LangGraph's SQLite checkpointer cannot run here (None: it can)."""
    missing = peer_missing(LANGGRAPH, cfg)
    if missing:
        return missing
    if importlib.util.find_spec("langgraph.checkpoint.sqlite") is None:
        return (
            "skipped: langgraph-checkpoint-sqlite is not installed "
            "(pip install 'lift_graph[bench]')"
        )
    return None


@dataclass
class Trial:
    """One timed run: ``run()`` (timed), then ``done()`` (untimed) -> entries written."""

    run: Callable[[], Awaitable[int]]
    done: Callable[[], Awaitable[int]]


#: Opens a trial on a fresh database file (the path); not timed.
Opener = Callable[[str], Awaitable[Any]]


def _bare(run: Callable[[], Awaitable[int]]) -> Opener:
    """A variant without a store: the path is unused, nothing is written."""

    async def nothing() -> int:
        return 0

    async def open_(path: str) -> Trial:
        return Trial(run, nothing)

    return open_


def _lift(graph: Graph[Any], start: Callable[[], Any], state: Callable[[], Any]) -> Opener:
    """lift_graph without a store."""

    async def run() -> int:
        return int((await graph.run(start(), state=state())).output)

    return _bare(run)


def _lift_store(
    graph: Graph[Any],
    start: Callable[[], Any],
    state: Callable[[], Any],
    make_store: Callable[[str], Any],
) -> Opener:
    """lift_graph journaling to ``make_store(path)``."""

    async def open_(path: str) -> Trial:
        store = make_store(path)
        ran: list[str] = []

        async def run() -> int:
            result = await graph.run(start(), state=state(), store=store)
            ran.append(result.execution_id)
            return int(result.output)

        async def done() -> int:
            try:
                return len(store.journal(ran[0]))
            finally:
                store.close()

        return Trial(run, done)

    return open_


async def _interleaved(
    variants: dict[str, Opener],
    cfg: Config,
    tmp: Path,
    *,
    tag: str,
    answer: int,
    written: dict[str, int],
) -> dict[str, float]:
    """Median wall time in seconds of each variant's run, over ``cfg.reps`` rounds
    after ``cfg.warmup`` untimed ones; every run on a fresh database file.

    Each run must return ``answer`` and its store hold at least ``written[name]``
    entries (checkpoints, journal rows): a wrong answer or an empty store raises.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for rnd in range(-cfg.warmup, cfg.reps):
        for k, (name, open_) in enumerate(variants.items()):
            trial = await open_(str(tmp / f"{tag}-r{rnd + cfg.warmup}-v{k}.sqlite"))
            gc.collect()
            began = time.perf_counter()
            got = await trial.run()
            took = time.perf_counter() - began
            entries = await trial.done()
            check(name, "the chain", got, answer)
            need = written.get(name, 0)
            check(name, f"entries stored >= {need}", entries >= need, True)
            if rnd >= 0:
                samples[name].append(took)
    return {name: statistics.median(s) for name, s in samples.items()}


def _note(what: str, with_s: float, without_s: float) -> str:
    return f"{what}; {with_s * 1e3:.1f} ms with vs {without_s * 1e3:.1f} ms without"


def _sqlite_floor(n: int, synchronous: str) -> Opener:
    """Raw sqlite3, WAL mode: one INSERT of a ~100-byte row and one commit per node
    (what journaling each node in its own transaction cannot beat)."""

    async def open_(path: str) -> Trial:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE journal (key TEXT PRIMARY KEY, data TEXT NOT NULL)")
        payload = json.dumps({"node": "Bump", "data": {"i": 0, "n": n}, "writes": {"x": 1}})

        async def run() -> int:
            for i in range(n):
                conn.execute("BEGIN")
                conn.execute("INSERT INTO journal VALUES (?, ?)", (str(i), payload))
                conn.execute("COMMIT")
            return n

        async def done() -> int:
            try:
                return int(conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0])
            finally:
                conn.close()

        return Trial(run, done)

    return open_


@dataclass
class _Spec:
    """A row to report: ``name``'s time, minus ``base``'s when given, per node."""

    workload: str
    engine: str
    name: str
    base: str | None
    note: str


async def _chain(cfg: Config, tmp: Path, out: Outcome) -> None:
    n = cfg.durability_n
    wl, wl_bare = f"durability chain {n}", f"durability chain {n}, no store"
    lift_missing = store_missing()
    lg_missing = sqlite_peer_missing(cfg)

    def start() -> Bump:
        return Bump(0, n)

    variants: dict[str, Opener] = {LIFT: _lift(CHAIN_GRAPH, start, BumpState)}
    specs: list[_Spec] = []
    missing: list[tuple[str, str, str]] = []  # workload, engine, reason

    if lift_missing is None:
        variants[LIFT_SQLITE] = _lift_store(CHAIN_GRAPH, start, BumpState, SQLiteStore)
        specs.append(
            _Spec(wl, LIFT, LIFT_SQLITE, LIFT, "store=SQLiteStore(path) (WAL, synchronous=NORMAL)")
        )
        if MemoryStore is not None:
            variants[LIFT_MEMORY] = _lift_store(
                CHAIN_GRAPH, start, BumpState, lambda path: MemoryStore()
            )
            specs.append(
                _Spec(wl, LIFT_MEMORY, LIFT_MEMORY, LIFT, "info: the journal without the disk")
            )
    else:
        missing.append((wl, LIFT, lift_missing))

    aio_missing = lg_missing
    if lg_missing is None:
        impl = peer("langgraph_sqlite_impl")
        aio_missing = impl.AIO_MISSING
        if aio_missing is None:
            default = impl.async_chain(n)
            variants[LANGGRAPH] = _bare(default.bare)
            variants[SQLITE_ASYNC] = default.open
            variants[SQLITE_ASYNC_SYNC] = impl.async_chain(n, durability="sync").open
            variants[SQLITE_ASYNC_NORMAL] = impl.async_chain(n, synchronous="NORMAL").open
            specs += [
                _Spec(
                    wl,
                    SQLITE_ASYNC,
                    SQLITE_ASYNC,
                    LANGGRAPH,
                    "ainvoke, default durability=async, SQLite's default synchronous=FULL",
                ),
                _Spec(
                    wl,
                    SQLITE_ASYNC_SYNC,
                    SQLITE_ASYNC_SYNC,
                    LANGGRAPH,
                    "info: each step's checkpoint committed before the next step starts",
                ),
                _Spec(
                    wl,
                    SQLITE_ASYNC_NORMAL,
                    SQLITE_ASYNC_NORMAL,
                    LANGGRAPH,
                    "info: PRAGMA synchronous=NORMAL on the saver's connection (no fsync "
                    "per commit in WAL mode)",
                ),
            ]
        else:
            missing.append((wl, SQLITE_ASYNC, aio_missing))
        sync = impl.sync_chain(n)
        variants[LANGGRAPH_INVOKE] = _bare(sync.bare)
        variants[SQLITE_SYNC] = sync.open
        specs.append(
            _Spec(wl, SQLITE_SYNC, SQLITE_SYNC, LANGGRAPH_INVOKE, "info: sync graph (def nodes)")
        )
    else:
        missing += [(wl, SQLITE_ASYNC, lg_missing), (wl, SQLITE_SYNC, lg_missing)]

    for sync_mode in ("FULL", "NORMAL"):
        name = f"sqlite3 (WAL, synchronous={sync_mode})"
        variants[name] = _sqlite_floor(n, sync_mode)
        specs.append(
            _Spec(wl, name, name, None, "floor: one INSERT + COMMIT of a small row per node")
        )

    specs.append(_Spec(wl_bare, LIFT, LIFT, None, "one node class, n instances"))
    if aio_missing is None:
        specs.append(_Spec(wl_bare, LANGGRAPH, LANGGRAPH, None, "n async nodes, ainvoke"))
    else:
        missing.append((wl_bare, LANGGRAPH, aio_missing or "skipped"))
    if lg_missing is None:
        specs.append(
            _Spec(wl_bare, LANGGRAPH_INVOKE, LANGGRAPH_INVOKE, None, "info: n def nodes, invoke")
        )

    # Every variant that stores must hold one entry per node at least.
    written = {s.name: n for s in specs if s.base is not None or s.name.startswith("sqlite3")}
    t = await _interleaved(variants, cfg, tmp, tag="chain", answer=n, written=written)
    _report(out, specs, missing, t, n, UNIT)
    mine = out.figure(wl, LIFT)
    what = "lift_graph journaling µs/node (SQLiteStore)"
    out.targets.append(Target(wl, what, mine, "<=", LIMIT_US))


def _report(
    out: Outcome,
    specs: list[_Spec],
    missing: list[tuple[str, str, str]],
    t: dict[str, float],
    n: int,
    unit: str,
) -> None:
    for spec in specs:
        if spec.base is None:
            out.add(Row(spec.workload, spec.engine, t[spec.name] / n * 1e6, unit, spec.note))
        else:
            cost = (t[spec.name] - t[spec.base]) / n * 1e6
            note = _note(spec.note, t[spec.name], t[spec.base])
            out.add(Row(spec.workload, spec.engine, cost, unit, note))
    for workload, engine, reason in missing:
        out.add(skipped(workload, engine, unit, reason))


async def _fanout(cfg: Config, tmp: Path, out: Outcome) -> None:
    k = cfg.durability_n
    wl = f"durability fan-out {k}"
    lift_missing = store_missing()
    lg_missing = sqlite_peer_missing(cfg)
    variants: dict[str, Opener] = {}
    written: dict[str, int] = {}
    specs: list[_Spec] = []
    missing: list[tuple[str, str, str]] = []
    if lift_missing is None:
        variants[LIFT] = _lift(FAN_GRAPH, lambda: Fan(k), FanState)
        variants[LIFT_SQLITE] = _lift_store(FAN_GRAPH, lambda: Fan(k), FanState, SQLiteStore)
        written[LIFT_SQLITE] = k
        specs.append(_Spec(wl, LIFT, LIFT_SQLITE, LIFT, "Fork of k nodes -> join, SQLiteStore"))
    else:
        missing.append((wl, LIFT, lift_missing))
    aio_missing = lg_missing
    if lg_missing is None:
        impl = peer("langgraph_sqlite_impl")
        aio_missing = impl.AIO_MISSING
    if aio_missing is None:
        fan = impl.async_fanout(k)
        variants[LANGGRAPH] = _bare(fan.bare)
        variants[SQLITE_ASYNC] = fan.open
        written[SQLITE_ASYNC] = k
        specs.append(
            _Spec(wl, SQLITE_ASYNC, SQLITE_ASYNC, LANGGRAPH, "Send k items -> join, ainvoke")
        )
    else:
        missing.append((wl, SQLITE_ASYNC, aio_missing))
    t = (
        await _interleaved(variants, cfg, tmp, tag="fan", answer=k, written=written)
        if variants
        else {}
    )
    _report(out, specs, missing, t, k, FAN_UNIT)


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    with tempfile.TemporaryDirectory(prefix="lift-bench-durability-") as tmp:
        await _chain(cfg, Path(tmp), out)
        await _fanout(cfg, Path(tmp), out)
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
