"""The run row's life: written when a durable run starts, updated when it
finishes, pauses or fails, and read back (with its journal) to resume it."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python

from ._codec import Codec, _resolve, type_name
from ._durable import Durable
from ._plan import state_type_of
from .errors import (
    CheckpointError,
    ConfigurationError,
    IncompatibleRunError,
    RunNotFoundError,
)
from .store import GraphState, RunStatus, Store, now_iso

__all__ = ["Resumed", "check_store", "close_run", "open_resume", "open_run"]


def check_store(what: str, store: Any) -> None:
    """:raises ConfigurationError: ``store`` is given but is not a ``Store``."""
    if store is not None and not isinstance(store, Store):
        raise ConfigurationError(
            f"{what} must be a lift_graph Store (SQLiteStore(path) or MemoryStore()), got "
            f"{type(store).__name__}"
        )


def _state_type(state: Any, node_classes: typing.Iterable[type]) -> type:
    """The type whose annotations type the state's fields (a TypedDict for a dict)."""
    if isinstance(state, dict):
        for cls in node_classes:
            declared = state_type_of(cls)
            if declared is not None and typing.is_typeddict(declared):
                return declared
        return dict
    return type(state)


def open_run(
    *,
    by_name: Mapping[str, type],
    graph_name: str,
    start: Any,
    state: Any,
    execution_id: str,
    store: Store | None,
    cache: Store | None,
    user_id: str | None,
    metadata: dict[str, Any],
) -> tuple[Durable, GraphState | None]:
    """The ``Durable`` of a new run, and its run row (written) when it has a store.

    :raises CheckpointError: the start node or the state has no JSON form, or the
        execution id is taken.
    """
    codec = Codec(by_name, _state_type(state, by_name.values()))
    durable = Durable(codec, execution_id, store=store, cache=cache)
    if store is None:
        return durable, None
    snapshot = codec.dump_state(state)
    now = now_iso()
    row = GraphState(
        execution_id=execution_id,
        state_snapshot=snapshot,
        state_type=type_name(codec.state_type),
        provenance=[],
        metadata=_plain_metadata(metadata, execution_id),
        user_id=user_id,
        created_at=now,
        updated_at=now,
        graph=graph_name,
        initial_snapshot=snapshot,
        start={"node": codec.dump_node(start, "the start node")},
        state_schema=codec.state_fingerprint(),
    )
    durable._check_secrets(row.model_dump(mode="json"), "", "the run row")
    store.create_run(row)
    return durable, row


def _plain_metadata(metadata: dict[str, Any], execution_id: str) -> dict[str, Any]:
    try:
        return dict(to_jsonable_python(metadata))
    except Exception as exc:
        raise CheckpointError(
            f"metadata of run {execution_id} has no JSON form ({exc}): pass plain data",
            execution_id=execution_id,
            field="metadata",
        ) from exc


def close_run(
    durable: Durable,
    row: GraphState,
    status: RunStatus,
    state: Any,
    *,
    provenance: list[dict[str, Any]] | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """Write the run row's outcome (the journal already holds every completion)."""
    assert durable.store is not None
    try:
        snapshot = durable.codec.dump_state(state)
        durable._check_secrets(snapshot, "", "the run's state")
    except CheckpointError:
        snapshot = row.state_snapshot  # a state a failed node left unwritable
    if result is not None and durable.find_secret(result):
        result = {"error": "withheld: the outcome held what looks like a secret"}
    row = row.model_copy(
        update={
            "status": status,
            "state_snapshot": snapshot,
            "provenance": list(provenance or row.provenance),
            "result": result,
            "updated_at": now_iso(),
        }
    )
    durable.store.save_run(row)


def output_summary(output: Any) -> Any:
    """The output as the run row shows it (informational: a resume replays it)."""
    return to_jsonable_python(output, fallback=repr)


@dataclass(slots=True)
class Resumed:
    start: Any
    state: Any
    durable: Durable
    row: GraphState


def open_resume(
    *,
    by_name: Mapping[str, type],
    store: Store,
    execution_id: str,
    answers: Mapping[str, Any] | None,
    cache: Store | None,
) -> Resumed:
    """Load a stored run and its journal, checked against this graph.

    :raises RunNotFoundError: the store has no run ``execution_id``.
    :raises IncompatibleRunError: the graph lost a journaled node class, or the
        state model changed.
    :raises CheckpointError: a row is corrupt; an answer names no pending interrupt.
    """
    row = store.load_run(execution_id)
    if row is None:
        raise RunNotFoundError(
            f"the store has no run with execution_id {execution_id!r}: check the id (it is "
            "RunResult.execution_id of the run) and that this is the store it ran on",
            execution_id=execution_id,
        )
    state_type = _stored_state_type(row, by_name)
    codec = Codec(by_name, state_type)
    if row.state_schema is not None and codec.state_fingerprint() != row.state_schema:
        raise IncompatibleRunError(
            f"the state model {row.state_type} changed since run {execution_id} was "
            "written (its fields or their types differ); resume it with the model it "
            "was started with",
            execution_id=execution_id,
        )
    if row.initial_snapshot is None or row.start is None:
        raise CheckpointError(
            f"run {execution_id} was stored without its start node or input state",
            execution_id=execution_id,
        )
    entries = store.journal(execution_id)
    durable = Durable(
        codec,
        execution_id,
        store=store,
        cache=cache,
        entries=entries,
        finished=row.status == "finished",
    )
    if answers:
        store.append(durable.answer_entries(answers))
    state = codec.load_state(row.initial_snapshot)
    start = codec.load_node(row.start["node"])
    return Resumed(start, state, durable, row)


def _stored_state_type(row: GraphState, by_name: Mapping[str, type]) -> type:
    if row.state_type == "builtins.dict":
        return dict
    for cls in by_name.values():
        declared = state_type_of(cls)
        if isinstance(declared, type) and type_name(declared) == row.state_type:
            return declared
    module, _, qualname = row.state_type.rpartition(".")
    found = None
    # A nested class: try each split of the dotted name into module and qualname.
    parts = row.state_type.split(".")
    for i in range(len(parts) - 1, 0, -1):
        found = _resolve(".".join(parts[:i]), ".".join(parts[i:]))
        if found is not None:
            break
    if not isinstance(found, type):
        raise IncompatibleRunError(
            f"run {row.execution_id} has state type {row.state_type}, which is not "
            f"imported here: import {module or qualname} before resuming",
            execution_id=row.execution_id,
        )
    return found
