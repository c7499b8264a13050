"""What ``lift-graph run`` / ``resume`` print: the per-node timing table, the
output and final state as JSON, and the one JSON document of ``--json``."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic_core import to_jsonable_python

from ._records import NodeRecord

__all__ = ["as_json", "dumps", "interrupt_help", "record_row", "timing_table"]

_COLUMNS = ("key", "node", "provider", "attempts", "status", "wait ms", "run ms")


def as_json(value: Any) -> Any:
    """``value`` as JSON data, the way pydantic serializes it (models, dataclasses,
    datetimes...); what has no JSON form shows as its ``repr``."""
    return to_jsonable_python(value, fallback=repr)


def dumps(value: Any) -> str:
    return json.dumps(as_json(value), indent=2, ensure_ascii=False)


def record_row(record: NodeRecord) -> dict[str, Any]:
    """One node execution for the table and for ``--json``: ``wait_ms`` is the time
    between being queued and starting (a slot, a provider's limits), None if unknown."""
    wait = None
    if record.queued_at is not None:
        wait = round(max(0.0, record.started_at - record.queued_at) * 1000.0, 3)
    return {
        "key": record.key,
        "node": record.node,
        "provider": record.provider,
        "attempts": record.attempts,
        "status": record.status,
        "wait_ms": wait,
        "run_ms": round(record.execution_time_ms, 3),
        "error": record.error if record.status == "failed" else None,
    }


def timing_table(records: Iterable[NodeRecord]) -> str:
    """A fixed-width table, one line per node execution, in node-key order as given."""
    rows = [
        (
            r["key"],
            r["node"],
            r["provider"] or "-",
            str(r["attempts"]),
            r["status"],
            "-" if r["wait_ms"] is None else f"{r['wait_ms']:.1f}",
            f"{r['run_ms']:.1f}",
        )
        for r in map(record_row, records)
    ]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(_COLUMNS)]
    numeric = {3, 5, 6}

    def line(cells: Iterable[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(_COLUMNS), line("-" * w for w in widths), *map(line, rows)])


def interrupt_help(interrupts: Mapping[str, Any], execution_id: str, store: str | None) -> str:
    """What each interrupting node asks, and the command that answers it."""
    lines = [f"the run is paused: {len(interrupts)} node(s) ask a person"]
    for key, value in interrupts.items():
        lines.append(f"  {key}: {json.dumps(as_json(value), ensure_ascii=False)}")
    if store is None:
        lines.append("run it with --store runs.db to be able to answer and resume it")
        return "\n".join(lines)
    key = next(iter(interrupts))
    answer = shlex.quote(f'{key}="yes"')
    lines.append(
        f"answer with: lift-graph resume {execution_id} --store {shlex.quote(store)}"
        f" --answer {answer}   (KEY=JSON, one --answer per node)"
    )
    return "\n".join(lines)
