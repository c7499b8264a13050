"""ParallelExecutor.merge_states: FIRST_SUCCESS, ALL_SUCCESS (field merge, reducers,
conflicts, provenance) and MAJORITY (voting, ties, agreement, stable hashes)."""

from __future__ import annotations

import asyncio
import json
import operator
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    ConfigurationError,
    End,
    MergeError,
    MergeStrategy,
    NodeResult,
    ParallelExecutionError,
    ParallelExecutor,
    RunContext,
    add,
    append,
    canonical_hash,
    canonical_json,
    max_value,
    merge_dict,
)


class State(BaseModel):
    counter: int = 0
    answer: str = ""
    items: list[str] = []
    info: dict[str, int] = {}
    tags: set[str] = set()


class Reduced(BaseModel):
    notes: Annotated[list[str], append] = []
    scores: Annotated[dict[str, float], merge_dict] = {}
    best: Annotated[float, max_value] = 0.0
    calls: Annotated[int, add] = 0
    total: Annotated[int, operator.add] = 0
    plain: list[str] = []


def make_ctx(state: Any, **kw: Any) -> RunContext[Any]:
    return RunContext(state=state, execution_id="merge-test", **kw)


async def run_all(nodes: list[Any], state: Any, **kw: Any) -> tuple[ParallelExecutor[Any], Any]:
    ex: ParallelExecutor[Any] = ParallelExecutor(max_concurrent=len(nodes))
    results = await ex.execute_parallel(nodes, make_ctx(state, **kw))
    return ex, results


# --------------------------------------------------------------------------- nodes


@dataclass
class Write(BaseNode[State]):
    """Writes ``answer`` and appends to ``items`` after ``delay``; returns ``value``."""

    value: str
    delay: float = 0.0
    fail: bool = False

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ValueError(f"{self.value} failed")
        ctx.state.answer = self.value
        ctx.state.items.append(self.value)
        return End(self.value)


@dataclass
class Contribute(BaseNode[State]):
    """Appends to the list, adds its own dict key, optionally sets the counter."""

    index: int
    delay: float = 0.0
    counter: int | None = None

    async def run(self, ctx: RunContext[State]) -> End[int]:
        await asyncio.sleep(self.delay)
        ctx.state.items.append(f"n{self.index}")
        ctx.state.info[f"k{self.index}"] = self.index
        if self.counter is not None:
            ctx.state.counter = self.counter
        return End(self.index)


@dataclass
class Reduce(BaseNode[Reduced]):
    index: int
    delay: float = 0.0

    async def run(self, ctx: RunContext[Reduced]) -> End[int]:
        await asyncio.sleep(self.delay)
        s = ctx.state
        s.notes.append(f"note{self.index}")
        s.scores[f"s{self.index}"] = float(self.index)
        s.scores["shared"] = float(self.index)
        s.best = max(s.best, float(self.index * 10))
        s.calls += 1
        s.total += self.index
        return End(self.index)


@dataclass
class Vote(BaseNode[State]):
    """Votes ``answer`` (written to the state) and returns ``tag`` as its End value."""

    answer: str
    tag: str = ""
    delay: float = 0.0

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(self.delay)
        ctx.state.answer = self.answer
        return End(self.tag or self.answer)


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


@dataclass
class Consensus(BaseNode[State]):
    """A deterministic node whose output holds a set of strings and a dict."""

    index: int

    async def run(self, ctx: RunContext[State]) -> End[dict[str, Any]]:
        await asyncio.sleep(0)
        ctx.state.tags = ctx.state.tags | set(WORDS)
        ctx.state.info = {w: len(w) for w in reversed(WORDS)}
        return End({"tags": set(WORDS), "lengths": {w: len(w) for w in WORDS}})


# --------------------------------------------------------------------------- FIRST_SUCCESS


@pytest.mark.asyncio
async def test_first_success_is_by_index_not_completion() -> None:
    # branch 0 finishes last, branch 2 first
    nodes = [Write("slow0", 0.06), Write("mid1", 0.03), Write("fast2", 0.0)]
    ex, results = await run_all(nodes, State(items=["base"]))
    merged = ex.merge_states(results, MergeStrategy.FIRST_SUCCESS)
    assert merged.state.answer == "slow0"
    assert merged.state.items == ["base", "slow0"]
    assert merged.metadata["merge"]["winner"] == results[0].key
    assert merged.metadata["merge"]["strategy"] == "FIRST_SUCCESS"


@pytest.mark.asyncio
async def test_first_success_is_the_default_strategy() -> None:
    ex, results = await run_all([Write("a", 0.02), Write("b")], State())
    assert ex.merge_states(results).state.answer == "a"


@pytest.mark.asyncio
async def test_first_success_skips_failures() -> None:
    nodes = [Write("f0", fail=True), Write("slow1", 0.05), Write("fast2", 0.0)]
    ex, results = await run_all(nodes, State())
    assert isinstance(results[0].error, ValueError)
    merged = ex.merge_states(results, MergeStrategy.FIRST_SUCCESS)
    assert merged.state.answer == "slow1"
    assert merged.state.items == ["slow1"]
    assert merged.metadata["merge"]["winner"] == results[1].key


@pytest.mark.asyncio
async def test_first_success_without_success_is_merge_error() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    with pytest.raises(ParallelExecutionError) as info:
        await ex.execute_parallel([Write("a", fail=True), Write("b", fail=True)], make_ctx(State()))
    partial = info.value.partial_results
    with pytest.raises(MergeError) as merr:
        ex.merge_states(partial, MergeStrategy.FIRST_SUCCESS)
    assert "FIRST_SUCCESS" in str(merr.value)
    assert merr.value.branches == [r.key for r in partial]


# --------------------------------------------------------------------------- ALL_SUCCESS


@pytest.mark.asyncio
async def test_all_success_list_appends_in_index_order_regardless_of_completion() -> None:
    n = 5
    # branch i sleeps (n - i) * 10 ms: the last branch finishes first
    nodes = [Contribute(i, delay=(n - i) * 0.01) for i in range(n)]
    state = State(items=["base"], info={"base": -1})
    ex, results = await run_all(nodes, state)
    merged = ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    assert merged.state.items == ["base"] + [f"n{i}" for i in range(n)]
    assert merged.state.info == {"base": -1, **{f"k{i}": i for i in range(n)}}
    assert merged.metadata["merge"]["used"] == [r.key for r in results]
    assert merged.metadata["merge"]["changed_fields"] == ["info", "items"]
    # the merge built a new state; the caller's is untouched
    assert state.items == ["base"]
    assert state.info == {"base": -1}


@pytest.mark.asyncio
async def test_all_success_equal_scalar_writes_conflict() -> None:
    # two writers of one scalar without a reducer conflict even when they agree
    ex, results = await run_all([Contribute(0, counter=7), Contribute(1, counter=7)], State())
    with pytest.raises(MergeError) as info:
        ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    assert info.value.field == "counter"
    assert info.value.branches == [results[0].key, results[1].key]
    # one writer is never a conflict
    ex, results = await run_all([Contribute(0, counter=7), Contribute(1)], State())
    merged = ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    assert merged.state.counter == 7
    assert merged.state.items == ["n0", "n1"]


@pytest.mark.asyncio
async def test_all_success_conflicting_scalar_writes_name_field_and_branches() -> None:
    nodes = [Contribute(0, counter=1), Contribute(1), Contribute(2, counter=2)]
    ex, results = await run_all(nodes, State())
    with pytest.raises(MergeError) as info:
        ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    err = info.value
    assert err.field == "counter"
    assert err.branches == [results[0].key, results[2].key]
    assert "counter" in str(err)
    assert results[0].key in str(err) and results[2].key in str(err)


@pytest.mark.asyncio
async def test_all_success_with_a_failed_branch_is_merge_error() -> None:
    nodes = [Write("a"), Write("b", fail=True), Write("c")]
    ex, results = await run_all(nodes, State())
    with pytest.raises(MergeError) as info:
        ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    assert info.value.branches == [results[1].key]
    assert results[1].key in str(info.value)


@pytest.mark.asyncio
async def test_all_success_applies_annotated_reducers() -> None:
    n = 4
    nodes = [Reduce(i, delay=(n - i) * 0.01) for i in range(n)]
    base = Reduced(
        notes=["start"], scores={"s0": -1.0, "keep": 9.0}, best=15.0, calls=10, total=100
    )
    ex, results = await run_all(nodes, base)
    assert all(r.error is None for r in results)
    merged = ex.merge_states(results, MergeStrategy.ALL_SUCCESS).state
    # append: every branch's appended items, in branch order
    assert merged.notes == ["start", "note0", "note1", "note2", "note3"]
    # merge_dict: union of changed entries, the later branch wins a shared key
    assert merged.scores == {
        "s0": 0.0,
        "keep": 9.0,
        "s1": 1.0,
        "s2": 2.0,
        "s3": 3.0,
        "shared": 3.0,
    }
    # max_value: the largest write (branch 3 wrote 30.0)
    assert merged.best == 30.0
    # add: every branch's increment counts
    assert merged.calls == 10 + n
    # a plain callable (current, update) folded with each branch's delta
    assert merged.total == 100 + sum(range(n))
    assert base.calls == 10 and base.notes == ["start"]


@pytest.mark.asyncio
async def test_all_success_records_provenance_of_every_branch() -> None:
    root = {"node": "Root", "key": "root"}
    nodes = [Contribute(i, delay=(3 - i) * 0.01) for i in range(3)]
    ex, results = await run_all(nodes, State(), provenance=[root])
    merged = ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    assert merged.provenance[0] == root
    entries = merged.provenance[1:]
    assert [e["key"] for e in entries] == [r.key for r in results]
    assert [e["node"] for e in entries] == ["Contribute"] * 3
    # FIRST_SUCCESS keeps only the winner's provenance
    first = ex.merge_states(results, MergeStrategy.FIRST_SUCCESS)
    assert [e["key"] for e in first.provenance[1:]] == [results[0].key]


# --------------------------------------------------------------------------- MAJORITY


@pytest.mark.asyncio
async def test_majority_most_common_wins() -> None:
    nodes = [Vote("x", delay=0.0), Vote("y", delay=0.02), Vote("z"), Vote("y", delay=0.01)]
    ex, results = await run_all(nodes, State())
    merged = ex.merge_states(results, MergeStrategy.MAJORITY)
    info = merged.metadata["merge"]
    assert merged.state.answer == "y"
    assert info["winner"] == results[1].key
    assert info["agreement"] == 2
    assert info["agreement_ratio"] == pytest.approx(0.5)
    assert info["used"] == [results[1].key, results[3].key]
    assert info["hash"] == canonical_hash("y")


@pytest.mark.asyncio
async def test_majority_tie_goes_to_lowest_index() -> None:
    # "b" holds index 0; "a" finishes first and is as common
    nodes = [Vote("b", delay=0.03), Vote("a"), Vote("a"), Vote("b", delay=0.02), Vote("c")]
    ex, results = await run_all(nodes, State())
    merged = ex.merge_states(results, MergeStrategy.MAJORITY)
    info = merged.metadata["merge"]
    assert merged.state.answer == "b"
    assert info["winner"] == results[0].key
    assert info["agreement"] == 2
    assert info["agreement_ratio"] == pytest.approx(2 / 5)


@pytest.mark.asyncio
async def test_majority_unanimous() -> None:
    ex, results = await run_all([Vote("same") for _ in range(3)], State())
    info = ex.merge_states(results, MergeStrategy.MAJORITY).metadata["merge"]
    assert info["agreement"] == 3
    assert info["agreement_ratio"] == 1.0
    assert info["winner"] == results[0].key


@pytest.mark.asyncio
async def test_majority_vote_fields_votes_on_state_fields() -> None:
    # End values all differ; the `answer` field agrees for branches 1 and 2
    nodes = [Vote("p", tag="t0"), Vote("q", tag="t1"), Vote("q", tag="t2")]
    ex, results = await run_all(nodes, State())
    by_value = ex.merge_states(results, MergeStrategy.MAJORITY).metadata["merge"]
    assert by_value["agreement"] == 1
    assert by_value["winner"] == results[0].key
    merged = ex.merge_states(results, MergeStrategy.MAJORITY, vote_fields=["answer"])
    info = merged.metadata["merge"]
    assert merged.state.answer == "q"
    assert info["winner"] == results[1].key
    assert info["agreement"] == 2
    assert info["agreement_ratio"] == pytest.approx(2 / 3)
    assert info["hash"] == canonical_hash({"answer": "q"})


@pytest.mark.asyncio
async def test_majority_ignores_failed_branches_and_needs_one_success() -> None:
    nodes = [Write("x", fail=True), Write("y"), Write("x", fail=True)]
    ex, results = await run_all(nodes, State())
    merged = ex.merge_states(results, MergeStrategy.MAJORITY)
    assert merged.state.answer == "y"
    assert merged.metadata["merge"]["winner"] == results[1].key
    assert merged.metadata["merge"]["agreement"] == 1
    with pytest.raises(MergeError):
        ex.merge_states([results[0], results[2]], MergeStrategy.MAJORITY)


async def majority_hash() -> str:
    """The MAJORITY hash of 3 ``Consensus`` nodes on a state with a set and a dict."""
    state = State(tags={"zulu", "yankee", "x-ray"}, info={"b": 2, "a": 1})
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    results = await ex.execute_parallel(
        [Consensus(i) for i in range(3)], RunContext(state=state, execution_id="e")
    )
    return str(ex.merge_states(results, MergeStrategy.MAJORITY).metadata["merge"]["hash"])


@dataclass
class ReturnsState(BaseNode[State]):
    """Returns its (pydantic) state, which holds a set, as its End value."""

    index: int

    async def run(self, ctx: RunContext[State]) -> End[State]:
        await asyncio.sleep(0)
        ctx.state.tags = ctx.state.tags | set(WORDS)
        return End(ctx.state)


async def majority_model_hash() -> str:
    """MAJORITY over End values that are pydantic models with a set field."""
    state = State(tags={"zulu", "yankee", "x-ray"}, info={"b": 2, "a": 1})
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    results = await ex.execute_parallel(
        [ReturnsState(i) for i in range(3)], RunContext(state=state, execution_id="e")
    )
    return str(ex.merge_states(results, MergeStrategy.MAJORITY).metadata["merge"]["hash"])


async def majority_field_hash() -> str:
    """As ``majority_hash``, voting on the state's set and dict fields."""
    state = State(tags={"zulu", "yankee", "x-ray"}, info={"b": 2, "a": 1})
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    results = await ex.execute_parallel(
        [Consensus(i) for i in range(3)], RunContext(state=state, execution_id="e")
    )
    merged = ex.merge_states(results, MergeStrategy.MAJORITY, vote_fields=["tags", "info"])
    return str(merged.metadata["merge"]["hash"])


@pytest.mark.asyncio
async def test_100_executions_give_one_distinct_majority_hash() -> None:
    hashes = {await majority_hash() for _ in range(100)}
    assert len(hashes) == 1
    (value,) = hashes
    assert len(value) == 64
    int(value, 16)
    field_hashes = {await majority_field_hash() for _ in range(20)}
    assert len(field_hashes) == 1


_CHILD = """
import asyncio, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("lg_majority_child", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
print(json.dumps({
    "hash": asyncio.run(mod.majority_hash()),
    "field_hash": asyncio.run(mod.majority_field_hash()),
    "model_hash": asyncio.run(mod.majority_model_hash()),
    "set_order": list(set(mod.WORDS)),
}))
"""


def _child_run(seed: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(Path(__file__).resolve())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_majority_hash_is_identical_across_interpreters_and_hash_seeds() -> None:
    here = {
        "hash": asyncio.run(majority_hash()),
        "field_hash": asyncio.run(majority_field_hash()),
        "model_hash": asyncio.run(majority_model_hash()),
    }
    one = _child_run("1")
    other = _child_run("12345")
    # the seeds really change set iteration order, so a naive hash would differ
    assert one["set_order"] != other["set_order"]
    assert one["hash"] == other["hash"] == here["hash"]
    assert one["field_hash"] == other["field_hash"] == here["field_hash"]
    # a pydantic model holding a set: its set must be ordered too, not dumped in
    # (seed-dependent) iteration order
    assert one["model_hash"] == other["model_hash"] == here["model_hash"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.asyncio
async def test_unknown_strategy_is_configuration_error() -> None:
    ex, results = await run_all([Write("a")], State())
    with pytest.raises(ConfigurationError) as info:
        ex.merge_states(results, "bogus")  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert "bogus" in str(info.value)
    assert "MergeStrategy.ALL_SUCCESS" in str(info.value)
    with pytest.raises(ConfigurationError, match="42"):
        ex.merge_states(results, 42)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_unknown_vote_field_is_configuration_error() -> None:
    ex, results = await run_all([Vote("a"), Vote("a")], State())
    with pytest.raises(ConfigurationError) as info:
        ex.merge_states(results, MergeStrategy.MAJORITY, vote_fields=["answer", "nope"])
    assert "'nope'" in str(info.value)
    assert "State" in str(info.value)
    # a single field name given as a string is one field, not its characters
    merged = ex.merge_states(results, MergeStrategy.MAJORITY, vote_fields="answer")
    assert merged.metadata["merge"]["hash"] == canonical_hash({"answer": "a"})


@pytest.mark.asyncio
async def test_strategy_by_name_is_accepted() -> None:
    ex, results = await run_all([Write("a"), Write("b")], State())
    merged = ex.merge_states(results, "first_success")  # type: ignore[arg-type]
    assert merged.state.answer == "a"


@pytest.mark.asyncio
async def test_merge_of_no_results_is_merge_error() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    empty: list[NodeResult[State]] = []
    with pytest.raises(MergeError):
        ex.merge_states(empty, MergeStrategy.ALL_SUCCESS)


@pytest.mark.asyncio
async def test_merged_writes_count_as_set_fields() -> None:
    ex, results = await run_all([Contribute(0, counter=3), Contribute(1)], State())
    for strategy in MergeStrategy:
        merged = ex.merge_states(results, strategy).state
        dumped = merged.model_dump(exclude_unset=True)
        assert dumped["counter"] == 3, strategy
        assert "items" in dumped and "info" in dumped, strategy
        assert "answer" not in dumped, strategy


def test_canonical_json_of_a_model_sorts_sets_and_keys() -> None:
    from enum import Enum

    class Color(Enum):
        RED = "red"

    class Model(BaseModel):
        tags: set[str] = set()
        by_id: dict[int, frozenset[str]] = {}
        colors: dict[Color, int] = {}

    m = Model(
        tags={"b", "c", "a"},
        by_id={2: frozenset({"y", "x"}), 1: frozenset()},
        colors={Color.RED: 1},
    )
    assert canonical_json(m) == (
        '{"by_id":{"1":[],"2":["x","y"]},"colors":{"red":1},"tags":["a","b","c"]}'
    )
    # equal mappings hash equal whatever their insertion order, even with keys 1 and "1"
    assert canonical_hash({1: "a", "1": "b"}) == canonical_hash({"1": "b", 1: "a"})
