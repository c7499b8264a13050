"""Where durable runs live: the ``Store`` protocol, its rows, and ``MemoryStore``.

A store keeps three kinds of rows, all plain JSON validated by pydantic when they
are loaded (never pickle):

- one ``GraphState`` per run (the run row: snapshot, status, result);
- the run's journal, one ``JournalEntry`` per completed node, fork join, interrupt
  or answer, written in its own transaction, first write wins;
- node cache entries (``CacheEntry``), shared by every run given the store.

The methods are synchronous on purpose: a journal commit on SQLite costs tens of
microseconds, less than handing it to a thread, and being synchronous means no
other task of the run can start between a node's return and its commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import CheckpointError

__all__ = [
    "CacheEntry",
    "EntryKind",
    "GraphState",
    "JournalEntry",
    "MemoryStore",
    "RunStatus",
    "Store",
    "digest",
    "now_iso",
]

_M = TypeVar("_M", bound=BaseModel)

RunStatus = Literal["running", "interrupted", "finished", "failed"]
EntryKind = Literal["node", "join", "interrupt", "answer"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class GraphState(BaseModel):
    """The run row: the seed's checkpoint record, plus what resuming needs.

    ``state_snapshot`` is the state as of ``updated_at`` (the input when the run
    starts, the final state when it finishes); ``initial_snapshot`` is the input a
    resume replays from; ``start`` the start node (``{"node": class, "data": ...}``);
    ``result`` the stored outcome of a finished or interrupted run;
    ``state_schema`` what must not change before a resume (the state model's schema).
    """

    model_config = ConfigDict(extra="forbid")

    execution_id: str
    state_snapshot: dict[str, Any]
    state_type: str
    provenance: list[dict[str, Any]]
    metadata: dict[str, Any]
    user_id: str | None
    created_at: str
    updated_at: str
    graph: str = "graph"
    status: RunStatus = "running"
    state_schema: str | None = None
    initial_snapshot: dict[str, Any] | None = None
    start: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class JournalEntry(BaseModel):
    """One journaled fact of a run, addressed by the node key (graph position).

    ``kind`` is ``node`` (a completed node: its instance, return and writes),
    ``join`` (a fork's decision and merged writes), ``interrupt`` (a node asked a
    person; ``round`` counts the questions one node asked) or ``answer``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    execution_id: str
    key: str
    kind: EntryKind
    node: str
    data: dict[str, Any]
    round: int = 0


class CacheEntry(BaseModel):
    """A node's recorded writes and return, found again by a canonical hash of its
    inputs (see ``CachePolicy``). ``expires_at`` is a ``time.time()``; None: never."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    node: str
    data: dict[str, Any]
    created_at: float
    expires_at: float | None = None


@runtime_checkable
class Store(Protocol):
    """What a durable store provides; ``MemoryStore`` and ``SQLiteStore`` implement it.

    Every method may raise ``CheckpointError``; loading methods raise it for a row
    that fails validation (nothing of that run is returned half-loaded).
    """

    def create_run(self, run: GraphState) -> None:
        """Insert a new run row. :raises CheckpointError: the id is taken."""

    def load_run(self, execution_id: str) -> GraphState | None:
        """The run row, or None when the store has no such run."""

    def save_run(self, run: GraphState) -> None:
        """Replace an existing run row (status, snapshot, result)."""

    def append(self, entries: Sequence[JournalEntry], run: GraphState | None = None) -> None:
        """Commit ``entries`` (and ``run``'s row, when given) in one transaction.

        An entry whose ``(execution_id, kind, key, round)`` is already stored is
        ignored: the first write wins.
        """

    def journal(self, execution_id: str) -> list[JournalEntry]:
        """Every entry of the run, in commit order."""

    def cache_get(self, key: str, *, now: float) -> CacheEntry | None:
        """The entry for ``key`` unless absent or expired at ``now``."""

    def cache_put(self, entry: CacheEntry) -> None:
        """Store (or replace) a cache entry."""

    def close(self) -> None:
        """Release the store's resources; it may not be used afterwards."""


def digest(*parts: str) -> str:
    """The checksum stored beside a row, so an edited or corrupted row is refused.

    A checksum, not a signature: it catches a disk, a tool or a hand that changed a
    row, not someone who recomputes it. Each part is followed by a NUL byte; hashing
    the joined text once is the same digest as hashing the parts one by one, and it
    is computed for every journal row, on the event loop thread.
    """
    text = "\x00".join((*parts, ""))  # each part followed by a NUL
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_UNWRITABLE = (TypeError, ValueError, RecursionError)


def _json_text(data: Any) -> str:
    """``data`` as the JSON text a store keeps.

    Refused (``TypeError`` / ``ValueError`` / ``RecursionError``) rather than written
    differently than given: NaN and infinities (pydantic's JSON would write
    ``null``), objects json has no form for, cycles, and lone surrogates (not UTF-8,
    so SQLite could not hold them).
    """
    text = _dumps(data)
    text.encode()
    return text


def _unwritable(
    what: str,
    exc: BaseException,
    *,
    execution_id: str | None = None,
    node: str | None = None,
    node_key: str | None = None,
) -> CheckpointError:
    return CheckpointError(
        f"{what} holds a value with no JSON form, so nothing was written: {exc}. "
        "A store keeps plain JSON data (dicts with str keys, lists, str, int, finite "
        "float, bool, None): convert other values first, e.g. a pydantic model with "
        "model_dump(mode='json')",
        execution_id=execution_id,
        node=node,
        node_key=node_key,
    )


# The three rows' JSON texts. Stores call them before taking their lock, so a value
# that cannot be written leaves the store untouched; the message is built only then.


def _entry_json(entry: JournalEntry) -> str:
    try:
        return _json_text(entry.data)
    except _UNWRITABLE as exc:
        raise _unwritable(
            f"journal entry {entry.key!r} ({entry.kind}) of run {entry.execution_id!r}",
            exc,
            execution_id=entry.execution_id,
            node=entry.node,
            node_key=entry.key,
        ) from exc


def _run_json(run: GraphState) -> str:
    try:
        return _json_text(run.model_dump())
    except _UNWRITABLE as exc:
        raise _unwritable(
            f"the row of run {run.execution_id!r}", exc, execution_id=run.execution_id
        ) from exc


def _cache_json(entry: CacheEntry) -> str:
    """The entry's ``data`` only: its other fields are columns of their own.

    Its times must be finite too: SQLite stores a NaN as NULL and pydantic's JSON
    writes NaN and infinity as ``null``, so the entry would not load again.
    """
    try:
        if not math.isfinite(entry.created_at) or not math.isfinite(
            0.0 if entry.expires_at is None else entry.expires_at
        ):
            raise ValueError(
                f"created_at={entry.created_at!r}, expires_at={entry.expires_at!r} are "
                "not finite time.time() values (expires_at=None: never expires)"
            )
        return _json_text(entry.data)
    except _UNWRITABLE as exc:
        raise _unwritable(f"cache entry {entry.key!r}", exc, node=entry.node) from exc


class MemoryStore:
    """A ``Store`` in this process's memory: for tests and runs that need resume
    only while the process lives. Rows are kept as JSON text, so what a
    ``MemoryStore`` accepts an ``SQLiteStore`` accepts too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, str] = {}
        self._journal: dict[str, list[tuple[str, EntryKind, str, int, str]]] = {}
        self._seen: set[tuple[str, str, str, int]] = set()
        self._cache: dict[str, str] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)}, cache={len(self._cache)})"

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError("this MemoryStore was closed: create a new one")

    def create_run(self, run: GraphState) -> None:
        text = _run_json(run)
        with self._lock:
            self._check_open()
            if run.execution_id in self._runs:
                raise CheckpointError(
                    f"a run with execution_id {run.execution_id!r} already exists in this "
                    "store: resume it with graph.resume, or pass another execution_id",
                    execution_id=run.execution_id,
                )
            self._runs[run.execution_id] = text

    def load_run(self, execution_id: str) -> GraphState | None:
        with self._lock:
            self._check_open()
            text = self._runs.get(execution_id)
        if text is None:
            return None
        return _load_model(GraphState, text, execution_id, "run row")

    def save_run(self, run: GraphState) -> None:
        text = _run_json(run)
        with self._lock:
            self._check_open()
            self._runs[run.execution_id] = text

    def append(self, entries: Sequence[JournalEntry], run: GraphState | None = None) -> None:
        # Serialize first: a value that cannot be written leaves the store untouched.
        rows = [(e.key, e.kind, e.node, e.round, _entry_json(e)) for e in entries]
        run_text = _run_json(run) if run is not None else None
        with self._lock:
            self._check_open()
            for entry, row in zip(entries, rows, strict=True):
                ident = (entry.execution_id, entry.kind, entry.key, entry.round)
                if ident in self._seen:
                    continue
                self._seen.add(ident)
                self._journal.setdefault(entry.execution_id, []).append(row)
            if run is not None and run_text is not None:
                self._runs[run.execution_id] = run_text

    def journal(self, execution_id: str) -> list[JournalEntry]:
        with self._lock:
            self._check_open()
            rows = list(self._journal.get(execution_id, ()))
        out = []
        for key, kind, node, rnd, text in rows:
            try:
                data = json.loads(text)
                out.append(
                    JournalEntry(
                        execution_id=execution_id,
                        key=key,
                        kind=kind,
                        node=node,
                        data=data,
                        round=rnd,
                    )
                )
            except (ValueError, ValidationError) as exc:
                raise CheckpointError(
                    f"journal row {key!r} of run {execution_id!r} is not valid: {exc}",
                    execution_id=execution_id,
                    node_key=key,
                ) from exc
        return out

    def cache_get(self, key: str, *, now: float) -> CacheEntry | None:
        with self._lock:
            self._check_open()
            text = self._cache.get(key)
        if text is None:
            return None
        entry = _load_model(CacheEntry, text, None, f"cache entry {key!r}")
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        return entry

    def cache_put(self, entry: CacheEntry) -> None:
        _cache_json(entry)  # refuses what SQLiteStore refuses
        text = entry.model_dump_json()
        with self._lock:
            self._check_open()
            self._cache[entry.key] = text

    def close(self) -> None:
        self._closed = True


def _load_model(model: type[_M], text: str, execution_id: str | None, what: str) -> _M:
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise CheckpointError(
            f"the stored {what} is not valid and was not loaded: {exc}",
            execution_id=execution_id,
        ) from exc
