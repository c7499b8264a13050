"""AgentNode: pydantic-ai agents as nodes, offline with TestModel / FunctionModel."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel

pydantic_ai = pytest.importorskip("pydantic_ai")
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.messages import (  # noqa: E402
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel  # noqa: E402
from pydantic_ai.models.test import TestModel  # noqa: E402

from lift_graph import (  # noqa: E402
    AgentNode,
    BaseNode,
    ConfigurationError,
    End,
    Fork,
    Graph,
    InvalidStateError,
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
    history: list[ModelMessage] = []


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


# --- history_field: a conversation kept in the state ------------------------------


def _prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        str(part.content)
        for m in messages
        if isinstance(m, ModelRequest)
        for part in m.parts
        if isinstance(part, UserPromptPart)
    ]


@dataclass
class Recorder:
    """A FunctionModel function: answers ``"<prompt> #<n>"``, n = the messages it saw."""

    calls: list[list[ModelMessage]]

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls.append(list(messages))
        prompt = _prompts(messages)[-1]
        if prompt.endswith("slow"):
            await asyncio.sleep(0.02)  # finishes after its fork siblings
        return ModelResponse(parts=[TextPart(f"{prompt} #{len(messages)}")])


def _chat_agent(calls: list[list[ModelMessage]]) -> Agent[None, str]:
    return Agent(FunctionModel(Recorder(calls)))


class Chat(AgentNode[State]):
    agent = Agent(TestModel(custom_output_text="ok"))
    prompt_field = "text"
    output_field = "summary"
    history_field = "history"


def test_reads_and_writes_include_the_history_field() -> None:
    assert Chat.reads == frozenset({"text", "history"})
    assert Chat.writes == frozenset({"summary", "history"})


@dataclass
class Turn(BaseNode[State]):
    """Loops over ``prompts``: each turn sets the prompt and runs Talk."""

    prompts: tuple[str, ...]
    agent: Any

    async def run(self, ctx: RunContext[State]) -> Talk | End[str]:
        if not self.prompts:
            return End(ctx.state.summary)
        ctx.state.text = self.prompts[0]
        return Talk(self.agent, self.prompts[1:])


@dataclass
class Talk(AgentNode[State]):
    agent: Any = None  # per instance: each test brings its own recorder
    rest: tuple[str, ...] = ()
    prompt_field = "text"
    output_field = "summary"
    history_field = "history"

    async def run(self, ctx: RunContext[State]) -> Turn:
        await self.ask(ctx)
        return Turn(self.rest, self.agent)


@pytest.mark.asyncio
async def test_history_is_kept_across_runs_of_a_loop() -> None:
    calls: list[list[ModelMessage]] = []
    start = Turn(("hi", "again"), _chat_agent(calls))
    result = await Graph(nodes=[Turn, Talk]).run(start, state=State())
    first, second = calls
    assert _prompts(first) == ["hi"]
    assert second[:2] == result.state.history[:2]  # the first exchange, sent back
    assert _prompts(second) == ["hi", "again"]
    assert result.output == "again #3"
    assert [m.kind for m in result.state.history] == ["request", "response"] * 2
    assert [p.content for m in result.state.history[1::2] for p in m.parts] == [
        "hi #1",
        "again #3",
    ]


@pytest.mark.asyncio
async def test_history_is_replaced_by_a_new_list_old_plus_new_messages() -> None:
    node = Talk(_chat_agent([]))
    state: dict[str, Any] = {"text": "one", "history": []}
    ctx: RunContext[Any] = RunContext(state=state, execution_id="x")
    await node.ask(ctx)
    old = state["history"]
    kept = list(old)
    state["text"] = "two"
    await node.ask(ctx)
    new = state["history"]
    assert new is not old and old == kept  # not extended in place: forks share it
    assert new[:2] == kept
    assert _prompts(new[2:]) == ["two"] and [m.kind for m in new[2:]] == ["request", "response"]


@pytest.mark.asyncio
@pytest.mark.parametrize("empty", [None, []])
async def test_none_or_empty_history_starts_a_conversation(empty: list[Any] | None) -> None:
    calls: list[list[ModelMessage]] = []
    state: dict[str, Any] = {"text": "hello", "history": empty}
    ctx: RunContext[Any] = RunContext(state=state, execution_id="x")
    await Talk(_chat_agent(calls)).ask(ctx)
    assert [len(c) for c in calls] == [1]
    assert isinstance(state["history"], list) and len(state["history"]) == 2
    assert state["summary"] == "hello #1"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("not a list", "holds str"),
        ((), "holds tuple"),
        ([{"kind": "request", "parts": []}], "item 0 is dict"),
    ],
)
async def test_a_history_that_is_not_a_message_list_names_node_and_field(
    value: Any, says: str
) -> None:
    state = {"text": "hello", "history": value}
    with pytest.raises(InvalidStateError, match=says) as info:
        await Chat().ask(RunContext[Any](state=state, execution_id="x"))
    assert (info.value.node, info.value.field) == ("Chat", "history")
    assert "list[ModelMessage]" in str(info.value)


@pytest.mark.asyncio
async def test_a_missing_history_field_names_node_and_field() -> None:
    with pytest.raises(MissingInputError) as info:
        await Chat().ask(RunContext[Any](state={"text": "hello"}, execution_id="x"))
    assert (info.value.node, info.value.field) == ("Chat", "history")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"output_field": "history"}, "history_field and output_field"),
        ({"prompt_field": 3}, "attribute `prompt_field`"),
        ({"history_field": ""}, "attribute `history_field`"),
        ({"agent": None}, "has no agent"),
    ],
)
async def test_bad_configuration_is_a_configuration_error(
    overrides: dict[str, Any], says: str
) -> None:
    node = Chat()
    for name, value in overrides.items():
        setattr(node, name, value)
    with pytest.raises(ConfigurationError, match=says):
        await node.ask(RunContext(state=State(), execution_id="x"))


@dataclass
class Ask(AgentNode[State]):
    """One question per instance, continuing the shared conversation."""

    topic: str = ""
    agent: Any = None
    history_field: str | None = "history"
    writes: ClassVar[frozenset[str]] = frozenset({"history"})

    def prompt(self, state: State) -> str:
        return self.topic


@dataclass
class AskBoth(BaseNode[State]):
    agent: Any

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Ask("a slow", self.agent), Ask("b", self.agent)])


@pytest.mark.asyncio
async def test_fork_branches_extend_one_history_merged_in_branch_order() -> None:
    calls: list[list[ModelMessage]] = []
    agent = _chat_agent(calls)
    start = State()
    start.history = (await agent.run("before")).all_messages()
    calls.clear()
    result = await Graph(nodes=[AskBoth, Ask]).run(AskBoth(agent), state=start)
    # Each branch continued the conversation at the fork; "b" finished first.
    assert sorted(_prompts(c) for c in calls) == [["before", "a slow"], ["before", "b"]]
    history = result.state.history
    assert history[:2] == start.history
    assert _prompts(history) == ["before", "a slow", "b"]  # branch order, not finish order
    assert [p.content for m in history[1::2] for p in m.parts] == [
        "before #1",
        "a slow #3",
        "b #3",
    ]


@dataclass
class Configurable(AgentNode[State]):
    """Every AgentNode attribute is a dataclass field, set per instance."""

    agent: Any = None
    prompt_field: str | None = "text"
    output_field: str | None = "summary"
    history_field: str | None = None


@dataclass
class TitleThenSummary(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
        title = Configurable(Agent(FunctionModel(_upper)), "summary", "title")
        summary = Configurable(Agent(TestModel(custom_output_text="a summary")))
        return Pipeline([title, summary], order="inferred", then=Done())


def test_instance_fields_give_the_instance_reads_and_writes() -> None:
    assert Configurable.reads == frozenset({"text"})  # the class defaults
    assert Configurable.writes == frozenset({"summary"})
    node = Configurable(prompt_field="summary", output_field="title", history_field="history")
    assert node.reads == frozenset({"summary", "history"})
    assert node.writes == frozenset({"title", "history"})
    assert Configurable(prompt_field=None, output_field=None).writes is None
    assert Configurable(prompt_field=None).reads is None  # prompt() may read anything


@pytest.mark.asyncio
async def test_instance_fields_drive_the_pipeline_order_and_the_run() -> None:
    graph = Graph(nodes=[TitleThenSummary, Configurable, Done])
    result = await graph.run(TitleThenSummary(), state=State())
    # Listed consumer-first; the instances' reads / writes put the summary first.
    assert result.output == "A SUMMARY: a summary"


@dataclass(slots=True)
class Slotted(AgentNode[State]):
    prompt_field: str | None = "text"
    agent: Any = None


def test_a_slotted_dataclass_field_claims_nothing_on_the_class() -> None:
    # On the class a slotted field is a member descriptor, not a field name.
    assert Slotted.reads is None
    Graph(nodes=[Slotted])
    assert Slotted().reads == frozenset({"text"})


@pytest.mark.asyncio
async def test_history_writes_are_declared_for_strict_mode() -> None:
    start = Turn(("hi", "again"), _chat_agent([]))
    result = await Graph(nodes=[Turn, Talk]).run(start, state=State(), strict=True)
    assert len(result.state.history) == 4


@pytest.mark.asyncio
async def test_a_state_holding_a_conversation_round_trips_through_json() -> None:
    calls: list[list[ModelMessage]] = []
    node = Talk(agent=_chat_agent(calls))
    state = State(text="hi")
    await node.ask(RunContext(state=state, execution_id="x"))
    state.text = "again"
    await node.ask(RunContext(state=state, execution_id="x"))

    restored = State.model_validate_json(state.model_dump_json())
    assert restored == state
    assert restored.history == state.history
    # The field's JSON is pydantic-ai's own message format: either loads the other.
    dumped = json.loads(state.model_dump_json())["history"]
    assert dumped == json.loads(ModelMessagesTypeAdapter.dump_json(state.history))
    assert ModelMessagesTypeAdapter.validate_python(dumped) == state.history

    # The restored conversation goes on where it stopped.
    restored.text = "third"
    await node.ask(RunContext(state=restored, execution_id="y"))
    assert _prompts(calls[-1]) == ["hi", "again", "third"]
    assert restored.history[:4] == state.history
