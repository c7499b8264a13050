"""Workload 8: merging a huge fork through reducers costs what the fork costs.

A fork of n branches (100,000 at full size) where every branch writes nothing,
appends one item to a list field with the ``append`` reducer, or adds one key to a
dict field with the ``merge_dict`` reducer. Folding the changes one at a time
(``[*current, *added]`` per branch) made these merges quadratic: 17 s (append) and
76 s (merge_dict) at 100,000 branches. Targets: each reducer fork within 1.5x of
the fork that writes nothing.

The leaves declare no reads / writes, so every fork isolates alike and the ratio
is the cost of the write and its merge. The same forks with declared writes are
shown as information: a declared write is also validated per node, which is
isolation's cost, not the merge's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field

from lift_graph import BaseNode, End, Fork, Graph, RunContext, append, merge_dict

from .._harness import LIFT, Config, Outcome, Row, Target, check, median_time, run_async

__all__ = ["MergeState", "run"]

UNIT = "s"
LIMIT = 1.5
_NONE: frozenset[str] = frozenset()


class MergeState(BaseModel):
    items: Annotated[list[int], append] = Field(default_factory=list)
    scores: Annotated[dict[str, int], merge_dict] = Field(default_factory=dict)


@dataclass
class Nothing(BaseNode[MergeState]):
    """Writes nothing. Like the other leaves it declares no reads / writes, so
    every fork pays the same isolation and differs only by the write and its merge."""

    i: int

    async def run(self, ctx: RunContext[MergeState]) -> End[int]:
        return End(self.i)


@dataclass
class AppendOne(Nothing):
    async def run(self, ctx: RunContext[MergeState]) -> End[int]:
        ctx.state.items.append(self.i)
        return End(self.i)


@dataclass
class PutKey(Nothing):
    async def run(self, ctx: RunContext[MergeState]) -> End[int]:
        ctx.state.scores[f"k{self.i}"] = self.i
        return End(self.i)


@dataclass
class DeclaredNothing(Nothing):
    """The leaves again, declaring what they write: each then also validates its
    written field (information: that cost is isolation's, not the merge's)."""

    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = _NONE


@dataclass
class DeclaredAppend(AppendOne):
    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = frozenset({"items"})


@dataclass
class DeclaredPut(PutKey):
    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = frozenset({"scores"})


@dataclass
class Tally(BaseNode[MergeState]):
    reads: ClassVar[frozenset[str]] = frozenset({"items", "scores"})
    writes: ClassVar[frozenset[str]] = _NONE

    async def run(self, ctx: RunContext[MergeState]) -> End[tuple[int, ...]]:
        items, scores = ctx.state.items, ctx.state.scores
        # Sizes plus the ends of the list: wrong order or lost writes show up here.
        ends = (items[0], items[-1]) if items else (-1, -1)
        return End((len(items), *ends, len(scores), scores.get("k0", -1)))


LEAVES: dict[str, type[Nothing]] = {
    "nothing": Nothing,
    "append": AppendOne,
    "merge_dict": PutKey,
    "declared nothing": DeclaredNothing,
    "declared append": DeclaredAppend,
    "declared merge_dict": DeclaredPut,
}


@dataclass
class Scatter(BaseNode[MergeState]):
    n: int
    kind: str
    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = _NONE

    async def run(self, ctx: RunContext[MergeState]) -> Fork[MergeState]:
        leaf = LEAVES[self.kind]
        return Fork([leaf(i) for i in range(self.n)], then=Tally())


LIFT_GRAPH: Graph[MergeState] = Graph(nodes=[Scatter, Tally, *LEAVES.values()], name="bench-merge")


def expected(kind: str, n: int) -> tuple[int, ...]:
    if kind.endswith("append"):
        return (n, 0, n - 1, 0, -1)
    if kind.endswith("merge_dict"):
        return (0, -1, -1, n, 0)
    return (0, -1, -1, 0, -1)


async def _time(kind: str, cfg: Config, *, warmup: int, reps: int | None = None) -> float:
    n = cfg.merge_branches

    async def run_once() -> tuple[int, ...]:
        return tuple((await LIFT_GRAPH.run(Scatter(n, kind), state=MergeState())).output)

    def verify(got: Any) -> None:
        check(LIFT, f"{kind} fork of {n}", got, expected(kind, n))

    return await median_time(run_once, cfg, verify=verify, warmup=warmup, reps=reps)


_NOTES = {
    "": "every branch writes nothing (leaves declare no reads / writes)",
    "declared ": "info: leaves declare their writes, so each also validates what it wrote",
}


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    wl = f"merge fork {cfg.merge_branches:,}"
    figures: dict[str, float] = {}
    for k, kind in enumerate(LEAVES):
        # The declared-writes forks are information: three samples will do.
        reps = min(cfg.reps, 3) if kind.startswith("declared") else None
        figures[kind] = await _time(kind, cfg, warmup=cfg.warmup if k == 0 else 0, reps=reps)
    for prefix, note in _NOTES.items():
        base = figures[prefix + "nothing"]
        out.add(Row(wl, f"{LIFT} ({prefix}nothing)" if prefix else LIFT, base, UNIT, note))
        for kind in ("append", "merge_dict"):
            ratio = figures[prefix + kind] / base
            what = f"{kind} fork / write-nothing fork"
            info = "info: " if prefix else ""
            row_note = f"{info}every branch writes one item through {kind}; {ratio:.2f}x nothing"
            out.add(Row(wl, f"{LIFT} ({prefix}{kind})", figures[prefix + kind], UNIT, row_note))
            if not prefix:
                out.targets.append(Target(wl, what, ratio, "<=", LIMIT))
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
