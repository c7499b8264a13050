"""The ``lift-graph`` command line, on the graphs of tests/cli_graphs.py.

Subprocess tests run ``python -m lift_graph`` from the repository root (as the
console script would); the others use click's ``CliRunner`` in this process.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from lift_graph import SQLiteStore
from lift_graph._cli_progress import NodeProgress
from lift_graph._diff import MISSING, first_difference
from lift_graph.cli import TARGET_KEY, cli
from lift_graph.determinism import check_determinism_sync
from tests import cli_graphs

ROOT = Path(__file__).resolve().parent.parent
G = "tests.cli_graphs"


def lift(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run(
        [sys.executable, "-m", "lift_graph", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, prog_name="lift-graph")


@pytest.fixture
def docs_state(tmp_path: Path) -> Path:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"doc_ids": ["a", "b", "c"]}))
    return path


# -- check (the acceptance test) -------------------------------------------------------


def test_check_passes_a_deterministic_graph(docs_state: Path) -> None:
    proc = lift(
        "check", f"{G}:graph", "--start", "Plan", "--state", str(docs_state), "--runs", "20"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("deterministic: 20 runs of graph 'docs'")


def test_check_runs_a_tiny_graph_100_times() -> None:
    proc = lift("check", f"{G}:tiny", "--start", "Bump", "--start-args", '{"by": 2}')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "100 runs" in proc.stdout and "unbounded" in proc.stdout


def test_check_fails_a_node_using_random_and_names_the_field() -> None:
    proc = lift("check", f"{G}:noisy", "--start", "Roll", "--runs", "20")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NOT deterministic" in proc.stdout
    assert "run 1 differs from run 0 at state.roll" in proc.stdout
    assert "run 0: 0." in proc.stdout and "run 1: 0." in proc.stdout


def test_check_fails_a_race_join_even_in_json() -> None:
    proc = lift("check", f"{G}:racy", "--start", "Start", "--runs", "20", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["deterministic"] is False
    assert report["engine_flagged_runs"] == 20
    if report["first_difference"] is not None:  # the same runner may win every time
        assert report["first_difference"]["path"] in ("output", "state.winner")


def test_check_max_concurrency_levels_and_bad_values() -> None:
    ok = invoke(
        "check", f"{G}:tiny", "--start", "Bump", "--runs", "3", "--max-concurrency", "1,none"
    )
    assert ok.exit_code == 0 and "max_concurrency 1, unbounded" in ok.stdout
    bad = invoke("check", f"{G}:tiny", "--start", "Bump", "--max-concurrency", "zero")
    assert bad.exit_code == 2 and "--max-concurrency takes numbers" in bad.stderr


def test_determinism_report_keeps_the_first_difference() -> None:
    report = check_determinism_sync(
        cli_graphs.noisy, cli_graphs.Roll(), state=cli_graphs.Dice(), runs=3, raise_on_failure=False
    )
    assert report.first_divergent_run == 1
    path, first, other = report.first_difference or ("", None, None)
    assert path == "state.roll" and isinstance(first, float) and first != other
    assert "at state.roll" in (report.reason or "")


def test_first_difference_walks_dicts_and_lists() -> None:
    assert first_difference({"a": [1, 2]}, {"a": [1, 2]}, "") is None
    assert first_difference({"a": [1, 2]}, {"a": [1, 3]}, "x") == ("x.a[1]", 2, 3)
    assert first_difference({"a": [1]}, {"a": [1, 2]}, "") == ("a[1]", MISSING, 2)
    assert first_difference({"a b": 1}, {}, "s") == ("s['a b']", 1, MISSING)
    assert first_difference(1, True, "v") == ("v", 1, True)  # equal in Python, not in JSON


# -- run ---------------------------------------------------------------------------------


def test_run_prints_every_node_in_the_timing_table(docs_state: Path) -> None:
    result = invoke("run", f"{G}:graph", "--start", "Plan", "--state", str(docs_state))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "key",
        "node",
        "provider",
        "attempts",
        "status",
        "wait",
        "ms",
        "run",
        "ms",
    ]
    keys = [line.split()[0] for line in lines[2:7]]
    assert keys == [
        "0.Plan",
        "0.Plan/0/0.Summarize",
        "0.Plan/1/0.Summarize",
        "0.Plan/2/0.Summarize",
        "1.Combine",
    ]
    assert 'output: "summary of a; summary of b; summary of c"' in result.stdout
    assert "deterministic: True" in result.stdout and "execution_id: " in result.stdout
    # the progress display (plain lines: stderr is not a terminal here)
    assert "finished 1.Combine" in result.stderr and "fork     0.Plan: 3 branches" in result.stderr


def test_run_json_reads_state_from_stdin() -> None:
    state = json.dumps({"doc_ids": ["x"], "prefix": "about"})
    result = invoke(
        "run", f"{G}:graph", "--start", "Plan", "--state", "-", "--json", "-q", stdin=state
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "finished" and data["output"] == "about x"
    assert data["state"] == {"doc_ids": ["x"], "prefix": "about", "summaries": ["about x"]}
    assert [r["key"] for r in data["records"]] == ["0.Plan", "0.Plan/0/0.Summarize", "1.Combine"]
    assert all(r["wait_ms"] >= 0 and r["run_ms"] >= 0 for r in data["records"])
    assert result.stderr == ""


def test_a_failed_run_exits_1_naming_the_node(docs_state: Path) -> None:
    args = ["run", f"{G}:failing", "--start", "Plan", "--start-args", '{"fail_on": "b"}']
    proc = lift(*args, "--state", str(docs_state), "-q")
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and "failed at node 0.Plan/1/0.Summarize" in error[0]
    assert "ValueError: cannot summarize b" in error[0]
    assert "Traceback" not in proc.stderr
    assert "0.Plan/1/0.Summarize  Summarize  fake" in proc.stdout  # its row, failed
    traced = lift("--traceback", *args, "--state", str(docs_state), "-q")
    assert traced.returncode == 1 and "Traceback (most recent call last)" in traced.stderr


def test_run_with_a_store_then_resume_by_id_answers_the_interrupt(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    state = tmp_path / "release.json"
    state.write_text('{"version": "2.0"}')
    first = lift(
        "run",
        f"{G}:approval",
        "--start",
        "Approve",
        "--state",
        str(state),
        "--store",
        str(db),
        "--execution-id",
        "rel-1",
    )
    assert first.returncode == 0, first.stderr
    assert '0.Approve: "may we ship 2.0?"' in first.stdout
    assert f"lift-graph resume rel-1 --store {db} --answer" in first.stdout
    store = SQLiteStore(db)
    try:
        row = store.load_run("rel-1")
        assert row is not None and row.metadata[TARGET_KEY] == f"{G}:approval"
    finally:
        store.close()
    # no --graph: resume finds the graph from the run's metadata
    done = lift("resume", "rel-1", "--store", str(db), "--answer", '0.Approve="ops"', "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "finished"
    assert data["output"] == "shipped 2.0, approved by ops"
    assert [r["key"] for r in data["records"]] == ["0.Approve", "1.Ship"]


def test_resume_needs_a_graph_when_run_did_not_store_one(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = SQLiteStore(db)
    try:
        cli_graphs.tiny.run_sync(
            cli_graphs.Bump(), state=cli_graphs.Counter(), store=store, execution_id="t1"
        )
    finally:
        store.close()
    missing = invoke("resume", "t1", "--store", str(db))
    assert missing.exit_code == 2 and "--graph module:graph" in missing.stderr
    given = invoke("resume", "t1", "--store", str(db), "--graph", f"{G}:tiny", "--json", "-q")
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["output"] == 1


def test_resume_errors(tmp_path: Path) -> None:
    absent = invoke("resume", "x", "--store", str(tmp_path / "none.db"))
    assert absent.exit_code == 2 and "does not exist" in absent.stderr
    SQLiteStore(tmp_path / "empty.db").close()
    unknown = invoke("resume", "x", "--store", str(tmp_path / "empty.db"))
    assert unknown.exit_code == 2 and "has no run 'x'" in unknown.stderr
    bad = invoke("resume", "x", "--store", str(tmp_path / "empty.db"), "--answer", "k=yes")
    assert bad.exit_code == 2 and "the answer to k" in bad.stderr and "not JSON" in bad.stderr


# -- wrong arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_here:graph", "cannot import module 'no_such_module_here'"),
        (f"{G}:missing", "has no attribute 'missing'"),
        (f"{G}:not_a_graph", "is 42 (int), not a lift_graph Graph"),
        (f"{G}:build_graph", "a function? call it at module level"),
        ("no-colon", "must look like module:attribute"),
    ],
)
def test_bad_targets_exit_2_with_one_line(target: str, message: str) -> None:
    result = invoke("mermaid", target)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_state_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"doc_ids": 5}')
    result = invoke("run", f"{G}:graph", "--start", "Plan", "--state", str(path))
    assert result.exit_code == 2
    assert "does not fit Docs: field 'doc_ids': Input should be a valid list" in result.stderr
    assert invoke("run", f"{G}:graph", "--start", "Plan").exit_code == 2  # doc_ids required
    path.write_text("{not json")
    assert (
        "is not JSON" in invoke("run", f"{G}:graph", "--start", "Plan", "--state", str(path)).stderr
    )


def test_bad_start_node_and_arguments() -> None:
    unknown = invoke("run", f"{G}:graph", "--start", "Nope")
    assert unknown.exit_code == 2 and "choose one of Combine, Plan, Summarize" in unknown.stderr
    args = invoke("run", f"{G}:tiny", "--start", "Bump", "--start-args", '{"step": 1}')
    assert args.exit_code == 2 and "(its fields: by)" in args.stderr


# -- mermaid / demo ---------------------------------------------------------------------------


def test_mermaid_prints_the_graphs_diagram() -> None:
    plain = invoke("mermaid", f"{G}:racy")
    assert plain.exit_code == 0 and plain.stdout.strip() == cli_graphs.racy.mermaid()
    fenced = invoke("mermaid", f"{G}:racy", "--markdown")
    assert fenced.stdout.startswith("```mermaid\nflowchart TD") and fenced.stdout.strip().endswith(
        "```"
    )


def test_demo_measures_the_speed_up_and_explains_the_race() -> None:
    proc = lift("demo", "fallback_race", "--no-batch")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "== why fallback_race is not deterministic" in out
    assert "join ANY after 0.Race" in out and "winner 'fast'" in out
    assert "result.deterministic is False" in out
    line = next(line for line in out.splitlines() if "one at a time" in line)
    parallel, sequential = _seconds(line)
    assert sequential > 2 * parallel  # 10 branches of 0.1 s: about 5x here
    assert "same output and final state both ways: True" in out
    assert "flowchart TD" in out and 'Split__fork0 -->|"each"| MapChunk' in out
    assert 'Split__fork0 ==>|"ALL"| Reduce' in out


def _seconds(line: str) -> tuple[float, float]:
    words = line.replace("(", " ").split()
    numbers: list[Any] = [w for i, w in enumerate(words[:-1]) if words[i + 1] == "s"]
    return float(numbers[0]), float(numbers[1])


def test_demo_rejects_unknown_examples() -> None:
    result = invoke("demo", "nope")
    assert result.exit_code == 2 and "unknown example(s) nope" in result.stderr


# -- docs/cli.md --------------------------------------------------------------------------


def _run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "lift_graph", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_cli_example_module_runs_as_documented(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/cli.md: update this test with its examples"
    (tmp_path / "summaries.py").write_text(blocks[0])
    (tmp_path / "state.json").write_text('{"doc_ids": ["a", "b", "c"]}')
    ran = _run_in(tmp_path, "run", "summaries:graph", "--start", "Plan", "--state", "state.json")
    assert ran.returncode == 0, ran.stderr
    table = re.search(r"```text\n(key .*?)```", text, flags=re.DOTALL)
    assert table is not None
    documented = [line.split()[:2] for line in table.group(1).splitlines()[2:]]
    printed = [line.split()[:2] for line in ran.stdout.splitlines()[2:7]]
    assert printed == documented
    assert 'output: "summary of a; summary of b; summary of c"' in ran.stdout
    checked = _run_in(
        tmp_path,
        "check",
        "summaries:graph",
        "--start",
        "Plan",
        "--state",
        "state.json",
        "--runs",
        "8",
    )
    assert checked.returncode == 0 and checked.stdout.startswith("deterministic: 8 runs")
    drawn = _run_in(tmp_path, "mermaid", "summaries:graph", "--markdown")
    assert drawn.returncode == 0 and drawn.stdout.startswith("```mermaid\nflowchart TD")


def test_a_store_that_is_not_a_database_is_a_usage_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all " * 100)
    result = invoke("run", f"{G}:tiny", "--start", "Bump", "--store", str(junk))
    assert result.exit_code == 2 and f"--store {junk}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_progress_bar_counts_nodes_and_keeps_records() -> None:
    stream = io.StringIO()
    progress = NodeProgress(stream, bar=True)
    state = cli_graphs.Docs(doc_ids=["a", "b"])

    async def go() -> None:
        await cli_graphs.graph.run(cli_graphs.Plan(), state=state, _events=progress)

    asyncio.run(go())
    assert progress._bar is not None and progress._bar.n == 4  # tqdm counts finished nodes
    progress.close()
    assert sorted(progress.records) == [
        "0.Plan",
        "0.Plan/0/0.Summarize",
        "0.Plan/1/0.Summarize",
        "1.Combine",
    ]
    assert progress.finished == 4 and progress.running == set()
    assert "nodes:" in stream.getvalue()
