"""The notebooks run in a Jupyter kernel and show what their text says.

Each notebook is executed from its jupytext source in notebooks/src (not from the
committed .ipynb, so a stale notebook cannot hide a broken source), top to bottom,
in one fresh ``python3`` kernel per notebook through nbclient, exactly as
``notebooks/build_notebooks.py`` builds it. The tests then read the cells' outputs.
The committed notebooks must match their sources and show executed cells.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from nbformat import NotebookNode

# Loaded by path: notebooks/ is a folder of the repository, not a package.
_BUILDER = Path(__file__).resolve().parent.parent / "notebooks" / "build_notebooks.py"
_spec = importlib.util.spec_from_file_location("build_notebooks", _BUILDER)
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

NAMES = [path.stem for path in build.source_paths()]


@functools.cache
def executed(name: str) -> NotebookNode:
    """Notebook ``name`` executed from its source (once per test session)."""
    return build.execute(build.read_source(build.SOURCES / f"{name}.py"))


def cell_outputs(notebook: NotebookNode, containing: str) -> list[NotebookNode]:
    """The outputs of the first code cell whose source contains ``containing``."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and containing in cell.source:
            outputs: list[NotebookNode] = cell.outputs
            return outputs
    raise AssertionError(f"no code cell contains {containing!r}")


def printed(notebook: NotebookNode, containing: str) -> str:
    """What the cell whose source contains ``containing`` printed to stdout."""
    outputs = cell_outputs(notebook, containing)
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def displayed(notebook: NotebookNode, containing: str) -> dict[str, str]:
    """The mime bundle the cell whose source contains ``containing`` displayed."""
    for output in cell_outputs(notebook, containing):
        if output.output_type in ("execute_result", "display_data"):
            return dict(output.data)
    raise AssertionError(f"the cell with {containing!r} displayed nothing")


def test_there_are_the_three_notebooks() -> None:
    assert {"quickstart", "parallel_patterns", "determinism"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_cleanly(name: str) -> None:
    notebook = executed(name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    for cell in code:
        kinds = {output.output_type for output in cell.outputs}
        streams = {output.name for output in cell.outputs if output.output_type == "stream"}
        # A warning or a traceback printed by a cell is a defect of the notebook too.
        assert "error" not in kinds and "stderr" not in streams, (cell.source, cell.outputs)
    assert printed(notebook, "all checks passed") == "all checks passed\n"


def test_quickstart_shows_runs_graphs_limits_failures_and_dspy() -> None:
    notebook = executed("quickstart")
    first = printed(notebook, "result = await graph.run(")
    assert first.startswith("4/4 topics summarized\nforks: forks #")
    assert "deterministic: True" in first and "caller's state untouched: True" in first
    assert "0.Plan/3/0.Summarize" in printed(notebook, "for record in result.records")
    assert "<svg" in displayed(notebook, "result.timeline()")["image/svg+xml"]
    assert "same state: True" in printed(notebook, "graph.run_sync(")
    diagram = displayed(notebook, 'name="quickstart")\ngraph')
    assert diagram["text/markdown"].startswith("```mermaid\n")
    assert "Summarize" in diagram["text/markdown"] and "Combine" in diagram["text/markdown"]
    assert "most 'fake' calls in flight at once: 2" in printed(notebook, "ProviderLimit(")
    failed = printed(notebook, "except JoinError")
    assert "simulated failure" in failed and "failed branches: [1]" in failed
    assert "3/4 topics summarized, failed: [1]" in printed(notebook, "FailureMode.CONTINUE")
    assert "['Forks run branches at once', 'Joins merge in branch order']" in printed(
        notebook, "class Headline(DSPyNode"
    )


def test_parallel_patterns_shows_joins_failures_merges_limits_and_timelines() -> None:
    notebook = executed("parallel_patterns")
    joins = printed(notebook, "joins = {")
    assert "ANY             broken=failed fast=succeeded(fast) medium=cancelled" in joins
    assert "FIRST           JoinError, caused by ConnectionError" in joins
    assert "winner=medium\n    deterministic=True" in joins
    modes = printed(notebook, "modes = {")
    assert "slow=succeeded(slow)" in modes.split("FAIL_FIRST")[1]
    assert "attempts=3" in printed(notebook, "class Unreliable(Ask)")
    merges = printed(notebook, "class Pick(Ask)")
    assert "ALL_SUCCESS answers: ['slow', 'fast']" in merges
    assert "MergeError: branches ['a', 'b'] all wrote state field 'best'" in merges
    assert "MAJORITY: winner 'b', best=' paris', agreement 2/3" in merges
    assert "| llm 3 | search 2" in printed(notebook, "class Search(Ask)")
    assert "llm peak: 3" in printed(notebook, "asyncio.gather(")
    assert "10/10 calls succeeded" in printed(notebook, "class Quota")
    for cell in ("limited.timeline()", "retried.timeline()", "pressed.timeline()"):
        bundle = displayed(notebook, cell)
        assert "image/svg+xml" in bundle, sorted(bundle)
        assert "<svg" in bundle["image/svg+xml"]
    assert printed(notebook, "pressed_timeline.save(") == "backpressure.svg True\n"


def test_determinism_shows_checks_a_caught_graph_races_and_the_plugin() -> None:
    notebook = executed("determinism")
    two = printed(notebook, "finish_orders, hashes = [], []")
    assert "same output and state: True" in two
    report = printed(notebook, "report = await check_determinism(")
    assert "deterministic: True over 100 runs" in report
    assert report.count("distinct results: 1") == 5
    assert "graph 'logged' is not deterministic" in printed(notebook, "class Logged(Docs)")
    assert "first difference: state.finish_order" in printed(notebook, "caught.first_difference")
    race = printed(notebook, "class Replica(")
    assert "result.deterministic: False" in race
    assert "outputs agree: True | verdict: False" in race
    assert "2 passed" in printed(notebook, "test_module = ")


def test_committed_notebooks_match_their_sources_and_ran() -> None:
    proc = subprocess.run(
        [sys.executable, str(build.HERE / "build_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_reports_stale_unexecuted_failed_and_orphan_notebooks(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in ("fresh", "stale", "unrun", "failed", "missing"):
        (src / f"{name}.py").write_text(f"# %% [markdown]\n# {name}\n\n# %%\nx = 1\n")
    for name in ("fresh", "stale", "unrun", "failed"):
        notebook = build.read_source(src / f"{name}.py")
        if name != "unrun":
            notebook.cells[1].execution_count = 1
        if name == "failed":
            error = nbformat.v4.new_output("error", ename="E", evalue="boom", traceback=[])
            notebook.cells[1].outputs = [error]
        build.write(notebook, out / f"{name}.ipynb")
    (src / "stale.py").write_text("# %%\nx = 2\n")
    build.write(build.read_source(src / "fresh.py"), out / "orphan.ipynb")
    assert build.problems(src, out) == [
        f"orphan.ipynb has no source orphan.py in {src}",
        "failed.ipynb: cell 1 shows an error",
        "missing.ipynb is missing",
        "stale.ipynb: its cells differ from stale.py",
        "unrun.ipynb: cell 1 was never executed",
    ]


def test_a_failing_cell_fails_the_execution(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("# %%\nx = 1\n\n# %%\nx / 0\n")
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        build.execute(build.read_source(source))
