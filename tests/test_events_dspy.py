"""A streaming ``DSPyNode`` under ``Graph.iter``: token events tagged with its key.

Offline: the LM is a real ``dspy.LM`` whose engine is a fake that answers in the
chat adapter's format and streams its answer in small pieces (DSPy's engine
protocol: ``complete(request)`` and ``stream(request)``).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

dspy = pytest.importorskip("dspy")
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events  # noqa: E402
from dspy.utils import DummyLM  # noqa: E402

from lift_graph import (  # noqa: E402
    DSPyNode,
    End,
    Fork,
    Graph,
    GraphEvent,
    RunContext,
    TokenEvent,
)
from lift_graph.node import BaseNode  # noqa: E402

pytestmark = pytest.mark.asyncio

ANSWERS = {"capital of France?": "Paris is the capital.", "capital of Peru?": "Lima, by the sea."}


class Engine:
    """Answers ``[[ ## answer ## ]]`` for the question in the prompt; streams it
    7 characters at a time."""

    def __init__(self) -> None:
        self.streamed = 0

    def complete(self, request: Any) -> Any:
        prompt = request.messages[-1].text or ""
        answer = next(a for q, a in ANSWERS.items() if q in prompt)
        text = f"[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"
        return Response(
            id=None,
            model="fake",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=3, output_tokens=5, total_tokens=8),
        )

    def stream(self, request: Any) -> Iterator[Any]:
        self.streamed += 1
        for event in response_to_events(self.complete(request)):
            if event.type != "delta":
                yield event
                continue
            text = event.delta.text
            for i in range(0, len(text), 7):
                piece = dataclasses.replace(event.delta, text=text[i : i + 7])
                yield dataclasses.replace(event, delta=piece)

    def close(self) -> None:
        pass


class AsyncEngine:
    def __init__(self, sync: Engine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        return self.sync.complete(request)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        for event in self.sync.stream(request):
            yield event

    async def aclose(self) -> None:
        pass


class NoStreamEngine:
    """An async engine that cannot stream (it has no ``stream``)."""

    def __init__(self, sync: Engine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        return self.sync.complete(request)

    async def aclose(self) -> None:
        pass


def fake_lm(engine: Engine, async_engine: Any = None) -> Any:
    return dspy.LM(
        "openai/fake",
        engine=engine,
        async_engine=async_engine or AsyncEngine(engine),
        cache=False,
        num_retries=0,
    )


class State(BaseModel):
    question: str = ""
    answer: str = ""
    answers: list[str] = []


TOKENS: list[int] = []


class Ask(DSPyNode[State]):
    signature = "question -> answer"
    stream = True

    async def run(self, ctx: RunContext[State]) -> Any:
        prediction = await self.predict(ctx)
        TOKENS.append(ctx.tokens_used)
        return End(prediction)


@dataclasses.dataclass
class AskEach(DSPyNode[State]):
    question: str
    signature = "question -> answer"
    outputs = {"answer": "answers"}
    stream = ("answer",)


@dataclasses.dataclass
class AskBoth(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        lm = ctx.deps
        return Fork([AskEach(q, lm=lm) for q in ANSWERS])


async def events_of(graph: Graph[Any], start: Any, **kw: Any) -> list[GraphEvent]:
    async with contextlib.aclosing(graph.iter(start, **kw)) as events:
        return [e async for e in events]


async def test_a_streaming_node_sends_token_events_tagged_with_its_key() -> None:
    engine = Engine()
    graph = Graph(nodes=[Ask])
    TOKENS.clear()
    with dspy.context(track_usage=True):
        plain = await graph.run(Ask(lm=fake_lm(engine)), state=State(question="capital of France?"))
        assert engine.streamed == 0  # nobody listened: not streamed
        events = await events_of(
            graph, Ask(lm=fake_lm(engine)), state=State(question="capital of France?")
        )
    assert engine.streamed == 1
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert tokens and {(e.kind, e.key, e.field) for e in tokens} == {("token", "0.Ask", "answer")}
    assert "".join(e.text for e in tokens) == "Paris is the capital."
    assert [e.last for e in tokens][-1] is True and not any(e.last for e in tokens[:-1])
    kinds = [e.kind for e in events]
    first, last = kinds.index("token"), len(kinds) - 1 - kinds[::-1].index("token")
    assert kinds.index("node_started") < first and last < kinds.index("node_finished")
    result = events[-1].data["result"]
    assert result.state == plain.state
    assert result.state.answer == "Paris is the capital."
    assert result.output.answer == plain.output.answer
    assert TOKENS == [8, 8]  # the same token accounting, streamed or not


async def test_fork_branches_stream_under_their_own_keys() -> None:
    engine = Engine()
    graph = Graph(nodes=[AskBoth, AskEach])
    lm = fake_lm(engine)
    plain = await graph.run(AskBoth(), state=State(), deps=lm)
    events = await events_of(graph, AskBoth(), state=State(), deps=lm)
    text: dict[str, str] = {}
    for e in events:
        if isinstance(e, TokenEvent):
            text[e.key] = text.get(e.key, "") + e.text
    assert text == {
        "0.AskBoth/0/0.AskEach": "Paris is the capital.",
        "0.AskBoth/1/0.AskEach": "Lima, by the sea.",
    }
    assert events[-1].data["result"].state == plain.state
    assert plain.state.answers == ["Paris is the capital.", "Lima, by the sea."]


async def test_an_lm_without_chunks_gives_no_token_events() -> None:
    lm = DummyLM({"capital of France?": {"answer": "Paris"}})
    lm.cache = False
    events = await events_of(
        Graph(nodes=[Ask]), Ask(lm=lm), state=State(question="capital of France?")
    )
    assert not [e for e in events if e.kind == "token"]
    assert events[-1].data["result"].state.answer == "Paris"


async def test_an_lm_that_cannot_stream_falls_back_to_a_plain_call() -> None:
    engine = Engine()
    lm = fake_lm(engine, NoStreamEngine(engine))
    events = await events_of(
        Graph(nodes=[Ask]), Ask(lm=lm), state=State(question="capital of France?")
    )
    assert not [e for e in events if e.kind == "token"]
    assert events[-1].data["result"].state.answer == "Paris is the capital."


class Tutorial(dspy.Module):  # type: ignore[misc]
    """A module with only a sync ``forward``, as DSPy's tutorials write them."""

    def __init__(self) -> None:
        super().__init__()
        self.respond = dspy.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        return self.respond(question=question)


class AskTutorial(DSPyNode[State]):
    signature = "question -> answer"
    stream = True


async def test_a_program_with_only_a_sync_forward_streams_too() -> None:
    engine = Engine()
    node = AskTutorial(lm=fake_lm(engine), program=Tutorial())
    graph = Graph(nodes=[AskTutorial])
    events = await events_of(graph, node, state=State(question="capital of Peru?"))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert {e.key for e in tokens} == {"0.AskTutorial"}
    assert "".join(e.text for e in tokens) == "Lima, by the sea."
    assert events[-1].data["result"].state.answer == "Lima, by the sea."


class AskNothing(DSPyNode[State]):
    signature = "question -> answer"
    stream = ("nope",)


async def test_streaming_a_field_no_predictor_produces_names_the_node() -> None:
    from lift_graph import ConfigurationError

    node = AskNothing(lm=fake_lm(Engine()))
    with pytest.raises(ConfigurationError, match=r"AskNothing cannot stream fields \['nope'\]"):
        await events_of(Graph(nodes=[AskNothing]), node, state=State(question="capital of Peru?"))
