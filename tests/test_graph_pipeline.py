"""Pipelines with inferred dependencies, and byte-identical results at any concurrency."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    Fork,
    Graph,
    Pipeline,
    RunContext,
    append,
    canonical_json,
    merge_dict,
)

# -- a pipeline of six DSPy-style nodes --------------------------------------------------


class QA(BaseModel):
    question: str = "why is the sky blue"
    docs: list[str] = []
    keywords: list[str] = []
    summary: str = ""
    category: str = ""
    draft: str = ""
    answer: str = ""


@dataclass
class Spans:
    t0: float = field(default_factory=time.perf_counter)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)


class Step(BaseNode[QA]):
    """Sleeps ~50 ms and records its span (when ``deps`` is a ``Spans``)."""

    async def run(self, ctx: RunContext[QA]) -> None:
        spans = ctx.deps if isinstance(ctx.deps, Spans) else None
        began = time.perf_counter()
        await asyncio.sleep(0.05)
        self.compute(ctx.state)
        if spans is not None:
            spans.spans[type(self).__name__] = (began - spans.t0, time.perf_counter() - spans.t0)

    def compute(self, state: QA) -> None:
        raise NotImplementedError


@dataclass
class Retrieve(Step):
    reads: ClassVar[frozenset[str]] = frozenset({"question"})
    writes: ClassVar[frozenset[str]] = frozenset({"docs"})

    def compute(self, state: QA) -> None:
        state.docs = [f"doc about {w}" for w in state.question.split()]


@dataclass
class Keywords(Step):
    reads: ClassVar[frozenset[str]] = frozenset({"question"})
    writes: ClassVar[frozenset[str]] = frozenset({"keywords"})

    def compute(self, state: QA) -> None:
        state.keywords = sorted(w for w in state.question.split() if len(w) > 3)


@dataclass
class Summarize(Step):
    reads: ClassVar[frozenset[str]] = frozenset({"docs"})
    writes: ClassVar[frozenset[str]] = frozenset({"summary"})

    def compute(self, state: QA) -> None:
        state.summary = " | ".join(state.docs)


@dataclass
class Classify(Step):
    reads: ClassVar[frozenset[str]] = frozenset({"question"})
    writes: ClassVar[frozenset[str]] = frozenset({"category"})

    def compute(self, state: QA) -> None:
        state.category = "science" if "sky" in state.question else "other"


@dataclass
class Draft(Step):
    reads: ClassVar[frozenset[str]] = frozenset({"summary", "keywords"})
    writes: ClassVar[frozenset[str]] = frozenset({"draft"})

    def compute(self, state: QA) -> None:
        state.draft = f"{state.summary} [{','.join(state.keywords)}]"


@dataclass
class Answer(Step):
    reads: ClassVar[frozenset[str]] = frozenset({"draft", "category"})
    writes: ClassVar[frozenset[str]] = frozenset({"answer"})

    def compute(self, state: QA) -> None:
        state.answer = f"{state.category}: {state.draft.upper()}"


STEPS: list[type[Step]] = [Retrieve, Keywords, Summarize, Classify, Draft, Answer]


@dataclass
class Plan(BaseNode[QA]):
    async def run(self, ctx: RunContext[QA]) -> Pipeline[QA]:
        return Pipeline([cls() for cls in STEPS], then=Done())


@dataclass
class Done(BaseNode[QA]):
    async def run(self, ctx: RunContext[QA]) -> End[str]:
        return End(ctx.state.answer)


@pytest.mark.asyncio
async def test_pipeline_equals_sequential_and_overlaps_independent_nodes() -> None:
    # By hand, in list order.
    expected = QA()
    for cls in STEPS:
        await cls().run(RunContext(state=expected, execution_id="by-hand"))

    graph = Graph(nodes=[Plan, Done, *STEPS])
    spans = Spans()
    began = time.perf_counter()
    result = await graph.run(Plan(), state=QA(), deps=spans)
    makespan = time.perf_counter() - began

    assert result.state.model_dump_json() == expected.model_dump_json()
    assert result.output == expected.answer
    assert expected.answer.startswith("science: DOC ABOUT WHY")

    s = spans.spans
    start = {k: v[0] for k, v in s.items()}
    end = {k: v[1] for k, v in s.items()}
    # Independent nodes overlapped: Retrieve, Keywords and Classify ran together.
    for a, b in [("Retrieve", "Keywords"), ("Retrieve", "Classify"), ("Keywords", "Classify")]:
        assert start[a] < end[b] and start[b] < end[a], f"{a} and {b} did not overlap"
    # Summarize (reads docs) overlapped Classify, which it does not depend on.
    assert start["Summarize"] < end["Classify"] or start["Classify"] < end["Summarize"]
    # Dependent nodes never started before their producers ended.
    producers = {
        "Summarize": ["Retrieve"],
        "Draft": ["Summarize", "Keywords"],
        "Answer": ["Draft", "Classify"],
    }
    for node, deps in producers.items():
        for dep in deps:
            assert start[node] >= end[dep], f"{node} started before {dep} ended"
    # Three levels of 50 ms each, not six.
    ratio = makespan / 0.3
    print(f"pipeline: makespan {makespan:.3f} s, {ratio:.2f} of the sequential 0.3 s")
    assert ratio < 0.9


# -- forks, nested forks and a pipeline: byte-identical at any concurrency --------------


class Mix(BaseModel):
    seed: int = 0
    items: list[str] = []
    scores: dict[str, int] = {}
    trail: Annotated[list[str], append] = []
    tags: Annotated[dict[str, str], merge_dict] = {}
    total: int = 0
    summary: str = ""
    report: str = ""


async def jitter() -> None:
    await asyncio.sleep(random.uniform(0.0, 0.004))


@dataclass
class Root(BaseNode[Mix]):
    async def run(self, ctx: RunContext[Mix]) -> Fork[Mix]:
        await jitter()
        ctx.state.trail.append("root")
        branches: list[BaseNode[Mix]] = [Item(f"i{k}") for k in range(4)]
        branches += [Group(g) for g in range(3)]
        return Fork(branches, then=Stitch())


@dataclass
class Item(BaseNode[Mix]):
    name: str

    async def run(self, ctx: RunContext[Mix]) -> Item | End[str]:
        await jitter()
        ctx.state.items.append(self.name)
        ctx.state.scores[self.name] = len(ctx.state.items)
        ctx.state.trail.append(f"item:{self.name}")
        if self.name.count("+") < 1 and self.name.endswith("1"):
            return Item(self.name + "+")  # a two-node branch
        return End(self.name)


@dataclass
class Group(BaseNode[Mix]):
    g: int

    async def run(self, ctx: RunContext[Mix]) -> Fork[Mix]:
        await jitter()
        ctx.state.tags[f"g{self.g}"] = "open"
        subs: list[BaseNode[Mix]] = [Item(f"g{self.g}.{k}") for k in range(2)]
        if self.g == 1:
            subs.append(Group(10))  # a nested fork inside a nested fork
        return Fork(subs, then=Seal(self.g))


@dataclass
class Seal(BaseNode[Mix]):
    g: int

    async def run(self, ctx: RunContext[Mix]) -> End[list[Any]]:
        await jitter()
        assert ctx.join is not None
        ctx.state.tags[f"g{self.g}"] = f"sealed:{ctx.join.succeeded}"
        return End([self.g, *ctx.join.results])


@dataclass
class Stitch(BaseNode[Mix]):
    async def run(self, ctx: RunContext[Mix]) -> Pipeline[Mix]:
        await jitter()
        assert ctx.join is not None
        ctx.state.trail.append(f"stitch:{ctx.join.total}")
        return Pipeline([Count(), Summ(), Report()], then=Finish())


@dataclass
class Count(BaseNode[Mix]):
    reads: ClassVar[frozenset[str]] = frozenset({"scores"})
    writes: ClassVar[frozenset[str]] = frozenset({"total", "trail"})

    async def run(self, ctx: RunContext[Mix]) -> None:
        await jitter()
        ctx.state.total = sum(ctx.state.scores.values())
        ctx.state.trail.append("count")


@dataclass
class Summ(BaseNode[Mix]):
    reads: ClassVar[frozenset[str]] = frozenset({"items"})
    writes: ClassVar[frozenset[str]] = frozenset({"summary", "trail"})

    async def run(self, ctx: RunContext[Mix]) -> None:
        await jitter()
        ctx.state.summary = ",".join(ctx.state.items)
        ctx.state.trail.append("summ")


@dataclass
class Report(BaseNode[Mix]):
    reads: ClassVar[frozenset[str]] = frozenset({"summary", "total"})
    writes: ClassVar[frozenset[str]] = frozenset({"report"})

    async def run(self, ctx: RunContext[Mix]) -> None:
        await jitter()
        ctx.state.report = f"{ctx.state.total}/{ctx.state.summary}"


@dataclass
class Finish(BaseNode[Mix]):
    async def run(self, ctx: RunContext[Mix]) -> End[dict[str, Any]]:
        return End({"report": ctx.state.report, "tags": ctx.state.tags})


MIX = Graph(nodes=[Root, Item, Group, Seal, Stitch, Count, Summ, Report, Finish])


@pytest.mark.asyncio
async def test_forks_nested_forks_and_pipeline_identical_at_any_concurrency() -> None:
    seen: dict[int, tuple[str, str]] = {}
    for mc in (1, 2, 8, 64):
        for _ in range(2):
            result = await asyncio.wait_for(
                MIX.run(Root(), state=Mix(), max_concurrency=mc), timeout=20
            )
            assert result.deterministic is True
            got = (result.state.model_dump_json(), canonical_json(result.output))
            if mc in seen:
                assert got == seen[mc]
            seen[mc] = got
    assert len(set(seen.values())) == 1, "results differ across max_concurrency"
    state = Mix.model_validate_json(seen[1][0])
    # Branch-index order, not completion order.
    assert state.items[:5] == ["i0", "i1", "i1+", "i2", "i3"]
    assert state.tags == {"g0": "sealed:2", "g1": "sealed:3", "g2": "sealed:2", "g10": "sealed:2"}
    assert state.trail[0] == "root" and state.trail[-3:] == ["stitch:7", "count", "summ"]
    assert state.report == f"{state.total}/{state.summary}"
