"""pytest plugin: the ``lift_determinism`` fixture and the ``lift_deterministic`` marker.

Enabled automatically once lift_graph is installed (entry point ``pytest11``)::

    @pytest.mark.lift_deterministic(runs=100)
    async def test_pipeline(lift_determinism):
        report = await lift_determinism(graph, Start(), state=State())
        assert report.deterministic

The fixture calls ``check_determinism`` with the marker's ``runs`` and
``max_concurrency`` (defaults 100 and ``(1, 2, 8, None)``) and raises
``DeterminismError`` when runs disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .determinism import DeterminismReport, check_determinism

__all__ = ["lift_determinism", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lift_deterministic(runs=100, max_concurrency=(1, 2, 8, None)): settings of the "
        "lift_determinism fixture",
    )


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
