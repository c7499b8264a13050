"""What only ``SQLiteStore`` does: a shared file, and refusing what it did not write.

Rows are tampered with through a raw ``sqlite3`` connection (or by editing the file's
bytes); the store must refuse them with ``CheckpointError`` and never half-load a run.
The pickle tests create pickled rows with ``pickle`` and check that loading them
never runs the payload.
"""

from __future__ import annotations

import ast
import contextlib
import pickle
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lift_graph
from lift_graph.errors import CheckpointError, ConfigurationError
from lift_graph.sqlite_store import SQLiteStore, _cache_checksum, _journal_checksum, _run_checksum
from lift_graph.store import CacheEntry, GraphState, JournalEntry

PAYLOAD = {"answer": "forty-two", "score": 0.5}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, as a tool (or an attacker) editing the file would use."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def make_run(execution_id: str = "run-1", status: Any = "running") -> GraphState:
    return GraphState(
        execution_id=execution_id,
        state_snapshot={"q": "why?"},
        state_type="S",
        provenance=[],
        metadata={},
        user_id=None,
        created_at="c",
        updated_at="u",
        status=status,
    )


def entry(key: str, run: str = "run-1", **data: Any) -> JournalEntry:
    return JournalEntry(
        execution_id=run, key=key, kind="node", node="Step", data=data or dict(PAYLOAD)
    )


def seeded(db: Path) -> None:
    """Run ``run-1`` with entries 0, 1, 2, run ``run-2`` with one, and a cache entry."""
    with SQLiteStore(db) as s:
        s.create_run(make_run("run-1"))
        s.create_run(make_run("run-2"))
        s.append([entry("0"), entry("1"), entry("2")])
        s.append([entry("0", run="run-2")])
        s.cache_put(CacheEntry(key="h", node="N", data={"v": "cached"}, created_at=1.0))


def refused(db: Path, load: str, match: str) -> CheckpointError:
    """Open the store, load ``load`` (journal:ID, run:ID or cache:KEY) and return the error."""
    what, _, name = load.partition(":")
    with SQLiteStore(db) as s, pytest.raises(CheckpointError, match=match) as info:
        if what == "journal":
            s.journal(name)
        elif what == "run":
            s.load_run(name)
        else:
            s.cache_get(name, now=0.0)
    return info.value


# -- the file ----------------------------------------------------------------------


def test_pragmas(db: Path) -> None:
    with SQLiteStore(db, busy_timeout=0.25) as s:
        conn = s._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 250
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept by the file


def test_repr_names_the_path(db: Path) -> None:
    s = SQLiteStore(db)
    assert repr(s) == f"SQLiteStore({str(db)!r})"
    s.close()
    assert repr(s) == f"SQLiteStore({str(db)!r}, closed)"
    with pytest.raises(CheckpointError, match=r"SQLiteStore\(.*runs\.db', closed\) was closed"):
        s.journal("run-1")


def test_in_memory_database() -> None:
    with SQLiteStore(":memory:") as s:
        s.create_run(make_run())
        s.append([entry("0")])
        assert s.load_run("run-1") == make_run()
        assert s.journal("run-1") == [entry("0")]


def test_rows_survive_closing_and_reopening(db: Path) -> None:
    seeded(db)
    with SQLiteStore(db) as s:
        assert s.load_run("run-1") == make_run("run-1")
        assert [e.key for e in s.journal("run-1")] == ["0", "1", "2"]
        cached = s.cache_get("h", now=0.0)
        assert cached is not None and cached.data == {"v": "cached"}


def test_two_stores_on_one_file_see_each_others_commits(db: Path) -> None:
    with SQLiteStore(db) as first, SQLiteStore(db) as second:
        first.create_run(make_run())
        first.append([entry("0", v="first")])
        first.cache_put(CacheEntry(key="h", node="N", data={}, created_at=1.0))
        assert second.load_run("run-1") == make_run()
        assert second.journal("run-1") == [entry("0", v="first")]
        assert second.cache_get("h", now=0.0) is not None
        with pytest.raises(CheckpointError, match="already exists"):
            second.create_run(make_run())
        second.append([entry("0", v="second"), entry("1", v="second")])
        assert [e.data["v"] for e in first.journal("run-1")] == ["first", "second"]


def test_processes_appending_to_one_file_lose_nothing(db: Path) -> None:
    SQLiteStore(db).close()  # both processes find the tables
    script = textwrap.dedent(
        """
        import sys
        from lift_graph.sqlite_store import SQLiteStore
        from lift_graph.store import JournalEntry
        path, name = sys.argv[1], sys.argv[2]
        with SQLiteStore(path, busy_timeout=60) as s:
            for i in range(100):
                s.append([JournalEntry(
                    execution_id="run-1", key=f"{name}/{i}", kind="node", node="N", data={"i": i}
                )])
        """
    )
    root = str(Path(lift_graph.__file__).resolve().parent.parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(db), name],
            env={"PYTHONPATH": root, "PATH": ""},
            stderr=subprocess.PIPE,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with SQLiteStore(db) as s:
        keys = [e.key for e in s.journal("run-1")]
    assert sorted(keys) == sorted(f"{n}/{i}" for n in "ab" for i in range(100))
    for name in "ab":
        assert [k for k in keys if k.startswith(name)] == [f"{name}/{i}" for i in range(100)]


def test_a_write_that_waits_too_long_is_refused_and_writes_nothing(db: Path) -> None:
    with SQLiteStore(db, busy_timeout=0) as s, raw(db) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file
        with pytest.raises(CheckpointError, match="locked by another connection") as info:
            s.append([entry("0")])
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert info.value.execution_id == "run-1"
        other.execute("COMMIT")
        assert s.journal("run-1") == []
        s.append([entry("0")])
        assert s.journal("run-1") == [entry("0")]


def test_entries_and_run_row_land_together_or_not_at_all(db: Path) -> None:
    """A run row the database refuses (here: a trigger) takes the entries down with it."""
    with SQLiteStore(db) as s:
        s.create_run(make_run())
        with raw(db) as conn:
            conn.execute(
                "CREATE TRIGGER no_finish BEFORE UPDATE ON runs"
                " BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
            )
        with pytest.raises(CheckpointError, match="refused by trigger") as info:
            s.append([entry("0"), entry("1")], make_run(status="finished"))
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert s.journal("run-1") == []
        assert s.load_run("run-1") == make_run()
        s.append([entry("0")])  # the store is still usable
        assert [e.key for e in s.journal("run-1")] == ["0"]


def test_an_integer_beyond_64_bits_writes_nothing(db: Path) -> None:
    with SQLiteStore(db) as s:
        big = JournalEntry(
            execution_id="run-1", key="1", kind="node", node="N", data={}, round=2**70
        )
        with pytest.raises(CheckpointError, match="64-bit"):
            s.append([entry("0"), big])
        assert s.journal("run-1") == []


def test_busy_timeout_must_be_finite_and_not_negative(db: Path) -> None:
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="busy_timeout"):
            SQLiteStore(db, busy_timeout=bad)


def test_checksums_are_stable() -> None:
    """Files written today must verify tomorrow: the checksum of a row never changes."""
    data = '{"v":"é🙂"}'
    assert _journal_checksum("run-1", "node", "0/1", 0, "Step", data) == (
        "51c0c5bb9dfd72b9a6af42125c58a311"
    )


# -- files that are not a lift_graph store ----------------------------------------


def test_a_file_that_is_not_a_database_is_refused_by_the_constructor(db: Path) -> None:
    db.write_bytes(b"this is not an sqlite database, just text\n" * 200)
    with pytest.raises(CheckpointError, match="is not a readable lift_graph store") as info:
        SQLiteStore(db)
    assert str(db) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_garbage_over_the_header_is_refused(db: Path) -> None:
    seeded(db)
    with db.open("r+b") as f:
        f.write(b"\xde\xad\xbe\xef" * 25)
    with pytest.raises(CheckpointError, match="is not a readable lift_graph store") as info:
        SQLiteStore(db)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_truncated_database_is_refused(db: Path, fraction: float) -> None:
    with SQLiteStore(db) as s:  # closing checkpoints the WAL into the file
        s.append([entry(str(i), v="x" * 300) for i in range(300)])
    size = db.stat().st_size
    assert size > 40 * 4096 and not Path(f"{db}-wal").exists()
    with db.open("r+b") as f:
        f.truncate(int(size * fraction))
    # Raised by the constructor or by the first read, whichever reaches a lost page.
    with (
        pytest.raises(CheckpointError, match="is not a readable lift_graph store") as info,
        SQLiteStore(db) as s,
    ):
        s.journal("run-1")
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert str(db) in str(info.value)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot open the store"):
        SQLiteStore(tmp_path / "missing-dir" / "runs.db")


def test_an_empty_file_becomes_a_store(db: Path) -> None:
    db.write_bytes(b"")
    with SQLiteStore(db) as s:
        s.create_run(make_run())
    with SQLiteStore(db) as s:
        assert s.load_run("run-1") == make_run()


def test_a_newer_schema_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(CheckpointError, match=r"schema version 2.*newer lift_graph"):
        SQLiteStore(db)


def test_another_applications_database_is_refused(db: Path) -> None:
    with raw(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(CheckpointError, match=r"another application.*users"):
        SQLiteStore(db)
    with raw(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["users"]


# -- rows that are not lift_graph's ------------------------------------------------


def test_a_journal_row_edited_by_one_character_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        (data,) = conn.execute("SELECT data FROM journal WHERE key = '1'").fetchone()
        edited = data.replace("forty-two", "forty-twO")
        assert edited != data and edited.startswith("{")
        conn.execute("UPDATE journal SET data = ? WHERE key = '1'", (edited,))
    error = refused(db, "journal:run-1", "journal row '1'.*does not match its checksum")
    assert (error.execution_id, error.node_key) == ("run-1", "1")
    with SQLiteStore(db) as s:  # another run is not affected
        assert s.journal("run-2") == [entry("0", run="run-2")]


@pytest.mark.parametrize(
    ("column", "value"), [("kind", "join"), ("key", "9"), ("round", 1), ("node", "Other")]
)
def test_a_journal_row_with_any_column_edited_is_refused(
    db: Path, column: str, value: object
) -> None:
    seeded(db)
    with raw(db) as conn:
        conn.execute(f"UPDATE journal SET {column} = ? WHERE key = '2'", (value,))
    refused(db, "journal:run-1", "does not match its checksum")


def test_a_byte_flipped_in_the_file_is_refused(db: Path) -> None:
    """Corruption SQLite cannot see (the page is still well formed) fails the checksum."""
    with SQLiteStore(db) as s:
        s.append([entry("0", v="needle-in-the-file")])
    blob = db.read_bytes()
    at = blob.index(b"needle-in-the-file")
    db.write_bytes(blob[:at] + b"N" + blob[at + 1 :])
    refused(db, "journal:run-1", "does not match its checksum")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ('{"v":', "not a valid journal entry"),
        ("[1, 2]", "not a valid journal entry"),
        ('{"v": NaN', "not a valid journal entry"),
        ("", "not a valid journal entry"),
    ],
)
def test_a_journal_row_with_invalid_json_is_refused(db: Path, data: str, match: str) -> None:
    seeded(db)
    with raw(db) as conn:
        conn.execute("UPDATE journal SET data = ? WHERE key = '1'", (data,))
    refused(db, "journal:run-1", "does not match its checksum")
    # With a checksum recomputed to match, the JSON itself is refused.
    with raw(db) as conn:
        checksum = _journal_checksum("run-1", "node", "1", 0, "Step", data)
        conn.execute("UPDATE journal SET checksum = ? WHERE key = '1'", (checksum,))
    error = refused(db, "journal:run-1", match)
    assert (error.execution_id, error.node_key) == ("run-1", "1")


def test_a_journal_row_of_an_unknown_kind_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        data = '{"v":1}'
        checksum = _journal_checksum("run-1", "bogus", "1", 0, "Step", data)
        conn.execute(
            "UPDATE journal SET kind = 'bogus', data = ?, checksum = ? WHERE key = '1'",
            (data, checksum),
        )
    refused(db, "journal:run-1", "not a valid journal entry")


def test_a_journal_row_with_a_column_of_the_wrong_type_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        conn.execute("UPDATE journal SET round = 'first' WHERE key = '1'")
    refused(db, "journal:run-1", "column round holds 'first', not an integer")
    with raw(db) as conn:
        conn.execute("UPDATE journal SET round = 0, node = X'53746570' WHERE key = '1'")  # Step
    refused(db, "journal:run-1", r"column node holds 4 bytes \(a BLOB\), not text")


def test_an_edited_run_row_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        (body,) = conn.execute("SELECT body FROM runs WHERE execution_id = 'run-1'").fetchone()
        edited = body.replace('"status":"running"', '"status":"finished"')
        assert edited != body
        conn.execute("UPDATE runs SET body = ? WHERE execution_id = 'run-1'", (edited,))
    error = refused(db, "run:run-1", "the row of run 'run-1' does not match its checksum")
    assert error.execution_id == "run-1"
    with SQLiteStore(db) as s:
        assert s.load_run("run-2") == make_run("run-2")


def test_a_run_row_that_fails_its_model_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        body = '{"execution_id":"run-1","status":"exploded"}'
        conn.execute(
            "UPDATE runs SET body = ?, checksum = ? WHERE execution_id = 'run-1'",
            (body, _run_checksum("run-1", body)),
        )
    refused(db, "run:run-1", "is not a valid run row")


def test_a_run_row_holding_another_run_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        (body,) = conn.execute("SELECT body FROM runs WHERE execution_id = 'run-2'").fetchone()
        conn.execute(
            "UPDATE runs SET body = ?, checksum = ? WHERE execution_id = 'run-1'",
            (body, _run_checksum("run-1", body)),
        )
    refused(db, "run:run-1", "holds run 'run-2'")


def test_an_edited_cache_row_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        conn.execute("UPDATE cache SET expires_at = 5.0 WHERE key = 'h'")
    refused(db, "cache:h", "cache entry 'h' does not match its checksum")


def test_a_cache_row_with_times_that_are_not_numbers_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        conn.execute("UPDATE cache SET created_at = 'yesterday' WHERE key = 'h'")
    refused(db, "cache:h", "are not times")


def test_a_cache_row_with_invalid_json_is_refused(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        checksum = _cache_checksum("h", "N", "{oops", 1.0, None)
        conn.execute("UPDATE cache SET data = '{oops', checksum = ? WHERE key = 'h'", (checksum,))
    refused(db, "cache:h", "not a valid cache entry")


# -- pickles -----------------------------------------------------------------------


def _canary_fired(path: str) -> None:
    """What unpickling a ``Canary`` calls: it leaves a file behind."""
    Path(path).write_text("unpickled!")


class Canary:
    """Pickles to a call of ``_canary_fired``: loading it runs code, as a malicious pickle would."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _canary_fired, (str(self.path),)


def malicious(marker: Path) -> bytes:
    return pickle.dumps({"answer": Canary(marker)}, protocol=pickle.HIGHEST_PROTOCOL)


def test_the_canary_would_fire_if_unpickled(tmp_path: Path) -> None:
    """Proves the pickle tests below would notice an unpickling store."""
    marker = tmp_path / "fired"
    pickle.loads(malicious(marker))
    assert marker.read_text() == "unpickled!"


# How the pickle reaches the column: as a BLOB, as the bytes cast to TEXT (not UTF-8),
# or as text decoded from Latin-1 (U+0080 then the protocol byte).
PICKLE_FORMS: dict[str, tuple[str, Callable[[bytes], bytes | str]]] = {
    "blob": ("?", lambda b: b),
    "cast-to-text": ("CAST(? AS TEXT)", lambda b: b),
    "latin-1-text": ("?", lambda b: b.decode("latin-1")),
}


@pytest.mark.parametrize("form", list(PICKLE_FORMS))
@pytest.mark.parametrize("table", ["journal", "runs", "cache"])
def test_a_pickled_row_is_refused_and_never_unpickled(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, form: str
) -> None:
    seeded(db)
    marker = tmp_path / "fired"
    for name in ("load", "loads", "Unpickler"):  # a tripwire as well as the canary
        monkeypatch.setattr(pickle, name, lambda *a, **k: pytest.fail("pickle was called"))
    placeholder, convert = PICKLE_FORMS[form]
    column, where, load = {
        "journal": ("data", "key = '1'", "journal:run-1"),
        "runs": ("body", "execution_id = 'run-1'", "run:run-1"),
        "cache": ("data", "key = 'h'", "cache:h"),
    }[table]
    with raw(db) as conn:
        conn.execute(
            f"UPDATE {table} SET {column} = {placeholder} WHERE {where}",
            (convert(malicious(marker)),),
        )
    error = refused(db, load, f"column {column} holds a pickle.*never unpickles")
    assert "not written by lift_graph" in str(error)
    assert not marker.exists()


def test_bytes_that_are_not_a_pickle_are_refused_too(db: Path) -> None:
    seeded(db)
    with raw(db) as conn:
        conn.execute("UPDATE journal SET data = ? WHERE key = '1'", (b'{"v":1}',))
    refused(db, "journal:run-1", r"column data holds 7 bytes \(a BLOB\), not text")


def test_the_store_modules_do_not_import_pickle() -> None:
    banned = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"}
    package = Path(lift_graph.__file__).parent
    for module in ("store.py", "sqlite_store.py"):
        tree = ast.parse((package / module).read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & banned, module
