"""``SQLiteStore``: runs, journals and the node cache in one SQLite file.

One connection per store, shared by the threads of this process under a lock
(a run may call it from a helper thread); several processes may open the same
file, which WAL mode allows: readers never wait, writers take turns for up to
``busy_timeout`` seconds. Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction, so a journal entry and the run row it updates land together or not
at all.

Rows are JSON text with a checksum over every column. Loading checks all rows it
read before it returns any of them, and refuses with ``CheckpointError`` a row
that was edited or corrupted, that holds bytes (a pickle among them: this module
never unpickles), or that is not valid JSON for its model, and a file that is not
a readable SQLite database. With ``synchronous=NORMAL`` a commit survives a crash
of the process; a power loss may lose the last commits, never corrupt the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .errors import CheckpointError, ConfigurationError
from .store import (
    CacheEntry,
    ClosingStore,
    GraphState,
    JournalEntry,
    _cache_json,
    _entry_json,
    _run_json,
    digest,
)

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

# PRAGMA application_id marks the file as ours ("LFTG"); user_version is the schema.
_APPLICATION_ID = 0x4C465447
_SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs ("
    " execution_id TEXT PRIMARY KEY, body TEXT NOT NULL, checksum TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS journal ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, execution_id TEXT NOT NULL,"
    " kind TEXT NOT NULL, key TEXT NOT NULL, round INTEGER NOT NULL, node TEXT NOT NULL,"
    " data TEXT NOT NULL, checksum TEXT NOT NULL, UNIQUE (execution_id, kind, key, round))",
    # (execution_id, seq): a run's rows come out of the index already in commit order.
    "CREATE INDEX IF NOT EXISTS journal_run ON journal (execution_id, seq)",
    "CREATE TABLE IF NOT EXISTS cache ("
    " key TEXT PRIMARY KEY, node TEXT NOT NULL, data TEXT NOT NULL,"
    " created_at REAL NOT NULL, expires_at REAL, checksum TEXT NOT NULL)",
)

_BEGIN = "BEGIN IMMEDIATE"
_COMMIT = "COMMIT"
_ROLLBACK = "ROLLBACK"
_INSERT_RUN = (
    "INSERT INTO runs (execution_id, body, checksum) VALUES (?, ?, ?)"
    " ON CONFLICT (execution_id) DO NOTHING"
)
_UPSERT_RUN = (
    "INSERT INTO runs (execution_id, body, checksum) VALUES (?, ?, ?)"
    " ON CONFLICT (execution_id) DO UPDATE SET body = excluded.body, checksum = excluded.checksum"
)
_SELECT_RUN = "SELECT execution_id, body, checksum FROM runs WHERE execution_id = ?"
_INSERT_ENTRY = (
    "INSERT OR IGNORE INTO journal (execution_id, kind, key, round, node, data, checksum)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_JOURNAL = (
    "SELECT execution_id, kind, key, round, node, data, checksum FROM journal"
    " WHERE execution_id = ? ORDER BY seq"
)
_PUT_CACHE = (
    "INSERT OR REPLACE INTO cache (key, node, data, created_at, expires_at, checksum)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT_CACHE = "SELECT key, node, data, created_at, expires_at, checksum FROM cache WHERE key = ?"

_PICKLED = (
    "holds a pickle (bytes starting with b'\\x80' and a protocol byte): lift_graph writes "
    "JSON only and never unpickles, so the row was not written by lift_graph"
)


# Checksums: every column's text, behind the table's name.


def _run_checksum(execution_id: str, body: str) -> str:
    return digest("runs", execution_id, body)


def _journal_checksum(
    execution_id: str, kind: str, key: str, round_: int, node: str, data: str
) -> str:
    return digest("journal", execution_id, kind, key, str(round_), node, data)


def _cache_checksum(
    key: str, node: str, data: str, created_at: float, expires_at: float | None
) -> str:
    expires = "" if expires_at is None else repr(expires_at)
    return digest("cache", key, node, data, repr(created_at), expires)


def _not_utf8(exc: UnicodeEncodeError, execution_id: str | None) -> CheckpointError:
    return CheckpointError(
        f"an execution id, key or node name holds text that is not UTF-8 ({exc}), so "
        "nothing was written: SQLite stores UTF-8 text only",
        execution_id=execution_id,
    )


def _decode(raw: bytes) -> str:
    """Text columns as read: text that is not UTF-8 (a pickle cast to TEXT) still
    loads, as surrogates, so ``_not_text`` can name it instead of sqlite3 failing
    with a decoding error that does not say which row."""
    return raw.decode("utf-8", "surrogateescape")


def _not_text(value: object) -> str | None:
    """Why a column's value is not text lift_graph wrote, or None when it is text."""
    if isinstance(value, str):
        # A pickle's first two bytes are PROTO and the protocol; as text they are
        # U+0080 (decoded as Latin-1) or a surrogate (not UTF-8, see _decode).
        if len(value) > 1 and value[0] in ("\x80", "\udc80") and value[1] < "\x10":
            return _PICKLED
        return None
    if isinstance(value, bytes):
        if len(value) > 1 and value[0] == 0x80 and value[1] < 0x10:
            return _PICKLED
        return f"holds {len(value)} bytes (a BLOB), not text"
    return f"holds {type(value).__name__} {value!r}, not text"


class SQLiteStore(ClosingStore):
    """A ``Store`` in an SQLite file (or ``":memory:"``), shared by threads and
    processes.

    :param path: the database file; created with its tables when missing.
    :param busy_timeout: seconds a write waits while another connection writes.
    :raises CheckpointError: the file is not an SQLite database, holds another
        application's tables, or was written by a newer lift_graph schema.

    Methods raise ``CheckpointError`` for a value with no JSON form (before
    anything is written), a row that fails its checks (before anything is
    returned), a write that waited longer than ``busy_timeout``, any other SQLite
    failure (its ``sqlite3.Error`` is the ``__cause__``), and after ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        if not (isinstance(busy_timeout, int | float) and 0 <= busy_timeout < math.inf):
            raise ConfigurationError(
                f"busy_timeout must be a finite number of seconds >= 0, got {busy_timeout!r}"
            )
        self._path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self._path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._db_error(exc) from exc
        try:
            conn.text_factory = _decode
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._init_schema(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._db_error(exc) from exc
            raise
        self._conn = conn

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for a store of this connection only)."""
        return self._path

    @property
    def busy_timeout(self) -> float:
        return self._busy_timeout

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables once, and refuse a file that is not ours to read.

        Processes opening a new file at once each get here; ``BEGIN IMMEDIATE``
        lets one create the tables, and the others then find them (``IF NOT
        EXISTS``) after waiting for its commit.
        """
        if self._schema_is_current(conn):
            return
        conn.execute(_BEGIN)
        try:
            if not self._schema_is_current(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute(_COMMIT)
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(_ROLLBACK)
            raise

    def _schema_is_current(self, conn: sqlite3.Connection) -> bool:
        """True: our tables exist. False: an empty file. Anything else is refused."""
        application_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if application_id == _APPLICATION_ID:
            if version > _SCHEMA_VERSION:
                raise CheckpointError(
                    f"the store at {self._path} has schema version {version}, written by a "
                    f"newer lift_graph (this one reads version {_SCHEMA_VERSION}): upgrade "
                    "lift_graph to use it"
                )
            return version == _SCHEMA_VERSION
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        if application_id != 0 or tables:
            names = ", ".join(sorted(str(name) for (name,) in tables)) or "none"
            raise CheckpointError(
                f"the file at {self._path} is an SQLite database of another application "
                f"(application_id {application_id}, tables: {names}), not a lift_graph "
                "store: give SQLiteStore a file of its own"
            )
        return False

    def __repr__(self) -> str:
        state = "" if self._conn is not None else ", closed"
        return f"SQLiteStore({self._path!r}{state})"

    def _check_open(self) -> None:
        self._connection()

    # -- plumbing ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise CheckpointError(f"{self!r} was closed: open a new SQLiteStore on the file")
        return conn

    def _db_error(self, exc: sqlite3.Error, execution_id: str | None = None) -> CheckpointError:
        name: str = getattr(exc, "sqlite_errorname", "")
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            message = (
                f"the store at {self._path} stayed locked by another connection for "
                f"{self._busy_timeout}s ({exc}): retry, or give SQLiteStore a longer "
                "busy_timeout"
            )
        elif name.startswith("SQLITE_CANTOPEN"):
            message = (
                f"cannot open the store at {self._path} ({exc}): check that its directory "
                "exists and is writable"
            )
        elif name.startswith(("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_PERM")):
            message = f"cannot write the store at {self._path} ({exc}): nothing was written"
        elif name.startswith("SQLITE_CONSTRAINT"):  # a trigger or a changed schema
            message = (
                f"the store at {self._path} refused the write ({exc}): nothing was written; "
                "its tables were changed after lift_graph created them"
            )
        else:
            message = (
                f"the file at {self._path} is not a readable lift_graph store ({exc}): "
                "restore it from a backup, or give SQLiteStore another path"
            )
        return CheckpointError(message, execution_id=execution_id)

    def _write(
        self, work: Callable[[sqlite3.Connection], _T], execution_id: str | None = None
    ) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction: all of it or nothing."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(_BEGIN)
                try:
                    result = work(conn)
                    conn.execute(_COMMIT)
                except BaseException:
                    # SQLite rolls some failures (disk full, I/O) back by itself.
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute(_ROLLBACK)
                    raise
            except sqlite3.Error as exc:
                raise self._db_error(exc, execution_id) from exc
            except OverflowError as exc:  # an int beyond SQLite's 64 bits
                raise CheckpointError(
                    f"a value does not fit SQLite's 64-bit integers, so nothing was written: {exc}",
                    execution_id=execution_id,
                ) from exc
            return result

    def _read(self, sql: str, key: str, execution_id: str | None = None) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, (key,)).fetchall()
            except sqlite3.Error as exc:
                raise self._db_error(exc, execution_id) from exc

    def _refuse(
        self,
        where: str,
        problem: str,
        *,
        execution_id: str | None = None,
        node_key: str | None = None,
    ) -> CheckpointError:
        if execution_id is not None:
            todo = (
                f"nothing of run {execution_id!r} was loaded: restore {self._path} from a "
                "backup, or start the run again under a new execution_id"
            )
        else:
            todo = f"it was not used: delete the entry, or restore {self._path} from a backup"
        return CheckpointError(
            f"{where} {problem}; {todo}", execution_id=execution_id, node_key=node_key
        )

    def _texts(
        self,
        where: str,
        columns: Sequence[tuple[str, object]],
        *,
        execution_id: str | None = None,
        node_key: str | None = None,
    ) -> None:
        for name, value in columns:
            problem = _not_text(value)
            if problem is not None:
                raise self._refuse(
                    where,
                    f"is not lift_graph's: its column {name} {problem}",
                    execution_id=execution_id,
                    node_key=node_key,
                )

    def _checksum(
        self,
        where: str,
        stored: str,
        compute: Callable[[], str],
        *,
        execution_id: str | None = None,
        node_key: str | None = None,
    ) -> None:
        try:
            matches = compute() == stored
        except UnicodeEncodeError:  # text that was not UTF-8 (see _decode)
            matches = False
        if not matches:
            raise self._refuse(
                where,
                "does not match its checksum: it was edited or corrupted after lift_graph wrote it",
                execution_id=execution_id,
                node_key=node_key,
            )

    # -- the Store protocol -----------------------------------------------------

    def create_run(self, run: GraphState) -> None:
        """Insert a new run row. :raises CheckpointError: the id is taken."""
        eid = run.execution_id
        body = _run_json(run)
        try:
            row = (eid, body, _run_checksum(eid, body))
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, eid) from exc
        inserted = self._write(lambda conn: conn.execute(_INSERT_RUN, row).rowcount, eid)
        if not inserted:
            raise CheckpointError(
                f"a run with execution_id {eid!r} already exists in {self._path}: resume it "
                "with graph.resume, or pass another execution_id",
                execution_id=eid,
            )

    def load_run(self, execution_id: str) -> GraphState | None:
        """The run row, or None when the store has no such run."""
        rows = self._read(_SELECT_RUN, execution_id, execution_id)
        if not rows:
            return None
        eid, body, checksum = rows[0]
        where = f"the row of run {execution_id!r}"
        self._texts(where, (("body", body), ("checksum", checksum)), execution_id=execution_id)
        self._checksum(where, checksum, lambda: _run_checksum(eid, body), execution_id=execution_id)
        try:
            run = GraphState.model_validate_json(body)
        except ValueError as exc:  # pydantic's ValidationError, invalid JSON among them
            raise self._refuse(
                where, f"is not a valid run row: {exc}", execution_id=execution_id
            ) from exc
        if run.execution_id != execution_id:
            raise self._refuse(where, f"holds run {run.execution_id!r}", execution_id=execution_id)
        return run

    def save_run(self, run: GraphState) -> None:
        """Replace the run row (or insert it, as ``MemoryStore`` does)."""
        eid = run.execution_id
        body = _run_json(run)
        try:
            row = (eid, body, _run_checksum(eid, body))
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, eid) from exc
        self._write(lambda conn: conn.execute(_UPSERT_RUN, row), eid)

    def append(self, entries: Sequence[JournalEntry], run: GraphState | None = None) -> None:
        """Commit ``entries`` (and ``run``'s row, when given) in one transaction.

        An entry whose ``(execution_id, kind, key, round)`` is already stored is
        ignored: the first write wins. Every value is serialized before the
        transaction starts, so one that cannot be leaves the store untouched.
        """
        rows = []
        run_row = None
        eid = run.execution_id if run is not None else None  # for errors
        try:
            for e in entries:
                data = _entry_json(e)
                checksum = _journal_checksum(e.execution_id, e.kind, e.key, e.round, e.node, data)
                rows.append((e.execution_id, e.kind, e.key, e.round, e.node, data, checksum))
            if run is not None:
                body = _run_json(run)
                run_row = (run.execution_id, body, _run_checksum(run.execution_id, body))
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, eid) from exc
        if not rows and run_row is None:
            self._connection()
            return

        def work(conn: sqlite3.Connection) -> None:
            if len(rows) == 1:
                conn.execute(_INSERT_ENTRY, rows[0])
            elif rows:
                conn.executemany(_INSERT_ENTRY, rows)
            if run_row is not None:
                conn.execute(_UPSERT_RUN, run_row)

        self._write(work, eid if eid is not None else rows[0][0])

    def journal(self, execution_id: str) -> list[JournalEntry]:
        """Every entry of the run, in commit order; all checked before any is returned."""
        rows = self._read(_SELECT_JOURNAL, execution_id, execution_id)
        return [self._entry(row, execution_id) for row in rows]

    def _entry(self, row: tuple[Any, ...], execution_id: str) -> JournalEntry:
        eid, kind, key, round_, node, data, checksum = row
        node_key = key if isinstance(key, str) else None
        where = f"journal row {key!r} ({kind!r}) of run {execution_id!r}"
        columns = (("kind", kind), ("key", key), ("node", node), ("data", data))
        self._texts(
            where, (*columns, ("checksum", checksum)), execution_id=execution_id, node_key=node_key
        )
        if type(round_) is not int:
            raise self._refuse(
                where,
                f"is not lift_graph's: its column round holds {round_!r}, not an integer",
                execution_id=execution_id,
                node_key=node_key,
            )
        self._checksum(
            where,
            checksum,
            lambda: _journal_checksum(eid, kind, key, round_, node, data),
            execution_id=execution_id,
            node_key=node_key,
        )
        try:
            return JournalEntry(
                execution_id=eid, key=key, kind=kind, node=node, data=json.loads(data), round=round_
            )
        except (ValueError, RecursionError) as exc:  # JSON or pydantic validation
            raise self._refuse(
                where,
                f"is not a valid journal entry: {exc}",
                execution_id=execution_id,
                node_key=node_key,
            ) from exc

    def cache_get(self, key: str, *, now: float) -> CacheEntry | None:
        """The entry for ``key`` unless absent or expired at ``now``."""
        rows = self._read(_SELECT_CACHE, key)
        if not rows:
            return None
        key_, node, data, created_at, expires_at, checksum = rows[0]
        where = f"cache entry {key!r}"
        self._texts(where, (("node", node), ("data", data), ("checksum", checksum)))
        if type(created_at) is not float or not (expires_at is None or type(expires_at) is float):
            raise self._refuse(
                where,
                f"is not lift_graph's: created_at {created_at!r} and expires_at "
                f"{expires_at!r} are not times",
            )
        self._checksum(
            where, checksum, lambda: _cache_checksum(key_, node, data, created_at, expires_at)
        )
        try:
            entry = CacheEntry(
                key=key_,
                node=node,
                data=json.loads(data),
                created_at=created_at,
                expires_at=expires_at,
            )
        except (ValueError, RecursionError) as exc:
            raise self._refuse(where, f"is not a valid cache entry: {exc}") from exc
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        return entry

    def cache_put(self, entry: CacheEntry) -> None:
        """Store (or replace) a cache entry."""
        data = _cache_json(entry)
        created_at = float(entry.created_at)
        expires_at = None if entry.expires_at is None else float(entry.expires_at)
        try:
            checksum = _cache_checksum(entry.key, entry.node, data, created_at, expires_at)
        except UnicodeEncodeError as exc:
            raise _not_utf8(exc, None) from exc
        row = (entry.key, entry.node, data, created_at, expires_at, checksum)
        self._write(lambda conn: conn.execute(_PUT_CACHE, row))

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise ``CheckpointError``."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise self._db_error(exc) from exc
