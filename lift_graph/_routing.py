"""Routing: what a node's ``run`` returned, checked and turned into a next step.

The scheduler calls ``route`` once per node execution, right after the node
returned. Errors raised here name the node key of the execution that returned the
value, so a bad return in a deep fork is easy to find.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ._records import NodeRecord
from ._text import short_repr
from .blocks import Fork, Pipeline
from .errors import InvalidReturnError, UnknownNodeError
from .node import End, is_node

__all__ = ["Edges", "mark_failed", "member_value", "route", "set_record_error"]

#: (source class, target class, kind) transitions seen, for diagrams.
Edges = set[tuple[str, str, str]]


def _check_registered(registry: Collection[type] | None, source: str, key: str, cls: type) -> None:
    if registry is not None and cls not in registry:
        raise UnknownNodeError(
            f"node {source} (node key {key!r}) returned {cls.__name__}, which is not in "
            f"this graph: add {cls.__name__} to Graph(nodes=[...])",
            node=cls.__name__,
        )


def _route_block(
    out: Fork[Any] | Pipeline[Any],
    name: str,
    key: str,
    registry: Collection[type] | None,
    edges: Edges,
) -> None:
    members = out.branches if isinstance(out, Fork) else out.nodes
    kind = "fork" if isinstance(out, Fork) else "pipeline"
    for cls in {type(m) for m in members}:
        _check_registered(registry, name, key, cls)
        edges.add((name, cls.__name__, kind))
    if out.then is not None:
        _check_registered(registry, name, key, type(out.then))
        edges.add((name, type(out.then).__name__, "join"))


def route(node: Any, out: Any, key: str, registry: Collection[type] | None, edges: Edges) -> Any:
    """Validate what ``node.run`` returned at ``key``; a list of nodes becomes a Fork.

    Records each transition in ``edges``.

    :raises InvalidReturnError: not a node, End, Fork, Pipeline or list of nodes.
    :raises UnknownNodeError: a node whose class the graph (``registry``) lacks.
    """
    name = type(node).__name__
    if isinstance(out, End):
        edges.add((name, "End", "end"))
        return out
    if is_node(out):
        _check_registered(registry, name, key, type(out))
        edges.add((name, type(out).__name__, "next"))
        return out
    if isinstance(out, (Fork, Pipeline)):
        _route_block(out, name, key, registry, edges)
        return out
    if isinstance(out, (list, tuple)) and all(is_node(x) for x in out):
        fork: Fork[Any] = Fork(list(out))
        _route_block(fork, name, key, registry, edges)
        return fork
    shown = short_repr(out)
    raise InvalidReturnError(
        f"node {name}.run returned {type(out).__name__} ({shown}); return the next "
        "node, End(value), a Fork, a Pipeline or a list of nodes",
        node=name,
    )


def member_value(node: Any, out: Any) -> Any:
    """The value a pipeline member returned: ``End(value)`` or ``None``.

    :raises InvalidReturnError: anything else (a member cannot route the path).
    """
    if out is None:
        return None
    if isinstance(out, End):
        return out.value
    raise InvalidReturnError(
        f"pipeline member {type(node).__name__} returned {type(out).__name__}; a "
        "pipeline member returns End(value) or None, and the pipeline continues at "
        "its then= node",
        node=type(node).__name__,
    )


def mark_failed(
    records: list[tuple[Any, ...]], key: str, exc: BaseException
) -> tuple[Any, ...] | None:
    """Turn the (succeeded) record of execution ``key`` into a failed one.

    Routing runs after the runner recorded a success; a bad return still fails
    that execution, so its record must say so. Returns the new record tuple.
    """
    return set_record_error(records, key, f"{type(exc).__name__}: {exc}")


def set_record_error(
    records: list[tuple[Any, ...]], key: str, error: str
) -> tuple[Any, ...] | None:
    """Give the latest record of execution ``key`` the ``error`` (a failure's text,
    or a status such as ``INTERRUPTED``); returns the new record tuple."""
    for i in range(len(records) - 1, -1, -1):
        if records[i][0] == key:
            # Through NodeRecord, so fields added to it later keep their values.
            records[i] = tuple(NodeRecord._make(records[i])._replace(error=error))
            return records[i]
    return None
