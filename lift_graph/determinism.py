"""``check_determinism``: prove a pipeline gives the same answer run after run.

Runs a graph many times, cycling through several ``max_concurrency`` values
(1 is the sequential identity path), and compares the canonical hash of each
run's output and final state. Use it in tests, or through the pytest plugin's
``lift_determinism`` fixture.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._canonical import canonical_hash
from .errors import ConfigurationError, DeterminismError
from .graph import Graph

__all__ = [
    "DeterminismReport",
    "check_determinism",
    "check_determinism_sync",
]


@dataclass(slots=True)
class DeterminismReport:
    """What ``check_determinism`` saw over ``runs`` runs."""

    runs: int
    output_hashes: Counter[str] = field(default_factory=Counter)
    state_hashes: Counter[str] = field(default_factory=Counter)
    by_concurrency: dict[int | None, set[str]] = field(default_factory=dict)
    engine_deterministic: bool = True
    first_divergent_run: int | None = None

    @property
    def deterministic(self) -> bool:
        """One distinct output and one distinct final state across every run."""
        return len(self.output_hashes) == 1 and len(self.state_hashes) == 1

    @property
    def agreement(self) -> float:
        """Share of runs whose (output, state) matched the most common one."""
        if not self.runs:
            return 1.0
        return (
            min(self.output_hashes.most_common(1)[0][1], self.state_hashes.most_common(1)[0][1])
            / self.runs
        )


async def check_determinism(
    graph: Graph[Any],
    start: Any,
    *,
    state: Any,
    runs: int = 100,
    max_concurrency: Sequence[int | None] = (1, 2, 8, None),
    raise_on_failure: bool = True,
    **run_kwargs: Any,
) -> DeterminismReport:
    """Run ``graph`` ``runs`` times from copies of ``start`` / ``state``; compare results.

    Run ``i`` uses ``max_concurrency[i % len(max_concurrency)]``. Output and final
    state are compared by canonical hash (sorted-key JSON, stable across processes).

    :raises DeterminismError: (with ``raise_on_failure``) two runs disagreed.
    :raises ConfigurationError: ``runs < 1`` or no concurrency values.
    """
    if runs < 1:
        raise ConfigurationError(f"check_determinism needs runs >= 1, got {runs}")
    if not max_concurrency:
        raise ConfigurationError("check_determinism needs at least one max_concurrency value")
    report = DeterminismReport(runs=runs)
    first: tuple[str, str] | None = None
    for i in range(runs):
        mc = max_concurrency[i % len(max_concurrency)]
        result = await graph.run(
            copy.deepcopy(start), state=copy.deepcopy(state), max_concurrency=mc, **run_kwargs
        )
        out_h = canonical_hash(result.output)
        state_h = canonical_hash(result.state)
        report.output_hashes[out_h] += 1
        report.state_hashes[state_h] += 1
        report.by_concurrency.setdefault(mc, set()).add(out_h + state_h)
        report.engine_deterministic &= result.deterministic
        if first is None:
            first = (out_h, state_h)
        elif (out_h, state_h) != first and report.first_divergent_run is None:
            report.first_divergent_run = i
    if raise_on_failure and not report.deterministic:
        raise DeterminismError(
            f"graph {graph.name!r} is not deterministic: {len(report.output_hashes)} distinct "
            f"outputs and {len(report.state_hashes)} distinct final states over {runs} runs "
            f"(first divergence at run {report.first_divergent_run}); a join ANY / FIRST / "
            "QUORUM, a non-deterministic node or list-mode DummyLM are the usual causes",
            report=report,
        )
    return report


def check_determinism_sync(
    graph: Graph[Any], start: Any, *, state: Any, **kwargs: Any
) -> DeterminismReport:
    """``check_determinism`` for synchronous tests; also works inside a running loop."""
    from .graph import _run_blocking

    return _run_blocking(lambda: check_determinism(graph, start, state=state, **kwargs))
