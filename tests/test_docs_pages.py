"""The pages docs/semantics.md and docs/comparison.md say what the code and the
benchmarks say: the semantics examples run and print what the page claims, and
every figure the comparison quotes is a row of benchmarks/RESULTS.md."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.test_notebooks import run_cells

ROOT = Path(__file__).resolve().parent.parent
FIGURES_HEADER = "| workload | engine | figure | unit | x lift_graph |"


def _python_blocks(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.asyncio
async def test_semantics_examples_print_what_the_page_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = _python_blocks("semantics.md")
    assert len(blocks) == 3, "docs/semantics.md: update this test with its examples"
    before = set(asyncio.all_tasks())
    await run_cells([(f"docs/semantics.md[block {i}]", b) for i, b in enumerate(blocks)])
    assert [t for t in asyncio.all_tasks() if t not in before and not t.done()] == []
    assert capsys.readouterr().out.splitlines() == [
        "MergeError count [0, 1, 2]",
        "1 ['D', 'A', 'C', 'B'] ['d', 'a', 'c', 'b'] 4",
        "True",
        "False",
        "['x', 'y'] 1",
        "FAIL_ALL ValueError('fast failed') [None, None, None]",
        "FAIL_FIRST ValueError('slow failed') [None, None, 'ok']",
        "[None, None, 'ok']",
    ]


def test_semantics_printed_values_are_the_ones_commented() -> None:
    """The comments beside the prints show the output the test above checks."""
    text = "\n".join(_python_blocks("semantics.md"))
    for shown in (
        "# MergeError count [0, 1, 2]",
        "# 1 ['D', 'A', 'C', 'B'] ['d', 'a', 'c', 'b'] 4",
        "# ['x', 'y'] 1",
        "# FAIL_ALL ValueError('fast failed') [None, None, None]",
        "# FAIL_FIRST ValueError('slow failed') [None, None, 'ok']",
        "# [None, None, 'ok']",
    ):
        assert shown in text, shown


def _cells(line: str) -> tuple[str, ...]:
    # A cell may hold an escaped pipe ("A 0.5s \| B 5x0.1s").
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return tuple(p.strip() for p in parts)


def _tables_after(text: str, header: str) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith(header):
            continue
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            rows.append(_cells(row))
    return rows


def test_comparison_figures_are_rows_of_the_recorded_results() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    comparison = (ROOT / "docs" / "comparison.md").read_text(encoding="utf-8")
    recorded = {
        row[:5]
        for row in _tables_after(results, "| workload | engine | figure | unit | x lift_graph |")
    }
    quoted = _tables_after(comparison, FIGURES_HEADER)
    assert len(quoted) >= 30
    stale = [row for row in quoted if row not in recorded]
    assert stale == [], (
        "docs/comparison.md quotes figures that benchmarks/RESULTS.md does not hold "
        f"(re-run benchmarks? then copy the new rows): {stale}"
    )


def test_comparison_cites_the_run_that_produced_the_figures() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    comparison = (ROOT / "docs" / "comparison.md").read_text(encoding="utf-8")
    date = re.search(r"^- Date: (.+)$", results, flags=re.MULTILINE)
    command = re.search(r"^Command: `([^`]+)`", results, flags=re.MULTILINE)
    assert date is not None and command is not None
    assert f"Date: {date.group(1)}," in comparison
    assert f"Command: `{command.group(1)}`" in comparison
    # Figures quoted in prose: (as RESULTS.md words it, as the page does).
    for recorded, quoted in (
        ("842 MB peak in 92 s", "842 MB peak in 92 s"),
        ("1,414 MB peak in 574 s", "1,414 MB peak in 574 s"),
        ("makespan 504 ms", "lift_graph 504 ms"),
        ("makespan 503 ms", "asyncio 503 ms"),
        ("makespan 506 ms", "pydantic-graph 506 ms"),
        ("makespan 910 ms", "LangGraph 910 ms"),
        (
            "132 of 222 requests 429; throughput 0.95 R; 8.6 s wall",
            "132 of 222 requests refused, 8.6 s wall",
        ),
        (
            "16 of 116 requests 429; throughput 0.95 R; 9.5 s wall",
            "16 of 116 requests refused, 9.5 s wall",
        ),
        (
            "41 of 3,041 requests 429 (1.35%); throughput 0.970 R",
            "41 of 3,041 requests refused (1.35 %) at 0.970 R",
        ),
    ):
        assert recorded in " ".join(results.split()), recorded
        assert quoted in " ".join(comparison.split()), quoted
