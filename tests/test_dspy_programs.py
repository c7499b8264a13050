"""DSPy's own tutorial programs, re-expressed with ``DSPyNode``s, against the originals.

Each test runs a DSPy program by hand (as its tutorial writes it) and the same
program as a lift_graph graph, on equal but separate offline LMs, and compares:

- RAG over 16 questions (tutorial "RAG"): ``dspy.ChainOfThought('context, question
  -> response')`` over a local search, one call per question, vs a ``Fork`` of
  ``DSPyNode``s whose ``program=`` is the same RAG module;
- 4-hop search (tutorial "multi-hop search"): ``generate_query`` / ``append_notes``
  in a loop, vs a ``Pipeline`` of DSPyNodes per hop, notes and titles gathered by
  ``extend`` reducers;
- ``dspy.Ensemble(reduce_fn=dspy.majority)`` vs ``Fork(merge=MAJORITY,
  vote_key=<dspy.majority's normalization>)``;
- ``dspy.BestOfN`` vs ``Fork(join=FIRST_ACCEPTED, accept=<reward >= threshold>)``
  over LM copies with one rollout id each.

Equal means the same outputs, in the same order, and the same multiset of prompts
sent to the LM (each call's messages, from the LM's history, sorted). The RAG
module runs both as the tutorial writes it (``forward`` only: the node runs it on a
thread) and with ``aforward`` (DSPy's async path). One difference is by design and
tested as such: when no rollout passes, ``BestOfN`` returns its best attempt while
the FIRST_ACCEPTED fork raises ``JoinError`` (the rejected values kept in it).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel, Field

dspy = pytest.importorskip("dspy")
from dspy.clients.base_lm import BaseLM  # noqa: E402
from dspy.clients.engines.dummy_engine import AsyncDummyEngine, DummyEngine  # noqa: E402
from dspy.lm15 import Message, Response, TextPart, Usage  # noqa: E402
from dspy.predict.aggregation import default_normalize  # noqa: E402
from dspy.utils import DummyLM  # noqa: E402

from lift_graph import (  # noqa: E402
    BaseNode,
    DSPyNode,
    End,
    Fork,
    Graph,
    JoinError,
    JoinStrategy,
    MergeStrategy,
    Pipeline,
    RunContext,
)
from lift_graph.reducers import extend  # noqa: E402

# -- offline LMs ------------------------------------------------------------------


def dict_lm(answers: dict[str, dict[str, Any]]) -> Any:
    """DummyLM in dict mode (deterministic under concurrency), never cached."""
    lm = DummyLM(answers)
    lm.cache = False
    return lm


Script = Callable[[str, dict[str, Any]], dict[str, Any]]


class _ScriptEngine(DummyEngine):
    """DummyLM's engine answering ``owner.script(last message, owner.kwargs)``.

    ``owner`` is the LM that was called (``lm.copy(...)`` builds a new engine), so
    the script sees that copy's ``rollout_id`` and ``temperature``.
    """

    def _complete_messages(self, messages: list[dict[str, Any]]) -> Any:
        owner = self.owner
        content = messages[-1]["content"]
        owner.calls.append((owner.kwargs.get("rollout_id"), content))
        fields = owner.script(content, dict(owner.kwargs))
        text = owner._format_answer_fields(fields)
        return Response(
            id=None,
            model="dummy",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
        )


class ScriptedLM(DummyLM):  # type: ignore[misc]
    """A DummyLM whose answer is a pure function of the prompt and the LM's kwargs.

    ``calls`` logs ``(rollout_id, last message)`` for every call of this LM and of
    its copies (a copy shares the list).
    """

    def __init__(self, script: Script) -> None:
        super().__init__({})
        self.script = script
        self.calls: list[tuple[Any, str]] = []
        self.cache = False
        self._install_engine()

    def _install_engine(self) -> None:
        self._engine_spec = _ScriptEngine(self)
        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)

    def copy(self, **kwargs: Any) -> ScriptedLM:
        copied: ScriptedLM = BaseLM.copy(self, **kwargs)
        copied._install_engine()
        return copied


def prompts(lm: Any) -> list[tuple[tuple[str, str], ...]]:
    """Every call's messages, from the LM's history, sorted (order-free multiset)."""
    return sorted(
        tuple((m["role"], m["content"]) for m in entry["messages"]) for entry in lm.history
    )


_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]\n")
_ITEM = re.compile(r"\[\d+\] «(.*?)»", re.S)


def section(content: str, name: str) -> str:
    """The text of input field ``name`` in a ChatAdapter user message."""
    parts = _HEADER.split(content)
    for i in range(1, len(parts) - 1, 2):
        if parts[i] == name:
            return parts[i + 1].split("\n\nRespond with", 1)[0].strip()
    raise AssertionError(f"no field {name!r} in {content!r}")


def items(text: str) -> list[str]:
    """A list input as the ChatAdapter formats it ("[1] «a»\\n[2] «b»")."""
    return _ITEM.findall(text)


# -- a small corpus and a deterministic search ---------------------------------------

CORPUS: list[str] = [
    "Eiffel Tower | The Eiffel Tower is a wrought iron tower in Paris built by the "
    "engineer Gustave Eiffel for the 1889 World's Fair.",
    "Gustave Eiffel | Gustave Eiffel was a French civil engineer born in Dijon in 1832.",
    "Mona Lisa | The Mona Lisa is a portrait painted by Leonardo da Vinci and kept in "
    "the Louvre in Paris.",
    "Leonardo da Vinci | Leonardo da Vinci was an Italian painter born in Vinci, Tuscany, in 1452.",
    "Great Wall | The Great Wall of China is a series of fortifications built across "
    "northern China over many centuries.",
    "Python | Python is a programming language created by Guido van Rossum and first "
    "released in 1991.",
    "asyncio | asyncio is the Python library that runs coroutines concurrently on one event loop.",
    "DSPy | DSPy is a framework for programming language models with signatures and modules.",
    "Photosynthesis | Photosynthesis lets plants turn light, water and carbon dioxide "
    "into sugar and oxygen.",
    "Mount Everest | Mount Everest is the highest mountain above sea level, on the "
    "border of Nepal and China.",
    "Amazon River | The Amazon River in South America carries more water than any other river.",
    "Marie Curie | Marie Curie was a physicist who won Nobel Prizes in physics and in "
    "chemistry for research on radioactivity.",
    "Apollo 11 | Apollo 11 landed the first humans on the Moon in July 1969.",
    "Tokyo | Tokyo is the capital of Japan and its most populous city.",
    "Sahara | The Sahara is the largest hot desert in the world, in North Africa.",
    "Honeybees | Honeybees pollinate flowers and make honey from nectar.",
    "Penicillin | Penicillin, the first antibiotic, was discovered by Alexander Fleming in 1928.",
    "Pacific Ocean | The Pacific Ocean is the largest and deepest ocean on Earth.",
    "Shakespeare | William Shakespeare was an English playwright who wrote Hamlet and Macbeth.",
    "Jupiter | Jupiter is the largest planet of the solar system, a gas giant.",
]

_WORD = re.compile(r"[a-z0-9]+")


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3}


def search(query: str, k: int = 3) -> list[str]:
    """The ``k`` passages sharing most words with ``query`` (ties: corpus order)."""
    q = _terms(query)
    ranked = sorted(range(len(CORPUS)), key=lambda i: (-len(q & _terms(CORPUS[i])), i))
    return [CORPUS[i] for i in ranked[:k]]


# -- RAG over 16 questions -------------------------------------------------------------

QUESTIONS: list[str] = [
    "Who built the Eiffel Tower?",
    "Where was Gustave Eiffel born?",
    "Who painted the Mona Lisa?",
    "When was Leonardo da Vinci born?",
    "What is the Great Wall of China?",
    "Who created the Python language?",
    "What does asyncio run?",
    "What is DSPy for?",
    "What does photosynthesis produce?",
    "Where is Mount Everest?",
    "Which river carries the most water?",
    "What did Marie Curie research?",
    "When did Apollo 11 land on the Moon?",
    "What is the capital of Japan?",
    "What is the largest hot desert?",
    "Who discovered penicillin?",
]


def rag_lm() -> Any:
    return dict_lm(
        {
            q: {"reasoning": f"The context answers: {q}", "response": f"answer {i}: {q.lower()}"}
            for i, q in enumerate(QUESTIONS)
        }
    )


class RAG(dspy.Module):  # type: ignore[misc]
    """The tutorial's RAG module, as written there (``forward`` only)."""

    def __init__(self, num_docs: int = 3) -> None:
        self.num_docs = num_docs
        self.respond = dspy.ChainOfThought("context, question -> response")

    def forward(self, question: str) -> Any:
        context = search(question, k=self.num_docs)
        return self.respond(context=context, question=question)


class AsyncRAG(RAG):
    """With ``aforward``, so ``acall`` takes DSPy's async path (no thread)."""

    async def aforward(self, question: str) -> Any:
        context = search(question, k=self.num_docs)
        return await self.respond.acall(context=context, question=question)


class RagState(BaseModel):
    responses: list[str] = Field(default_factory=list)


@dataclass
class Answer(DSPyNode[RagState]):
    """One question through the RAG program; no ``run`` of its own."""

    question: str
    signature = "question -> response"
    outputs: ClassVar[dict[str, str]] = {"response": "responses"}


@dataclass
class AskAll(BaseNode[RagState]):
    questions: list[str]
    lm: Any
    program: Any

    async def run(self, ctx: RunContext[RagState]) -> Fork[RagState]:
        return Fork([Answer(question=q, lm=self.lm, program=self.program) for q in self.questions])


def rag_graph() -> Graph[RagState]:
    return Graph(nodes=[AskAll, Answer])


def test_answer_reads_nothing_from_the_state_and_writes_responses() -> None:
    assert Answer.writes == frozenset({"responses"})
    node = Answer(question="q", program=AsyncRAG())
    assert node.reads == frozenset()  # `question` binds from the node's own field
    assert node.extract_inputs(RagState()) == {"question": "q"}


@pytest.mark.asyncio
@pytest.mark.parametrize("program", [AsyncRAG, RAG], ids=["aforward", "forward-only"])
@pytest.mark.parametrize("max_concurrency", [1, 4, 16])
async def test_rag_over_16_questions_equals_the_dspy_program(
    program: type[RAG], max_concurrency: int
) -> None:
    by_hand_lm = rag_lm()
    with dspy.context(lm=by_hand_lm):
        rag = RAG()
        expected = [rag(question=q).response for q in QUESTIONS]
    assert expected == [f"answer {i}: {q.lower()}" for i, q in enumerate(QUESTIONS)]

    lm = rag_lm()
    result = await rag_graph().run(
        AskAll(QUESTIONS, lm, program()), state=RagState(), max_concurrency=max_concurrency
    )
    assert [p.response for p in result.output] == expected
    assert result.state.responses == expected
    assert len(lm.history) == len(QUESTIONS)
    assert prompts(lm) == prompts(by_hand_lm)


# -- multi-hop search, 4 hops ------------------------------------------------------------

HOP_QUERIES = [
    "Mona Lisa painter",
    "Leonardo da Vinci birthplace",
    "Eiffel Tower engineer",
    "Gustave Eiffel born",
]


def hop_script(content: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """generate_query asks for hop len(notes)'s query; append_notes notes the top hit."""
    claim = section(content, "claim")
    notes = items(section(content, "notes"))
    hop = len(notes)
    if "`[[ ## query ## ]]`" in content:
        return {"reasoning": f"hop {hop} of {claim!r}", "query": HOP_QUERIES[hop]}
    context = items(section(content, "context"))
    titles = [c.split(" | ", 1)[0] for c in context[:2]]
    return {
        "reasoning": f"read {len(context)} passages",
        "new_notes": [f"hop {hop}: {context[0].split(' | ', 1)[1]}"],
        "titles": titles,
    }


class Hop(dspy.Module):  # type: ignore[misc]
    """The tutorial's multi-hop program."""

    def __init__(self, num_docs: int = 3, num_hops: int = 4) -> None:
        self.num_docs, self.num_hops = num_docs, num_hops
        self.generate_query = dspy.ChainOfThought("claim, notes -> query")
        self.append_notes = dspy.ChainOfThought(
            "claim, notes, context -> new_notes: list[str], titles: list[str]"
        )

    def forward(self, claim: str) -> Any:
        notes: list[str] = []
        titles: list[str] = []
        for _ in range(self.num_hops):
            query = self.generate_query(claim=claim, notes=notes).query
            context = search(query, k=self.num_docs)
            prediction = self.append_notes(claim=claim, notes=notes, context=context)
            notes.extend(prediction.new_notes)
            titles.extend(prediction.titles)
        return dspy.Prediction(notes=notes, titles=list(set(titles)))


class Search(dspy.Module):  # type: ignore[misc]
    """The tutorial's search call as a module, so a DSPyNode can run it."""

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def forward(self, query: str) -> Any:
        return dspy.Prediction(context=search(query, k=self.k))

    async def aforward(self, query: str) -> Any:
        return self.forward(query)


class HopState(BaseModel):
    claim: str
    notes: Annotated[list[str], extend] = Field(default_factory=list)
    titles: Annotated[list[str], extend] = Field(default_factory=list)
    query: str = ""
    context: list[str] = Field(default_factory=list)


class GenerateQuery(DSPyNode[HopState]):
    signature = "claim, notes -> query"
    module_type = dspy.ChainOfThought


class SearchNode(DSPyNode[HopState]):
    signature = "query -> context"
    program = Search(k=3)


class AppendNotes(DSPyNode[HopState]):
    signature = "claim, notes, context -> new_notes: list[str], titles: list[str]"
    module_type = dspy.ChainOfThought
    outputs: ClassVar[dict[str, str]] = {"new_notes": "notes", "titles": "titles"}


@dataclass
class Hops(BaseNode[HopState]):
    lm: Any
    hops: int = 4

    async def run(self, ctx: RunContext[HopState]) -> Pipeline[HopState]:
        members: list[Any] = []
        for _ in range(self.hops):
            members += [GenerateQuery(lm=self.lm), SearchNode(), AppendNotes(lm=self.lm)]
        return Pipeline(members)


def hop_graph() -> Graph[HopState]:
    return Graph(nodes=[Hops, GenerateQuery, SearchNode, AppendNotes])


CLAIMS = [
    "The painter of the Mona Lisa and the engineer of the Eiffel Tower were born in "
    "the same country.",
    "Leonardo da Vinci was born before Gustave Eiffel.",
]


def test_hop_nodes_read_and_write_what_the_loop_passes() -> None:
    assert GenerateQuery.reads == frozenset({"claim", "notes"})
    assert SearchNode.reads == frozenset({"query"})
    assert AppendNotes.reads == frozenset({"claim", "notes", "context"})
    assert AppendNotes.writes == frozenset({"notes", "titles"})


@pytest.mark.asyncio
@pytest.mark.parametrize("claim", CLAIMS)
@pytest.mark.parametrize("max_concurrency", [1, 4])
async def test_four_hop_search_equals_the_dspy_program(claim: str, max_concurrency: int) -> None:
    by_hand_lm = ScriptedLM(hop_script)
    with dspy.context(lm=by_hand_lm):
        expected = Hop()(claim=claim)
    assert len(expected.notes) == 4 and len(by_hand_lm.history) == 8

    lm = ScriptedLM(hop_script)
    result = await hop_graph().run(
        Hops(lm), state=HopState(claim=claim), max_concurrency=max_concurrency
    )
    assert result.output is None
    assert result.state.notes == expected.notes
    assert sorted(set(result.state.titles)) == sorted(expected.titles)
    assert result.state.query == HOP_QUERIES[-1]
    assert result.state.context == search(HOP_QUERIES[-1], k=3)
    assert prompts(lm) == prompts(by_hand_lm)
    # Same call order too: a pipeline of dependent hops is sequential.
    assert [c for _, c in lm.calls] == [c for _, c in by_hand_lm.calls]


# -- Ensemble(reduce_fn=majority) vs a MAJORITY fork -----------------------------------------


class VoteState(BaseModel):
    question: str
    answer: str = ""


class Vote(DSPyNode[VoteState]):
    signature = "question -> answer"


@dataclass
class Chosen(BaseNode[VoteState]):
    """The winning branch's prediction."""

    async def run(self, ctx: RunContext[VoteState]) -> End[Any]:
        join = ctx.join
        assert join is not None and join.winner is not None
        return End(join[join.winner])


@dataclass
class Poll(BaseNode[VoteState]):
    programs: list[Any]

    async def run(self, ctx: RunContext[VoteState]) -> Fork[VoteState]:
        return Fork(
            [Vote(program=p) for p in self.programs],
            then=Chosen(),
            merge=MergeStrategy.MAJORITY,
            vote_key=majority_key,
        )


def majority_key(prediction: Any) -> Any:
    """dspy.majority's normalization of the last output field."""
    return default_normalize(prediction.answer)


def vote_graph() -> Graph[VoteState]:
    return Graph(nodes=[Poll, Vote, Chosen])


def programs_answering(answers: Sequence[str]) -> list[Any]:
    programs = []
    for answer in answers:
        program = dspy.Predict("question -> answer")
        program.set_lm(dict_lm({"capital": {"answer": answer}}))
        programs.append(program)
    return programs


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("answers", "chosen"),
    [
        (["Paris", "paris", " Paris.", "London"], "Paris"),
        (["London", "paris", "Paris!", "london", "PARIS"], "paris"),
        (["London", "Paris", "london", "paris"], "London"),  # a tie: the earliest
        (["Rome", "London", "Paris", "the Paris", "Paris."], "Paris"),
        # dspy.majority ignores answers that normalize to nothing ("The" -> "").
        (["The", "A", "Paris"], "Paris"),
        (["The", "A", "An"], "The"),  # all abstain: None is the vote they all cast
    ],
)
async def test_ensemble_majority_equals_a_majority_fork(answers: list[str], chosen: str) -> None:
    question = "What is the capital of France?"
    ensemble = dspy.Ensemble(reduce_fn=dspy.majority).compile(programs_answering(answers))
    expected = ensemble(question=question)
    assert expected.answer == chosen

    result = await vote_graph().run(
        Poll(programs_answering(answers)), state=VoteState(question=question), max_concurrency=4
    )
    assert result.output.answer == expected.answer
    assert result.state.answer == expected.answer  # MAJORITY keeps the winner's state


# -- BestOfN vs a FIRST_ACCEPTED fork ------------------------------------------------------------

N = 4
CITY_QUESTION = "What is the capital of France?"


def rollout_script(answers: Sequence[str]) -> Script:
    def script(content: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"answer": answers[kwargs.get("rollout_id") or 0]}

    return script


def one_word_paris(args: dict[str, Any], pred: Any) -> float:
    return 1.0 if pred.answer == "Paris" else 0.0


THRESHOLD = 1.0


class Ask(DSPyNode[VoteState]):
    signature = "question -> answer"


@dataclass
class Winner(BaseNode[VoteState]):
    async def run(self, ctx: RunContext[VoteState]) -> End[Any]:
        join = ctx.join
        assert join is not None and join.winner is not None
        return End((join.winner, join[join.winner]))


@dataclass
class Rollouts(BaseNode[VoteState]):
    lm: Any
    n: int = N

    async def run(self, ctx: RunContext[VoteState]) -> Fork[VoteState]:
        args = {"question": ctx.state.question}
        return Fork(
            [Ask(lm=self.lm.copy(rollout_id=i, temperature=1.0)) for i in range(self.n)],
            then=Winner(),
            join=JoinStrategy.FIRST_ACCEPTED,
            accept=lambda pred: one_word_paris(args, pred) >= THRESHOLD,
        )


def best_graph() -> Graph[VoteState]:
    return Graph(nodes=[Rollouts, Ask, Winner])


ROLLOUT_ANSWERS = {
    0: ["Paris", "Lyon", "Paris", "Nice"],
    2: ["Lyon", "Marseille", "Paris", "Nice"],
}


@pytest.mark.asyncio
@pytest.mark.parametrize("passes_at", sorted(ROLLOUT_ANSWERS))
@pytest.mark.parametrize("max_concurrency", [1, N])
async def test_best_of_n_equals_a_first_accepted_fork(passes_at: int, max_concurrency: int) -> None:
    answers = ROLLOUT_ANSWERS[passes_at]
    by_hand_lm = ScriptedLM(rollout_script(answers))
    best = dspy.BestOfN(
        module=dspy.Predict("question -> answer"),
        N=N,
        reward_fn=one_word_paris,
        threshold=THRESHOLD,
    )
    with dspy.context(lm=by_hand_lm):
        expected = best(question=CITY_QUESTION)
    assert expected.answer == "Paris"
    assert [rid for rid, _ in by_hand_lm.calls] == list(range(passes_at + 1))

    lm = ScriptedLM(rollout_script(answers))
    result = await best_graph().run(
        Rollouts(lm), state=VoteState(question=CITY_QUESTION), max_concurrency=max_concurrency
    )
    winner, prediction = result.output
    assert winner == passes_at
    assert prediction.answer == expected.answer
    assert result.state.answer == expected.answer  # the winner's state
    if max_concurrency == 1:
        # One slot: the branches run in index order and the fork stops at the
        # winner, so it asks exactly the rollouts BestOfN asked, with the same prompts.
        assert lm.calls == by_hand_lm.calls


@pytest.mark.asyncio
async def test_best_of_n_without_a_pass_returns_its_best_but_the_fork_fails() -> None:
    """The one documented difference: no accepted branch is a JoinError."""
    answers = ["Lyon", "Marseille", "Nice", "Lille"]
    by_hand_lm = ScriptedLM(rollout_script(answers))
    best = dspy.BestOfN(
        module=dspy.Predict("question -> answer"),
        N=N,
        reward_fn=one_word_paris,
        threshold=THRESHOLD,
    )
    with dspy.context(lm=by_hand_lm):
        assert best(question=CITY_QUESTION).answer == "Lyon"  # reward ties: the first

    with pytest.raises(JoinError) as info:
        await best_graph().run(
            Rollouts(ScriptedLM(rollout_script(answers))),
            state=VoteState(question=CITY_QUESTION),
        )
    join = info.value.join
    assert [p.answer for p in join.results] == answers  # rejected values are kept


@pytest.mark.asyncio
@pytest.mark.parametrize("max_concurrency", [1, N])
async def test_a_failing_rollout_is_skipped_by_both(max_concurrency: int) -> None:
    """BestOfN catches a failed attempt and tries the next rollout; a failed branch
    of a FIRST_ACCEPTED fork does not pass either, and the next one may win."""
    answers = ["Paris", "Paris", "Lyon", "Paris"]

    def script(content: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("rollout_id") == 0:
            raise RuntimeError("provider outage on rollout 0")
        return {"answer": answers[kwargs["rollout_id"]]}

    by_hand_lm = ScriptedLM(script)
    best = dspy.BestOfN(
        module=dspy.Predict("question -> answer"),
        N=N,
        reward_fn=one_word_paris,
        threshold=THRESHOLD,
    )
    with dspy.context(lm=by_hand_lm):
        expected = best(question=CITY_QUESTION)
    assert expected.answer == "Paris"
    assert by_hand_lm.calls[-1][0] == 1  # rollout 1 passed

    lm = ScriptedLM(script)
    result = await best_graph().run(
        Rollouts(lm), state=VoteState(question=CITY_QUESTION), max_concurrency=max_concurrency
    )
    winner, prediction = result.output
    assert (winner, prediction.answer) == (1, expected.answer)
