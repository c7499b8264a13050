"""Workload 5: what branch isolation costs on a large state, in ms per node.

The state holds 10,000 documents (pydantic ``Doc(id, text[500], meta, scores)``) in
``docs`` and a ``results`` dict with the ``merge_dict`` reducer. A fork runs 50
nodes; each declares ``reads={"docs"}``, ``writes={"results"}`` and writes one
small entry. Overhead per node = (time of that graph - time of the same graph on
the same model with no documents) / 50. For contrast: one ``copy.deepcopy`` of the
state, i.e. what isolating a node by deep copy would cost per node.

Two variants: the fork node and the join node declare what they read and write
(they write nothing), and the fork node declares nothing, so the engine must
assume it may write anything and its path owns (deep-copies) the whole state once
per run. lift_graph's ``strict=True`` (which fingerprints the fields a node did not
declare) is shown as information.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field

from lift_graph import BaseNode, End, Fork, Graph, RunContext, merge_dict

from .._harness import LIFT, Config, Outcome, Row, Target, check, median_time, run_async

__all__ = ["DocState", "make_state", "run"]

UNIT = "ms/node"


class Doc(BaseModel):
    id: str
    text: str
    meta: dict[str, Any] = Field(default_factory=dict)
    scores: list[float] = Field(default_factory=list)


class DocState(BaseModel):
    docs: list[Doc] = Field(default_factory=list)
    results: Annotated[dict[str, str], merge_dict] = Field(default_factory=dict)


def make_state(n_docs: int) -> DocState:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return DocState(
        docs=[
            Doc(
                id=f"doc-{i}",
                text=(letters[i % 26] * 500),
                meta={"source": "bench", "page": i, "tags": ["a", "b"]},
                scores=[i * 0.001, 0.5, 1.0],
            )
            for i in range(n_docs)
        ]
    )


@dataclass
class Touch(BaseNode[DocState]):
    i: int
    reads: ClassVar[frozenset[str]] = frozenset({"docs"})
    writes: ClassVar[frozenset[str]] = frozenset({"results"})

    async def run(self, ctx: RunContext[DocState]) -> End[None]:
        docs = ctx.state.docs
        ctx.state.results[f"n{self.i}"] = docs[self.i % len(docs)].id if docs else "-"
        return End(None)


@dataclass
class Done(BaseNode[DocState]):
    reads: ClassVar[frozenset[str]] = frozenset({"results"})
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[DocState]) -> End[int]:
        return End(len(ctx.state.results))


@dataclass
class Scatter(BaseNode[DocState]):
    """The fork node; it declares that it writes nothing."""

    n: int
    reads: ClassVar[frozenset[str] | None] = frozenset({"docs"})
    writes: ClassVar[frozenset[str] | None] = frozenset()

    async def run(self, ctx: RunContext[DocState]) -> Fork[DocState]:
        return Fork([Touch(i) for i in range(self.n)], then=Done())


@dataclass
class PlainScatter(Scatter):
    """The same fork node declaring nothing: the engine must assume it may write
    every field, so its path owns (deep-copies) the whole state once."""

    reads: ClassVar[frozenset[str] | None] = None
    writes: ClassVar[frozenset[str] | None] = None


LIFT_GRAPH: Graph[DocState] = Graph(
    nodes=[Scatter, PlainScatter, Touch, Done], name="bench-isolation"
)


def _isolation_steps_ms(state: Any, rounds: int = 2000) -> float:
    """What isolating one node costs on ``state``, timed directly (internal API)."""
    from lift_graph._state import Branch, NodeGuard

    writes = frozenset({"results"})
    began = time.perf_counter()
    for i in range(rounds):
        branch = Branch.fork(state)
        branch.own(writes)
        guard = NodeGuard(branch, writes, strict=False)
        branch.state.results[f"d{i}"] = "x"
        guard.check("Worker")
        branch.changes()
    return (time.perf_counter() - began) / rounds * 1e3


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    n, k = cfg.iso_nodes, cfg.iso_docs
    wl = f"isolation {k:,} docs x {n} nodes"
    big, tiny = make_state(k), make_state(0)

    def graph(state: DocState, start: type[Scatter] = Scatter, strict: bool = False) -> Any:
        async def run() -> int:
            res = await LIFT_GRAPH.run(start(n), state=state, strict=strict)
            return int(res.output)

        return run

    def verify(got: int) -> None:
        check(LIFT, "isolation fork", got, n)

    async def per_node(start: type[Scatter] = Scatter, strict: bool = False) -> tuple[float, str]:
        reps = min(cfg.reps, 3) if strict else cfg.reps
        warm = 0 if strict else cfg.warmup
        t_big = await median_time(
            graph(big, start, strict), cfg, verify=verify, warmup=warm, reps=reps
        )
        t_tiny = await median_time(graph(tiny, start, strict), cfg, verify=verify, warmup=warm)
        note = f"{t_big * 1e3:.2f} ms with {k:,} docs vs {t_tiny * 1e3:.2f} ms with none"
        per = (t_big - t_tiny) / n * 1e3
        if per <= 0:
            # The two runs differ by less than their noise: the overhead is not
            # measurable at this size. Report 0 rather than a negative cost.
            note += " (difference within run-to-run noise)"
            per = 0.0
        return per, note

    overhead, note = await per_node()
    out.add(Row(wl, LIFT, overhead, UNIT, f"every node declares reads/writes; {note}"))
    out.add(
        Row(
            wl,
            f"{LIFT} (isolation steps alone)",
            _isolation_steps_ms(big),
            UNIT,
            "info: fork the branch state, own `results`, validate, diff, per node",
        )
    )
    plain, note = await per_node(PlainScatter)
    out.add(
        Row(
            wl,
            f"{LIFT} (undeclared fork node)",
            plain,
            UNIT,
            f"fork node declares no writes: one whole-state copy per run; {note}",
        )
    )
    strict, note = await per_node(strict=True)
    out.add(
        Row(
            wl,
            f"{LIFT} strict=True",
            strict,
            UNIT,
            f"info: fingerprints undeclared fields before/after each node; {note}",
        )
    )
    check(LIFT, "input state untouched", big.results, {})

    samples = []
    for _ in range(min(cfg.reps, 3)):
        began = time.perf_counter()
        copy.deepcopy(big)
        samples.append(time.perf_counter() - began)
    deep = sorted(samples)[len(samples) // 2] * 1e3
    out.add(Row(wl, "copy.deepcopy(state)", deep, UNIT, "contrast: one deep copy of the state"))
    out.targets += [
        Target(wl, "lift_graph isolation ms/node", overhead, "<", 1.0),
        Target(wl, "same, fork node undeclared", plain, "<", 1.0),
    ]
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
