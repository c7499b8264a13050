"""``check_determinism``: prove a pipeline gives the same answer run after run.

Runs a graph many times, cycling through several ``max_concurrency`` values
(1 is the sequential identity path), and compares the canonical hash of each
run's output and final state. A graph whose runs the engine flags as races
(``RunResult.deterministic`` False) is never reported deterministic, even when the
outputs happen to agree. Use it in tests, or through the pytest plugin's
``lift_determinism`` fixture.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._canonical import hash_canonical, to_canonical
from ._diff import first_difference
from ._state import Branch
from .errors import CanonicalizationError, ConfigurationError, DeterminismError
from .graph import Graph

__all__ = [
    "DeterminismReport",
    "check_determinism",
    "check_determinism_sync",
]


_RACE_CAUSES = (
    "a race decided a join (JoinStrategy.ANY / FIRST / QUORUM, or a fork timeout that "
    "fired) or a node class that ran declares deterministic = False"
)


@dataclass(slots=True)
class DeterminismReport:
    """What ``check_determinism`` saw over ``runs`` runs.

    ``engine_flagged_runs`` counts the runs whose ``RunResult.deterministic`` was
    False: the engine knows their result was decided by a race (a join ANY / FIRST /
    QUORUM, a fork timeout that fired) or by a node class declaring
    ``deterministic = False``. ``engine_deterministic`` is True when there were none.
    """

    runs: int
    output_hashes: Counter[str] = field(default_factory=Counter)
    state_hashes: Counter[str] = field(default_factory=Counter)
    by_concurrency: dict[int | None, set[str]] = field(default_factory=dict)
    engine_deterministic: bool = True
    first_divergent_run: int | None = None
    engine_flagged_runs: int = 0
    #: Where run ``first_divergent_run`` first differed from run 0: ``(path, value
    #: in run 0, value in that run)``, the path starting ``output`` or ``state``
    #: (``state.summaries[2]``), values in canonical (JSON) form. None: no divergence.
    first_difference: tuple[str, Any, Any] | None = None

    @property
    def results_agree(self) -> bool:
        """One distinct output and one distinct final state across every run."""
        return len(self.output_hashes) == 1 and len(self.state_hashes) == 1

    @property
    def deterministic(self) -> bool:
        """The verdict: every run agreed *and* the engine flagged none as a race.

        Runs of a graph with a race join can agree by chance (every branch returning
        the same value, or one branch always winning on an idle machine); that proves
        nothing, so such a graph is never reported deterministic. ``results_agree``
        still says whether the outputs matched.
        """
        return self.results_agree and self.engine_deterministic

    @property
    def reason(self) -> str | None:
        """Why the verdict is not deterministic, in words; ``None`` when it is."""
        causes = []
        if not self.results_agree:
            causes.append(
                f"{len(self.output_hashes)} distinct outputs and {len(self.state_hashes)} "
                f"distinct final states over {self.runs} runs (first divergence at run "
                f"{self.first_divergent_run}{self._where()}); a race join, a "
                "non-deterministic node or list-mode DummyLM are the usual causes"
            )
        if not self.engine_deterministic:
            agreed = " (their outputs agreed this time)" if self.results_agree else ""
            causes.append(
                f"the engine flagged {self.engine_flagged_runs} of {self.runs} runs as not "
                f"deterministic{agreed}: {_RACE_CAUSES}; only joins ALL without a firing "
                "timeout, over deterministic nodes, give a deterministic result"
            )
        return "; ".join(causes) or None

    def _where(self) -> str:
        if self.first_difference is None:
            return ""
        path, first, other = self.first_difference
        return f", at {path}: {_short(first)} in run 0, {_short(other)} there"

    @property
    def agreement(self) -> float:
        """Share of runs whose (output, state) matched the most common one."""
        if not self.runs:
            return 1.0
        return (
            min(self.output_hashes.most_common(1)[0][1], self.state_hashes.most_common(1)[0][1])
            / self.runs
        )


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _canonical(value: Any, what: str, run: int) -> tuple[Any, str]:
    """The canonical form of a run's ``what`` and its hash; the error says which run
    and which part could not be hashed."""
    try:
        canonical = to_canonical(value)
        return canonical, hash_canonical(canonical)
    except CanonicalizationError as exc:
        path = what + exc.path.removeprefix("value")
        hint = (
            "; a lock, client or agent belongs in deps (graph.run(deps=...)), not the state"
            if what == "state"
            else ""
        )
        raise CanonicalizationError(
            f"check_determinism cannot compare run {run}'s {what}: "
            f"{str(exc).replace(exc.path, path, 1)}{hint}",
            type_name=exc.type_name,
            path=path,
        ) from exc


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
    The verdict ``report.deterministic`` is False when two runs disagreed *or* when
    the engine flagged any run as not deterministic (``RunResult.deterministic`` is
    False: a join ANY / FIRST / QUORUM or a fork timeout decided it), even if every
    output happened to agree; ``report.reason`` says which.

    :raises DeterminismError: (with ``raise_on_failure``) the verdict is not
        deterministic; its message gives ``report.reason``.
    :raises CanonicalizationError: an output or final state has no canonical form.
    :raises ConfigurationError: ``runs < 1`` or no concurrency values.
    """
    if runs < 1:
        raise ConfigurationError(f"check_determinism needs runs >= 1, got {runs}")
    if not max_concurrency:
        raise ConfigurationError("check_determinism needs at least one max_concurrency value")
    report = DeterminismReport(runs=runs)
    first: tuple[str, str] | None = None
    # Run 0's canonical forms, kept to say where the first divergent run differs.
    first_forms: dict[str, Any] = {}
    for i in range(runs):
        mc = max_concurrency[i % len(max_concurrency)]
        result = await graph.run(
            _fresh_node(start), state=_fresh_state(state), max_concurrency=mc, **run_kwargs
        )
        out_c, out_h = _canonical(result.output, "output", i)
        state_c, state_h = _canonical(result.state, "state", i)
        report.output_hashes[out_h] += 1
        report.state_hashes[state_h] += 1
        report.by_concurrency.setdefault(mc, set()).add(out_h + state_h)
        if not result.deterministic:
            report.engine_flagged_runs += 1
            report.engine_deterministic = False
        if first is None:
            first = (out_h, state_h)
            first_forms = {"output": out_c, "state": state_c}
        elif (out_h, state_h) != first and report.first_divergent_run is None:
            report.first_divergent_run = i
            report.first_difference = first_difference(
                first_forms, {"output": out_c, "state": state_c}, ""
            )
            first_forms = {}
    if raise_on_failure and not report.deterministic:
        raise DeterminismError(
            f"graph {graph.name!r} is not deterministic: {report.reason}", report=report
        )
    return report


def check_determinism_sync(
    graph: Graph[Any], start: Any, *, state: Any, **kwargs: Any
) -> DeterminismReport:
    """``check_determinism`` for synchronous tests; also works inside a running loop."""
    from ._sync import _run_blocking

    return _run_blocking(lambda: check_determinism(graph, start, state=state, **kwargs))


def _fresh_state(state: Any) -> Any:
    """A copy of ``state`` for one run, made the way a branch isolates its state.

    Every field that can be deep-copied is; a lock or a client cannot be and stays
    shared, as the engine shares it between branches (``copy.deepcopy`` of the whole
    state would refuse such a state outright).
    """
    branch = Branch.fork(state)
    branch.own(None, "check_determinism")
    return branch.state


def _fresh_node(start: Any) -> Any:
    """A deep copy of the start node, or the node itself when it holds something
    that cannot be copied (a client): nodes are configuration, runs do not change them."""
    try:
        return copy.deepcopy(start)
    except (TypeError, copy.Error, RecursionError):
        return start
