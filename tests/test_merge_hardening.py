"""Merge hardening: linear reducer merges, reducer failures, deletions and extras,
TypedDict reducers, and conflicts on equal writes without a reducer."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, NotRequired, Required, TypedDict

import pytest
from pydantic import BaseModel, ConfigDict

import lift_graph
from lift_graph import (
    BaseNode,
    End,
    Fork,
    Graph,
    GraphDefinitionError,
    MergeError,
    MergeStrategy,
    ParallelExecutor,
    Pipeline,
    Reducer,
    RunContext,
    add,
    append,
    merge_dict,
    same_value,
    union,
)
from lift_graph import reducers as reducers_module
from lift_graph._declared_reducers import reducers_of
from lift_graph._merge import apply_sequential, merge_changes
from lift_graph._state import MISSING, Branch, FieldChange

# --------------------------------------------------------------------------- helpers


class Counting(Reducer):
    """``append`` semantics, counting how often the merge calls it."""

    def __init__(self) -> None:
        super().__init__("counting")
        self.many_calls: list[int] = []
        self.single_calls = 0

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        self.single_calls += 1
        return append.combine(current, before, after)

    def combine_many(self, current: Any, changes: Sequence[tuple[Any, Any]]) -> Any:
        self.many_calls.append(len(changes))
        return append.combine_many(current, changes)


def _appends(n: int, field: str = "items") -> list[tuple[Any, dict[str, FieldChange]]]:
    return [(i, {field: FieldChange([], [i])}) for i in range(n)]


# --------------------------------------------------------------------------- 1. linear merges


def test_a_fork_merge_calls_a_reducer_once_per_field() -> None:
    counting = Counting()
    merged, changed = merge_changes({"items": []}, _appends(1000), {"items": counting})
    assert merged["items"] == list(range(1000))
    assert changed == {"items"}
    assert counting.many_calls == [1000]
    assert counting.single_calls == 0


def test_a_pipeline_merge_calls_a_reducer_once_per_field() -> None:
    counting = Counting()
    changes = [{"items": FieldChange([], [i])} for i in range(500)]
    merged, _ = apply_sequential({"items": []}, changes, {"items": counting})
    assert merged["items"] == list(range(500))
    assert counting.many_calls == [500]
    assert counting.single_calls == 0


@pytest.mark.parametrize("reducer", [append, merge_dict, union])
def test_builtin_collection_reducers_never_fold_one_change_at_a_time(
    reducer: Reducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Folding `combine` copies the accumulated value per change (quadratic): the
    # built-ins must build their result in one pass.
    def refuse(*args: Any) -> Any:
        raise AssertionError(f"{reducer.name}.combine called per change")

    monkeypatch.setattr(type(reducer), "combine", refuse)
    n = 2000
    if reducer is merge_dict:
        writes = [(i, {"f": FieldChange({}, {f"k{i}": i})}) for i in range(n)]
        expected: Any = {f"k{i}": i for i in range(n)}
        base: Any = {}
    elif reducer is union:
        writes = [(i, {"f": FieldChange(set(), {i})}) for i in range(n)]
        expected, base = set(range(n)), set()
    else:
        writes = [(i, {"f": FieldChange([], [i])}) for i in range(n)]
        expected, base = list(range(n)), []
    merged, _ = merge_changes({"f": base}, writes, {"f": reducer})
    assert merged["f"] == expected


def test_merge_dict_and_append_order_semantics_are_unchanged() -> None:
    base = {"d": {"keep": 0, "shared": -1}, "l": ["start"]}
    writes = [
        (i, {"d": FieldChange(base["d"], {**base["d"], "shared": i, f"k{i}": i})}) for i in range(3)
    ]
    writes += [(i + 3, {"l": FieldChange(base["l"], ["start", f"n{i}", "x"])}) for i in range(2)]
    merged, _ = merge_changes(base, writes, {"d": merge_dict, "l": append})
    assert merged["d"] == {"keep": 0, "shared": 2, "k0": 0, "k1": 1, "k2": 2}
    assert merged["l"] == ["start", "n0", "x", "n1", "x"]


# --------------------------------------------------------------------------- 2. reducer errors


class Exploding(Reducer):
    def combine(self, current: Any, before: Any, after: Any) -> Any:
        raise ZeroDivisionError("reducer bug")


EXPLODING = Exploding("exploding")


class Boom(BaseModel):
    value: Annotated[int, EXPLODING] = 0
    other: int = 0


@dataclass
class SetValue(BaseNode[Boom]):
    v: int

    async def run(self, ctx: RunContext[Boom]) -> End[int]:
        await asyncio.sleep(0)
        ctx.state.value = self.v
        return End(self.v)


@dataclass
class ForkBoom(BaseNode[Boom]):
    async def run(self, ctx: RunContext[Boom]) -> Fork[Boom]:
        return Fork({"a": SetValue(1), "b": SetValue(2)})


@dataclass
class PipeBoom(BaseNode[Boom]):
    async def run(self, ctx: RunContext[Boom]) -> Pipeline[Boom]:
        return Pipeline([SetValue(1), SetValue(2), SetValue(3)])


def _assert_wrapped(err: MergeError, branches: list[Any]) -> None:
    assert err.field == "value"
    assert err.branches == branches
    assert isinstance(err.__cause__, ZeroDivisionError)
    text = str(err)
    assert "exploding" in text and "'value'" in text and "reducer bug" in text


@pytest.mark.asyncio
async def test_a_raising_reducer_is_a_merge_error_in_a_fork() -> None:
    graph = Graph(nodes=[ForkBoom, PipeBoom, SetValue])
    with pytest.raises(MergeError) as info:
        await graph.run(ForkBoom(), state=Boom())
    _assert_wrapped(info.value, ["a", "b"])
    assert info.value.join is not None and info.value.join.results == [1, 2]


@pytest.mark.asyncio
async def test_a_raising_reducer_is_a_merge_error_in_a_pipeline() -> None:
    graph = Graph(nodes=[ForkBoom, PipeBoom, SetValue])
    # members depend on each other (no declared reads / writes): views are built
    # from the earlier members' changes, where the reducer fails first
    with pytest.raises(MergeError) as info:
        await asyncio.wait_for(graph.run(PipeBoom(), state=Boom()), 10)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert info.value.field == "value" and info.value.branches


def test_a_raising_reducer_is_a_merge_error_in_merge_states_and_apply_sequential() -> None:
    changes = [{"value": FieldChange(0, 1)}, {"value": FieldChange(1, 2)}]
    with pytest.raises(MergeError) as info:
        apply_sequential(Boom(), changes, reducers_of(Boom), keys=["p0", "p1"])
    _assert_wrapped(info.value, ["p0", "p1"])


# --------------------------------------------------------------------------- 3. deletions, extras


@dataclass
class DictEdit(BaseNode[dict[str, Any]]):
    delete: tuple[str, ...] = ()
    put: tuple[tuple[str, Any], ...] = ()

    async def run(self, ctx: RunContext[dict[str, Any]]) -> End[None]:
        await asyncio.sleep(0)
        for k in self.delete:
            del ctx.state[k]
        for k, v in self.put:
            ctx.state[k] = v
        return End(None)


@dataclass
class DictFork(BaseNode[dict[str, Any]]):
    edits: list[DictEdit]

    async def run(self, ctx: RunContext[dict[str, Any]]) -> Fork[dict[str, Any]]:
        return Fork(list(self.edits))


@dataclass
class DictPipe(BaseNode[dict[str, Any]]):
    edits: list[DictEdit]

    async def run(self, ctx: RunContext[dict[str, Any]]) -> Pipeline[dict[str, Any]]:
        return Pipeline(list(self.edits))


DICT_GRAPH = Graph(nodes=[DictEdit, DictFork, DictPipe])


@pytest.mark.asyncio
async def test_a_key_deleted_by_one_branch_is_deleted() -> None:
    edits = [DictEdit(delete=("gone",)), DictEdit(put=(("new", 1),)), DictEdit()]
    state = {"gone": 1, "kept": 2}
    result = await DICT_GRAPH.run(DictFork(edits), state=state)
    assert result.state == {"kept": 2, "new": 1}
    assert state == {"gone": 1, "kept": 2}


@pytest.mark.asyncio
async def test_a_key_deleted_by_every_branch_that_touched_it_is_deleted() -> None:
    edits = [DictEdit(delete=("gone",)), DictEdit(delete=("gone",))]
    result = await DICT_GRAPH.run(DictFork(edits), state={"gone": 1})
    assert result.state == {}


@pytest.mark.asyncio
async def test_deleting_and_writing_one_key_is_a_merge_error() -> None:
    edits = [DictEdit(put=(("k", 5),)), DictEdit(), DictEdit(delete=("k",))]
    with pytest.raises(MergeError) as info:
        await DICT_GRAPH.run(DictFork(edits), state={"k": 1})
    assert info.value.field == "k"
    assert info.value.branches == [0, 2]
    assert "deleted" in str(info.value) and "'k'" in str(info.value)


@pytest.mark.asyncio
async def test_a_pipeline_applies_deletions_in_order() -> None:
    edits = [DictEdit(delete=("a",)), DictEdit(put=(("a", 9),)), DictEdit(delete=("b",))]
    result = await DICT_GRAPH.run(DictPipe(edits), state={"a": 1, "b": 2, "c": 3})
    assert result.state == {"a": 9, "c": 3}
    result = await DICT_GRAPH.run(DictPipe(edits[:1]), state={"a": 1})
    assert result.state == {}


@pytest.mark.asyncio
async def test_a_deletion_at_the_top_level_reaches_the_result() -> None:
    result = await DICT_GRAPH.run(DictEdit(delete=("a",)), state={"a": 1, "b": 2})
    assert result.state == {"b": 2}


def test_branch_changes_report_deleted_and_added_keys() -> None:
    branch = Branch.fork({"a": 1, "b": 2})
    del branch.state["a"]
    branch.state["c"] = 3
    changes = branch.changes()
    assert changes == {"a": FieldChange(1, MISSING), "c": FieldChange(MISSING, 3)}
    assert repr(MISSING) == "MISSING"


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    x: int = 0


@dataclass
class SetExtra(BaseNode[Open]):
    name: str
    value: Any = None
    delete: bool = False

    async def run(self, ctx: RunContext[Open]) -> End[None]:
        await asyncio.sleep(0)
        if self.delete:
            delattr(ctx.state, self.name)
        else:
            setattr(ctx.state, self.name, self.value)
        return End(None)


@dataclass
class ExtraFork(BaseNode[Open]):
    edits: list[SetExtra]

    async def run(self, ctx: RunContext[Open]) -> Fork[Open]:
        return Fork(list(self.edits))


@dataclass
class ExtraPipe(BaseNode[Open]):
    edits: list[SetExtra]

    async def run(self, ctx: RunContext[Open]) -> Pipeline[Open]:
        return Pipeline(list(self.edits))


EXTRA_GRAPH = Graph(nodes=[SetExtra, ExtraFork, ExtraPipe])


@pytest.mark.asyncio
async def test_model_extras_merge_like_fields() -> None:
    edits = [SetExtra("a", 1), SetExtra("b", [2]), SetExtra("old", delete=True)]
    base = Open.model_validate({"x": 1, "old": "o"})
    result = await EXTRA_GRAPH.run(ExtraFork(edits), state=base)
    assert result.state.model_dump() == {"x": 1, "a": 1, "b": [2]}
    assert base.model_dump() == {"x": 1, "old": "o"}
    assert "a" in result.state.model_dump(exclude_unset=True)
    piped = await EXTRA_GRAPH.run(ExtraPipe(edits), state=base)
    assert piped.state.model_dump() == {"x": 1, "a": 1, "b": [2]}


@pytest.mark.asyncio
async def test_conflicting_extras_are_a_merge_error() -> None:
    edits = [SetExtra("a", 1), SetExtra("a", 2)]
    with pytest.raises(MergeError) as info:
        await EXTRA_GRAPH.run(ExtraFork(edits), state=Open())
    assert info.value.field == "a" and info.value.branches == [0, 1]


# --------------------------------------------------------------------------- 4. TypedDict reducers


class Counter(TypedDict):
    count: Annotated[int, operator.add]
    notes: Annotated[list[str], append]
    plain: int


class Partial(TypedDict, total=False):
    count: Required[Annotated[int, add]]
    seen: NotRequired[Annotated[list[str], append]]
    votes: Annotated[NotRequired[dict[str, int]], merge_dict]


@dataclass
class Bump(BaseNode[Counter]):
    i: int

    async def run(self, ctx: RunContext[Counter]) -> End[int]:
        await asyncio.sleep(0)
        ctx.state["count"] += 1
        ctx.state["notes"].append(f"n{self.i}")
        return End(self.i)


@dataclass
class FanBump(BaseNode[Counter]):
    n: int

    async def run(self, ctx: RunContext[Counter]) -> Fork[Counter]:
        return Fork([Bump(i) for i in range(self.n)], then=Total())


@dataclass
class PipeBump(BaseNode[Counter]):
    n: int
    reads: ClassVar[frozenset[str]] = frozenset()
    writes: ClassVar[frozenset[str]] = frozenset()

    async def run(self, ctx: RunContext[Counter]) -> Pipeline[Counter]:
        return Pipeline([DeclaredBump(i) for i in range(self.n)], then=Total())


@dataclass
class DeclaredBump(Bump):
    reads: ClassVar[frozenset[str]] = frozenset()
    writes: ClassVar[frozenset[str]] = frozenset({"count", "notes"})


@dataclass
class Total(BaseNode[Counter]):
    async def run(self, ctx: RunContext[Counter]) -> End[int]:
        return End(ctx.state["count"])


COUNTER_GRAPH = Graph(nodes=[FanBump, PipeBump, Bump, DeclaredBump, Total])


@pytest.mark.asyncio
async def test_typeddict_reducers_apply_to_a_dict_state_in_a_fork() -> None:
    result = await COUNTER_GRAPH.run(FanBump(3), state={"count": 10, "notes": [], "plain": 0})
    assert result.output == 13
    assert result.state == {"count": 13, "notes": ["n0", "n1", "n2"], "plain": 0}


@pytest.mark.asyncio
async def test_typeddict_reducers_apply_in_a_pipeline() -> None:
    result = await COUNTER_GRAPH.run(PipeBump(4), state={"count": 0, "notes": [], "plain": 0})
    assert result.output == 4
    assert result.state["notes"] == ["n0", "n1", "n2", "n3"]


@pytest.mark.asyncio
async def test_typeddict_reducers_apply_in_merge_states() -> None:
    ex: ParallelExecutor[Counter] = ParallelExecutor(max_concurrent=3)
    ctx: RunContext[Counter] = RunContext(
        state={"count": 0, "notes": [], "plain": 0}, execution_id="td"
    )
    results = await ex.execute_parallel([Bump(i) for i in range(3)], ctx)
    merged = ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    assert merged.state["count"] == 3
    assert merged.state["notes"] == ["n0", "n1", "n2"]


def test_typeddict_total_false_required_and_not_required_reducers() -> None:
    assert reducers_of(Partial) == {"count": add, "seen": append, "votes": merge_dict}
    assert set(reducers_of(Counter)) == {"count", "notes"}


@dataclass
class AddKeys(BaseNode[Partial]):
    i: int

    async def run(self, ctx: RunContext[Partial]) -> End[None]:
        await asyncio.sleep(0)
        ctx.state["count"] += 2
        ctx.state.setdefault("seen", []).append(f"s{self.i}")
        ctx.state["votes"] = {f"v{self.i}": self.i}
        return End(None)


@dataclass
class FanKeys(BaseNode[Partial]):
    async def run(self, ctx: RunContext[Partial]) -> Fork[Partial]:
        return Fork([AddKeys(i) for i in range(3)])


@pytest.mark.asyncio
async def test_not_required_keys_added_by_several_branches_go_through_their_reducer() -> None:
    graph = Graph(nodes=[FanKeys, AddKeys])
    result = await graph.run(FanKeys(), state={"count": 1})
    assert result.state == {
        "count": 7,
        "seen": ["s0", "s1", "s2"],
        "votes": {"v0": 0, "v1": 1, "v2": 2},
    }


@dataclasses.dataclass
class DataState:
    total: Annotated[int, add] = 0
    tags: Annotated[list[str], append] = dataclasses.field(default_factory=list)


@dataclass
class DataBump(BaseNode[DataState]):
    i: int

    async def run(self, ctx: RunContext[DataState]) -> End[None]:
        await asyncio.sleep(0)
        ctx.state.total += self.i
        ctx.state.tags.append(f"t{self.i}")
        return End(None)


@dataclass
class DataFan(BaseNode[DataState]):
    async def run(self, ctx: RunContext[DataState]) -> Fork[DataState]:
        return Fork([DataBump(i) for i in range(1, 4)])


@pytest.mark.asyncio
async def test_dataclass_state_annotated_reducers_apply() -> None:
    result = await Graph(nodes=[DataFan, DataBump]).run(DataFan(), state=DataState())
    assert result.state == DataState(total=6, tags=["t1", "t2", "t3"])


class OtherCounter(TypedDict):
    count: Annotated[int, max]


@dataclass
class OtherNode(BaseNode[OtherCounter]):
    async def run(self, ctx: RunContext[OtherCounter]) -> End[None]:
        return End(None)


def test_two_state_types_with_different_reducers_for_a_key_are_rejected() -> None:
    with pytest.raises(GraphDefinitionError, match="'count'"):
        Graph(nodes=[Bump, OtherNode])


# --------------------------------------------------------------------------- 5. equal writes


class Scalars(BaseModel):
    count: int = 0
    label: str = ""
    same: Annotated[str, same_value] = ""
    info: dict[str, int] = {}


@dataclass
class Incr(BaseNode[Scalars]):
    async def run(self, ctx: RunContext[Scalars]) -> End[None]:
        await asyncio.sleep(0)
        ctx.state.count += 1
        return End(None)


@dataclass
class Put(BaseNode[Scalars]):
    field: str
    value: Any

    async def run(self, ctx: RunContext[Scalars]) -> End[None]:
        await asyncio.sleep(0)
        if self.field.startswith("info."):
            ctx.state.info[self.field[5:]] = self.value
        else:
            setattr(ctx.state, self.field, self.value)
        return End(None)


@dataclass
class ScalarFork(BaseNode[Scalars]):
    branches: list[Any]
    merge: MergeStrategy = MergeStrategy.ALL_SUCCESS

    async def run(self, ctx: RunContext[Scalars]) -> Fork[Scalars]:
        return Fork(list(self.branches), merge=self.merge)


SCALAR_GRAPH = Graph(nodes=[Incr, Put, ScalarFork])


@pytest.mark.asyncio
async def test_three_count_increments_without_a_reducer_are_a_merge_error() -> None:
    with pytest.raises(MergeError) as info:
        await SCALAR_GRAPH.run(ScalarFork([Incr(), Incr(), Incr()]), state=Scalars())
    err = info.value
    assert err.field == "count" and err.branches == [0, 1, 2]
    assert "Annotated[int, add]" in str(err) and "same_value" in str(err)


@pytest.mark.asyncio
async def test_a_single_writer_is_never_a_conflict() -> None:
    result = await SCALAR_GRAPH.run(ScalarFork([Incr(), Put("label", "x")]), state=Scalars())
    assert (result.state.count, result.state.label) == (1, "x")


@pytest.mark.asyncio
@pytest.mark.parametrize("merge", [MergeStrategy.FIRST_SUCCESS, MergeStrategy.MAJORITY])
async def test_one_branch_strategies_never_conflict(merge: MergeStrategy) -> None:
    result = await SCALAR_GRAPH.run(ScalarFork([Incr(), Incr()], merge), state=Scalars())
    assert result.state.count == 1


@pytest.mark.asyncio
async def test_same_value_merges_equal_writes_and_rejects_different_ones() -> None:
    same = [Put("same", "v"), Put("same", "v"), Put("same", "v")]
    result = await SCALAR_GRAPH.run(ScalarFork(same), state=Scalars())
    assert result.state.same == "v"
    with pytest.raises(MergeError) as info:
        await SCALAR_GRAPH.run(ScalarFork([*same[:2], Put("same", "w")]), state=Scalars())
    assert info.value.field == "same" and info.value.branches == [0, 2]
    assert "same_value" in str(info.value) and "'w'" in str(info.value)
    assert "branches [0, 2]" in str(info.value)


@pytest.mark.asyncio
async def test_one_dict_key_written_by_two_branches_conflicts_even_when_equal() -> None:
    branches = [Put("info.k", 1), Put("info.k", 1), Put("info.other", 2)]
    with pytest.raises(MergeError) as info:
        await SCALAR_GRAPH.run(ScalarFork(branches), state=Scalars())
    assert info.value.field == "info" and info.value.branches == [0, 1]
    disjoint = [Put("info.a", 1), Put("info.b", 1)]
    result = await SCALAR_GRAPH.run(ScalarFork(disjoint), state=Scalars())
    assert result.state.info == {"a": 1, "b": 1}


def test_same_value_is_public_and_documented() -> None:
    assert lift_graph.same_value is reducers_module.same_value is same_value
    assert "same_value" in lift_graph.__all__ and "same_value" in reducers_module.__all__
    assert same_value.combine_many(0, [(0, 3), (0, 3)]) == 3
    assert reducers_module.same_value.__doc__


def test_operator_add_on_a_list_merges_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # LangGraph's `Annotated[list[str], operator.add]` is the built-in `add`, which
    # concatenates many list changes at once instead of copying per branch.
    class Notes(BaseModel):
        notes: Annotated[list[int], operator.add] = []

    reducer = reducers_of(Notes)["notes"]
    assert reducer is add

    def refuse(*args: Any) -> Any:
        raise AssertionError("add.combine called per change")

    monkeypatch.setattr(type(add), "combine", refuse)
    writes = [(i, {"notes": FieldChange([], [i])}) for i in range(1000)]
    merged, _ = merge_changes(Notes(), writes, reducers_of(Notes))
    assert merged.notes == list(range(1000))
