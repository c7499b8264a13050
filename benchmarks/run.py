"""Run the workloads on lift_graph and its peers, in one process; print the table.

    python -m benchmarks.run                      # the issue's sizes
    python -m benchmarks.run --quick              # small sizes (CI)
    python -m benchmarks.run --only chain,fanout  # some workloads
    python -m benchmarks.run --markdown benchmarks/RESULTS.md
    python -m benchmarks.run --check              # exit 1 when a target fails

Workloads: chain, fanout, unbalanced, jitter, isolation, rpm, memory, merge,
dspy_rag (DSPy's RAG tutorial program vs dspy.Parallel, and BestOfN), durability
(journaling to SQLite per node vs LangGraph's SQLite checkpointer), crash
(SIGKILL a durable run at random points, resume it in a fresh process), batch
(Graph.map over 1,000 inputs, 16 at a time, 3 failing, vs LangGraph's abatch:
throughput and tracemalloc peak), backpressure (a provider answering 429 above R
per minute, on a fake clock; and through DSPy against a local HTTP fake vs
dspy.Parallel), tracing (the chain untraced, with tracer=False and traced into an
OpenTelemetry SDK provider, against the SDK's own cost of one span), ray (2,000
50 ms fake-LM calls, 64 at a time, locally vs RayBackend(num_workers=2) vs asyncio,
with the workers' start-up apart; and the cost of one RayLimits permit, one at a
time and 64 at once, lease_batch 32 vs 1, vs a local Limits). Peers
(LangGraph, pydantic-graph; ``pip install 'lift_graph[bench]'``) are imported only
when installed, else their rows say why they are missing. The memory workload runs
each engine in a subprocess.

Exit status: 0, or 1 with ``--check`` when a target fails, or 2 when a workload
could not run (an engine crashed or gave a wrong answer).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from ._harness import ASYNCIO, LANGGRAPH, LIFT, PYDANTIC_GRAPH, Config, Outcome, Row, Target
from .workloads import NAMES, load

__all__ = ["main", "render_markdown", "render_text"]

BEGIN = "<!-- benchmark-results:begin -->"
END = "<!-- benchmark-results:end -->"
PACKAGES = (
    "lift_graph",
    "langgraph",
    "langgraph-checkpoint-sqlite",
    "pydantic-graph",
    "pydantic",
    "pydantic-core",
)


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _engine_rank(engine: str) -> int:
    for rank, prefix in enumerate((LIFT, ASYNCIO, LANGGRAPH, PYDANTIC_GRAPH)):
        if engine.startswith(prefix):
            return rank
    return 9


def ordered(rows: Sequence[Row]) -> list[Row]:
    """Rows grouped by workload (first-seen order), engines in a fixed order."""
    first: dict[str, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(r.workload, i)
    return sorted(rows, key=lambda r: (first[r.workload], _engine_rank(r.engine)))


def _row_cells(r: Row) -> list[str]:
    return [r.workload, r.engine, _fmt(r.figure), r.unit, _ratio(r.versus_lift), r.note]


def _target_cells(t: Target) -> list[str]:
    vs = "" if t.value is None or not t.limit else f"{t.value / t.limit:.2f}"
    return [t.workload, t.what, _fmt(t.value), f"{t.op} {t.limit:g}", vs, t.status]


ROW_HEAD = ["workload", "engine", "figure", "unit", "x lift_graph", "note"]
TARGET_HEAD = ["workload", "target", "value", "limit", "value/limit", "status"]


def _text_table(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
    # The note column is last and free-width.
    widths[-1] = 0
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * max(w, len(h)) for h, w in zip(head, widths, strict=True)))
    for cells in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _md_table(head: list[str], body: list[list[str]]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in body]
    return "\n".join(lines)


def render_text(outcome: Outcome) -> str:
    rows = _text_table(ROW_HEAD, [_row_cells(r) for r in ordered(outcome.rows)])
    targets = _text_table(TARGET_HEAD, [_target_cells(t) for t in outcome.targets])
    return f"{rows}\n\nTargets (issue 4)\n{targets}"


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "benchmarks.run", *argv])


def render_markdown(outcome: Outcome, cfg: Config, argv: Sequence[str], seconds: float) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in _versions().items())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = [t for t in outcome.targets if t.ok is False]
    summary = (
        f"{sum(t.ok is True for t in outcome.targets)} targets pass, {len(failed)} fail, "
        f"{sum(t.ok is None for t in outcome.targets)} skipped"
    )
    return "\n".join(
        [
            BEGIN,
            f"Command: `{command_line(argv)}` ({'quick' if cfg.quick else 'full'} sizes, "
            f"median of {cfg.reps} runs, or of 3 once they pass 8 s, after {cfg.warmup} "
            f"warm-up; took {seconds:.0f} s)",
            "",
            f"- Date: {now}",
            f"- Machine: {os.cpu_count()} cores (os.cpu_count()), {platform.machine()}, "
            f"{platform.system()} {platform.release()}",
            f"- Python {platform.python_version()} ({platform.python_implementation()})",
            f"- Packages: {versions}",
            f"- Summary: {summary}",
            "",
            "### Figures",
            "",
            _md_table(ROW_HEAD, [_row_cells(r) for r in ordered(outcome.rows)]),
            "",
            "### Targets",
            "",
            _md_table(TARGET_HEAD, [_target_cells(t) for t in outcome.targets]),
            END,
        ]
    )


_PREAMBLE = """# Benchmark results

lift_graph against LangGraph, pydantic-graph and raw asyncio, in one process
(`benchmarks/run.py`; workload definitions in `benchmarks/workloads/`). The block
between the markers below is rewritten by `python -m benchmarks.run --markdown
benchmarks/RESULTS.md`; text outside it is kept.

"""


def write_markdown(path: Path, block: str) -> None:
    """Replace the results block of ``path`` (or create it), keeping other text."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = _PREAMBLE + block + "\n" + text
    path.write_text(text, encoding="utf-8")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="lift_graph vs LangGraph, pydantic-graph and raw asyncio, side by side.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions (CI)")
    p.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help=f"run only these workloads: {', '.join(NAMES)}",
    )
    p.add_argument("--markdown", metavar="PATH", help="write the results block into PATH")
    p.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--reps", type=int, help="timed repetitions per figure (median taken)")
    p.add_argument("--no-peers", action="store_true", help="lift_graph and asyncio only")
    p.add_argument(
        "--memory-peers",
        action="store_true",
        help="also measure the peers' memory (minutes at 100,000 branches)",
    )
    args = p.parse_args(list(argv))
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    args.names = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    cfg = Config.quick_mode() if args.quick else Config.full()
    cfg = replace(cfg, peers=not args.no_peers, memory_peers=args.memory_peers)
    if args.reps:
        cfg = replace(cfg, reps=args.reps)

    total = Outcome()
    broken: list[str] = []
    began = time.perf_counter()
    for name in args.names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            part = load(name)(cfg)
        except Exception:
            broken.append(name)
            print(f"[bench] {name} FAILED:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        total.rows += part.rows
        total.targets += part.targets
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    seconds = time.perf_counter() - began

    print(
        f"\nlift_graph benchmarks ({'quick' if cfg.quick else 'full'}): {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in _versions().items())
    )
    print(render_text(total))
    failed = [t for t in total.targets if t.ok is False]
    print(
        f"\n{len(total.targets) - len(failed)} of {len(total.targets)} targets pass or skip; "
        f"{len(failed)} fail" + (f"; workloads that crashed: {', '.join(broken)}" if broken else "")
    )
    if args.markdown:
        write_markdown(Path(args.markdown), render_markdown(total, cfg, argv, seconds))
        print(f"wrote {args.markdown}")
    if broken:
        return 2
    if args.check and failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
