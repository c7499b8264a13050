"""What every ``Store`` does: the same scenarios against ``MemoryStore`` and ``SQLiteStore``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lift_graph.errors import CheckpointError
from lift_graph.sqlite_store import SQLiteStore
from lift_graph.store import CacheEntry, EntryKind, GraphState, JournalEntry, MemoryStore, Store

STORES = ["memory", "sqlite"]

# Both are context managers, which the protocol does not ask for.
AnyStore = MemoryStore | SQLiteStore


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    s: AnyStore = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "runs.db")
    try:
        yield s
    finally:
        s.close()


def make_run(execution_id: str = "run-1", **changes: Any) -> GraphState:
    """A run row with every field set, the seed's fields and resume's."""
    fields: dict[str, Any] = {
        "execution_id": execution_id,
        "state_snapshot": {"question": "why?", "answers": [1, 2.5, None, True], "nested": {}},
        "state_type": "tests.State",
        "provenance": [{"node": "Ask", "key": "0", "writes": ["question"]}],
        "metadata": {"tenant": "acme", "tags": ["a"]},
        "user_id": "user-7",
        "created_at": "2026-12-01T10:00:00+00:00",
        "updated_at": "2026-12-01T10:00:05+00:00",
        "graph": "qa",
        "status": "interrupted",
        "initial_snapshot": {"question": "why?"},
        "start": {"node": "Ask", "data": {"n": 1}},
        "result": {"value": "because", "interrupt": None},
    }
    fields.update(changes)
    return GraphState(**fields)


def entry(
    key: str, *, run: str = "run-1", kind: EntryKind = "node", round: int = 0, **data: Any
) -> JournalEntry:
    return JournalEntry(
        execution_id=run, key=key, kind=kind, node="Step", data=data or {"k": key}, round=round
    )


class Unjsonable:
    """An object json has no form for."""


UNWRITABLE: list[Any] = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(Unjsonable(), id="object"),
    pytest.param({1, 2}, id="set"),
    pytest.param("lone \ud800 surrogate", id="lone-surrogate"),
]


# -- the protocol ------------------------------------------------------------------


def test_both_stores_are_stores(store: AnyStore) -> None:
    assert isinstance(store, Store)


def test_context_manager_returns_the_store_and_closes_it(store: AnyStore) -> None:
    with store as entered:
        assert entered is store
        store.create_run(make_run())
    with pytest.raises(CheckpointError, match="closed"):
        store.load_run("run-1")
    with pytest.raises(CheckpointError, match="closed"), store:
        pass


# -- run rows ----------------------------------------------------------------------


def test_run_round_trip_keeps_every_field(store: AnyStore) -> None:
    run = make_run()
    store.create_run(run)
    loaded = store.load_run("run-1")
    assert loaded == run
    assert loaded is not run


def test_run_round_trip_with_defaults(store: AnyStore) -> None:
    run = GraphState(
        execution_id="run-2",
        state_snapshot={},
        state_type="S",
        provenance=[],
        metadata={},
        user_id=None,
        created_at="c",
        updated_at="u",
    )
    store.create_run(run)
    assert store.load_run("run-2") == run


def test_creating_a_run_twice_is_refused_and_keeps_the_first(store: AnyStore) -> None:
    store.create_run(make_run(status="running"))
    with pytest.raises(CheckpointError, match="already exists") as info:
        store.create_run(make_run(status="finished"))
    assert info.value.execution_id == "run-1"
    loaded = store.load_run("run-1")
    assert loaded is not None and loaded.status == "running"


def test_unknown_run_loads_as_none(store: AnyStore) -> None:
    assert store.load_run("nope") is None
    store.create_run(make_run())
    assert store.load_run("run-1 ") is None


def test_save_run_replaces_the_row(store: AnyStore) -> None:
    store.create_run(make_run())
    done = make_run(status="finished", result={"value": 42}, updated_at="later")
    store.save_run(done)
    assert store.load_run("run-1") == done


# -- the journal -------------------------------------------------------------------


def test_journal_returns_entries_in_commit_order(store: AnyStore) -> None:
    store.append([entry("0/2"), entry("0/1")])
    store.append([entry("0", kind="join")])
    store.append([entry("0/3", kind="interrupt"), entry("0/3", kind="answer")])
    got = [(e.key, e.kind) for e in store.journal("run-1")]
    assert got == [
        ("0/2", "node"),
        ("0/1", "node"),
        ("0", "join"),
        ("0/3", "interrupt"),
        ("0/3", "answer"),
    ]


def test_journal_entries_round_trip(store: AnyStore) -> None:
    written = [
        entry("0", n=1, f=0.1, s="x", none=None, lst=[1, [2, {"a": []}]], flag=False),
        entry("1", kind="interrupt", round=3, question="ok?"),
    ]
    store.append(written)
    assert store.journal("run-1") == written


def test_unknown_run_has_an_empty_journal(store: AnyStore) -> None:
    store.append([entry("0")])
    assert store.journal("other") == []


def test_first_write_wins_for_the_same_kind_key_and_round(store: AnyStore) -> None:
    store.append([entry("0/1", v="first")])
    store.append([entry("0/1", v="second")])
    store.append([entry("0/2", v="a"), entry("0/2", v="b")])  # within one append too
    store.append([entry("0/1", v="next round", round=1)])
    store.append([entry("0/1", v="other kind", kind="interrupt")])
    got = [(e.key, e.kind, e.round, e.data["v"]) for e in store.journal("run-1")]
    assert got == [
        ("0/1", "node", 0, "first"),
        ("0/2", "node", 0, "a"),
        ("0/1", "node", 1, "next round"),
        ("0/1", "interrupt", 0, "other kind"),
    ]


def test_append_with_a_run_updates_the_run_row(store: AnyStore) -> None:
    store.create_run(make_run(status="running"))
    after = make_run(status="finished", result={"value": 1})
    store.append([entry("0")], after)
    assert store.load_run("run-1") == after
    assert [e.key for e in store.journal("run-1")] == ["0"]


def test_append_of_only_a_run_row(store: AnyStore) -> None:
    store.create_run(make_run(status="running"))
    store.append([], make_run(status="interrupted"))
    loaded = store.load_run("run-1")
    assert loaded is not None and loaded.status == "interrupted"
    store.append([])
    assert store.journal("run-1") == []


def test_journals_of_two_runs_are_kept_apart(store: AnyStore) -> None:
    store.append([entry("0", run="a"), entry("0", run="b")])
    store.append([entry("1", run="b")])
    store.append([entry("1", run="a", v="a1")])
    assert [(e.execution_id, e.key) for e in store.journal("a")] == [("a", "0"), ("a", "1")]
    assert [(e.execution_id, e.key) for e in store.journal("b")] == [("b", "0"), ("b", "1")]


def test_threads_appending_at_once_lose_nothing(store: AnyStore) -> None:
    """4 threads x 200 single-entry appends: every entry is there, each thread's in order."""
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(200):
                store.append([entry(f"{t}/{i}", t=t, i=i)])
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    journal = store.journal("run-1")
    assert len(journal) == 800
    for t in range(4):
        assert [e.data["i"] for e in journal if e.data["t"] == t] == list(range(200))


# -- the cache ---------------------------------------------------------------------


def test_cache_put_get_and_replace(store: AnyStore) -> None:
    first = CacheEntry(key="h1", node="Summarize", data={"writes": {"s": "x"}}, created_at=100.0)
    store.cache_put(first)
    assert store.cache_get("h1", now=1e12) == first
    assert store.cache_get("h2", now=0.0) is None
    second = CacheEntry(key="h1", node="Summarize", data={"writes": {"s": "y"}}, created_at=200.5)
    store.cache_put(second)
    assert store.cache_get("h1", now=300.0) == second


def test_cache_entry_expires(store: AnyStore) -> None:
    store.cache_put(
        CacheEntry(key="h", node="N", data={"v": 1}, created_at=100.0, expires_at=160.25)
    )
    assert store.cache_get("h", now=160.0) is not None
    assert store.cache_get("h", now=160.25) is None
    assert store.cache_get("h", now=1000.0) is None


def test_cache_times_round_trip_exactly(store: AnyStore) -> None:
    stored = CacheEntry(
        key="t", node="N", data={}, created_at=1764582000.123456, expires_at=0.1 + 0.2
    )
    store.cache_put(stored)
    assert store.cache_get("t", now=0.0) == stored


# -- what cannot be written --------------------------------------------------------


@pytest.mark.parametrize("bad", UNWRITABLE)
def test_unwritable_journal_value_writes_nothing(store: AnyStore, bad: Any) -> None:
    store.create_run(make_run(status="running"))
    with pytest.raises(CheckpointError, match="no JSON form") as info:
        store.append([entry("0", v=bad)], make_run(status="finished"))
    assert (info.value.execution_id, info.value.node_key, info.value.node) == ("run-1", "0", "Step")
    assert store.journal("run-1") == []
    loaded = store.load_run("run-1")
    assert loaded is not None and loaded.status == "running"


def test_second_entry_unwritable_writes_neither(store: AnyStore) -> None:
    with pytest.raises(CheckpointError) as info:
        store.append([entry("0", v=1), entry("1", v=Unjsonable())])
    assert info.value.node_key == "1"
    assert store.journal("run-1") == []


def test_circular_value_is_refused(store: AnyStore) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(CheckpointError, match="no JSON form"):
        store.append([entry("0", v=loop)])
    assert store.journal("run-1") == []


@pytest.mark.parametrize("bad", UNWRITABLE)
def test_unwritable_run_row_writes_nothing(store: AnyStore, bad: Any) -> None:
    with pytest.raises(CheckpointError, match="no JSON form") as info:
        store.create_run(make_run(state_snapshot={"x": bad}))
    assert info.value.execution_id == "run-1"
    assert store.load_run("run-1") is None
    store.create_run(make_run())
    with pytest.raises(CheckpointError, match="no JSON form"):
        store.save_run(make_run(result={"value": bad}))
    with pytest.raises(CheckpointError, match="no JSON form"):
        store.append([], make_run(metadata={"m": [bad]}))
    assert store.load_run("run-1") == make_run()


@pytest.mark.parametrize("bad", UNWRITABLE)
def test_unwritable_cache_value_writes_nothing(store: AnyStore, bad: Any) -> None:
    with pytest.raises(CheckpointError, match="no JSON form"):
        store.cache_put(CacheEntry(key="h", node="N", data={"v": bad}, created_at=1.0))
    assert store.cache_get("h", now=0.0) is None


@pytest.mark.parametrize(
    ("created_at", "expires_at"),
    [(float("nan"), None), (float("inf"), None), (1.0, float("nan")), (1.0, float("inf"))],
)
def test_cache_times_must_be_finite(
    store: AnyStore, created_at: float, expires_at: float | None
) -> None:
    with pytest.raises(CheckpointError, match="not finite"):
        store.cache_put(
            CacheEntry(key="h", node="N", data={}, created_at=created_at, expires_at=expires_at)
        )
    assert store.cache_get("h", now=0.0) is None


# -- text --------------------------------------------------------------------------


UNICODE = 'héllo wörld · 日本語 · 🙂👍🏽 · \u0301e · zero\x00width\u200b · "quotes" \\ back'


def test_unicode_round_trips_everywhere(store: AnyStore) -> None:
    run = make_run(
        execution_id=f"run {UNICODE}",
        state_snapshot={UNICODE: UNICODE},
        user_id=UNICODE,
        metadata={"m": [UNICODE]},
    )
    store.create_run(run)
    assert store.load_run(run.execution_id) == run
    written = JournalEntry(
        execution_id=run.execution_id,
        key=UNICODE,
        kind="node",
        node=UNICODE,
        data={UNICODE: [UNICODE]},
    )
    store.append([written])
    assert store.journal(run.execution_id) == [written]
    cached = CacheEntry(key=UNICODE, node=UNICODE, data={"v": UNICODE}, created_at=1.0)
    store.cache_put(cached)
    assert store.cache_get(UNICODE, now=0.0) == cached


# -- closing -----------------------------------------------------------------------


CALLS: dict[str, Callable[[AnyStore], object]] = {
    "create_run": lambda s: s.create_run(make_run("new")),
    "load_run": lambda s: s.load_run("run-1"),
    "save_run": lambda s: s.save_run(make_run()),
    "append": lambda s: s.append([entry("9")]),
    "append-nothing": lambda s: s.append([]),
    "journal": lambda s: s.journal("run-1"),
    "cache_get": lambda s: s.cache_get("h", now=0.0),
    "cache_put": lambda s: s.cache_put(CacheEntry(key="h", node="N", data={}, created_at=1.0)),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_closed_store_refuses_every_call(store: AnyStore, call: str) -> None:
    store.create_run(make_run())
    store.close()
    store.close()  # closing again is harmless
    with pytest.raises(CheckpointError, match="closed"):
        CALLS[call](store)
