"""DSPyNode with a real DSPy module, driven offline by ``DummyLM`` in dict mode."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from typing import Any

import pytest
from pydantic import BaseModel

dspy = pytest.importorskip("dspy")
from dspy.utils import DummyLM  # noqa: E402

from lift_graph import (  # noqa: E402
    BaseNode,
    DSPyNode,
    End,
    Graph,
    JoinError,
    MissingInputError,
    Pipeline,
    RunContext,
    UnknownFieldError,
)


def dummy(answers: dict[str, dict[str, Any]]) -> Any:
    lm = DummyLM(answers)
    lm.cache = False  # never answer from DSPy's cache
    return lm


class State(BaseModel):
    question: str = ""
    answer: str = ""
    category: str = ""


class Ask(DSPyNode[State]):
    signature = "question -> answer"
    lm = dummy(
        {
            "What is 2+2?": {"answer": "4"},
            "Capital of France?": {"answer": "Paris"},
        }
    )


class Categorize(DSPyNode[State]):
    signature = "question -> category"
    lm = dummy(
        {
            "What is 2+2?": {"category": "math"},
            "Capital of France?": {"category": "geography"},
        }
    )


def test_reads_and_writes_come_from_the_signature() -> None:
    assert Ask.reads == frozenset({"question"})
    assert Ask.writes == frozenset({"answer"})
    assert Categorize.writes == frozenset({"category"})


@pytest.mark.asyncio
async def test_dspy_node_writes_its_output_to_the_state() -> None:
    graph = Graph(nodes=[Ask])
    result = await graph.run(Ask(), state=State(question="What is 2+2?"))
    assert result.state.answer == "4"
    assert result.state.question == "What is 2+2?"
    assert isinstance(result.output, dspy.Prediction)
    assert result.output.answer == "4"
    (record,) = result.records
    assert record.node == "Ask" and record.error is None

    other = await graph.run(Ask(), state=State(question="Capital of France?"))
    assert other.state.answer == "Paris"


@pytest.mark.asyncio
async def test_a_pipeline_of_dspy_nodes_with_different_lms() -> None:
    class Plan(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
            return Pipeline([Ask(), Categorize()])

    graph = Graph(nodes=[Plan, Ask, Categorize])
    for question, answer, category in [
        ("What is 2+2?", "4", "math"),
        ("Capital of France?", "Paris", "geography"),
    ]:
        result = await graph.run(Plan(), state=State(question=question), max_concurrency=2)
        assert (result.state.answer, result.state.category) == (answer, category)
        assert result.output is None  # a pipeline with then=None ends with End(None)


class Loose(DSPyNode[Any]):
    """Not tied to a state model, so only a run can find the missing input."""

    signature = "question -> answer"
    lm = dummy({"x": {"answer": "y"}})


class Other(BaseModel):
    topic: str = "sky"
    answer: str = ""


@pytest.mark.asyncio
async def test_a_missing_input_names_node_and_field() -> None:
    graph = Graph(nodes=[Loose])
    with pytest.raises(MissingInputError) as info:
        await graph.run(Loose(), state=Other())
    err = info.value
    assert (err.node, err.field) == ("Loose", "question")
    assert "Loose" in str(err) and "question" in str(err)
    assert err.node_key and err.attempt == 1


@pytest.mark.asyncio
async def test_a_missing_input_inside_a_pipeline_keeps_the_join() -> None:
    class Start(BaseNode[Other]):
        async def run(self, ctx: RunContext[Other]) -> Pipeline[Other]:
            return Pipeline([Loose()])

    graph = Graph(nodes=[Start, Loose])
    with pytest.raises(JoinError) as info:
        await graph.run(Start(), state=Other())
    assert isinstance(info.value.__cause__, MissingInputError)
    assert info.value.__cause__.field == "question"


def test_a_signature_input_missing_from_the_state_model_fails_at_build() -> None:
    class Narrow(BaseModel):
        answer: str = ""

    class NeedsQuestion(DSPyNode[Narrow]):
        signature = "question -> answer"

    with pytest.raises(UnknownFieldError) as info:
        Graph(nodes=[NeedsQuestion])
    assert (info.value.node, info.value.field) == ("NeedsQuestion", "question")


@pytest.mark.asyncio
async def test_a_dspy_node_can_route_elsewhere_after_predict() -> None:
    class AskThenShout(DSPyNode[State]):
        signature = "question -> answer"
        lm = Ask.lm

        async def run(self, ctx: RunContext[State]) -> End[str]:
            prediction = await self.predict(ctx)
            return End(prediction.answer.upper())

    graph = Graph(nodes=[AskThenShout])
    result = await graph.run(AskThenShout(), state=State(question="Capital of France?"))
    assert result.output == "PARIS"
    assert result.state.answer == "Paris"
