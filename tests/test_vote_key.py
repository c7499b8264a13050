"""``Fork(vote_key=...)`` and ``merge_states(vote_key=...)``: normalized MAJORITY votes,
as ``dspy.majority`` normalizes answers before counting them."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import random
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    ConfigurationError,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinResult,
    MergeError,
    MergeStrategy,
    ParallelExecutor,
    RunContext,
)


class State(BaseModel):
    answer: str = ""
    reasoning: str = ""


@dataclass
class Sample(BaseNode[State]):
    """A self-consistency sample: writes its answer and returns it."""

    answer: str
    reasoning: str = ""
    fail: bool = False

    async def run(self, ctx: RunContext[State]) -> End[Any]:
        if self.fail:
            raise RuntimeError("sample failed")
        ctx.state.answer = self.answer
        ctx.state.reasoning = self.reasoning
        return End(self.answer)


@dataclass
class Tally(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[JoinResult[Any]]:
        assert ctx.join is not None
        return End(ctx.join)


@dataclass
class Ask(BaseNode[State]):
    fork: Fork[State]

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return self.fork


GRAPH = Graph(nodes=[Ask, Sample, Tally])


def norm(text: str) -> str:
    return text.strip().lower().rstrip(".")


async def vote(answers: list[str], **kwargs: Any) -> tuple[JoinResult[Any], State]:
    fork = Fork(
        [Sample(a, f"r{i}") for i, a in enumerate(answers)],
        then=Tally(),
        merge=MergeStrategy.MAJORITY,
        **kwargs,
    )
    result = await GRAPH.run(Ask(fork), state=State())
    return result.output, result.state


# -- normalization -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_vote_key_groups_normalized_answers() -> None:
    join, state = await vote(["Paris", " paris ", "London", "PARIS."], vote_key=norm)
    assert join.winner == 0
    assert join.agreement == 3
    assert join.agreement_ratio == pytest.approx(0.75)
    # The winner's own state is kept, not a normalized value.
    assert (state.answer, state.reasoning) == ("Paris", "r0")


@pytest.mark.asyncio
async def test_without_vote_key_every_spelling_is_its_own_vote() -> None:
    join, _ = await vote(["Paris", " paris ", "London", "PARIS."])
    assert (join.winner, join.agreement) == (0, 1)


@pytest.mark.asyncio
async def test_winner_is_the_lowest_index_of_the_normalized_group() -> None:
    join, state = await vote(["London", "Rome", " PARIS", "paris", "Paris."], vote_key=norm)
    assert (join.winner, join.agreement) == (2, 3)
    assert state.answer == " PARIS"


@pytest.mark.asyncio
async def test_normalized_tie_goes_to_the_group_seen_first() -> None:
    join, _ = await vote(["b", "A", "a", "B"], vote_key=str.lower)
    assert (join.winner, join.agreement) == (0, 2)


@pytest.mark.asyncio
async def test_vote_key_on_vote_on_fields() -> None:
    fork_kwargs: dict[str, Any] = {
        "vote_on": ["answer"],
        "vote_key": lambda fields: norm(fields["answer"]),
    }
    join, state = await vote(["Lyon", "paris", "PARIS "], **fork_kwargs)
    assert (join.winner, join.agreement) == (1, 2)
    assert state.reasoning == "r1"


@pytest.mark.asyncio
async def test_vote_key_receives_the_dict_of_vote_on_fields() -> None:
    seen: list[Any] = []

    def key(fields: dict[str, Any]) -> Any:
        seen.append(fields)
        return fields["answer"]

    await vote(["x", "y"], vote_on=["answer"], vote_key=key)
    assert seen == [{"answer": "x"}, {"answer": "y"}]


@pytest.mark.asyncio
async def test_vote_key_that_returns_none_abstains_like_dspy_majority() -> None:
    def key(text: str) -> str | None:
        return text.strip().lower() or None

    # Without abstention the two blanks would tie with "y" and win (index 0).
    join, _ = await vote(["", "x", "  ", "y", "Y"], vote_key=key)
    assert (join.winner, join.agreement) == (3, 2)
    assert join.agreement_ratio == pytest.approx(2 / 5)  # share of successful branches
    # Every branch abstaining: None is their common vote.
    join, _ = await vote(["", " "], vote_key=key)
    assert (join.winner, join.agreement) == (0, 2)


@pytest.mark.asyncio
async def test_failed_branches_do_not_vote() -> None:
    fork = Fork(
        [Sample("x", fail=True), Sample("Y"), Sample("y ")],
        then=Tally(),
        merge=MergeStrategy.MAJORITY,
        on_error=FailureMode.CONTINUE,
        vote_key=norm,
    )
    join = (await GRAPH.run(Ask(fork), state=State())).output
    assert (join.winner, join.agreement, join.agreement_ratio) == (1, 2, 1.0)


@pytest.mark.asyncio
async def test_mapping_fork_winner_is_the_branch_name() -> None:
    fork = Fork(
        {"gpt": Sample("Rome"), "claude": Sample("paris"), "llama": Sample("Paris")},
        then=Tally(),
        merge=MergeStrategy.MAJORITY,
        vote_key=norm,
    )
    join = (await GRAPH.run(Ask(fork), state=State())).output
    assert (join.winner, join.agreement) == ("claude", 2)


# -- errors --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_vote_key_that_raises_is_a_merge_error_naming_the_branch() -> None:
    def key(text: str) -> str:
        if text == "bad":
            raise LookupError("no key for bad")
        return text

    with pytest.raises(MergeError) as info:
        await vote(["ok", "bad", "ok"], vote_key=key)
    err = info.value
    assert "branch 1" in str(err)
    assert "LookupError" in str(err)
    assert isinstance(err.__cause__, LookupError)
    assert err.branches == [1]
    assert err.join is not None and err.join.results == ["ok", "bad", "ok"]


def test_vote_key_without_majority_is_refused() -> None:
    for merge in (MergeStrategy.ALL_SUCCESS, MergeStrategy.FIRST_SUCCESS):
        with pytest.raises(ConfigurationError, match=r"merge=MergeStrategy\.MAJORITY"):
            Fork([Sample("a")], merge=merge, vote_key=norm)


def test_vote_key_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="vote_key must be callable"):
        Fork([Sample("a")], merge=MergeStrategy.MAJORITY, vote_key="lower")  # type: ignore[arg-type]


# -- ParallelExecutor.merge_states ---------------------------------------------------------


@pytest.mark.asyncio
async def test_merge_states_takes_vote_key() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    ctx: RunContext[State] = RunContext(state=State(), execution_id="e")
    results = await ex.execute_parallel([Sample("Lyon"), Sample("paris."), Sample(" Paris")], ctx)
    merged = ex.merge_states(results, MergeStrategy.MAJORITY, vote_key=norm)
    info = merged.metadata["merge"]
    assert (info["winner"], info["agreement"]) == (results[1].key, 2)
    assert merged.state.answer == "paris."
    with pytest.raises(ConfigurationError, match="MAJORITY"):
        ex.merge_states(results, MergeStrategy.FIRST_SUCCESS, vote_key=norm)
    with pytest.raises(MergeError, match="vote_key raised") as info_err:
        ex.merge_states(results, MergeStrategy.MAJORITY, vote_key=lambda v: v.missing)
    assert isinstance(info_err.value.__cause__, AttributeError)


# -- parity with dspy.majority --------------------------------------------------------------


@pytest.mark.asyncio
async def test_same_pick_as_dspy_majority() -> None:
    dspy = pytest.importorskip("dspy")
    from dspy.evaluate import normalize_text

    def dspy_normalize(text: str) -> str | None:  # dspy's default_normalize
        return normalize_text(text) or None

    rng = random.Random(3)
    spellings = ["Paris", "paris.", " PARIS", "the Paris", "Lyon", "lyon!", "", "  "]
    for _ in range(40):
        answers = [rng.choice(spellings) for _ in range(rng.randint(1, 7))]
        expected = dspy.majority([{"answer": a} for a in answers], normalize=dspy_normalize)
        join, state = await vote(answers, vote_key=dspy_normalize)
        assert state.answer == expected.answer, answers
        assert join.results[join.winner] == expected.answer


@pytest.mark.asyncio
async def test_vote_key_on_dspy_predictions() -> None:
    dspy = pytest.importorskip("dspy")

    @dataclass
    class Predict(BaseNode[State]):
        answer: str

        async def run(self, ctx: RunContext[State]) -> End[Any]:
            ctx.state.answer = self.answer
            return End(dspy.Prediction(answer=self.answer, rationale=f"because {self.answer}"))

    @dataclass
    class Start(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> Fork[State]:
            return Fork(
                [Predict("4"), Predict(" 5"), Predict("5")],
                then=Tally(),
                merge=MergeStrategy.MAJORITY,
                vote_key=lambda p: p.answer.strip(),
            )

    join = (await Graph(nodes=[Start, Predict, Tally]).run(Start(), state=State())).output
    assert (join.winner, join.agreement) == (1, 2)
