"""The benchmark workloads, by name, in the order the issue lists them."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .._harness import Config, Outcome

__all__ = ["NAMES", "load"]

#: Workload name -> module under ``benchmarks.workloads``.
NAMES: dict[str, str] = {
    "chain": "chain",
    "fanout": "fanout",
    "unbalanced": "unbalanced",
    "jitter": "jitter",
    "isolation": "isolation",
    "rpm": "rpm",
    "memory": "memory",
    "merge": "merge",
    "dspy_rag": "dspy_rag",
    "durability": "durability",
    "crash": "crash",
    "batch": "batch",
    "backpressure": "backpressure",
    "tracing": "tracing",
    "ray": "ray_backend",
}


def load(name: str) -> Callable[[Config], Outcome]:
    """The ``run(cfg)`` function of workload ``name`` (imported on demand)."""
    module = importlib.import_module(f"{__name__}.{NAMES[name]}")
    return module.run  # type: ignore[no-any-return]
