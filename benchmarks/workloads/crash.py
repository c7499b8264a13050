"""Workload 10: crash a durable run with SIGKILL at random points, resume it.

The graph of ``benchmarks.crash`` (a start node, a fork of 8 two-node branches
merged through reducers, the join node, a 4-member pipeline with inferred
dependencies, a final node: 23 node executions of 2 to 34 ms each) runs on an
``SQLiteStore`` in a child process that SIGKILLs itself from an event-loop timer at
a delay drawn uniformly from [0.05 T, 0.95 T] (T: an uninterrupted run, measured
first in a child of its own; seeds 1..n, so a failure is reproducible with
``python -m benchmarks.crash --seeds S``). A fresh child then resumes the run.

Figures: kills that landed mid-run (the journal held some but not all nodes),
resumes whose output and state JSON equal the uninterrupted run's byte for byte
(must be all), nodes that ran twice across crash and resume (must be 0: each node
logs a side-channel line as it returns, so a line twice means a journaled node ran
again), the median resume time, and how many nodes the journal held at the kill.
lift_graph only: the peers have no equivalent run-to-run journal to compare.
"""

from __future__ import annotations

import statistics
import tempfile
from typing import Any

from .. import crash as lab
from .._harness import LIFT, BenchmarkError, Config, Outcome, Row, Target

__all__ = ["run"]


def _tally(ref: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = set(ref["counts"])
    killed = [r for r in runs if r["killed"]]
    journaled = [len(r["journaled_at_kill"]) for r in killed]
    return {
        "killed": len(killed),
        "mid_run": sum(0 < n < lab.NODE_COUNT for n in journaled),
        "equal": sum(r["output"] == ref["output"] and r["state"] == ref["state"] for r in runs),
        "twice": sum(max(0, n - 1) for r in runs for n in r["counts"].values()),
        "missing": sum(len(keys - set(r["counts"])) for r in runs),
        "unknown": sum(len(set(r["counts"]) - keys) for r in runs),
        # A line in the side channel <=> a journaled completion, at the kill too.
        "mismatched": sum(sorted(r["journaled_at_kill"]) != r["side_at_kill"] for r in killed),
        "journaled": journaled,
        "resume_ms": statistics.median(r["resume_s"] * 1000.0 for r in runs),
        "resume_wall_ms": statistics.median(r["resume_wall_s"] * 1000.0 for r in runs),
        "rerun": statistics.median(
            sum(r["counts"].values()) - len(r["side_at_kill"]) for r in killed
        )
        if killed
        else 0.0,
    }


def run(cfg: Config) -> Outcome:
    n = cfg.crash_kills
    wl = f"crash {n} kills"
    out = Outcome()
    with tempfile.TemporaryDirectory(prefix="lift-crash-") as tmp:
        ref = lab.reference(tmp)
        period = float(ref["elapsed_s"])
        if sorted(ref["counts"].values()) != [1] * lab.NODE_COUNT:
            raise BenchmarkError(f"{LIFT}: the uninterrupted crash graph logged {ref['counts']}")
        runs = [lab.crash_and_resume(tmp, seed, period=period) for seed in range(1, n + 1)]
    t = _tally(ref, runs)
    lo, hi = lab.KILL_RANGE
    j = t["journaled"] or [0]
    out.add(
        Row(
            wl,
            LIFT,
            float(t["mid_run"]),
            "kills",
            f"of {n} landed mid-run ({t['killed']} killed; SIGKILL from a loop timer at "
            f"U[{lo}T, {hi}T], T = {period * 1000:.0f} ms uninterrupted, "
            f"{lab.NODE_COUNT} nodes)",
        ),
        Row(
            wl + " resumes = reference",
            LIFT,
            float(t["equal"]),
            "resumes",
            f"of {n}: output and state JSON byte-identical to the uninterrupted run",
        ),
        Row(
            wl + " nodes run twice",
            LIFT,
            float(t["twice"]),
            "nodes",
            f"across crash + resume; missing {t['missing']}, journal/side-channel "
            f"mismatches at the kill {t['mismatched']}",
        ),
        Row(
            wl + " resume time",
            LIFT,
            t["resume_ms"],
            "ms",
            f"median graph.resume in the fresh process ({t['resume_wall_ms']:.0f} ms with "
            f"interpreter start); median {t['rerun']:g} nodes re-run (in flight or not "
            "started at the kill)",
        ),
        Row(
            wl + " journaled at kill",
            LIFT,
            float(statistics.median(j)),
            "nodes",
            f"median; min {min(j)}, max {max(j)} of {lab.NODE_COUNT}",
            extra={"min": float(min(j)), "max": float(max(j))},
        ),
    )
    out.targets += [
        Target(wl, "resumes different from the reference", float(n - t["equal"]), "<=", 0),
        Target(wl, "nodes run twice (crash + resume)", float(t["twice"]), "<=", 0),
        Target(
            wl,
            "nodes never run, or journal != side channel",
            float(t["missing"] + t["unknown"] + t["mismatched"]),
            "<=",
            0,
        ),
        Target(
            wl, "share of kills that landed mid-run", t["mid_run"] / n if n else None, ">=", 0.8
        ),
    ]
    return out.compare()
