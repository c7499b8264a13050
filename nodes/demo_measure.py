"""What the demo measures and explains: parallelism's speed-up, and race joins.

``measure_speedup`` runs the map-reduce graph twice in this process on the same
input, once with every chunk's branch at once (``max_concurrency=None``) and once
one node at a time (``max_concurrency=1``), with a fake LM that answers each call
in ``latency`` seconds, and checks that both runs gave the same output and final
state. ``explain_race`` runs the fallback race through ``Graph.iter`` and reports
each join that a race decided: who won, what happened to the other branches, and
why that makes ``RunResult.deterministic`` False.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from lift_graph import Graph, JoinFinished, JoinStrategy, RunFinished, canonical_json

from . import fallback_race, map_reduce
from .fake_lm import FakeLM

__all__ = ["RaceReport", "Speedup", "explain_race", "measure_speedup"]


@dataclass(frozen=True, slots=True)
class Speedup:
    """Two runs of the same graph on the same input: all at once vs one at a time."""

    branches: int
    latency: float
    parallel_s: float
    sequential_s: float
    #: Output and final state were byte-identical (canonical JSON) in both runs.
    same_result: bool
    #: The graph that ran (its mermaid now draws the transitions seen).
    graph: Graph[Any]

    @property
    def ratio(self) -> float:
        return self.sequential_s / self.parallel_s

    def lines(self) -> list[str]:
        return [
            f"{self.branches} branches: {self.parallel_s:.2f} s in parallel vs "
            f"{self.sequential_s:.2f} s one at a time (max_concurrency=1): {self.ratio:.1f}x",
            f"same output and final state both ways: {self.same_result} "
            "(join ALL merges branches in branch order, never completion order)",
        ]


async def measure_speedup(latency: float = 0.1, chunk_words: int = 20) -> Speedup:
    """Run map-reduce unbounded, then with ``max_concurrency=1``; time both."""
    graph = map_reduce.build_graph()
    seconds: dict[int | None, float] = {}
    results: dict[int | None, str] = {}
    branches = 0
    for max_concurrency in (None, 1):
        result = await graph.run(
            map_reduce.Split(),
            state=map_reduce.MapReduceState(text=map_reduce.DEFAULT_TEXT, chunk_words=chunk_words),
            deps=FakeLM(name="fake", latency=latency),
            max_concurrency=max_concurrency,
        )
        seconds[max_concurrency] = result.elapsed_ms / 1000.0
        results[max_concurrency] = canonical_json([result.output, result.state])
        branches = sum(1 for r in result.records if r.node == "MapChunk")
    return Speedup(
        branches=branches,
        latency=latency,
        parallel_s=seconds[None],
        sequential_s=seconds[1],
        same_result=results[None] == results[1],
        graph=graph,
    )


_WHY = {
    JoinStrategy.ANY: "continues with the first branch to succeed and cancels the others",
    JoinStrategy.FIRST: "continues with the first branch to finish, succeeded or failed",
    JoinStrategy.QUORUM: "continues once enough branches succeeded, whichever finished first",
}


@dataclass(frozen=True, slots=True)
class RaceReport:
    """The joins of one fallback-race run that a race decided, and its verdict."""

    joins: list[str]
    deterministic: bool

    def lines(self) -> list[str]:
        return [
            *self.joins,
            f"result.deterministic is {self.deterministic}: which branch wins depends on "
            "timing (latency, load), not on the input, so the same input can give another "
            "output on another run; check_determinism and `lift-graph check` never call such "
            "a graph deterministic. Joins ALL and FIRST_ACCEPTED are decided by branch order "
            "and stay deterministic.",
        ]


async def explain_race(question: str = "What does a join do?") -> RaceReport:
    """Run the fallback race and describe each join a race decided."""
    graph = fallback_race.build_graph()
    deps = fallback_race.RaceDeps(providers=fallback_race.default_providers())
    joins: list[str] = []
    deterministic = True
    state = fallback_race.RaceState(question=question)
    async with contextlib.aclosing(
        graph.iter(fallback_race.Race(), state=state, deps=deps)
    ) as events:
        async for event in events:
            if isinstance(event, JoinFinished) and not event.join.deterministic:
                join = event.join
                fates = ", ".join(
                    f"{k} {s.value}" for k, s in zip(join.keys, join.statuses, strict=True)
                )
                why = _WHY.get(join.strategy, "was cut short by the fork's timeout")
                if join.timed_out:
                    why = "was cut short by the fork's timeout"
                joins.append(
                    f"join {join.strategy.name} after {event.key} {why}: "
                    f"winner {join.winner!r} ({fates})"
                )
            elif isinstance(event, RunFinished):
                deterministic = event.result.deterministic
    return RaceReport(joins, deterministic)
