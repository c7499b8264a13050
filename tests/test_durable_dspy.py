"""DSPyNode runs with a store: predictions are journaled and a resume calls no LM."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

dspy = pytest.importorskip("dspy")
from dspy.utils import DummyLM  # noqa: E402

from lift_graph import (  # noqa: E402
    BaseNode,
    CheckpointError,
    DSPyNode,
    Fork,
    Graph,
    MemoryStore,
    RunContext,
)

pytestmark = pytest.mark.asyncio

LM = DummyLM({"q1": {"answer": "a1", "reasoning": "because"}})
LM.cache = False


class S(BaseModel):
    question: str = "q1"
    answer: str = ""
    careful: str = ""


class Answer(DSPyNode[S]):
    signature = "question -> answer"
    lm = LM


@dataclass
class Both(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        careful = Answer(module_type=dspy.ChainOfThought, outputs={"answer": "careful"})
        return Fork([Answer(), careful])


graph = Graph([Both, Answer])


async def test_predictions_and_per_instance_options_survive_a_resume() -> None:
    store = MemoryStore()
    first = await graph.run(Both(), state=S(), store=store)
    calls = len(LM.history)
    again = await graph.resume(first.execution_id, store=store)
    assert len(LM.history) == calls  # replayed: no LM call
    assert again.state == first.state == S(question="q1", answer="a1", careful="a1")
    assert [p.toDict() for p in again.output] == [p.toDict() for p in first.output]
    assert again.output[1].reasoning == "because"
    entries = {e.key: e.data for e in store.journal(first.execution_id)}
    careful = entries["0.Both/1/0.Answer"]["node"]["extra"]
    assert careful["module_type"] == {"$ref": "dspy.predict.chain_of_thought:ChainOfThought"}


async def test_an_lm_object_per_instance_is_not_written() -> None:
    @dataclass
    class PerInstance(BaseNode[S]):
        async def run(self, ctx: RunContext[S]) -> Any:
            return Answer(lm=LM)

    with pytest.raises(CheckpointError, match="lm=") as info:
        await Graph([PerInstance, Answer]).run(PerInstance(), state=S(), store=MemoryStore())
    assert info.value.node == "Answer" and info.value.field == "lm"
