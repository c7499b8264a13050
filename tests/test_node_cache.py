"""Node cache: a hit applies the recorded writes and return without running the node."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

dspy = pytest.importorskip("dspy")
from dspy.utils import DummyLM  # noqa: E402

from lift_graph import (  # noqa: E402
    BaseNode,
    CachePolicy,
    ConfigurationError,
    DSPyNode,
    End,
    Graph,
    Limits,
    MemoryStore,
    Pipeline,
    ProviderLimit,
    RunContext,
    SQLiteStore,
    Store,
)

pytestmark = pytest.mark.asyncio


class QA(BaseModel):
    question: str = ""
    topic: str = ""
    answer: str = ""
    category: str = ""
    summary: str = ""


def _lm() -> Any:
    lm = DummyLM(
        {
            "What is 2+2?": {"answer": "4", "category": "math"},
            "What is 3+3?": {"answer": "6", "category": "math"},
            "Capital of France?": {"answer": "Paris", "category": "geography"},
        }
    )
    lm.cache = False  # count every call: nothing from DSPy's own cache
    return lm


LM = _lm()


class Answer(DSPyNode[QA]):
    signature = "question -> answer"
    cache = CachePolicy(version="1")
    lm = LM


class Categorize(DSPyNode[QA]):
    signature = "question -> category"
    cache = CachePolicy(version="1")
    lm = LM


@dataclass
class Summarize(BaseNode[QA]):
    """Not cached: reads what the cached nodes wrote."""

    reads = frozenset({"answer", "category"})
    writes = frozenset({"summary"})

    async def run(self, ctx: RunContext[QA]) -> None:
        ctx.state.summary = f"{ctx.state.category}: {ctx.state.answer}"


@dataclass
class Ask(BaseNode[QA]):
    async def run(self, ctx: RunContext[QA]) -> Pipeline[QA]:
        return Pipeline([Answer(), Categorize(), Summarize()], then=Done())


@dataclass
class Done(BaseNode[QA]):
    async def run(self, ctx: RunContext[QA]) -> End[str]:
        return End(ctx.state.summary)


graph = Graph([Ask, Answer, Categorize, Summarize, Done])


@pytest.fixture(params=["memory", "sqlite"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "c.db")
    yield made
    made.close()


def _calls() -> int:
    return len(LM.history)


async def test_a_second_identical_run_makes_no_lm_call(cache: Store) -> None:
    before = _calls()
    first = await graph.run(Ask(), state=QA(question="What is 2+2?"), cache=cache)
    assert _calls() - before == 2
    assert (first.cache_hits, first.cache_misses) == (0, 2)
    before = _calls()
    second = await graph.run(Ask(), state=QA(question="What is 2+2?"), cache=cache)
    assert _calls() == before
    assert (second.cache_hits, second.cache_misses) == (2, 0)
    assert second.output == first.output == "math: 4"
    assert second.state.model_dump_json() == first.state.model_dump_json()


async def test_changing_an_input_or_a_version_recomputes_only_what_it_affects(
    cache: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await graph.run(Ask(), state=QA(question="What is 2+2?"), cache=cache)
    # `topic` is read by neither cached node: both hit.
    before = _calls()
    other_topic = await graph.run(Ask(), state=QA(question="What is 2+2?", topic="x"), cache=cache)
    assert _calls() == before and other_topic.cache_hits == 2
    # A new question is an input of both.
    before = _calls()
    changed = await graph.run(Ask(), state=QA(question="What is 3+3?"), cache=cache)
    assert _calls() - before == 2 and changed.output == "math: 6"
    # A new version of one node recomputes that node only.
    monkeypatch.setattr(Categorize, "cache", CachePolicy(version="2"))
    before = _calls()
    bumped = await graph.run(Ask(), state=QA(question="What is 2+2?"), cache=cache)
    assert _calls() - before == 1
    assert (bumped.cache_hits, bumped.cache_misses) == (1, 1)
    assert bumped.output == "math: 4"


async def test_the_lm_model_and_signature_are_part_of_the_key(cache: Store) -> None:
    await graph.run(Ask(), state=QA(question="What is 2+2?"), cache=cache)
    other = _lm()
    other.model = "another-model"

    class AnswerElsewhere(Answer):
        lm = other

    node = Answer(lm=None)
    key_graph = Graph([AnswerElsewhere, Answer])
    before = len(other.history)
    result = await key_graph.run(AnswerElsewhere(), state=QA(question="What is 2+2?"), cache=cache)
    assert len(other.history) - before == 1 and result.cache_misses == 1
    assert node.cache_fingerprint()["signature"] != Categorize().cache_fingerprint()["signature"]


# -- plain nodes: own fields, ttl, no slot taken ---------------------------------------

RUNS: Counter[str] = Counter()


class Calc(BaseModel):
    x: int = 0
    y: int = 0
    out: int = 0


@dataclass
class Scale(BaseNode[Calc]):
    factor: int = 2
    reads = frozenset({"x"})
    writes = frozenset({"out"})
    cache = CachePolicy(version="1", ttl=60.0)

    async def run(self, ctx: RunContext[Calc]) -> End[int]:
        RUNS["scale"] += 1
        ctx.state.out = ctx.state.x * self.factor
        return End(ctx.state.out)


calc = Graph([Scale])


async def test_own_fields_and_ttl_are_part_of_a_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    RUNS.clear()
    store = MemoryStore()
    now = [1000.0]
    monkeypatch.setattr("lift_graph._durable.time.time", lambda: now[0])
    assert (await calc.run(Scale(), state=Calc(x=3), cache=store)).output == 6
    hit = await calc.run(Scale(), state=Calc(x=3, y=9), cache=store, max_concurrency=1)
    assert hit.output == 6 and hit.state.out == 6 and RUNS["scale"] == 1
    assert hit.peak_concurrency == 0  # a hit takes no slot
    assert (await calc.run(Scale(factor=5), state=Calc(x=3), cache=store)).output == 15
    assert RUNS["scale"] == 2
    now[0] += 61.0  # past the ttl
    assert (await calc.run(Scale(), state=Calc(x=3), cache=store)).output == 6
    assert RUNS["scale"] == 3


async def test_a_cache_hit_is_journaled_and_replayed() -> None:
    store = MemoryStore()
    await calc.run(Scale(), state=Calc(x=4), cache=store)
    RUNS.clear()
    result = await calc.run(Scale(), state=Calc(x=4), cache=store, store=store)
    assert RUNS["scale"] == 0 and result.cache_hits == 1
    again = await calc.resume(result.execution_id, store=store)
    assert again.output == 8 and RUNS["scale"] == 0


async def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        CachePolicy(ttl=-1)
    with pytest.raises(ConfigurationError, match="version"):
        CachePolicy(version=2)  # type: ignore[arg-type]


@dataclass
class Metered(BaseNode[Calc]):
    provider = "llm"
    reads = frozenset({"x"})
    writes = frozenset({"out"})
    cache = CachePolicy()

    async def run(self, ctx: RunContext[Calc]) -> End[int]:
        RUNS["metered"] += 1
        ctx.state.out = ctx.state.x + 1
        return End(ctx.state.out)


async def test_a_hit_takes_no_rate_permit() -> None:
    RUNS.clear()
    store = MemoryStore()
    limits = Limits(providers={"llm": ProviderLimit(rpm=1)})
    metered = Graph([Metered])
    first = await metered.run(Metered(), state=Calc(x=1), cache=store, limits=limits)
    # The one request of this minute is spent: a node taking a permit would wait ~60 s.
    second = await metered.run(Metered(), state=Calc(x=1), cache=store, limits=limits, timeout=10)
    assert first.output == second.output == 2
    assert RUNS["metered"] == 1 and second.cache_hits == 1
