"""pydantic-graph's email-feedback example, ported to lift_graph with AgentNodes.

The program (pydantic-ai docs, "Graphs" -> "GenAI Example"): a writer agent drafts a
welcome email for a user, a feedback agent reviews it; until the review approves,
the writer rewrites the email from the feedback, *continuing its conversation*
(the state keeps the writer's message history). Here ``WriteEmail`` is an
``AgentNode`` with ``history_field = "writer_messages"``; the models are offline
``FunctionModel``s installed with ``Agent.override``.

The fake writer revises the previous draft it finds in its message history, so the
final email is only right if the history reached the second call. The same program
written for pydantic-graph (as the docs have it) runs with the same fake models
and must give the same email.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from pydantic import BaseModel

pytest.importorskip("pydantic_ai")
from pydantic_ai import Agent, format_as_xml
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ToolCallPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from lift_graph import AgentNode, End, Graph, RunContext

# --- the program's data and agents (as in the pydantic-graph example) -----------


@dataclass
class User:
    name: str
    email: str  # EmailStr in the original: needs the email-validator package
    interests: list[str]


@dataclass
class Email:
    subject: str
    body: str


class EmailRequiresWrite(BaseModel):
    feedback: str


class EmailOk(BaseModel):
    pass


# No model here: each run installs fresh fakes with `Agent.override(model=...)`.
writer_agent = Agent(output_type=Email, system_prompt="Write a welcome email to our tech blog.")
feedback_agent = Agent[None, EmailRequiresWrite | EmailOk](
    output_type=EmailRequiresWrite | EmailOk,  # type: ignore[arg-type]
    system_prompt=(
        "Review the email and provide feedback, email must reference the users specific interests."
    ),
)

USER = User(name="John Doe", email="john.joe@example.com", interests=["Haskel", "Lisp", "Fortran"])


def write_prompt(user: User, feedback: str | None) -> str:
    if feedback:
        return f"Rewrite the email for the user:\n{format_as_xml(user)}\nFeedback: {feedback}"
    return f"Write a welcome email for the user:\n{format_as_xml(user)}"


def review_prompt(user: User, email: Email) -> str:
    return format_as_xml({"user": user, "email": email})


# --- deterministic fake models ---------------------------------------------------


def _user_prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        str(part.content)
        for m in messages
        if isinstance(m, ModelRequest)
        for part in m.parts
        if isinstance(part, UserPromptPart)
    ]


def _drafts(messages: list[ModelMessage]) -> list[dict[str, str]]:
    """The emails the writer returned earlier in this conversation (its tool calls)."""
    return [
        part.args_as_dict()
        for m in messages
        if isinstance(m, ModelResponse)
        for part in m.parts
        if isinstance(part, ToolCallPart)
    ]


@dataclass
class FakeWriter:
    """Drafts a greeting; on feedback, revises its *previous draft from the history*."""

    calls: list[list[ModelMessage]] = field(default_factory=list)

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls.append(list(messages))
        prompt = _user_prompts(messages)[-1]
        drafts = _drafts(messages)
        if not drafts:
            name = re.search(r"<name>(.*?)</name>", prompt)
            assert name is not None, prompt
            email = {"subject": "Welcome to our tech blog!", "body": f"Hello {name[1]}!"}
        else:
            feedback = prompt.split("Feedback: ", 1)[1]
            topics = feedback.split(": ", 1)[1]
            email = {**drafts[-1], "body": f"{drafts[-1]['body']} Enjoy our posts on {topics}."}
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, email)])


def fake_reviewer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Approves an email whose body names every interest of the user."""
    prompt = _user_prompts(messages)[-1]
    interests = re.findall(r"<item>(.*?)</item>", prompt)
    body = re.search(r"<body>(.*?)</body>", prompt, re.DOTALL)
    assert interests and body is not None, prompt
    missing = [i for i in interests if i not in body[1]]
    tools = {t.name.rsplit("_", 1)[-1]: t.name for t in info.output_tools}
    if missing:
        args = {"feedback": f"Mention the user's interests: {', '.join(missing)}"}
        return ModelResponse(parts=[ToolCallPart(tools["EmailRequiresWrite"], args)])
    return ModelResponse(parts=[ToolCallPart(tools["EmailOk"], {})])


@contextmanager
def fake_models(writer: FakeWriter) -> Iterator[None]:
    """Both agents on offline fakes (``Agent.override`` is context-local)."""
    with (
        writer_agent.override(model=FunctionModel(writer)),
        feedback_agent.override(model=FunctionModel(fake_reviewer)),
    ):
        yield


EXPECTED = Email(
    subject="Welcome to our tech blog!",
    body="Hello John Doe! Enjoy our posts on Haskel, Lisp, Fortran.",
)


# --- the lift_graph port ---------------------------------------------------------


class State(BaseModel):
    user: User
    writer_messages: list[ModelMessage] = []
    email: Email | None = None  # the latest draft


@dataclass
class WriteEmail(AgentNode[State]):
    email_feedback: str | None = None

    agent = writer_agent
    output_field = "email"
    history_field = "writer_messages"  # message_history in, all messages back out
    reads = frozenset({"user", "writer_messages"})  # prompt() reads `user`

    def prompt(self, state: State) -> str:
        return write_prompt(state.user, self.email_feedback)

    async def run(self, ctx: RunContext[State]) -> Feedback:
        return Feedback(await self.ask(ctx))


@dataclass
class Feedback(AgentNode[State]):
    email: Email

    agent = feedback_agent
    reads = frozenset({"user"})
    writes = frozenset()  # the review only routes: nothing is stored

    def prompt(self, state: State) -> str:
        return review_prompt(state.user, self.email)

    async def run(self, ctx: RunContext[State]) -> WriteEmail | End[Email]:
        review = await self.ask(ctx)
        if isinstance(review, EmailRequiresWrite):
            return WriteEmail(email_feedback=review.feedback)
        return End(self.email)


feedback_graph = Graph(nodes=[WriteEmail, Feedback])


async def run_lift_graph(user: User) -> tuple[Email, State, FakeWriter]:
    writer = FakeWriter()
    with fake_models(writer):
        result = await feedback_graph.run(WriteEmail(), state=State(user=user), max_steps=20)
    return result.output, result.state, writer


# --- the same program on pydantic-graph, as the docs write it ---------------------


@dataclass
class PgState:
    user: User
    write_agent_messages: list[ModelMessage] = field(default_factory=list)


async def run_pydantic_graph(user: User) -> tuple[Email, PgState, FakeWriter]:
    """The docs' program on the installed pydantic-graph (its ``GraphBuilder`` runs
    ``BaseNode`` classes through ``NodeStep``), with the same agents and fakes.

    The classes are local so that this module imports without pydantic-graph.
    """
    from pydantic_graph import BaseNode, GraphBuilder, GraphRunContext
    from pydantic_graph import End as PgEnd
    from pydantic_graph.step import NodeStep

    @dataclass
    class PgWriteEmail(BaseNode[PgState]):
        email_feedback: str | None = None

        async def run(self, ctx: GraphRunContext[PgState]) -> PgFeedback:
            result = await writer_agent.run(
                write_prompt(ctx.state.user, self.email_feedback),
                message_history=ctx.state.write_agent_messages,
            )
            ctx.state.write_agent_messages += result.all_messages()  # as in the docs
            return PgFeedback(result.output)

    @dataclass
    class PgFeedback(BaseNode[PgState, None, Email]):
        email: Email

        async def run(self, ctx: GraphRunContext[PgState]) -> PgWriteEmail | PgEnd[Email]:
            result = await feedback_agent.run(review_prompt(ctx.state.user, self.email))
            if isinstance(result.output, EmailRequiresWrite):
                return PgWriteEmail(email_feedback=result.output.feedback)
            return PgEnd(self.email)

    builder = GraphBuilder(state_type=PgState, input_type=PgWriteEmail, output_type=Email)
    builder.add(
        builder.node(PgWriteEmail),
        builder.node(PgFeedback),
        builder.edge_from(builder.start_node).to(NodeStep(PgWriteEmail)),
    )
    graph = builder.build()
    writer = FakeWriter()
    state = PgState(user)
    with fake_models(writer):
        output = await graph.run(state=state, inputs=PgWriteEmail())
    return output, state, writer


# --- tests -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_writer_conversation_spans_both_runs_of_the_loop() -> None:
    email, state, writer = await run_lift_graph(USER)
    assert email == EXPECTED
    first, second = writer.calls  # one rewrite, then approved
    # The first call starts a conversation; the second continues it: the first
    # exchange (prompt, draft, tool return) comes first, then the rewrite request.
    assert _user_prompts(first) == [write_prompt(USER, None)]
    feedback = "Mention the user's interests: Haskel, Lisp, Fortran"
    assert _user_prompts(second) == [write_prompt(USER, None), write_prompt(USER, feedback)]
    assert _drafts(second) == [{"subject": EXPECTED.subject, "body": "Hello John Doe!"}]
    assert second[: len(first)] == first
    # The state holds both exchanges, each once: request, response (the draft's
    # tool call) and the tool return, per run of WriteEmail.
    assert len(state.writer_messages) == 6
    assert [m.kind for m in state.writer_messages] == ["request", "response", "request"] * 2
    assert _user_prompts(state.writer_messages) == _user_prompts(second)
    assert len(_drafts(state.writer_messages)) == 2
    assert state.email == EXPECTED


@pytest.mark.asyncio
async def test_a_third_writer_run_continues_the_same_conversation() -> None:
    _, state, _ = await run_lift_graph(USER)
    before = list(state.writer_messages)
    writer = FakeWriter()
    with fake_models(writer):
        start = WriteEmail("Mention the user's interests: Rust")
        again = await feedback_graph.run(start, state=state, max_steps=20)
    (call,) = writer.calls
    # Both earlier exchanges were sent, each once (the model sees each tool return
    # merged with the prompt after it into one request: 5 messages for 6 + 1).
    assert len(call) == 5 and call[:2] == before[:2]
    assert _user_prompts(call) == [*_user_prompts(before), write_prompt(USER, start.email_feedback)]
    assert _drafts(call) == _drafts(before)
    assert again.output == Email(EXPECTED.subject, EXPECTED.body + " Enjoy our posts on Rust.")
    assert len(again.state.writer_messages) == 9
    assert again.state.writer_messages[:6] == before
    assert state.writer_messages == before  # the run's input state is left alone


@pytest.mark.asyncio
async def test_same_email_as_the_pydantic_graph_program() -> None:
    pytest.importorskip("pydantic_graph")
    ours, state, writer = await run_lift_graph(USER)
    theirs, their_state, their_writer = await run_pydantic_graph(USER)
    assert ours == theirs == EXPECTED
    # The writer saw the same conversation on each call (ids and times aside).
    assert [_user_prompts(c) for c in writer.calls] == [
        _user_prompts(c) for c in their_writer.calls
    ]
    assert [_drafts(c) for c in writer.calls] == [_drafts(c) for c in their_writer.calls]
    # The docs' program stores `+= result.all_messages()`, which holds the history
    # *and* the run's new messages: the first exchange ends up in the state twice.
    assert _user_prompts(their_state.write_agent_messages) == (
        _user_prompts(writer.calls[0]) + _user_prompts(state.writer_messages)
    )
    assert len(their_state.write_agent_messages) == 9
    assert len(state.writer_messages) == 6


@pytest.mark.asyncio
async def test_the_state_with_the_conversation_round_trips_through_json() -> None:
    _, state, _ = await run_lift_graph(USER)
    restored = State.model_validate_json(state.model_dump_json())
    assert restored == state
    assert restored.writer_messages == state.writer_messages
