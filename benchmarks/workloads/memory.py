"""Workload 7: peak memory (RSS) of a fan-out of 100,000 no-op branches.

Each engine runs in its own subprocess (``python -m benchmarks.workloads.memory
ENGINE N``), so one engine's heap does not count against the next. The child
builds its graph, collects garbage, resets the kernel's peak-RSS mark, reads its
resident set size, runs the fan-out once, and reports its peak RSS (Linux: VmHWM
of /proc/self/status; elsewhere ``resource.getrusage``'s ``ru_maxrss``). Figures:
peak RSS in MB; the note has the growth over the pre-run RSS and bytes per branch.

Peers only with ``Config.memory_peers``: at 100,000 branches they take minutes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from .._harness import (
    ASYNCIO,
    LANGGRAPH,
    LIFT,
    PYDANTIC_GRAPH,
    BenchmarkError,
    Config,
    Outcome,
    Row,
    peer,
    peer_missing,
    skipped,
)

__all__ = ["run"]

CHILD_TIMEOUT_S = 900.0


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), e.g. VmRSS, VmHWM."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_kb() -> int | None:
    """Peak RSS of this process: VmHWM where there is /proc, else ``ru_maxrss``.

    VmHWM first: Linux keeps ``ru_maxrss`` across fork + exec, so a child spawned
    by a big parent would report the parent's peak.
    """
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes


def _runner(engine: str, n: int) -> Any:
    if engine == LIFT:
        from .fanout import LIFT_GRAPH, Fan, FanState

        async def lift() -> int:
            return int((await LIFT_GRAPH.run(Fan(n), state=FanState())).output)

        return lift
    if engine == ASYNCIO:

        async def noop(i: int) -> int:
            return i

        async def gather() -> int:
            return len(await asyncio.gather(*(noop(i) for i in range(n))))

        return gather
    module = {LANGGRAPH: "langgraph_impl", PYDANTIC_GRAPH: "pydantic_graph_impl"}[engine]
    return peer(module).fanout(n)


def child(engine: str, n: int) -> dict[str, Any]:
    """Run one fan-out of n branches in this process; return the RSS figures."""
    run = _runner(engine, n)
    gc.collect()
    _reset_peak()
    before = _status_kb("VmRSS") or _peak_rss_kb()
    began = time.perf_counter()
    got = asyncio.run(run())
    seconds = time.perf_counter() - began
    return {
        "engine": engine,
        "n": n,
        "output": got,
        "before_kb": before,
        "peak_kb": _peak_rss_kb(),
        "seconds": seconds,
    }


def _spawn(engine: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.workloads.memory", engine, str(n)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=root, check=False
    )
    if proc.returncode != 0:
        raise BenchmarkError(f"{engine}: memory child failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(cfg: Config) -> Outcome:
    out = Outcome()
    n = cfg.mem_branches
    wl = f"memory fan-out {n:,}"
    engines = [LIFT, ASYNCIO]
    for engine in (LANGGRAPH, PYDANTIC_GRAPH):
        missing = peer_missing(engine, cfg)
        if missing:
            out.add(skipped(wl, engine, "MB peak", missing))
        elif not cfg.memory_peers:
            out.add(
                skipped(wl, engine, "MB peak", "not run: minutes at this size (--memory-peers)")
            )
        else:
            engines.append(engine)
    for engine in engines:
        res = _spawn(engine, n)
        if res["output"] != n:
            raise BenchmarkError(f"{engine}: fan-out of {n} gave {res['output']!r}")
        if res["peak_kb"] is None:
            out.add(skipped(wl, engine, "MB peak", "no ru_maxrss on this platform"))
            continue
        peak_mb = res["peak_kb"] / 1024
        grew_kb = res["peak_kb"] - (res["before_kb"] or 0)
        out.add(
            Row(
                wl,
                engine,
                peak_mb,
                "MB peak",
                f"+{grew_kb / 1024:.0f} MB over {res['before_kb'] / 1024:.0f} MB before the run, "
                f"{grew_kb * 1024 / n:,.0f} B/branch, {res['seconds']:.1f} s",
            )
        )
    return out.compare()


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
