"""Pipelines with order="inferred": producers first, cycles and write conflicts refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    Graph,
    GraphDefinitionError,
    Pipeline,
    PipelineCycleError,
    RunContext,
    WriteConflictError,
    append,
)


class State(BaseModel):
    question: str = "q"
    docs: list[str] = []
    answer: str = ""
    draft: str = ""
    log: Annotated[list[str], append] = []


@dataclass
class Retrieve(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"question"})
    writes: ClassVar[frozenset[str]] = frozenset({"docs", "log"})

    async def run(self, ctx: RunContext[State]) -> None:
        ctx.state.docs = [f"doc for {ctx.state.question}"]
        ctx.state.log.append("retrieve")


@dataclass
class Draft(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"docs"})
    writes: ClassVar[frozenset[str]] = frozenset({"draft", "log"})

    async def run(self, ctx: RunContext[State]) -> None:
        ctx.state.draft = "draft from " + ",".join(ctx.state.docs)
        ctx.state.log.append("draft")


@dataclass
class Answer(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"draft"})
    writes: ClassVar[frozenset[str]] = frozenset({"answer", "log"})

    async def run(self, ctx: RunContext[State]) -> None:
        ctx.state.answer = ctx.state.draft.upper()
        ctx.state.log.append("answer")


@dataclass
class Start(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
        # Deliberately listed consumer-first: the inferred order fixes it.
        return Pipeline([Answer(), Draft(), Retrieve()], then=Done(), order="inferred")


@dataclass
class Done(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        return End(ctx.state.answer)


def test_inferred_order_puts_producers_first() -> None:
    pipe = Pipeline([Answer(), Draft(), Retrieve()], order="inferred")
    assert [type(n).__name__ for n in pipe.nodes] == ["Retrieve", "Draft", "Answer"]


@pytest.mark.asyncio
async def test_inferred_pipeline_runs_like_the_sorted_sequence() -> None:
    result = await Graph(nodes=[Start, Answer, Draft, Retrieve, Done]).run(Start(), state=State())
    assert result.output == "DRAFT FROM DOC FOR Q"
    assert result.state.log == ["retrieve", "draft", "answer"]


@dataclass
class Ping(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"answer"})
    writes: ClassVar[frozenset[str]] = frozenset({"draft"})


@dataclass
class Pong(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"draft"})
    writes: ClassVar[frozenset[str]] = frozenset({"answer"})


def test_cycle_is_refused_naming_the_nodes_and_fields() -> None:
    with pytest.raises(PipelineCycleError) as info:
        Pipeline([Ping(), Pong()], order="inferred")
    assert set(info.value.cycle) == {"Ping", "Pong"}
    message = str(info.value)
    assert "Ping" in message and "Pong" in message
    assert "'answer'" in message or "answer" in message


@dataclass
class WriterA(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"question"})
    writes: ClassVar[frozenset[str]] = frozenset({"answer"})


@dataclass
class WriterB(BaseNode[State]):
    reads: ClassVar[frozenset[str]] = frozenset({"docs"})
    writes: ClassVar[frozenset[str]] = frozenset({"answer"})


def test_unordered_writers_without_reducer_conflict() -> None:
    with pytest.raises(WriteConflictError) as info:
        Pipeline([WriterA(), WriterB()], order="inferred")
    assert info.value.field == "answer"
    assert info.value.nodes == ["WriterA", "WriterB"]


def test_reducer_field_writers_do_not_conflict() -> None:
    # Retrieve and another log writer both append to `log`, which has a reducer.
    pipe = Pipeline([Draft(), Retrieve()], order="inferred")
    assert [type(n).__name__ for n in pipe.nodes] == ["Retrieve", "Draft"]


@dataclass
class Undeclared(BaseNode[State]):
    pass


def test_inferred_order_needs_declarations() -> None:
    with pytest.raises(GraphDefinitionError, match="Undeclared"):
        Pipeline([Undeclared(), Retrieve()], order="inferred")


def test_unknown_order_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="order"):
        Pipeline([Retrieve()], order="random")
