"""Fixtures shared by test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray instance for every Ray test (start-up takes a few seconds)."""
    ray = pytest.importorskip("ray", reason="Ray could not be installed on this platform")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()  # a docs example may have started it already
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=200 * 1024**2,  # batches of small states: plenty
        )
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
