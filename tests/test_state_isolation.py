"""State isolation in ParallelExecutor: copy only what a node may write, strict mode,
validation of writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from lift_graph import (
    BaseNode,
    End,
    MergeError,
    MergeStrategy,
    NodeExecutionError,
    ParallelExecutor,
    RunContext,
    StateValidationError,
    UndeclaredMutationError,
)

BIG = 50_000


class Big(BaseModel):
    big: list[int] = []
    small: int = 0
    notes: dict[str, str] = {}


class Validated(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    small: int = 0


def big_state() -> Big:
    return Big(big=list(range(BIG)), small=0, notes={"a": "b"})


def make_ctx(state: Any) -> RunContext[Any]:
    return RunContext(state=state, execution_id="iso-test")


@dataclass
class WritesSmall(BaseNode[Big]):
    writes: ClassVar[frozenset[str] | None] = frozenset({"small"})
    seen_big: Any = None

    async def run(self, ctx: RunContext[Big]) -> End[int]:
        self.seen_big = ctx.state.big
        ctx.state.small += 1
        await asyncio.sleep(0)
        return End(ctx.state.small)


@dataclass
class WritesAnything(BaseNode[Big]):
    seen_big: Any = None

    async def run(self, ctx: RunContext[Big]) -> End[int]:
        self.seen_big = ctx.state.big
        ctx.state.big.append(-1)
        ctx.state.notes["mine"] = "x"
        ctx.state.small = 7
        await asyncio.sleep(0)
        return End(len(ctx.state.big))


@dataclass
class SneakyMutation(BaseNode[Big]):
    """Declares it writes ``small`` but appends to ``big`` in place."""

    writes: ClassVar[frozenset[str] | None] = frozenset({"small"})

    async def run(self, ctx: RunContext[Big]) -> End[None]:
        ctx.state.small = 1
        ctx.state.big.append(-1)
        return End(None)


@dataclass
class SneakyReassign(BaseNode[Big]):
    """Declares it writes ``small`` but reassigns ``notes``."""

    writes: ClassVar[frozenset[str] | None] = frozenset({"small"})

    async def run(self, ctx: RunContext[Big]) -> End[None]:
        ctx.state.notes = {"replaced": "yes"}
        return End(None)


@dataclass
class BadWrite(BaseNode[Big]):
    writes: ClassVar[frozenset[str] | None] = frozenset({"small"})

    async def run(self, ctx: RunContext[Big]) -> End[None]:
        ctx.state.small = "not an int"  # type: ignore[assignment]
        return End(None)


@dataclass
class BadValidatedWrite(BaseNode[Validated]):
    async def run(self, ctx: RunContext[Validated]) -> End[None]:
        ctx.state.small = "not an int"  # type: ignore[assignment]
        return End(None)


@dataclass
class GoodWrite(BaseNode[Big]):
    writes: ClassVar[frozenset[str] | None] = frozenset({"small"})

    async def run(self, ctx: RunContext[Big]) -> End[None]:
        ctx.state.small = "42"  # type: ignore[assignment]  # coercible: validation passes
        return End(None)


# --------------------------------------------------------------------------- copy cost


@pytest.mark.asyncio
async def test_declared_writes_do_not_copy_the_big_field() -> None:
    state = big_state()
    ex: ParallelExecutor[Big] = ParallelExecutor()
    nodes = [WritesSmall() for _ in range(4)]
    results = await ex.execute_parallel(nodes, make_ctx(state))
    for node, result in zip(nodes, results, strict=True):
        assert result.error is None
        assert node.seen_big is state.big
        assert result.context.state.big is state.big
        assert result.context.state is not state
        assert result.context.state.small == 1
    assert state.small == 0
    # four `small += 1` without a reducer must not merge to 1
    with pytest.raises(MergeError, match="small"):
        ex.merge_states(results, MergeStrategy.ALL_SUCCESS)
    merged = ex.merge_states(results, MergeStrategy.FIRST_SUCCESS)
    assert merged.state.small == 1
    assert merged.state.big is state.big


@pytest.mark.asyncio
async def test_undeclared_writes_get_a_private_copy() -> None:
    state = big_state()
    ex: ParallelExecutor[Big] = ParallelExecutor()
    nodes = [WritesAnything() for _ in range(3)]
    results = await ex.execute_parallel(nodes, make_ctx(state))
    for node, result in zip(nodes, results, strict=True):
        assert result.error is None
        assert node.seen_big is not state.big
        assert result.context.state.big is not state.big
        assert result.value == BIG + 1
        assert result.context.state.notes == {"a": "b", "mine": "x"}
    assert len({id(r.context.state.big) for r in results}) == 3
    # the caller's objects never saw the writes
    assert len(state.big) == BIG
    assert state.big[-1] == BIG - 1
    assert state.notes == {"a": "b"}
    assert state.small == 0


# --------------------------------------------------------------------------- strict mode


@pytest.mark.asyncio
async def test_strict_mode_reports_undeclared_in_place_mutation() -> None:
    ex: ParallelExecutor[Big] = ParallelExecutor(strict=True)
    results = await ex.execute_parallel(
        [SneakyMutation(), WritesSmall()], make_ctx(Big(big=[1, 2, 3]))
    )
    err = results[0].error
    assert isinstance(err, UndeclaredMutationError)
    assert isinstance(err, NodeExecutionError)
    assert err.node == "SneakyMutation"
    assert err.field == "big"
    assert "SneakyMutation" in str(err)
    assert "'big'" in str(err)
    assert results[1].error is None


@pytest.mark.asyncio
async def test_strict_mode_reports_undeclared_reassignment() -> None:
    ex: ParallelExecutor[Big] = ParallelExecutor(strict=True)
    state = big_state()
    result = await ex.execute_single_with_isolation(SneakyReassign(), make_ctx(state))
    err = result.error
    assert isinstance(err, UndeclaredMutationError)
    assert err.node == "SneakyReassign"
    assert err.field == "notes"
    assert state.notes == {"a": "b"}


@pytest.mark.asyncio
async def test_non_strict_mode_does_not_raise_for_undeclared_mutation() -> None:
    ex: ParallelExecutor[Big] = ParallelExecutor()
    result = await ex.execute_single_with_isolation(SneakyMutation(), make_ctx(Big(big=[1])))
    assert result.error is None


@pytest.mark.asyncio
async def test_strict_mode_allows_declared_writes() -> None:
    ex: ParallelExecutor[Big] = ParallelExecutor(strict=True)
    state = big_state()
    results = await ex.execute_parallel([WritesSmall(), WritesAnything()], make_ctx(state))
    assert [r.error for r in results] == [None, None]


# --------------------------------------------------------------------------- validation


@pytest.mark.asyncio
async def test_invalid_write_without_validate_assignment_is_state_validation_error() -> None:
    ex: ParallelExecutor[Big] = ParallelExecutor()
    state = Big()
    results = await ex.execute_parallel([BadWrite(), WritesSmall()], make_ctx(state))
    err = results[0].error
    assert isinstance(err, StateValidationError)
    assert isinstance(err, ValueError)
    assert err.node == "BadWrite"
    assert err.field == "small"
    assert "BadWrite" in str(err)
    assert "'small'" in str(err)
    assert results[1].error is None
    assert state.small == 0


@pytest.mark.asyncio
async def test_invalid_write_with_validate_assignment_is_state_validation_error() -> None:
    ex: ParallelExecutor[Validated] = ParallelExecutor()
    result = await ex.execute_single_with_isolation(BadValidatedWrite(), make_ctx(Validated()))
    err = result.error
    assert isinstance(err, StateValidationError)
    assert err.node == "BadValidatedWrite"
    assert err.field == "small"
    assert "BadValidatedWrite" in str(err) and "'small'" in str(err)


@pytest.mark.asyncio
async def test_valid_write_passes_validation() -> None:
    ex: ParallelExecutor[Big] = ParallelExecutor()
    result = await ex.execute_single_with_isolation(GoodWrite(), make_ctx(Big()))
    assert result.error is None
    # the validated (coerced) value is what the state holds and what merges
    assert result.context.state.small == 42
    assert type(result.context.state.small) is int
    merged = ex.merge_states([result], MergeStrategy.ALL_SUCCESS)
    assert type(merged.state.small) is int
