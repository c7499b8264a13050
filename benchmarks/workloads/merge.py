"""Workload 8: merging a huge fork through reducers costs what the fork costs.

A fork of n branches (100,000 at full size) where every branch writes nothing,
appends one item to a list field with the ``append`` reducer, or adds one key to a
dict field with the ``merge_dict`` reducer. Every node declares what it reads and
writes, so isolation copies only the (empty) field a branch writes. Folding the
changes one at a time (``[*current, *added]`` per branch) made these merges
quadratic: 17 s (append) and 76 s (merge_dict) at 100,000 branches. Targets: each
reducer fork within 1.5x of the fork that writes nothing.
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
    i: int
    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = _NONE

    async def run(self, ctx: RunContext[MergeState]) -> End[int]:
        return End(self.i)


@dataclass
class AppendOne(BaseNode[MergeState]):
    i: int
    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = frozenset({"items"})

    async def run(self, ctx: RunContext[MergeState]) -> End[int]:
        ctx.state.items.append(self.i)
        return End(self.i)


@dataclass
class PutKey(BaseNode[MergeState]):
    i: int
    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = frozenset({"scores"})

    async def run(self, ctx: RunContext[MergeState]) -> End[int]:
        ctx.state.scores[f"k{self.i}"] = self.i
        return End(self.i)


@dataclass
class Tally(BaseNode[MergeState]):
    reads: ClassVar[frozenset[str]] = frozenset({"items", "scores"})
    writes: ClassVar[frozenset[str]] = _NONE

    async def run(self, ctx: RunContext[MergeState]) -> End[tuple[int, ...]]:
        items, scores = ctx.state.items, ctx.state.scores
        # Sizes plus the ends of the list: wrong order or lost writes show up here.
        ends = (items[0], items[-1]) if items else (-1, -1)
        return End((len(items), *ends, len(scores), scores.get("k0", -1)))


LEAVES: dict[str, type[BaseNode[MergeState]]] = {
    "nothing": Nothing,
    "append": AppendOne,
    "merge_dict": PutKey,
}


@dataclass
class Scatter(BaseNode[MergeState]):
    n: int
    kind: str
    reads: ClassVar[frozenset[str]] = _NONE
    writes: ClassVar[frozenset[str]] = _NONE

    async def run(self, ctx: RunContext[MergeState]) -> Fork[MergeState]:
        leaf: Any = LEAVES[self.kind]
        return Fork([leaf(i) for i in range(self.n)], then=Tally())


LIFT_GRAPH: Graph[MergeState] = Graph(
    nodes=[Scatter, Nothing, AppendOne, PutKey, Tally], name="bench-merge"
)


def expected(kind: str, n: int) -> tuple[int, ...]:
    if kind == "append":
        return (n, 0, n - 1, 0, -1)
    if kind == "merge_dict":
        return (0, -1, -1, n, 0)
    return (0, -1, -1, 0, -1)


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    n = cfg.merge_branches
    wl = f"merge fork {n:,}"
    figures: dict[str, float] = {}
    for k, kind in enumerate(LEAVES):

        async def run_once(kind: str = kind) -> tuple[int, ...]:
            return tuple((await LIFT_GRAPH.run(Scatter(n, kind), state=MergeState())).output)

        def verify(got: Any, kind: str = kind) -> None:
            check(LIFT, f"{kind} fork of {n}", got, expected(kind, n))

        figures[kind] = await median_time(
            run_once, cfg, verify=verify, warmup=cfg.warmup if k == 0 else 0
        )
    base = figures["nothing"]
    out.add(Row(wl, LIFT, base, UNIT, "every branch writes nothing"))
    for kind in ("append", "merge_dict"):
        ratio = figures[kind] / base
        engine = f"{LIFT} ({kind})"
        note = f"every branch writes one item through {kind}; {ratio:.2f}x the write-nothing fork"
        out.add(Row(wl, engine, figures[kind], UNIT, note))
        out.targets.append(Target(wl, f"{kind} fork / write-nothing fork", ratio, "<=", LIMIT))
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
