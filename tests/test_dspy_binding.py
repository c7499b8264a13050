"""DSPyNode binding: per-instance modules, `lm=`, inputs from own fields, `outputs`."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import pytest
from pydantic import BaseModel

dspy = pytest.importorskip("dspy")
from dspy.utils import DummyLM  # noqa: E402

from lift_graph import (  # noqa: E402
    BaseNode,
    ConfigurationError,
    DSPyNode,
    End,
    Fork,
    Graph,
    LMNotConfiguredError,
    MissingInputError,
    NodeExecutionError,
    Pipeline,
    RunContext,
    StateValidationError,
    append,
    extend,
    merge_dict,
)


def dummy(answers: dict[str, dict[str, Any]]) -> Any:
    lm = DummyLM(answers)
    lm.cache = False
    return lm


def prompts(lm: Any) -> list[str]:
    """The user message of every call the LM received."""
    return [entry["messages"][-1]["content"] for entry in lm.history]


class State(BaseModel):
    question: str = ""
    answer: str = ""
    category: str = ""


QA = {
    "What is 2+2?": {"answer": "4", "category": "math", "reasoning": "adding"},
    "Capital of France?": {"answer": "Paris", "category": "geography", "reasoning": "known"},
}


# -- one class, several configurations --------------------------------------------


@dataclass
class Gen(DSPyNode[State]):
    signature: str = "question -> answer"


@pytest.mark.asyncio
async def test_two_instances_with_different_signatures_run_their_own_module() -> None:
    lm = dummy(QA)

    class Start(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> Pipeline[State]:
            return Pipeline([Gen(lm=lm), Gen("question -> category", lm=lm)])

    result = await Graph(nodes=[Start, Gen]).run(Start(), state=State(question="What is 2+2?"))
    assert (result.state.answer, result.state.category) == ("4", "math")
    sent = prompts(lm)
    assert len(sent) == 2
    # The system prompt names the output each module asks for.
    systems = sorted(entry["messages"][0]["content"] for entry in lm.history)
    assert "`answer`" in systems[0] + systems[1] and "`category`" in systems[0] + systems[1]
    assert any("`category`" in s and "`answer`" not in s for s in systems)


def test_reads_and_writes_follow_the_instance_signature() -> None:
    assert Gen.reads == frozenset({"question"}) and Gen.writes == frozenset({"answer"})
    other = Gen("question -> category")
    assert (other.reads, other.writes) == (frozenset({"question"}), frozenset({"category"}))
    assert Gen().writes == frozenset({"answer"})


class Plain(DSPyNode[State]):
    """Not a dataclass: options come as keywords, a signature also positionally."""

    signature = "question -> answer"


@pytest.mark.asyncio
async def test_a_plain_subclass_takes_signature_and_lm_per_instance() -> None:
    lm = dummy(QA)
    node = Plain("question -> category", lm=lm)
    assert node.writes == frozenset({"category"}) and Plain.writes == frozenset({"answer"})
    result = await Graph(nodes=[Plain]).run(node, state=State(question="Capital of France?"))
    assert (result.state.category, result.state.answer) == ("geography", "")


@pytest.mark.asyncio
async def test_module_type_per_instance_predict_vs_chain_of_thought() -> None:
    lm = dummy(QA)
    state = State(question="Capital of France?")
    graph = Graph(nodes=[Gen])
    plain = await graph.run(Gen(lm=lm), state=state)
    cot = await graph.run(Gen(lm=lm, module_type=dspy.ChainOfThought), state=state)
    assert plain.state.answer == cot.state.answer == "Paris"
    assert not hasattr(plain.output, "reasoning") or plain.output.get("reasoning") is None
    assert cot.output.reasoning == "known"
    first, second = (entry["messages"][0]["content"] for entry in lm.history)
    assert "`reasoning`" not in first and "`reasoning`" in second


@pytest.mark.asyncio
async def test_a_compiled_program_per_instance_is_the_one_called() -> None:
    lm = dummy(QA)
    compiled = dspy.Predict("question -> answer")
    compiled.demos = [dspy.Example(question="1+1?", answer="2")]
    graph = Graph(nodes=[Gen])
    state = State(question="What is 2+2?")
    await graph.run(Gen(lm=lm), state=state)
    await graph.run(Gen(lm=lm, program=compiled), state=state)
    bare, with_demo = (entry["messages"] for entry in lm.history)
    assert not any("1+1?" in m["content"] for m in bare)
    assert any("1+1?" in m["content"] for m in with_demo)


def test_equal_configurations_share_one_module_and_others_do_not() -> None:
    a, b = Gen(), Gen()
    assert a.module() is b.module()
    assert Gen("question -> category").module() is not a.module()
    assert Gen(module_type=dspy.ChainOfThought).module() is not a.module()

    @dataclass
    class Styled(DSPyNode[State]):
        style: str = "short"
        signature = "question -> answer"

        def build_module(self) -> Any:
            return dspy.Predict(self.signature, style=self.style)

    assert Styled().module() is Styled().module()
    assert Styled(style="long").module() is not Styled().module()


@pytest.mark.asyncio
async def test_lm_keyword_on_a_dataclass_that_does_not_declare_it() -> None:
    @dataclass
    class Ask(DSPyNode[State]):
        topic: str = "x"
        signature = "question -> answer"

    lm = dummy(QA)
    node = Ask(topic="y", lm=lm)
    assert node.lm is lm and node.topic == "y"
    result = await Graph(nodes=[Ask]).run(node, state=State(question="What is 2+2?"))
    assert result.state.answer == "4"


# -- inputs from own fields, outputs mapped through reducers ----------------------


class Docs(BaseModel):
    docs: list[str] = []
    summaries: list[str] = []


@dataclass
class Summarize(DSPyNode[Docs]):
    doc: str
    signature = "doc -> summary"
    outputs = {"summary": "summaries"}


SUMMARIES = {f"document {i}": {"summary": f"summary {i}"} for i in range(8)}


class Plan(BaseNode[Docs]):
    async def run(self, ctx: RunContext[Docs]) -> Fork[Docs]:
        return Fork([Summarize(doc=d) for d in ctx.state.docs])


def test_an_input_bound_from_a_field_is_not_a_read() -> None:
    assert Summarize.reads == frozenset()
    assert Summarize.writes == frozenset({"summaries"})


@pytest.mark.asyncio
@pytest.mark.parametrize("max_concurrency", [1, 3, 8])
async def test_per_item_fan_out_collects_outputs_in_branch_order(max_concurrency: int) -> None:
    Summarize.lm = dummy(SUMMARIES)
    try:
        docs = [f"document {i}" for i in range(8)]
        result = await Graph(nodes=[Plan, Summarize]).run(
            Plan(), state=Docs(docs=docs), max_concurrency=max_concurrency
        )
    finally:
        Summarize.lm = None
    assert result.state.summaries == [f"summary {i}" for i in range(8)]
    assert [p.summary for p in result.output] == result.state.summaries
    assert result.deterministic


@pytest.mark.asyncio
async def test_an_own_field_wins_over_the_state_field_of_that_name() -> None:
    @dataclass
    class AskAbout(DSPyNode[State]):
        question: str
        signature = "question -> answer"

    lm = dummy(QA)
    node = AskAbout(question="Capital of France?", lm=lm)
    result = await Graph(nodes=[AskAbout]).run(node, state=State(question="What is 2+2?"))
    assert result.state.answer == "Paris"
    assert AskAbout.reads == frozenset()


class Notes(BaseModel):
    claim: str = "c"
    notes: Annotated[list[str], extend] = []
    titles: Annotated[list[str], append] = []
    scores: Annotated[dict[str, int], merge_dict] = {}
    best: str = ""


@pytest.mark.asyncio
async def test_mapped_outputs_go_through_the_declared_reducers() -> None:
    @dataclass
    class Hop(DSPyNode[Notes]):
        signature = "claim -> new_notes: list[str], title: str, score: dict[str, int]"
        outputs = {"new_notes": "notes", "title": "titles", "score": "scores"}

    lm = dummy({"c": {"new_notes": ["n1", "n2"], "title": "T", "score": {"a": 1}}})
    state = Notes(notes=["n0"], titles=["T0"], scores={"z": 0})
    result = await Graph(nodes=[Hop]).run(Hop(lm=lm), state=state)
    assert result.state.notes == ["n0", "n1", "n2"]  # extend: the list's items
    assert result.state.titles == ["T0", "T"]  # append: one item
    assert result.state.scores == {"z": 0, "a": 1}
    assert Hop.writes == frozenset({"notes", "titles", "scores"})


@pytest.mark.asyncio
async def test_a_mapped_output_into_a_plain_scalar_field_sets_it() -> None:
    @dataclass
    class Pick(DSPyNode[Notes]):
        signature = "claim -> title"
        outputs = {"title": "best"}

    result = await Graph(nodes=[Pick]).run(Pick(lm=dummy({"c": {"title": "B"}})), state=Notes())
    assert result.state.best == "B"


def test_two_outputs_into_one_field_are_refused_where_written() -> None:
    with pytest.raises(ConfigurationError, match="best"):

        class Pick(DSPyNode[Notes]):
            signature = "claim -> best, title"
            outputs = {"title": "best"}


class TD(TypedDict):
    doc: str
    out: Annotated[list[str], append]


@pytest.mark.asyncio
async def test_a_typed_dict_state_uses_its_declared_reducer() -> None:
    @dataclass
    class One(DSPyNode[TD]):
        signature = "doc -> summary"
        outputs = {"summary": "out"}

    lm = dummy({"document 1": {"summary": "s1"}})
    result = await Graph(nodes=[One]).run(One(lm=lm), state={"doc": "document 1", "out": ["s0"]})
    assert result.state["out"] == ["s0", "s1"]


@pytest.mark.asyncio
async def test_a_reducer_that_refuses_names_node_and_field() -> None:
    def only_ints(current: int, value: Any) -> int:
        return current + int(value)

    class Counted(BaseModel):
        doc: str = "d"
        total: Annotated[int, only_ints] = 0

    class Count(DSPyNode[Counted]):
        signature = "doc -> n"
        outputs = {"n": "total"}

    lm = dummy({"d": {"n": "many"}})
    with pytest.raises(StateValidationError) as info:
        await Graph(nodes=[Count]).run(Count(lm=lm), state=Counted(total=1))
    assert (info.value.node, info.value.field) == ("Count", "total")
    assert "only_ints" in str(info.value)


def test_outputs_naming_an_unknown_output_fail_where_written() -> None:
    with pytest.raises(ConfigurationError, match="sumary"):

        class Bad(DSPyNode[Docs]):
            signature = "doc -> summary"
            outputs = {"sumary": "summaries"}

    with pytest.raises(ConfigurationError, match="sumary"):
        Summarize(doc="x", outputs={"sumary": "summaries"})
    with pytest.raises(ConfigurationError, match="must map"):
        Summarize(doc="x", outputs=["summaries"])  # type: ignore[arg-type]


# -- errors ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_no_lm_is_an_error_naming_node_and_key() -> None:
    with pytest.raises(LMNotConfiguredError) as info:
        await Graph(nodes=[Gen]).run(Gen(), state=State(question="What is 2+2?"))
    err = info.value
    assert isinstance(err, NodeExecutionError) and isinstance(err, ValueError)
    assert err.node == "Gen" and err.node_key == "0.Gen" and err.attempt == 1
    assert "Gen" in str(err) and "lm" in str(err)
    assert isinstance(err.__cause__, ValueError) and "No LM" in str(err.__cause__)


@pytest.mark.asyncio
async def test_other_lm_errors_keep_their_type_and_name_the_node() -> None:
    class Broken(dspy.Module):  # type: ignore[misc]
        async def aforward(self, **kwargs: Any) -> Any:
            raise ConnectionError("provider down")

    with pytest.raises(ConnectionError) as info:
        await Graph(nodes=[Gen]).run(Gen(program=Broken()), state=State(question="q"))
    notes = getattr(info.value, "__notes__", [])
    assert any("Gen" in n and "0.Gen" in n for n in notes)


@pytest.mark.asyncio
async def test_a_missing_input_names_the_node() -> None:
    @dataclass
    class Needs(DSPyNode[Any]):
        signature = "topic, question -> answer"

    with pytest.raises(MissingInputError) as info:
        await Graph(nodes=[Needs]).run(Needs(lm=dummy(QA)), state={"question": "q"})
    assert (info.value.node, info.value.field) == ("Needs", "topic")


@pytest.mark.asyncio
async def test_a_program_with_only_a_sync_forward_runs_under_the_nodes_lm() -> None:
    class Rag(dspy.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.respond = dspy.Predict("context, question -> answer")

        def forward(self, question: str) -> Any:
            return self.respond(context="ctx for " + question, question=question)

    lm = dummy(QA)

    @dataclass
    class Answer(DSPyNode[State]):
        question: str
        signature = "question -> answer"
        program = Rag()

    result = await Graph(nodes=[Answer]).run(
        Answer(question="Capital of France?", lm=lm), state=State()
    )
    assert result.state.answer == "Paris"
    assert "ctx for Capital of France?" in prompts(lm)[0]


@pytest.mark.asyncio
async def test_routing_after_predict_still_works() -> None:
    class Then(DSPyNode[State]):
        signature = "question -> answer"

        async def run(self, ctx: RunContext[State]) -> End[str]:
            return End((await self.predict(ctx)).answer.upper())

    result = await Graph(nodes=[Then]).run(
        Then(lm=dummy(QA)), state=State(question="Capital of France?")
    )
    assert result.output == "PARIS"


@pytest.mark.asyncio
async def test_outputs_as_an_instance_field_with_a_default_factory() -> None:
    from dataclasses import field

    @dataclass
    class Each(DSPyNode[Docs]):
        doc: str
        outputs: dict[str, str] = field(default_factory=lambda: {"summary": "summaries"})
        signature = "doc -> summary"

    assert Each.writes is None  # known per instance only
    assert Each(doc="x").writes == frozenset({"summaries"})

    class Start(BaseNode[Docs]):
        async def run(self, ctx: RunContext[Docs]) -> Fork[Docs]:
            return Fork([Each(doc=d) for d in ctx.state.docs])

    Each.lm = dummy(SUMMARIES)
    result = await Graph(nodes=[Start, Each]).run(
        Start(), state=Docs(docs=["document 1", "document 2"])
    )
    assert result.state.summaries == ["summary 1", "summary 2"]


def test_a_module_built_from_attributes_set_in_init_is_not_shared() -> None:
    class Flex(DSPyNode[State]):
        signature = "question -> answer"

        def __init__(self, reasoning: bool = False) -> None:
            self.reasoning = reasoning

        def build_module(self) -> Any:
            kind = dspy.ChainOfThought if self.reasoning else dspy.Predict
            return kind(self.signature)

    assert isinstance(Flex().module(), dspy.Predict)
    assert isinstance(Flex(reasoning=True).module(), dspy.ChainOfThought)
    assert Flex().module() is Flex().module()
    assert DSPyNode(lm="pinned").lm == "pinned"  # the base class takes lm= as well


def test_an_unhashable_configuration_builds_once_per_instance() -> None:
    @dataclass
    class Tagged(DSPyNode[State]):
        tags: list[str]
        signature = "question -> answer"

    node = Tagged(tags=["a"])
    assert node.module() is node.module()
    assert Tagged(tags=["a"]).module() is not node.module()
    assert node.module().signature.output_fields.keys() == {"answer"}


@pytest.mark.asyncio
async def test_forward_only_programs_run_as_many_at_once_as_the_run_allows() -> None:
    # 12 forwards must be inside `forward` together to pass the barrier: asyncio's
    # default pool (min(32, cores + 4) threads) would leave it broken.
    import threading

    barrier = threading.Barrier(12, timeout=20)

    class Blocking(dspy.Module):  # type: ignore[misc]
        def forward(self, question: str) -> Any:
            barrier.wait()
            return dspy.Prediction(answer=question.upper())

    class Many(BaseModel):
        answers: list[str] = []

    @dataclass
    class Ask(DSPyNode[Many]):
        question: str
        signature = "question -> answer"
        outputs = {"answer": "answers"}
        program = Blocking()

    class Go(BaseNode[Many]):
        async def run(self, ctx: RunContext[Many]) -> Fork[Many]:
            return Fork([Ask(question=f"q{i}") for i in range(12)])

    result = await Graph(nodes=[Go, Ask]).run(Go(), state=Many(), max_concurrency=12)
    assert result.state.answers == [f"Q{i}" for i in range(12)]
    assert not barrier.broken
