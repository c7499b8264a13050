"""What a batch sends to its Ray workers, checked before any worker starts.

Nodes, the start node, ``deps`` and states travel with Ray's own serialization
(cloudpickle: classes of importable modules by reference, others by value). When
something cannot travel, the error names it: the node class, ``deps``, a state
field of input ``i``. Stores travel as what a worker needs to open its own
connection: an ``SQLiteStore`` as its file's path, since a connection cannot be
shared between processes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ray import cloudpickle

from .._text import short_repr
from ..errors import ShippingError
from ..sqlite_store import SQLiteStore
from ..store import MemoryStore, Store

__all__ = [
    "StoreSpec",
    "check_graph",
    "check_value",
    "culprit",
    "dumps",
    "first_line",
    "loads",
    "open_store",
    "pack",
    "store_spec",
]


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How a worker gets the batch's store: the same SQLite file, or a shipped object."""

    path: str | None = None
    busy_timeout: float = 5.0
    shipped: Any = None


def dumps(value: Any) -> bytes:
    """Ray's serializer, typed."""
    return cloudpickle.dumps(value)  # type: ignore[no-untyped-call,no-any-return]


def loads(data: bytes) -> Any:
    return cloudpickle.loads(data)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(exc: BaseException) -> str:
    """``exc`` in one readable line: Ray's serialization reports run to many, with
    terminal colours."""
    text = _ANSI.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) > 300:
        line = line[:297] + "..."
    return f"{type(exc).__name__}: {line}"


def _failure(value: Any) -> Exception | None:
    try:
        dumps(value)
    except Exception as exc:  # noqa: BLE001 - any failure to serialize is reported
        return exc
    return None


def culprit(value: Any) -> str | None:
    """The first attribute (or item) of ``value`` that cannot be serialized, if one
    can be singled out: ``"field 'client'"``."""
    fields: dict[str, Any] = {}
    if isinstance(value, dict):
        fields = {str(k): v for k, v in value.items()}
    elif hasattr(value, "__dict__"):
        fields = dict(vars(value))
    elif hasattr(value, "__slots__"):
        fields = {n: getattr(value, n) for n in value.__slots__ if hasattr(value, n)}
    for name, item in fields.items():
        if _failure(item) is not None:
            return f"field {name!r} ({type(item).__name__})"
    return None


def check_value(value: Any, what: str, advice: str) -> None:
    """:raises ShippingError: ``value`` (described by ``what``) cannot be serialized."""
    error = _failure(value)
    if error is None:
        return
    inner = culprit(value)
    where = f", at its {inner}" if inner else ""
    raise ShippingError(
        f"{what} cannot be sent to the Ray workers{where}: {first_line(error)}; {advice}",
        what=what,
    ) from error


def check_graph(graph: Any, start: Any, deps: Any) -> None:
    """Every node class, the start node and ``deps``, one by one, so the error
    names the one that cannot travel.

    :raises ShippingError: naming the node class, the start node or ``deps``.
    """
    advice = (
        "define the node in an importable module (not in __main__ or a notebook cell "
        "that closes over a lock, a client or an open file), or create such resources "
        "inside run()"
    )
    for cls in sorted(graph.node_classes, key=lambda c: c.__name__):
        check_value(cls, f"node {cls.__name__}", advice)
    check_value(start, f"the start node {short_repr(start)}", advice)
    check_value(
        deps,
        "deps",
        "pass what the nodes need to build their clients (a model name, an API base) "
        "rather than the clients themselves",
    )


def pack(payload: Any, graph: Any, start: Any, deps: Any) -> bytes:
    """``payload`` serialized for the workers, in one pass; when that fails, each
    node class, the start node and ``deps`` are tried alone to name the culprit.

    :raises ShippingError: naming what cannot travel.
    """
    try:
        return dumps(payload)
    except Exception as exc:
        check_graph(graph, start, deps)
        raise ShippingError(
            f"the batch cannot be sent to the Ray workers: {first_line(exc)}",
            what="the batch",
        ) from exc


def store_spec(store: Store | None, what: str) -> StoreSpec | None:
    """:raises ShippingError: ``store`` cannot be shared by processes."""
    if store is None:
        return None
    if isinstance(store, SQLiteStore):
        if store.path == ":memory:" or store.path.startswith("file::memory:"):
            raise ShippingError(
                f"{what}: an in-memory SQLiteStore lives in this process only; give Ray "
                "workers a file (SQLiteStore('runs.db')) on a disk they all see",
                what=what,
            )
        return StoreSpec(path=os.path.abspath(store.path), busy_timeout=store.busy_timeout)
    if isinstance(store, MemoryStore):
        raise ShippingError(
            f"{what}: a MemoryStore lives in this process only; Ray workers need a store "
            "they can all open, e.g. SQLiteStore('runs.db') on one host",
            what=what,
        )
    check_value(store, f"{what} {store!r}", "use a store whose copies reach the same data")
    return StoreSpec(shipped=store)


def open_store(spec: StoreSpec | None) -> Store | None:
    """A worker's own handle on the batch's store."""
    if spec is None:
        return None
    if spec.path is not None:
        return SQLiteStore(spec.path, busy_timeout=spec.busy_timeout)
    return spec.shipped  # type: ignore[no-any-return]
