"""The python examples in README.md and docs/*.md run and print what the text says.

Each fenced ``python`` block is compiled with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` and
evaluated in one shared namespace, in order, inside the test's running event loop
(as a notebook cell would be); a block that uses top-level ``await`` compiles to a
coroutine, which is awaited. Any exception fails the test and names the block.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


async def run_cells(cells: list[tuple[str, str]]) -> dict[str, Any]:
    """Run ``(where, source)`` blocks in order in one namespace, as an IPython kernel does."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    for where, source in cells:
        # dont_inherit: a kernel does not compile cells under this module's
        # `from __future__ import annotations`.
        code = compile(
            source, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        try:
            result = eval(code, namespace)
            if code.co_flags & inspect.CO_COROUTINE:
                await result
        except Exception as exc:
            raise AssertionError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    return namespace


@pytest.mark.asyncio
async def test_a_failing_block_is_reported() -> None:
    cells = [("a", "x = 1\n"), ("b", "await asyncio.sleep(x)")]
    with pytest.raises(AssertionError, match=r"b raised NameError"):
        await run_cells(cells)


@pytest.mark.asyncio
async def test_docs_index_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "docs/index.md has no python example"
    await run_cells([(f"docs/index.md[block {i}]", b) for i, b in enumerate(blocks)])
    out = capsys.readouterr().out.splitlines()
    assert out == ["A + B + C", "['a: ...', 'b: ...', 'c: ...']", "True"]


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 2, "README.md: update these tests with its examples"
    assert "lift_graph.ray" in blocks[1], "README.md: the second example is the Ray one"
    return blocks


@pytest.mark.asyncio
async def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    await run_cells([("README.md[example]", _readme_blocks()[0])])
    assert capsys.readouterr().out.splitlines() == [
        "3/3: summary of a; summary of b; summary of c True"
    ]


@pytest.mark.asyncio
async def test_readme_ray_example_runs(
    ray_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # It goes on from the first example's graph and state; ray_cluster skips when
    # Ray is missing, and has Ray running already.
    example, on_ray = _readme_blocks()
    await run_cells([("README.md[example]", example), ("README.md[ray]", on_ray)])
    assert capsys.readouterr().out.splitlines() == [
        "3/3: summary of a; summary of b; summary of c True",
        "3 2/2: summary of x; summary of x2",
    ]


@pytest.mark.asyncio
async def test_concepts_typeddict_reducer_example_runs() -> None:
    text = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "TypedDict" in b)
    setup = (
        "import operator\nfrom dataclasses import dataclass\n"
        "from typing import Annotated, NotRequired, TypedDict\n"
        "from lift_graph import BaseNode, End, Fork, Graph, RunContext, append\n"
    )
    check = (
        "@dataclass\nclass Start(BaseNode[State]):\n"
        "    async def run(self, ctx: RunContext[State]) -> Fork[State]:\n"
        "        return Fork([Bump(), Bump(), Bump()])\n"
        "result = await Graph(nodes=[Start, Bump]).run(Start(), state={'count': 0})\n"
        "assert result.state == {'count': 3}, result.state\n"
    )
    await run_cells([("setup", setup), ("docs/concepts.md[TypedDict]", block), ("check", check)])


@pytest.mark.asyncio
async def test_docs_agents_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pydantic_ai")
    text = (ROOT / "docs" / "agents.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 4, "docs/agents.md: update this test with its examples"
    await run_cells([(f"docs/agents.md[block {i}]", b) for i, b in enumerate(blocks)])
    assert capsys.readouterr().out.splitlines() == [
        "Summarize for children: graphs run agents",
        "True",
        "True",
        "Graphs run agents!",
        "4",
        "['request', 'response', 'request', 'response']",
        "['summary'] ['text']",
        "['text'] ['summary']",
        "Agents, in a graph.",
        "True",
    ]


@pytest.mark.asyncio
async def test_docs_durability_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "durability.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3, "docs/durability.md: update this test with its examples"
    # The first example calls asyncio.run, so it runs outside the test's loop.
    namespace: dict[str, Any] = {"__name__": "docs_durability"}
    await asyncio.to_thread(exec, compile(blocks[0], "docs/durability.md[0]", "exec"), namespace)
    await run_cells([(f"docs/durability.md[block {i}]", b) for i, b in enumerate(blocks[1:], 1)])
    assert capsys.readouterr().out.splitlines() == [
        "failed: provider went away",
        "An essay on 1. why graphs 2. how",
        "['outline', 'write', 'write']",
        "{'0.Review/legal/0.Approve': 'may we ship? (legal)', "
        "'0.Review/ops/0.Approve': 'may we ship? (ops)'}",
        "['0.Review/legal/0.Approve']",
        "shipped with [('legal', 'ok'), ('ops', 'yes')]",
        "1 1 3",
    ]


@pytest.mark.asyncio
async def test_docs_backpressure_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "backpressure.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 2, "docs/backpressure.md: update this test with its examples"
    # The examples call asyncio.run, so they run outside the test's loop, in order.
    namespace: dict[str, Any] = {"__name__": "docs_backpressure"}

    def run_all() -> None:
        for i, block in enumerate(blocks):
            code = compile(block, f"docs/backpressure.md[{i}]", "exec", dont_inherit=True)
            exec(code, namespace)

    await asyncio.to_thread(run_all)
    assert capsys.readouterr().out.splitlines() == [
        "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]",
        "1 refusals, learned 5 per minute",
        "last call at t=120 s",
        "True",
    ]


@pytest.mark.asyncio
async def test_docs_events_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/events.md: update this test with its examples"
    printed = re.findall(r"prints\n\n```text\n(.*?)```", text, flags=re.DOTALL)
    assert len(printed) == 1, "docs/events.md: the example's output follows it"
    before = set(asyncio.all_tasks())
    await run_cells([("docs/events.md[block 0]", blocks[0])])
    assert [t for t in asyncio.all_tasks() if t not in before and not t.done()] == []
    out = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert out == printed[0].splitlines()


@pytest.mark.asyncio
async def test_docs_batches_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "batches.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 4, "docs/batches.md: update this test with its examples"
    before = set(asyncio.all_tasks())
    await run_cells([(f"docs/batches.md[block {i}]", b) for i, b in enumerate(blocks)])
    assert [t for t in asyncio.all_tasks() if t not in before and not t.done()] == []
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "['bug', 'question', None, 'bug']",
        "{2: ValueError('empty ticket')}",
        "3 1",
        "0 bug",
        "1 failed: empty ticket",
        "2 question",
        "100 25 4",
        "1 {1: ConnectionError('provider went away')}",
        "['APP CRASHES ON START', 'HOW DO I EXPORT?'] "
        "['app crashes on start', 'how do I export?', 'how do I export?']",
    ]
    assert "100/100" in captured.err and "failed=25" in captured.err  # the progress bar


@pytest.mark.asyncio
async def test_docs_tracing_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "tracing.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/tracing.md: update this test with its examples"
    printed = re.findall(r"prints\n\n```text\n(.*?)```", text, flags=re.DOTALL)
    assert len(printed) == 1, "docs/tracing.md: the example's output follows it"
    await run_cells([("docs/tracing.md[block 0]", blocks[0])])
    out = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert out == printed[0].splitlines()


@pytest.mark.asyncio
async def test_docs_ray_examples_run(ray_cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # ray_cluster skips with "Ray could not be installed on this platform" when Ray is
    # missing, and has Ray running already: the page's own ray.init is then a no-op.
    text = (ROOT / "docs" / "ray.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3, "docs/ray.md: update this test with its examples"
    printed = re.findall(r"prints\n\n```text\n(.*?)```", text, flags=re.DOTALL)
    assert len(printed) == 3, "docs/ray.md: each example's output follows it"
    assert "ray.shutdown" not in text  # Ray is shared with the other tests of the session
    await run_cells([(f"docs/ray.md[block {i}]", b) for i, b in enumerate(blocks)])
    out = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert out == "".join(printed).splitlines()
