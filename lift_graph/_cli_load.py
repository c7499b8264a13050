"""What ``lift-graph`` commands are given, turned into objects: the graph from a
``module:attr`` target, the start node from its class name and JSON arguments, and
the state from a JSON file validated into the graph's state type.

Every mistake raises ``CliUsageError`` with one line naming what was wrong and
what to do; the command line prints it and exits 2.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ._plan import state_type_of
from .graph import Graph

__all__ = [
    "CliUsageError",
    "build_start",
    "load_graph",
    "load_object",
    "load_state",
    "parse_json",
    "state_type",
]


class CliUsageError(Exception):
    """A command-line argument is wrong (exit status 2)."""


def load_object(target: str, what: str) -> Any:
    """The object ``module:attr`` names, importing ``module`` with the current
    directory on ``sys.path`` (as ``python -m`` and uvicorn do)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliUsageError(
            f"{what} must look like module:attribute (pkg.graphs:graph), got {target!r}"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CliUsageError(
                f"cannot import module {module_name!r} for {what} (looked in {cwd} and on "
                "sys.path): check the name, or run from the directory that holds it"
            ) from exc
        raise CliUsageError(f"importing {module_name!r} failed: {_one_line(exc)}") from exc
    except Exception as exc:
        raise CliUsageError(f"importing {module_name!r} failed: {_one_line(exc)}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliUsageError(f"module {module_name!r} has no attribute {attr!r} ({what})")
        obj = getattr(obj, part)
    return obj


def load_graph(target: str) -> Graph[Any]:
    """The ``Graph`` that ``module:attr`` names."""
    obj = load_object(target, "the graph")
    if not isinstance(obj, Graph):
        hint = (
            " (a function? call it at module level: graph = build_graph())" if callable(obj) else ""
        )
        shown = repr(obj) if len(repr(obj)) <= 40 else repr(obj)[:37] + "..."
        raise CliUsageError(
            f"{target} is {shown} ({type(obj).__qualname__}), not a lift_graph Graph{hint}"
        )
    return obj


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliUsageError(f"{what} is not JSON: {exc}") from exc


def _node_classes(graph: Graph[Any]) -> dict[str, type]:
    return {cls.__name__: cls for cls in graph.node_classes}


def build_start(graph: Graph[Any], name: str, args_json: str | None) -> Any:
    """An instance of the graph's node class ``name``, built with the keyword
    arguments of ``args_json`` (a JSON object) or none."""
    classes = _node_classes(graph)
    cls = classes.get(name)
    if cls is None:
        raise CliUsageError(
            f"--start {name!r} is not a node class of graph {graph.name!r}: choose one of "
            f"{', '.join(sorted(classes))}"
        )
    kwargs = parse_json(args_json, "--start-args") if args_json else {}
    if not isinstance(kwargs, dict):
        raise CliUsageError(
            f"--start-args must be a JSON object of {name}'s fields, got {type(kwargs).__name__}"
        )
    try:
        return cls(**kwargs)
    except TypeError as exc:
        fields = ""
        if dataclasses.is_dataclass(cls):
            fields = f" (its fields: {', '.join(f.name for f in dataclasses.fields(cls))})"
        raise CliUsageError(
            f"cannot build start node {name} from --start-args: {exc}{fields}"
        ) from exc


def state_type(graph: Graph[Any], start_cls: type) -> type | None:
    """The state type the start node declares (``BaseNode[State]``), else the first
    one declared by the graph's other node classes (by name); None if none does."""
    found = state_type_of(start_cls)
    if found is not None:
        return found
    for cls in sorted(graph.node_classes, key=lambda c: c.__name__):
        found = state_type_of(cls)
        if found is not None:
            return found
    return None


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliUsageError(f"cannot read --state {path}: {exc.strerror or exc}") from exc


def load_state(graph: Graph[Any], start: Any, path: str | None) -> Any:
    """The run's state: the JSON of ``path`` (``-``: stdin; None: ``{}``), validated
    into the graph's state type (a pydantic model, a TypedDict or a dataclass)."""
    what = f"--state {'stdin' if path == '-' else path}" if path else "the state {} (no --state)"
    data = parse_json(_read(path), what) if path else {}
    kind = state_type(graph, type(start))
    if kind is None or kind is dict:
        return data
    if not isinstance(data, dict):
        raise CliUsageError(
            f"{what} must be a JSON object of {kind.__name__}'s fields, got {type(data).__name__}"
        )
    try:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind.model_validate(data)
        if typing.is_typeddict(kind) or dataclasses.is_dataclass(kind):
            return TypeAdapter(kind).validate_python(data)
    except ValidationError as exc:
        raise CliUsageError(f"{what} does not fit {kind.__name__}: {_fields(exc)}") from exc
    return data


def _fields(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(the whole state)"
        parts.append(f"field {where!r}: {error['msg']}")
    return "; ".join(parts)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
