"""pytest plugin: the ``lift_determinism`` fixture and the ``lift_deterministic`` marker.

Enabled automatically once lift_graph is installed (entry point ``pytest11``). A
complete test module::

    import pytest
    from pydantic import BaseModel

    from lift_graph import BaseNode, End, Graph, RunContext


    class State(BaseModel):
        visits: int = 0


    class Start(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> End[int]:
            ctx.state.visits += 1
            return End(ctx.state.visits)


    graph = Graph(nodes=[Start])


    @pytest.mark.lift_deterministic(runs=100)
    async def test_pipeline(lift_determinism):
        report = await lift_determinism(graph, Start(), state=State())
        assert report.deterministic

The fixture calls ``check_determinism`` with the marker's ``runs`` and
``max_concurrency`` (defaults 100 and ``(1, 2, 8, None)``) and raises
``DeterminismError`` when runs disagree or the engine flagged a run as a race.

An ``async def`` test marked ``lift_deterministic`` needs no ``@pytest.mark.asyncio``,
even under pytest-asyncio's strict mode: when no async plugin runs it (no ``asyncio``
/ ``anyio`` / ``trio`` marker, as ``asyncio_mode=auto`` would add), this plugin runs
it on a fresh event loop. A test that uses async fixtures should carry its async
plugin's marker as usual; the plugin then leaves it to that plugin.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ._sync import _run_blocking
from .determinism import DeterminismReport, check_determinism

__all__ = ["lift_determinism", "pytest_configure", "pytest_pyfunc_call"]

# Markers by which another plugin claims a coroutine test and runs it itself.
_ASYNC_PLUGIN_MARKERS = ("asyncio", "anyio", "trio")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lift_deterministic(runs=100, max_concurrency=(1, 2, 8, None)): settings of the "
        "lift_determinism fixture; also runs an async test without an asyncio marker",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test marked ``lift_deterministic`` that no plugin claimed.

    pytest itself cannot await a coroutine test (it fails it), and pytest-asyncio's
    strict mode only takes tests carrying its marker; without this the documented
    example would need a second marker to run at all.
    """
    function = pyfuncitem.obj
    if (
        pyfuncitem.get_closest_marker("lift_deterministic") is None
        or not inspect.iscoroutinefunction(function)
        or any(pyfuncitem.get_closest_marker(name) for name in _ASYNC_PLUGIN_MARKERS)
    ):
        return None
    parameters = inspect.signature(function).parameters
    kwargs = {name: value for name, value in pyfuncitem.funcargs.items() if name in parameters}
    _run_blocking(lambda: function(**kwargs))
    return True


@pytest.fixture
def lift_determinism(
    request: pytest.FixtureRequest,
) -> Callable[..., Awaitable[DeterminismReport]]:
    """An async callable ``(graph, start, *, state, **run_kwargs) -> DeterminismReport``."""
    marker = request.node.get_closest_marker("lift_deterministic")
    settings: dict[str, Any] = dict(marker.kwargs) if marker else {}

    async def check(graph: Any, start: Any, *, state: Any, **kwargs: Any) -> DeterminismReport:
        return await check_determinism(graph, start, state=state, **{**settings, **kwargs})

    return check
