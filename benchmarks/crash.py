"""Crash a durable run with SIGKILL at a random moment, resume it in a fresh process.

The graph (23 node executions) mixes what a resume must replay: a start node, a
fork of 8 two-node branches writing shared fields through reducers, the fork's
join node, a pipeline of 4 members whose order is inferred from ``reads`` /
``writes``, and a final node. Every node sleeps a few ms (so branches and members
really overlap) and, as the last thing it does before returning, appends
``"{execution_id} {node_key}\\n"`` to a side-channel file: a line there means "this
node's ``run`` completed".

The child process (``python -m benchmarks.crash child ...``) runs or resumes the
graph on an ``SQLiteStore``. With ``--kill-seed`` it arms
``loop.call_later(delay, os.kill, os.getpid(), SIGKILL)`` just before the run: a
timer callback runs between two event-loop steps, and a node's return and its
journal commit happen in one step, so the kill can only land while nodes are in
flight, never between a node's return and its commit. Hence, after crash + resume:

- the output and the final state equal an uninterrupted run's, byte for byte;
- every node key appears exactly once in the side channel (a node whose completion
  was committed never runs again; one that was in flight had written no line);
- the nodes journaled at the kill are exactly the lines written before it.

``python -m benchmarks.crash [--seeds 1,2,3] [--dir DIR]`` runs a few crashes and
prints one JSON line per kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel

from lift_graph import BaseNode, End, Fork, Graph, Pipeline, RunContext, SQLiteStore
from lift_graph.reducers import add, extend, merge_dict

__all__ = [
    "BRANCHES",
    "GRAPH",
    "KILL_RANGE",
    "NODE_COUNT",
    "CrashState",
    "Side",
    "child_main",
    "crash_and_resume",
    "kill_delay",
    "main",
    "open_store",
    "reference",
]

#: Branches of the fork.
BRANCHES = 8
#: Node executions of one complete run: Plan, 8 x (Draft, Review), Gather, 4
#: pipeline members, Finish.
NODE_COUNT = 1 + 2 * BRANCHES + 1 + 4 + 1
#: The kill lands uniformly in [lo * T, hi * T], T the duration of an uninterrupted
#: run: away from both ends, so (nearly) every kill lands mid-run.
KILL_RANGE = (0.05, 0.95)
#: Seconds a child may take before the parent gives up on it.
CHILD_TIMEOUT_S = 120.0

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- the graph -----------------------------------------------------------------------


class CrashState(BaseModel):
    topic: str = "crash-safe graph runs"
    sections: list[str] = []
    drafts: Annotated[list[str], extend] = []
    scores: Annotated[dict[str, int], merge_dict] = {}
    reviewed: Annotated[int, add] = 0
    best: int = -1
    outline: list[str] = []
    facts: list[str] = []
    summary: str = ""
    title: str = ""
    report: str = ""


@dataclass
class Side:
    """The run's deps: where completed nodes are logged, and the sleep scale."""

    path: str
    scale: float = 1.0

    async def nap(self, ms: float) -> None:
        await asyncio.sleep(ms * self.scale / 1000.0)

    def done(self, ctx: RunContext[Any]) -> None:
        """Log that the node's ``run`` completed: called right before it returns,
        with no ``await`` in between, so the line and the journal commit land in the
        same event-loop step."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{ctx.execution_id} {ctx.node_key}\n")
            f.flush()


def _side(ctx: RunContext[CrashState]) -> Side:
    side = ctx.deps
    assert isinstance(side, Side), "run the crash graph with deps=Side(path)"
    return side


@dataclass
class Plan(BaseNode[CrashState]):
    reads: ClassVar[frozenset[str]] = frozenset({"topic"})
    writes: ClassVar[frozenset[str]] = frozenset({"sections"})

    async def run(self, ctx: RunContext[CrashState]) -> Fork[CrashState]:
        side = _side(ctx)
        # Short: a kill at 0.05 T (~8 ms) should find Plan committed, and the start of
        # a durable run (the run row, the first commit) takes ~3 ms in a fresh process.
        await side.nap(2)
        ctx.state.sections = [f"{ctx.state.topic} part {i}" for i in range(BRANCHES)]
        side.done(ctx)
        return Fork([Draft(i) for i in range(BRANCHES)], then=Gather())


@dataclass
class Draft(BaseNode[CrashState]):
    i: int
    reads: ClassVar[frozenset[str]] = frozenset({"sections"})
    writes: ClassVar[frozenset[str]] = frozenset({"drafts"})

    async def run(self, ctx: RunContext[CrashState]) -> Review:
        side = _side(ctx)
        await side.nap(8 + (self.i * 7) % 25)
        ctx.state.drafts.append(f"draft {self.i}: {ctx.state.sections[self.i]}")
        side.done(ctx)
        return Review(self.i)


@dataclass
class Review(BaseNode[CrashState]):
    i: int
    reads: ClassVar[frozenset[str]] = frozenset({"drafts"})
    writes: ClassVar[frozenset[str]] = frozenset({"scores", "reviewed"})

    async def run(self, ctx: RunContext[CrashState]) -> End[int]:
        side = _side(ctx)
        await side.nap(5 + (self.i * 11) % 30)
        score = (self.i * 37 + len(ctx.state.drafts[-1])) % 10 + 1
        ctx.state.scores[f"d{self.i}"] = score
        ctx.state.reviewed += 1
        side.done(ctx)
        return End(score)


@dataclass
class Gather(BaseNode[CrashState]):
    """The fork's join: picks the best draft from the branches' End values."""

    reads: ClassVar[frozenset[str]] = frozenset({"scores"})
    writes: ClassVar[frozenset[str]] = frozenset({"best"})

    async def run(self, ctx: RunContext[CrashState]) -> Pipeline[CrashState]:
        side = _side(ctx)
        await side.nap(8)
        join = ctx.join
        assert join is not None and join.succeeded == BRANCHES, join
        values = list(join.results)
        ctx.state.best = max(range(len(values)), key=lambda i: (values[i], -i))
        side.done(ctx)
        # Listed out of dependency order on purpose: Summarize waits for Outline and
        # Facts (which run concurrently), Title for Summarize.
        return Pipeline([Outline(), Facts(), Summarize(), Title()], then=Finish())


@dataclass
class Outline(BaseNode[CrashState]):
    reads: ClassVar[frozenset[str]] = frozenset({"sections"})
    writes: ClassVar[frozenset[str]] = frozenset({"outline"})

    async def run(self, ctx: RunContext[CrashState]) -> End[int]:
        side = _side(ctx)
        await side.nap(15)
        ctx.state.outline = [s.upper() for s in ctx.state.sections[:3]]
        side.done(ctx)
        return End(len(ctx.state.outline))


@dataclass
class Facts(BaseNode[CrashState]):
    reads: ClassVar[frozenset[str]] = frozenset({"drafts", "scores"})
    writes: ClassVar[frozenset[str]] = frozenset({"facts"})

    async def run(self, ctx: RunContext[CrashState]) -> End[int]:
        side = _side(ctx)
        await side.nap(25)
        s = ctx.state
        s.facts = [f"{d} scored {s.scores[f'd{i}']}" for i, d in enumerate(s.drafts)]
        side.done(ctx)
        return End(len(s.facts))


@dataclass
class Summarize(BaseNode[CrashState]):
    reads: ClassVar[frozenset[str]] = frozenset({"outline", "facts"})
    writes: ClassVar[frozenset[str]] = frozenset({"summary"})

    async def run(self, ctx: RunContext[CrashState]) -> End[str]:
        side = _side(ctx)
        await side.nap(20)
        s = ctx.state
        s.summary = f"{' / '.join(s.outline)} | {len(s.facts)} facts"
        side.done(ctx)
        return End(s.summary[:24])


@dataclass
class Title(BaseNode[CrashState]):
    reads: ClassVar[frozenset[str]] = frozenset({"summary", "best"})
    writes: ClassVar[frozenset[str]] = frozenset({"title"})

    async def run(self, ctx: RunContext[CrashState]) -> End[str]:
        side = _side(ctx)
        await side.nap(10)
        ctx.state.title = f"Best draft {ctx.state.best}: {ctx.state.summary[:20]}"
        side.done(ctx)
        return End(ctx.state.title)


@dataclass
class Finish(BaseNode[CrashState]):
    reads: ClassVar[frozenset[str] | None] = None
    writes: ClassVar[frozenset[str]] = frozenset({"report"})

    async def run(self, ctx: RunContext[CrashState]) -> End[dict[str, Any]]:
        side = _side(ctx)
        await side.nap(25)
        s = ctx.state
        join = ctx.join
        assert join is not None
        s.report = f"{s.title}; {s.reviewed} reviewed; total {sum(s.scores.values())}"
        side.done(ctx)
        return End(
            {
                "report": s.report,
                "pipeline": list(join.results),
                "best": s.best,
                "drafts": len(s.drafts),
            }
        )


GRAPH: Graph[CrashState] = Graph(
    nodes=[Plan, Draft, Review, Gather, Outline, Facts, Summarize, Title, Finish],
    name="crash",
)


def open_store(path: str | os.PathLike[str]) -> SQLiteStore:
    """The ``SQLiteStore`` on ``path`` the crash and resume children share."""
    return SQLiteStore(path)


def kill_delay(
    seed: int, period: float, lo: float = KILL_RANGE[0], hi: float = KILL_RANGE[1]
) -> float:
    """Seconds after the run starts at which the child kills itself (seed ``seed``)."""
    return random.Random(seed).uniform(lo * period, hi * period)


# -- the child process -----------------------------------------------------------------


def _child_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crash child")
    p.add_argument("--db", required=True, help="SQLite store file")
    p.add_argument("--side", required=True, help="side-channel file (one line per node run)")
    p.add_argument("--id", required=True, help="execution id")
    p.add_argument("--resume", action="store_true", help="resume the run instead of starting it")
    p.add_argument("--kill-seed", type=int, help="arm a SIGKILL at a delay drawn from this seed")
    p.add_argument("--period", type=float, help="T: seconds of an uninterrupted run")
    p.add_argument("--lo", type=float, default=KILL_RANGE[0])
    p.add_argument("--hi", type=float, default=KILL_RANGE[1])
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every node's sleep")
    return p


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    store = open_store(args.db)
    side = Side(args.side, args.scale)
    delay = None
    try:
        loop = asyncio.get_running_loop()
        if args.kill_seed is not None:
            if args.period is None:
                raise SystemExit("--kill-seed needs --period")
            delay = kill_delay(args.kill_seed, args.period, args.lo, args.hi)
            # A timer callback: it runs between two steps of the loop, never inside
            # the step in which a node returns and its completion is committed.
            loop.call_later(delay, os.kill, os.getpid(), signal.SIGKILL)
        began = time.perf_counter()
        if args.resume:
            result = await GRAPH.resume(args.id, store=store, deps=side)
        else:
            result = await GRAPH.run(
                Plan(), state=CrashState(), deps=side, store=store, execution_id=args.id
            )
        elapsed = time.perf_counter() - began
    finally:
        store.close()
    return {
        "output": json.dumps(result.output, sort_keys=True, separators=(",", ":")),
        "state": result.state.model_dump_json(),
        "elapsed_s": elapsed,
        "delay_s": delay,
    }


def child_main(argv: Sequence[str]) -> int:
    """Run (or ``--resume``) the crash graph on ``--db``; print one JSON line with the
    output, the state JSON and the run's duration. May SIGKILL itself (``--kill-seed``)."""
    args = _child_parser().parse_args(list(argv))
    print(json.dumps(asyncio.run(_child(args))), flush=True)
    return 0


# -- the parent ------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def _spawn(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.crash", "child", *args],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    return proc, time.perf_counter() - began


def _report(proc: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def side_counts(path: str | os.PathLike[str], execution_id: str) -> Counter[str]:
    """How many times each node key of run ``execution_id`` completed."""
    counts: Counter[str] = Counter()
    p = Path(path)
    if not p.exists():
        return counts
    for line in p.read_text(encoding="utf-8").splitlines():
        run, _, key = line.partition(" ")
        if run == execution_id:
            counts[key] += 1
    return counts


def journaled(db: str | os.PathLike[str], execution_id: str) -> tuple[list[str], int]:
    """The node keys journaled for the run (commit order), and its join entries."""
    store = open_store(db)
    try:
        entries = store.journal(execution_id)
    finally:
        store.close()
    nodes = [e.key for e in entries if e.kind == "node"]
    joins = sum(1 for e in entries if e.kind == "join")
    return nodes, joins


def reference(tmpdir: str | os.PathLike[str], *, scale: float = 1.0) -> dict[str, Any]:
    """An uninterrupted run in a child process: its output and state JSON, its
    duration ``elapsed_s`` (T, from the run's start to its end) and the side-channel
    counts."""
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    db, side, run_id = d / "reference.db", d / "reference.side", "reference"
    proc, wall = _spawn(
        ["--db", str(db), "--side", str(side), "--id", run_id, "--scale", str(scale)]
    )
    out = _report(proc, "the reference run")
    out["counts"] = dict(side_counts(side, run_id))
    out["wall_s"] = wall
    return out


def crash_and_resume(
    tmpdir: str | os.PathLike[str],
    seed: int,
    *,
    period: float | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Run the graph in a child that SIGKILLs itself at ``kill_delay(seed, period)``
    (``period``: T, measured by ``reference`` when not given), then resume it in a
    fresh child (never killed).

    Returns ``killed`` (the first child died of SIGKILL; False when the delay fell
    past the end of the run), ``journaled_at_kill`` (node keys the journal held
    before the resume), ``side_at_kill`` (node keys whose line was written before
    the resume), ``output`` / ``state`` (JSON text of the resumed run's result),
    ``counts`` (per node key, lines across crash and resume), ``resume_s`` (the
    resume inside its process) and ``resume_wall_s`` (the resuming process).
    """
    d = Path(tmpdir)
    d.mkdir(parents=True, exist_ok=True)
    if period is None:
        period = float(reference(d / f"calibrate-{seed}", scale=scale)["elapsed_s"])
    db, side, run_id = d / f"crash-{seed}.db", d / f"crash-{seed}.side", f"crash-{seed}"
    base = ["--db", str(db), "--side", str(side), "--id", run_id, "--scale", str(scale)]
    first, crash_wall = _spawn([*base, "--kill-seed", str(seed), "--period", repr(period)])
    killed = first.returncode == -signal.SIGKILL
    if not killed:
        _report(first, f"the crash child (seed {seed})")  # it finished: must be clean
    nodes, joins = journaled(db, run_id)
    at_kill = side_counts(side, run_id)
    second, resume_wall = _spawn([*base, "--resume"])
    out = _report(second, f"the resume (seed {seed})")
    counts = side_counts(side, run_id)
    return {
        "seed": seed,
        "period_s": period,
        "delay_s": kill_delay(seed, period),
        "killed": killed,
        "returncode": first.returncode,
        "journaled_at_kill": nodes,
        "joins_at_kill": joins,
        "side_at_kill": sorted(at_kill.elements()),
        "output": out["output"],
        "state": out["state"],
        "counts": dict(counts),
        "resume_s": out["elapsed_s"],
        "resume_wall_s": resume_wall,
        "crash_wall_s": crash_wall,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks.crash")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated kill seeds")
    p.add_argument("--dir", help="directory for stores and side channels (default: a temp dir)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lift-crash-") as tmp:
        d = Path(args.dir or tmp)
        d.mkdir(parents=True, exist_ok=True)
        ref = reference(d)
        print(json.dumps({"reference_s": ref["elapsed_s"], "nodes": len(ref["counts"])}))
        bad = 0
        for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
            r = crash_and_resume(d, seed, period=ref["elapsed_s"])
            same = r["output"] == ref["output"] and r["state"] == ref["state"]
            twice = sorted(k for k, n in r["counts"].items() if n > 1)
            missing = sorted(set(ref["counts"]) - set(r["counts"]))
            match = not r["killed"] or sorted(r["journaled_at_kill"]) == r["side_at_kill"]
            bad += (not same) + bool(twice) + bool(missing) + (not match)
            print(
                json.dumps(
                    {
                        "seed": seed,
                        "killed": r["killed"],
                        "delay_ms": round(r["delay_s"] * 1000, 1),
                        "journaled_at_kill": len(r["journaled_at_kill"]),
                        "same_as_reference": same,
                        "ran_twice": twice,
                        "missing": missing,
                        "journal_matches_side_channel": match,
                        "resume_ms": round(r["resume_s"] * 1000, 1),
                    }
                )
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
