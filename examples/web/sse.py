"""Server-Sent Events framing, and graph events turned into JSON-safe dicts.

An SSE message is a few ``field: value`` lines ended by a blank line; a value
holding newlines is sent as several ``data:`` lines, which the browser joins back
with ``\\n``. A line starting with ``:`` is a comment (browsers ignore it): used
as a keep-alive so that proxies do not drop an idle connection.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from lift_graph import GraphEvent, RunFinished, RunResult

__all__ = ["error_text", "event_fields", "format_comment", "format_event", "jsonable", "summary"]


def format_event(data: str, *, event: str | None = None, id: int | str | None = None) -> str:
    """One SSE message: ``id:``, ``event:``, one ``data:`` line per line of ``data``."""
    lines = []
    if id is not None:
        lines.append(f"id: {_one_line(str(id), 'id')}")
    if event is not None:
        lines.append(f"event: {_one_line(event, 'event')}")
    # splitlines() would also split on \x0b, \x1c...; SSE knows only CR, LF, CRLF.
    text = data.replace("\r\n", "\n").replace("\r", "\n")
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return "\n".join(lines) + "\n\n"


def format_comment(text: str = "") -> str:
    """An SSE comment (a keep-alive): ignored by ``EventSource``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(f": {line}\n" for line in text.split("\n")) + "\n"


def _one_line(value: str, field: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {field} cannot span lines: {value!r}")
    return value


def error_text(error: BaseException) -> str:
    """``"Type: message"``, as ``NodeRecord.error`` writes a failure."""
    return f"{type(error).__name__}: {error}"


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` made of JSON types only: exceptions become ``"Type: message"``,
    records and dataclasses dicts, pydantic models their JSON dump, anything else
    unknown its ``repr`` (cut short)."""
    if depth > 8:
        return "..."
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, BaseException):
        return error_text(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, RunResult):
        return summary(value)
    as_dict = getattr(value, "_asdict", None)  # a NamedTuple (NodeRecord)
    if callable(as_dict):
        return jsonable(as_dict(), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return jsonable(fields, depth + 1)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def summary(result: RunResult[Any]) -> dict[str, Any]:
    """What a client needs of a ``RunResult`` (never its state or deps)."""
    return {
        "output": jsonable(result.output),
        "deterministic": result.deterministic,
        "elapsed_ms": round(result.elapsed_ms, 3),
        "nodes": len(result.records),
        "failed": [r.key for r in result.records if r.status == "failed"],
    }


def event_fields(event: GraphEvent, started: float) -> dict[str, Any]:
    """The JSON an event is sent as: ``kind``, ``execution_id``, ``key``, ``t`` (seconds
    since the run started) and the event's own fields."""
    # Not ``event.data``: a CustomEvent's own ``data`` field hides that view.
    own: dict[str, Any] = {
        f.name: getattr(event, f.name)
        for f in dataclasses.fields(event)
        if f.name not in ("execution_id", "time")
    }
    if isinstance(event, RunFinished):
        own["result"] = summary(event.result)
    fields = {
        "kind": event.kind,
        "execution_id": event.execution_id,
        "t": round(event.time - started, 6),
    }
    fields.update(jsonable(own))
    return fields
