"""JoinStrategy.FIRST_ACCEPTED and ``Fork(accept=...)``: dspy.BestOfN / Refine, run
concurrently.

The winner is the lowest-index branch whose value passes ``accept``, decided as soon
as every lower-index branch has finished; higher branches are cancelled at once.
Delays are chosen so that completion order differs from branch order, with wide
margins: the assertions compare orders and ratios, not tight absolute times.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    BranchStatus,
    ConfigurationError,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinError,
    JoinResult,
    JoinStrategy,
    MergeStrategy,
    NodeExecutionError,
    RunContext,
    check_determinism,
)

SLOW = 5.0  # a branch that must never get to finish


class State(BaseModel):
    log: list[str] = []
    pick: str = ""


class Boom(Exception):
    pass


@dataclass
class Side:
    """What the branches did, shared through ``deps``."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    joins: list[JoinResult[Any]] = field(default_factory=list)


@dataclass
class Attempt(BaseNode[State]):
    """A rollout: sleeps ``delay``, writes its name, returns ``{name, score}``."""

    name: str
    score: int
    delay: float = 0.0
    fail: bool = False

    async def run(self, ctx: RunContext[State]) -> End[dict[str, Any]]:
        side: Side = ctx.deps
        side.started.append(self.name)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            side.cancelled.append(self.name)
            raise
        side.finished.append(self.name)
        if self.fail:
            raise Boom(f"{self.name} failed")
        ctx.state.log.append(self.name)
        ctx.state.pick = self.name
        return End({"name": self.name, "score": self.score})


@dataclass
class Pick(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[Any]:
        join = ctx.join
        assert join is not None
        side: Side = ctx.deps
        side.joins.append(join)
        return End(join.winner)


@dataclass
class Best(BaseNode[State]):
    """Continues an inner fork with the winner's value."""

    async def run(self, ctx: RunContext[State]) -> End[Any]:
        join = ctx.join
        assert join is not None
        return End(join[join.winner])


@dataclass
class Inner(BaseNode[State]):
    """A branch that runs a FIRST_ACCEPTED fork of its own."""

    name: str
    scores: list[int]

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork(
            [
                Attempt(f"{self.name}.{i}", s, 0.01 * (len(self.scores) - i))
                for i, s in enumerate(self.scores)
            ],
            then=Best(),
            join=JoinStrategy.FIRST_ACCEPTED,
            accept=good,
        )


@dataclass
class Start(BaseNode[State]):
    fork: Fork[State]

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return self.fork


GRAPH = Graph(nodes=[Start, Attempt, Pick, Best, Inner])


def good(value: dict[str, Any]) -> bool:
    return bool(value["score"] >= 5)


def first_accepted(branches: Any, **kwargs: Any) -> Fork[State]:
    kwargs.setdefault("then", Pick())
    return Fork(branches, join=JoinStrategy.FIRST_ACCEPTED, accept=good, **kwargs)


async def run_fork(fork: Fork[State], side: Side | None = None) -> tuple[Any, Side]:
    s = side or Side()
    result = await asyncio.wait_for(GRAPH.run(Start(fork), state=State(), deps=s), timeout=30)
    return result, s


def no_tasks_left() -> None:
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    assert others == [], f"tasks left behind: {others}"


# -- the winner is the lowest passing index, not the fastest ---------------------------


@pytest.mark.asyncio
async def test_branch_0_wins_although_branch_2_finishes_first() -> None:
    fork = first_accepted([Attempt("a0", 9, 0.1), Attempt("a1", 9, SLOW), Attempt("a2", 9, 0.0)])
    result, side = await run_fork(fork)
    assert side.finished.index("a2") < side.finished.index("a0")  # a2 really was first
    assert result.output == 0
    assert result.state.pick == "a0"
    assert result.state.log == ["a0"]  # the winner's writes only
    (j,) = side.joins
    assert j.winner == 0
    assert j.strategy is JoinStrategy.FIRST_ACCEPTED
    assert j.results[0] == {"name": "a0", "score": 9}
    assert j.accepted[0] is True
    assert side.cancelled == ["a1"]
    assert "a1" not in side.finished
    no_tasks_left()


@pytest.mark.asyncio
async def test_branch_2_wins_when_0_and_1_are_rejected_even_if_3_passes_first() -> None:
    fork = first_accepted(
        [
            Attempt("a0", 1, 0.05),
            Attempt("a1", 2, 0.10),
            Attempt("a2", 9, 0.20),
            Attempt("a3", 9, 0.0),
            Attempt("a4", 9, SLOW),
        ]
    )
    result, side = await run_fork(fork)
    assert side.finished[0] == "a3"
    assert result.output == 2
    assert result.state.pick == "a2"
    assert result.state.log == ["a2"]
    (j,) = side.joins
    # Rejected values stay in results, with status SUCCEEDED and accepted False.
    assert j.results[:3] == [
        {"name": "a0", "score": 1},
        {"name": "a1", "score": 2},
        {"name": "a2", "score": 9},
    ]
    assert j.statuses[:3] == [BranchStatus.SUCCEEDED] * 3
    assert j.accepted == [False, False, True, None, None]
    # Above the winner every branch is reported cancelled, also a3 which happened to
    # finish first: the report does not depend on timing.
    assert j.statuses[3:] == [BranchStatus.CANCELLED] * 2
    assert j.results[3:] == [None, None]
    assert (j.succeeded, j.failed, j.cancelled) == (3, 0, 2)
    assert side.cancelled == ["a4"]
    no_tasks_left()


@pytest.mark.asyncio
async def test_decides_the_moment_branch_0_passes_and_cancels_the_rest() -> None:
    fast = 0.05
    fork = first_accepted([Attempt("a0", 9, fast)] + [Attempt(f"s{i}", 9, SLOW) for i in range(4)])
    began = time.perf_counter()
    result, side = await run_fork(fork)
    elapsed = time.perf_counter() - began
    assert result.output == 0
    assert elapsed < SLOW / 10  # far below the slow branches' time
    assert sorted(side.cancelled) == ["s0", "s1", "s2", "s3"]
    assert side.finished == ["a0"]
    records = {r.key: r for r in result.records}
    for i in range(1, 5):
        assert records[f"0.Start/{i}/0.Attempt"].status == "cancelled"
    no_tasks_left()


@pytest.mark.asyncio
async def test_waits_for_a_slower_lower_branch_before_accepting_a_higher_one() -> None:
    # a1 passes at once, but a0 might pass too: the join waits for a0 (rejected).
    fork = first_accepted([Attempt("a0", 1, 0.15), Attempt("a1", 9, 0.0)])
    began = time.perf_counter()
    result, side = await run_fork(fork)
    assert time.perf_counter() - began >= 0.15
    assert result.output == 1
    assert side.finished == ["a1", "a0"]
    assert result.state.log == ["a1"]


# -- rejection, failure, accept errors --------------------------------------------------


@pytest.mark.asyncio
async def test_all_rejected_is_a_join_error_that_keeps_the_values() -> None:
    fork = first_accepted([Attempt("a0", 1, 0.02), Attempt("a1", 2), Attempt("a2", 3, 0.01)])
    with pytest.raises(JoinError) as info:
        await run_fork(fork, side := Side())
    err = info.value
    assert "no branch value passed `accept`" in str(err)
    assert "3 rejected, 0 failed" in str(err)
    assert err.errors == {}
    assert err.__cause__ is None
    assert [r["score"] for r in err.join.results] == [1, 2, 3]
    assert err.join.accepted == [False, False, False]
    assert side.joins == []  # the join node never ran


@pytest.mark.asyncio
async def test_failed_branches_count_as_not_accepted() -> None:
    # on_error is FAIL_ALL by default: it does not apply to FIRST_ACCEPTED.
    fork = first_accepted(
        [Attempt("a0", 9, 0.01, fail=True), Attempt("a1", 9, 0.05), Attempt("a2", 9, SLOW)]
    )
    result, side = await run_fork(fork)
    assert result.output == 1
    (j,) = side.joins
    assert j.statuses == [BranchStatus.FAILED, BranchStatus.SUCCEEDED, BranchStatus.CANCELLED]
    assert isinstance(j.errors[0], Boom)
    assert j.accepted == [None, True, None]
    assert result.state.log == ["a1"]


@pytest.mark.asyncio
async def test_no_pass_with_failures_has_the_lowest_failure_as_cause() -> None:
    fork = first_accepted(
        [Attempt("a0", 1), Attempt("a1", 9, 0.02, fail=True), Attempt("a2", 9, fail=True)]
    )
    with pytest.raises(JoinError) as info:
        await run_fork(fork)
    err = info.value
    assert "1 rejected, 2 failed" in str(err)
    assert isinstance(err.__cause__, Boom)
    assert str(err.__cause__) == "a1 failed"
    assert list(err.errors) == [1, 2]


@pytest.mark.asyncio
async def test_accept_that_raises_fails_that_branch() -> None:
    class Refused(Exception):
        pass

    def picky(value: dict[str, Any]) -> bool:
        if value["name"] == "a0":
            raise Refused("cannot judge a0")
        return True

    fork = Fork(
        [Attempt("a0", 9), Attempt("a1", 9, 0.02)],
        then=Pick(),
        join=JoinStrategy.FIRST_ACCEPTED,
        accept=picky,
    )
    result, side = await run_fork(fork)
    assert result.output == 1
    (j,) = side.joins
    assert isinstance(j.errors[0], Refused)
    assert j.statuses[0] is BranchStatus.FAILED
    assert j.results[0] is None
    assert result.state.log == ["a1"]

    only = Fork([Attempt("a0", 9)], then=Pick(), join="first_accepted", accept=picky)
    with pytest.raises(JoinError) as info:
        await run_fork(only)
    assert isinstance(info.value.__cause__, Refused)


@pytest.mark.asyncio
async def test_async_accept_is_awaited() -> None:
    async def judge(value: dict[str, Any]) -> bool:
        await asyncio.sleep(0.01)  # an LLM judge, say
        return bool(value["score"] > 3)

    fork = Fork(
        [Attempt("a0", 1), Attempt("a1", 7)],
        then=Pick(),
        join=JoinStrategy.FIRST_ACCEPTED,
        accept=judge,
    )
    result, _ = await run_fork(fork)
    assert result.output == 1


# -- timeout, nesting, keys ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_timeout_counts_unfinished_as_failed_then_decides_from_finished() -> None:
    fork = first_accepted(
        [Attempt("a0", 9, SLOW), Attempt("a1", 1, 0.0), Attempt("a2", 9, 0.01)], timeout=0.3
    )
    began = time.perf_counter()
    result, side = await run_fork(fork)
    assert time.perf_counter() - began < SLOW / 5
    assert result.output == 2
    (j,) = side.joins
    assert j.timed_out
    assert isinstance(j.errors[0], TimeoutError)
    assert j.accepted == [None, False, True]
    assert not j.deterministic and not result.deterministic  # the timeout decided
    assert side.cancelled == ["a0"]
    no_tasks_left()


@pytest.mark.asyncio
async def test_timeout_with_nothing_passed_is_a_join_error() -> None:
    fork = first_accepted([Attempt("a0", 1, 0.0), Attempt("a1", 9, SLOW)], timeout=0.1)
    with pytest.raises(JoinError) as info:
        await run_fork(fork)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert "1 rejected, 1 failed" in str(info.value)
    no_tasks_left()


@pytest.mark.asyncio
async def test_nested_first_accepted_forks() -> None:
    fork = first_accepted(
        [Inner("x", [1, 2]), Inner("y", [2, 8, 9]), Attempt("z", 9, 0.0)],
        then=None,
    )
    result, _ = await run_fork(fork)
    # x has no passing attempt (JoinError: branch x fails); y's first pass is y.1.
    assert result.output == [None, {"name": "y.1", "score": 8}, None]
    assert result.state.log == ["y.1"]
    assert result.deterministic


@pytest.mark.asyncio
async def test_mapping_fork_winner_is_the_key() -> None:
    fork = first_accepted(
        {
            "draft": Attempt("a0", 1, 0.02),
            "review": Attempt("a1", 9, 0.04),
            "final": Attempt("a2", 9),
        }
    )
    result, side = await run_fork(fork)
    assert result.output == "review"
    (j,) = side.joins
    assert j.winner == "review"
    assert j["review"] == {"name": "a1", "score": 9}
    assert j["draft"] == {"name": "a0", "score": 1}


@pytest.mark.asyncio
async def test_majority_winner_is_a_key_too() -> None:
    fork = Fork(
        {"p": Attempt("p", 9), "q": Attempt("q", 9), "r": Attempt("r", 9)},
        then=Pick(),
        merge=MergeStrategy.MAJORITY,
        vote_on="log",
    )
    result, _ = await run_fork(fork)
    assert result.output == "p"  # every log differs: a three-way tie, lowest index


# -- determinism ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_same_winner_and_output_over_20_runs_with_random_delays() -> None:
    scores = [1, 2, 9, 3, 9, 9]
    rng = random.Random(7)
    outputs = []
    for _ in range(20):
        branches = [Attempt(f"a{i}", s, rng.uniform(0.0, 0.02)) for i, s in enumerate(scores)]
        result, side = await run_fork(first_accepted(branches, then=None))
        assert result.deterministic
        assert side.joins == [] and result.state.pick == "a2"
        outputs.append(result.output)
    assert all(o == outputs[0] for o in outputs)
    assert outputs[0][:3] == [
        {"name": "a0", "score": 1},
        {"name": "a1", "score": 2},
        {"name": "a2", "score": 9},
    ]
    assert outputs[0][3:] == [None, None, None]


@pytest.mark.asyncio
async def test_check_determinism_accepts_first_accepted() -> None:
    @dataclass
    class Jitter(BaseNode[State]):
        name: str
        score: int

        async def run(self, ctx: RunContext[State]) -> End[dict[str, Any]]:
            await asyncio.sleep(random.uniform(0.0, 0.005))
            ctx.state.pick = self.name
            return End({"name": self.name, "score": self.score})

    @dataclass
    class Go(BaseNode[State]):
        async def run(self, ctx: RunContext[State]) -> Fork[State]:
            return Fork(
                [Jitter(f"j{i}", s) for i, s in enumerate([3, 6, 7, 1])],
                join=JoinStrategy.FIRST_ACCEPTED,
                accept=good,
            )

    graph = Graph(nodes=[Go, Jitter])
    report = await check_determinism(graph, Go(), state=State(), runs=12)
    assert report.deterministic


# -- huge forks -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_huge_fork_stops_launching_once_decided() -> None:
    n = 2_000
    fork = first_accepted([Attempt("a0", 9)] + [Attempt(f"s{i}", 9, SLOW) for i in range(1, n)])
    result, side = await run_fork(fork)
    assert result.output == 0
    assert len(side.started) < n // 4  # the launch loop stopped early
    (j,) = side.joins
    assert j.cancelled == n - 1
    no_tasks_left()


# -- ANY with accept ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_any_with_accept_takes_the_first_completion_that_passes() -> None:
    fork = Fork(
        [Attempt("a0", 9, SLOW), Attempt("a1", 1, 0.0), Attempt("a2", 9, 0.05)],
        then=Pick(),
        join=JoinStrategy.ANY,
        accept=good,
    )
    result, side = await run_fork(fork)
    assert result.output == 2
    (j,) = side.joins
    assert j.winner == 2
    assert j.accepted == [None, False, True]
    assert j.results[1] == {"name": "a1", "score": 1}  # the rejected value is kept
    assert not j.deterministic and not result.deterministic  # still a race
    # Only the winner's writes: a1 succeeded (rejected) and is not merged.
    assert result.state.log == ["a2"]
    assert side.cancelled == ["a0"]
    no_tasks_left()


@pytest.mark.asyncio
async def test_any_with_accept_and_nothing_passing_fails() -> None:
    fork = Fork(
        [Attempt("a0", 1), Attempt("a1", 2, fail=True)],
        then=Pick(),
        join=JoinStrategy.ANY,
        accept=good,
    )
    with pytest.raises(JoinError) as info:
        await run_fork(fork)
    assert "no branch value passed `accept`" in str(info.value)
    assert isinstance(info.value.__cause__, Boom)


@pytest.mark.asyncio
async def test_empty_first_accepted_fork_is_a_join_error() -> None:
    with pytest.raises(JoinError, match="no branch value passed"):
        await run_fork(first_accepted([]))


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("join", [JoinStrategy.ALL, JoinStrategy.FIRST, JoinStrategy.QUORUM])
def test_accept_with_another_join_is_refused(join: JoinStrategy) -> None:
    quorum = 1 if join is JoinStrategy.QUORUM else None
    with pytest.raises(ConfigurationError, match="accept applies to ANY and FIRST_ACCEPTED"):
        Fork([Attempt("a", 1)], join=join, quorum=quorum, accept=good)


def test_first_accepted_needs_accept() -> None:
    with pytest.raises(ConfigurationError, match="needs accept="):
        Fork([Attempt("a", 1)], join=JoinStrategy.FIRST_ACCEPTED)


def test_accept_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="accept must be callable"):
        Fork([Attempt("a", 1)], join=JoinStrategy.FIRST_ACCEPTED, accept=True)  # type: ignore[arg-type]


def test_accept_with_a_majority_merge_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="winner's state alone"):
        Fork(
            [Attempt("a", 1)],
            join=JoinStrategy.FIRST_ACCEPTED,
            accept=good,
            merge=MergeStrategy.MAJORITY,
        )


def test_first_accepted_takes_the_enum_name_and_any_failure_mode() -> None:
    fork = Fork(
        [Attempt("a", 1)], join="first_accepted", accept=good, on_error=FailureMode.CONTINUE
    )
    assert fork.join is JoinStrategy.FIRST_ACCEPTED
    assert fork.required_successes() == 1


@pytest.mark.asyncio
async def test_accept_raising_cancelled_error_fails_the_branch_instead_of_hanging() -> None:
    async def confused(value: dict[str, Any]) -> bool:
        if value["name"] == "a0":
            raise asyncio.CancelledError  # nothing cancelled the branch
        return True

    fork = Fork(
        [Attempt("a0", 9), Attempt("a1", 9, 0.02)],
        then=Pick(),
        join=JoinStrategy.FIRST_ACCEPTED,
        accept=confused,
    )
    result, side = await run_fork(fork)
    assert result.output == 1
    (j,) = side.joins
    assert isinstance(j.errors[0], NodeExecutionError)
    assert isinstance(j.errors[0].__cause__, asyncio.CancelledError)


# -- the docs example runs verbatim, and can fail ----------------------------------------


def _docs_example() -> str:
    text = (Path(__file__).resolve().parents[1] / "docs" / "concepts.md").read_text("utf-8")
    section = text.split("### Accepting a value", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return str(block)


def _exec_example(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "concepts_example"}
    # dont_inherit: this module's `from __future__ import annotations` would turn the
    # example's annotations into strings that its dataclasses cannot resolve.
    exec(compile(code, "docs/concepts.md", "exec", dont_inherit=True), namespace)
    return namespace


def test_docs_example_runs_verbatim() -> None:
    namespace = _exec_example(_docs_example())
    assert namespace["best"].state.answer == "Paris"
    assert namespace["vote"].state.answer == " paris"


def test_docs_example_fails_as_a_race() -> None:
    # With ANY the fastest passing rollout ("Paris!") would win: the example's
    # assertions are what tells the two apart.
    example = _docs_example()
    old = "join=JoinStrategy.FIRST_ACCEPTED"
    assert old in example
    with pytest.raises(AssertionError):
        _exec_example(example.replace(old, "join=JoinStrategy.ANY"))


def test_docs_example_fails_without_vote_key() -> None:
    example = _docs_example()
    old = 'vote_key=lambda answer: answer.strip(" .").lower()'
    assert old in example
    with pytest.raises(AssertionError):
        _exec_example(example.replace(old, ""))
