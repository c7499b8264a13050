"""The benchmark suite at tiny sizes, so it cannot rot.

Every workload runs in-process on lift_graph and asyncio (and on the peers when
they are installed) and must produce finite, plausible figures. Timing targets are
not checked here: they belong to ``python -m benchmarks.run --check``, not to a
test that must pass on a loaded CI machine.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

# ``benchmarks`` is a directory of the repository, not an installed package: make it
from benchmarks import run as bench_run
from benchmarks._harness import (
    ASYNCIO,
    LANGGRAPH,
    LIFT,
    PYDANTIC_GRAPH,
    BenchmarkError,
    Config,
    Outcome,
    Row,
    Target,
    check,
    peer_missing,
)
from benchmarks.workloads import NAMES, load
from benchmarks.workloads.jitter import greedy_bound, sleeps_for
from benchmarks.workloads.rpm import max_in_window

TINY = replace(
    Config.quick_mode(),
    reps=2,
    chain_n=200,
    fan_sizes=(50, 200),
    unbalanced_scale=0.05,
    jitter_sizes=(24,),
    jitter_scale=0.2,
    iso_docs=300,
    iso_nodes=8,
    rpm_nodes=90,
    rpm_limit=30,
    mem_branches=2000,
    merge_branches=2000,
    dspy_questions=16,
    dspy_slots=8,
    dspy_latency=0.01,
    dspy_rollouts=4,
    durability_n=20,
    crash_kills=2,
    batch_n=100,
    bp_calls=300,
    bp_limit=60,
    bp_http_calls=12,
    ray_n=200,
    ray_reps=1,
    ray_warmup=0,
    ray_permits_sequential=100,
    ray_permits_concurrent=640,
)


def _rows(outcome: Outcome, engine: str, prefix: str = "") -> list[Row]:
    return [
        r
        for r in outcome.rows
        if r.engine == engine and r.workload.startswith(prefix) and r.figure is not None
    ]


def fig(row: Row) -> float:
    assert row.figure is not None, row
    return row.figure


def _assert_finite(outcome: Outcome) -> None:
    assert outcome.rows, "a workload produced no rows"
    assert _rows(outcome, LIFT), "no lift_graph figure"
    for r in outcome.rows:
        if r.figure is None:
            assert r.note, f"{r.engine} on {r.workload} has neither a figure nor a reason"
            continue
        assert math.isfinite(r.figure), r
        # Differences of medians (isolation overhead) may dip below zero; nothing else.
        assert r.figure >= 0 or r.workload.startswith("isolation"), r
        if r.versus_lift is not None:
            assert math.isfinite(r.versus_lift), r


def _peers_present(outcome: Outcome, workload_prefix: str) -> None:
    """An installed peer has a figure; a missing one a row that says why."""
    for engine in (LANGGRAPH, PYDANTIC_GRAPH):
        rows = [r for r in outcome.rows if r.engine == engine]
        if peer_missing(engine, TINY) is None:
            assert any(r.figure is not None for r in rows if r.workload.startswith(workload_prefix))
        else:
            assert rows and all(r.figure is None and r.note for r in rows)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return {}


def _run(name: str, outcomes: dict[str, Outcome]) -> Outcome:
    if name not in outcomes:
        outcomes[name] = load(name)(TINY)
    return outcomes[name]


def test_every_workload_is_registered() -> None:
    assert list(NAMES) == [
        "chain",
        "fanout",
        "unbalanced",
        "jitter",
        "isolation",
        "rpm",
        "memory",
        "merge",
        "dspy_rag",
        "durability",
        "crash",
        "batch",
        "backpressure",
        "tracing",
        "ray",
    ]


def test_chain(outcomes: dict[str, Outcome]) -> None:
    out = _run("chain", outcomes)
    _assert_finite(out)
    (mine,) = _rows(out, LIFT)
    assert 0 < fig(mine) < 10_000  # µs per node
    assert {r.engine for r in _rows(out, ASYNCIO + " (await)")} == {ASYNCIO + " (await)"}
    _peers_present(out, "chain")
    assert out.targets[0].what == "lift_graph µs/node"


def test_fanout(outcomes: dict[str, Outcome]) -> None:
    out = _run("fanout", outcomes)
    _assert_finite(out)
    for n in TINY.fan_sizes:
        (mine,) = _rows(out, LIFT, f"fan-out {n}")
        assert 0 < fig(mine) < 10_000
        (floor,) = _rows(out, ASYNCIO, f"fan-out {n}")
        assert fig(floor) > 0
    (growth,) = _rows(out, LIFT, "fan-out growth")
    assert 0 < fig(growth) < 100
    _peers_present(out, "fan-out")


def test_unbalanced(outcomes: dict[str, Outcome]) -> None:
    out = _run("unbalanced", outcomes)
    _assert_finite(out)
    for engine in (LIFT, ASYNCIO):
        (row,) = _rows(out, engine)
        # Nothing finishes before its longest path; the sleeps are tiny, so allow a lot.
        assert 0.95 <= fig(row) < 10, row
        assert row.extra["makespan_s"] >= row.extra["ideal_s"] * 0.95


def test_jitter(outcomes: dict[str, Outcome]) -> None:
    out = _run("jitter", outcomes)
    _assert_finite(out)
    for engine in (LIFT, ASYNCIO):
        (row,) = _rows(out, engine)
        assert 0.95 <= fig(row) < 10, row
        assert row.extra["peak"] == TINY.jitter_slots, row


def test_greedy_bound_and_sleeps() -> None:
    assert greedy_bound([1.0, 1.0, 1.0], 2) == 2.0
    assert greedy_bound([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert greedy_bound([], 8) == 0.0
    sleeps = sleeps_for(200)
    assert sleeps == sleeps_for(200), "the sleeps must not depend on the run"
    assert all(0.010 <= d <= 0.100 for d in sleeps)


def test_isolation(outcomes: dict[str, Outcome]) -> None:
    out = _run("isolation", outcomes)
    _assert_finite(out)
    (mine,) = _rows(out, LIFT)
    assert abs(fig(mine)) < 1000  # ms per node; a difference of medians may dip below 0
    (deep,) = _rows(out, "copy.deepcopy(state)")
    assert fig(deep) > 0


def test_rpm(outcomes: dict[str, Outcome]) -> None:
    out = _run("rpm", outcomes)
    _assert_finite(out)
    throughput, window = _rows(out, LIFT)
    assert 0 < fig(throughput) <= 1.0 + 1e-9
    assert 0 < fig(window) <= TINY.rpm_limit


def test_max_in_window() -> None:
    assert max_in_window([0.0, 0.0, 59.9, 60.0, 120.0]) == 3
    assert max_in_window([0.0, 60.0, 120.0]) == 1
    assert max_in_window([]) == 0


def test_memory(outcomes: dict[str, Outcome]) -> None:
    out = _run("memory", outcomes)
    _assert_finite(out)
    for engine in (LIFT, ASYNCIO):
        (row,) = _rows(out, engine)
        assert 1 < fig(row) < 100_000  # MB


def test_merge(outcomes: dict[str, Outcome]) -> None:
    out = _run("merge", outcomes)
    _assert_finite(out)
    engines = {r.engine for r in out.rows if r.workload.startswith("merge fork")}
    kinds = ("append", "merge_dict", "declared nothing", "declared append", "declared merge_dict")
    assert engines == {LIFT, *(f"{LIFT} ({k})" for k in kinds)}
    assert [t.what for t in out.targets] == [
        "append fork / write-nothing fork",
        "merge_dict fork / write-nothing fork",
    ]
    assert all(t.value is not None and t.value > 0 and t.limit == 1.5 for t in out.targets)


def test_dspy_rag(outcomes: dict[str, Outcome]) -> None:
    pytest.importorskip("dspy")
    out = _run("dspy_rag", outcomes)
    _assert_finite(out)
    ideal = 2 * TINY.dspy_latency * 1000  # ms: 16 questions, 8 at a time
    rag = [r for r in out.rows if r.workload.startswith("dspy RAG")]
    assert {(r.workload.split(", ")[1], r.engine) for r in rag} == {
        ("tutorial module", LIFT),
        ("tutorial module", "dspy.Parallel"),
        ("module with aforward", LIFT),
        ("module with aforward", "dspy.Parallel"),
        ("module with aforward", ASYNCIO),
    }
    for row in rag:
        assert ideal * 0.95 <= fig(row) < ideal * 20, row
    best = [r for r in out.rows if r.workload.startswith("dspy BestOfN")]
    assert {r.engine for r in best} == {LIFT, "dspy.BestOfN", ASYNCIO}
    for row in best:
        assert TINY.dspy_latency * 1000 * 0.95 <= fig(row) < TINY.dspy_latency * 1000 * 20, row
    assert [t.what for t in out.targets] == [
        "lift_graph / dspy.Parallel",
        "lift_graph / asyncio acall gather",
        "fork / dspy.BestOfN",
    ]
    assert all(t.value is not None and t.value > 0 for t in out.targets)


def test_durability(outcomes: dict[str, Outcome]) -> None:
    from benchmarks.workloads.durability import sqlite_peer_missing, store_missing

    out = _run("durability", outcomes)
    n = TINY.durability_n
    wl, bare = f"durability chain {n}", f"durability chain {n}, no store"
    for r in out.rows:
        assert r.figure is not None or r.note, r
        if r.figure is not None:
            assert math.isfinite(r.figure) and abs(r.figure) < 100_000, r  # µs per node
    # The chain without a store always runs; journaling costs (differences of
    # medians) are checked for being finite only.
    (mine,) = _rows(out, LIFT, bare)
    assert 0 < fig(mine) < 10_000
    (floor,) = _rows(out, "sqlite3 (WAL, synchronous=FULL)", wl)
    assert fig(floor) > 0
    lift_rows = [r for r in out.rows if r.workload == wl and r.engine == LIFT]
    assert len(lift_rows) == 1
    if store_missing() is None:
        assert lift_rows[0].figure is not None
    else:
        assert lift_rows[0].figure is None and "store not available" in lift_rows[0].note
    saver = [
        r for r in out.rows if r.workload == wl and r.engine == f"{LANGGRAPH} (AsyncSqliteSaver)"
    ]
    assert len(saver) == 1
    assert (saver[0].figure is not None) == (sqlite_peer_missing(TINY) is None), saver
    assert [t.what for t in out.targets] == ["lift_graph journaling µs/node (SQLiteStore)"]
    assert out.targets[0].limit == 100.0


def test_durability_without_peers() -> None:
    out = load("durability")(replace(TINY, reps=1, warmup=0, durability_n=5, peers=False))
    lg = [r for r in out.rows if r.engine.startswith(LANGGRAPH)]
    assert lg and all(r.figure is None and "peers disabled" in r.note for r in lg)


def test_crash(outcomes: dict[str, Outcome]) -> None:
    out = _run("crash", outcomes)
    _assert_finite(out)
    kills = TINY.crash_kills
    figures = {r.workload.removeprefix(f"crash {kills} kills"): fig(r) for r in _rows(out, LIFT)}
    assert figures[" resumes = reference"] == kills
    assert figures[" nodes run twice"] == 0
    assert 0 < figures[" resume time"] < 10_000  # ms
    assert 0 <= figures[""] <= kills
    assert [t.status for t in out.targets[:3]] == ["PASS", "PASS", "PASS"]


def test_batch(outcomes: dict[str, Outcome]) -> None:
    from benchmarks.workloads.batch import LIFT_IMAP, bad_inputs

    out = _run("batch", outcomes)
    _assert_finite(out)
    n, slots = TINY.batch_n, TINY.batch_slots
    for engine in (LIFT, LIFT_IMAP, ASYNCIO):
        (rate, mem) = _rows(out, engine, f"batch {n} x{slots}")
        # Three sleeps per input, `slots` inputs at once: never faster than that allows.
        assert 0 < fig(rate) <= slots / (3 * TINY.batch_sleep) * 1.05, rate
        assert 1 <= rate.extra["peak_in_flight"] <= slots
        assert mem.workload.endswith("memory") and fig(mem) > 0 and "B/input" in mem.note
    _peers_present(out, "batch")
    assert [t.what for t in out.targets] == [
        "lift_graph inputs in flight (max_concurrency)",
        "lift_graph / asyncio throughput",
        "lift_graph / LangGraph throughput",
        "lift_graph map KB/input (results kept)",
        "lift_graph imap peak / map peak",
    ]
    assert out.targets[0].ok
    assert bad_inputs(1000, 3) == {166, 500, 833}


def test_backpressure(outcomes: dict[str, Outcome]) -> None:
    from benchmarks.workloads.backpressure import HINTED

    out = _run("backpressure", outcomes)
    _assert_finite(out)
    fake = [r for r in out.rows if r.workload.startswith("backpressure 300 calls") and r.extra]
    assert {r.engine for r in fake} >= {LIFT, f"{LIFT}, per-node Retry() (before)"}
    for row in fake:
        assert 0 <= row.extra["share_429"] <= 1 and row.extra["requests"] >= TINY.bp_calls
    mine = next(r for r in fake if r.engine == LIFT)
    assert mine.extra["success"] == 1.0 and mine.extra["inside_pauses"] == 0
    http = [r for r in out.rows if r.workload.startswith("backpressure HTTP") and r.extra]
    if http:  # dspy installed
        assert {r.engine for r in http} == {LIFT, "dspy.Parallel", HINTED}
    assert all(t.ok is not None for t in out.targets)


def test_check_rejects_a_wrong_answer() -> None:
    with pytest.raises(BenchmarkError, match="LangGraph: fan-out gave 9"):
        check(LANGGRAPH, "fan-out", 9, 10)


def test_missing_peer_is_a_row_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in ("langgraph", "pydantic_graph") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert "not installed" in (peer_missing(LANGGRAPH, TINY) or "")
    assert peer_missing(LIFT, TINY) is None
    out = load("chain")(replace(TINY, reps=1, warmup=0, chain_n=20))
    for engine in (LANGGRAPH, PYDANTIC_GRAPH):
        (row,) = [r for r in out.rows if r.engine == engine]
        assert row.figure is None and "not installed" in row.note
    assert {t.status for t in out.targets[1:]} == {"SKIP"}


def _fake_workload(ok: bool) -> Any:
    def run(cfg: Config) -> Outcome:
        out = Outcome()
        out.add(Row("fake", LIFT, 2.0, "µs"), Row("fake", ASYNCIO, 1.0, "µs"))
        out.targets.append(Target("fake", "lift_graph µs", 2.0, "<=", 3.0 if ok else 1.0))
        return out.compare()

    return run


@pytest.mark.parametrize(("ok", "flags", "status"), [(True, [], 0), (False, [], 0)])
def test_exit_status_without_check(
    monkeypatch: pytest.MonkeyPatch, ok: bool, flags: list[str], status: int
) -> None:
    monkeypatch.setattr(bench_run, "load", lambda name: _fake_workload(ok))
    assert bench_run.main(["--only", "chain", *flags]) == status


def test_check_fails_on_a_failed_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_run, "load", lambda name: _fake_workload(False))
    assert bench_run.main(["--only", "chain", "--check"]) == 1
    assert "FAIL" in capsys.readouterr().out
    monkeypatch.setattr(bench_run, "load", lambda name: _fake_workload(True))
    assert bench_run.main(["--only", "chain", "--check"]) == 0


def test_a_crashing_workload_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(cfg: Config) -> Outcome:
        raise BenchmarkError("wrong answer")

    monkeypatch.setattr(bench_run, "load", lambda name: boom)
    assert bench_run.main(["--only", "chain"]) == 2


def test_markdown_block_is_rewritten_in_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench_run, "load", lambda name: _fake_workload(True))
    path = tmp_path / "RESULTS.md"
    assert bench_run.main(["--quick", "--only", "chain", "--markdown", str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    assert bench_run.BEGIN in text and bench_run.END in text
    assert "python -m benchmarks.run --quick --only chain --markdown" in text
    assert "cores (os.cpu_count())" in text and "Python 3." in text
    assert "| fake | lift_graph | 2.00 | µs | 1.00x |" in text
    path.write_text(text + "\n## Notes kept by hand\n", encoding="utf-8")
    assert bench_run.main(["--only", "chain", "--markdown", str(path)]) == 0
    again = path.read_text(encoding="utf-8")
    assert again.count(bench_run.BEGIN) == 1 and "## Notes kept by hand" in again


def test_unknown_workload_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        bench_run.main(["--only", "nope"])
    assert exc.value.code == 2


def test_tracing(outcomes: dict[str, Outcome]) -> None:
    from benchmarks.workloads.tracing import OFF, SDK_SPAN, TRACED

    out = _run("tracing", outcomes)
    _assert_finite(out)
    engines = [r.engine for r in out.rows]
    assert engines == [LIFT, OFF, TRACED, SDK_SPAN]
    untraced, traced = fig(_rows(out, LIFT)[0]), fig(_rows(out, TRACED)[0])
    assert 0 < untraced < traced  # spans cost something: the traced run did make them
    assert [t.what for t in out.targets] == [
        "untraced (tracer=None) / tracer=False",
        "traced overhead per node / one SDK span",
    ]


def test_ray(outcomes: dict[str, Outcome]) -> None:
    from benchmarks.workloads.ray_backend import (
        ACTOR_CALL,
        ON_RAY,
        RAY_BATCHED,
        RAY_RUNS,
        RAY_SEQUENTIAL,
        RAY_SINGLE,
    )

    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("Ray could not be installed on this platform")
    out = _run("ray", outcomes)
    _assert_finite(out)
    n = TINY.ray_n
    wl = f"ray {n} x64"
    rows = {r.engine: r for r in out.rows if r.workload == wl}
    assert list(rows) == [LIFT, ON_RAY, RAY_RUNS, ASYNCIO]
    ideal = 64 / TINY.ray_latency  # inputs/s: 64 calls of ray_latency at once
    for row in rows.values():
        assert 0 < fig(row) <= ideal * 1.05, row
    whole = rows[ON_RAY].extra
    # The map call is its start-up, its runs and its closing, one after the other.
    assert whole["startup_s"] > 0 and whole["closing_s"] >= 0
    assert whole["runs_s"] >= n * TINY.ray_latency / 64 * 0.95
    parts = whole["startup_s"] + whole["runs_s"] + whole["closing_s"]
    assert parts == pytest.approx(whole["seconds"], rel=0.05)
    assert whole["permits_per_call"] >= 1
    (startup,) = [r for r in out.rows if r.workload == f"ray {n} start-up"]
    assert 0 < fig(startup) < 60_000  # ms

    seq = {r.engine: r for r in out.rows if r.workload.endswith(" sequential")}
    assert list(seq) == [LIFT, RAY_SEQUENTIAL, ACTOR_CALL]
    conc = {r.engine: r for r in out.rows if r.workload.endswith(" x64 at once")}
    assert list(conc) == [LIFT, RAY_BATCHED, RAY_SINGLE]
    # A permit from the actor costs at least a round trip; a local one, none.
    assert fig(seq[LIFT]) < fig(seq[RAY_SEQUENTIAL])
    assert seq[RAY_SEQUENTIAL].extra["permits_per_call"] == 1.0
    assert conc[RAY_SINGLE].extra["permits_per_call"] == 1.0
    assert 1 <= conc[RAY_BATCHED].extra["permits_per_call"] <= 32
    assert [t.what for t in out.targets] == [
        "RayBackend (runs only) / local throughput",
        "local / asyncio throughput",
        "RayLimits permits per actor call (lease_batch=32)",
    ]
    assert all(t.value is not None and t.value > 0 for t in out.targets)


def test_ray_missing_is_a_row_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.workloads import ray_backend

    monkeypatch.setattr(ray_backend, "_ray_missing", lambda: ray_backend.SKIPPED)
    out = load("ray")(TINY)
    assert out.rows and all(r.figure is None and "Ray is not installed" in r.note for r in out.rows)
    assert {t.status for t in out.targets} == {"SKIP"}
