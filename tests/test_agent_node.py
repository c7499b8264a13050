"""AgentNode: pydantic-ai agents as nodes, offline with TestModel / FunctionModel."""

from __future__ import annotations

import asyncio
from typing import Annotated, ClassVar

import pytest
from pydantic import BaseModel

pydantic_ai = pytest.importorskip("pydantic_ai")
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart  # noqa: E402
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402
from pydantic_ai.models.test import TestModel  # noqa: E402

from lift_graph import (  # noqa: E402
    AgentNode,
    BaseNode,
    End,
    Fork,
    Graph,
    Limits,
    MissingInputError,
    Pipeline,
    ProviderLimit,
    RunContext,
    merge_dict,
)


class State(BaseModel):
    text: str = "the sky is blue"
    summary: str = ""
    title: str = ""
    notes: Annotated[dict[str, str], merge_dict] = {}


def _upper(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = messages[-1].parts[-1].content  # type: ignore[union-attr]
    return ModelResponse(parts=[TextPart(str(prompt).upper())])


class Summarize(AgentNode[State]):
    agent = Agent(FunctionModel(_upper))
    prompt_field = "text"
    output_field = "summary"
    provider = "llm"


class Title(AgentNode[State]):
    agent = Agent(TestModel(custom_output_text="A Title"))
    prompt_field = "summary"
    output_field = "title"
    provider = "llm"


class Start(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
        # Listed consumer-first: Title reads what Summarize writes.
        return Pipeline([Title(), Summarize()], then=Done(), order="inferred")


class Done(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        return End(f"{ctx.state.title}: {ctx.state.summary}")


def test_reads_and_writes_come_from_the_fields() -> None:
    assert Summarize.reads == frozenset({"text"})
    assert Summarize.writes == frozenset({"summary"})


@pytest.mark.asyncio
async def test_agents_run_as_a_pipeline_and_charge_tokens() -> None:
    limits = Limits(providers={"llm": ProviderLimit(concurrency=1, tpm=1_000_000)})
    graph = Graph(nodes=[Start, Summarize, Title, Done])
    result = await graph.run(Start(), state=State(), limits=limits)
    assert result.output == "A Title: THE SKY IS BLUE"
    assert result.state.summary == "THE SKY IS BLUE"
    assert limits.provider_peak("llm") == 1
    assert limits.tokens_in_window("llm") > 0  # the agents' usage reached the window


class Note(AgentNode[State]):
    agent = Agent(FunctionModel(_upper))
    writes: ClassVar[frozenset[str]] = frozenset({"notes"})

    def __init__(self, key: str) -> None:
        self.key = key

    def prompt(self, state: State) -> str:
        return f"note {self.key}"

    async def run(self, ctx: RunContext[State]) -> End[str]:
        out = await self.ask(ctx)
        await asyncio.sleep(0.001 * (5 - int(self.key)))
        ctx.state.notes[self.key] = out
        return End(out)


class FanOut(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Note(str(i)) for i in range(5)])


@pytest.mark.asyncio
async def test_agents_in_a_fork_merge_by_branch_order() -> None:
    result = await Graph(nodes=[FanOut, Note]).run(FanOut(), state=State())
    assert result.output == [f"NOTE {i}" for i in range(5)]
    assert list(result.state.notes) == [str(i) for i in range(5)]


class NoPrompt(AgentNode[State]):
    agent = Agent(TestModel())
    prompt_field = "missing"


@pytest.mark.asyncio
async def test_missing_prompt_field_names_node_and_field() -> None:
    with pytest.raises(MissingInputError) as info:
        await NoPrompt().run(RunContext(state=State(), execution_id="x"))
    assert (info.value.node, info.value.field) == ("NoPrompt", "missing")
