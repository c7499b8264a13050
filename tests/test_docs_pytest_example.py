"""The pytest examples of docs/concepts.md and of the plugin's docstring run verbatim.

They run in a fresh pytest session (``pytester``, ``asyncio_mode = strict``
like this project) with only the lift_graph plugin's help, and they must be able to
fail: the same example on a racy or a non-deterministic graph fails.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

import lift_graph.pytest_plugin

pytest_plugins = ["pytester"]

_ROOT = Path(__file__).resolve().parents[1]
_INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider
filterwarnings =
    error
"""


def _concepts_example() -> str:
    text = (_ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    section = text.split("## Determinism", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    (example,) = [b for b in blocks if "lift_determinism" in b]
    return example


def _docstring_example() -> str:
    doc = lift_graph.pytest_plugin.__doc__
    assert doc is not None
    body = doc.split("A\ncomplete test module::\n", 1)[1].split("\nThe fixture calls", 1)[0]
    return textwrap.dedent(body)


def _run(pytester: pytest.Pytester, code: str) -> pytest.RunResult:
    pytester.makeini(_INI)
    pytester.makepyfile(test_example=code)
    return pytester.runpytest("-q")


def test_concepts_example_passes_verbatim(pytester: pytest.Pytester) -> None:
    example = _concepts_example()
    assert "@pytest.mark.asyncio" not in example
    result = _run(pytester, example)
    result.assert_outcomes(passed=2)


def test_plugin_docstring_example_passes_verbatim(pytester: pytest.Pytester) -> None:
    example = _docstring_example()
    assert "@pytest.mark.lift_deterministic(runs=100)" in example
    result = _run(pytester, example)
    result.assert_outcomes(passed=1)


def test_concepts_example_fails_on_a_race_join(pytester: pytest.Pytester) -> None:
    example = _concepts_example()
    old = "Fork([Summarize(d) for d in ctx.state.docs])"
    assert old in example
    racy = example.replace(
        old, "Fork([Summarize(d) for d in ctx.state.docs], join=JoinStrategy.FIRST)"
    ).replace("from lift_graph import ", "from lift_graph import JoinStrategy, ")
    result = _run(pytester, racy)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*DeterminismError*race*"])


def test_concepts_example_fails_on_a_non_deterministic_node(pytester: pytest.Pytester) -> None:
    example = _concepts_example()
    old = "return End(self.doc.upper())"
    assert old in example
    noisy = example.replace(old, "return End(f'{self.doc.upper()} {random.random()}')")
    result = _run(pytester, noisy)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*DeterminismError*distinct outputs*"])


def test_async_test_without_the_marker_is_not_run_by_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    # the regression: without the marker's help, strict mode does not run the coroutine
    code = _concepts_example().replace("@pytest.mark.lift_deterministic(runs=50)\n", "")
    result = _run(pytester, code)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1  # only the synchronous test
    assert outcomes.get("failed", 0) + outcomes.get("skipped", 0) == 1


def test_asyncio_marked_test_is_left_to_pytest_asyncio(pytester: pytest.Pytester) -> None:
    code = _concepts_example().replace(
        "@pytest.mark.lift_deterministic(runs=50)\n",
        "@pytest.mark.asyncio\n@pytest.mark.lift_deterministic(runs=5)\n",
    ) + textwrap.dedent(
        """

        @pytest.mark.asyncio
        @pytest.mark.lift_deterministic(runs=3)
        async def test_loop_is_pytest_asyncio(lift_determinism):
            import pytest_asyncio  # noqa: F401
            assert asyncio.get_running_loop() is not None
            report = await lift_determinism(graph, Start(), state=State())
            assert report.runs == 3
        """
    )
    result = _run(pytester, code)
    result.assert_outcomes(passed=3)
