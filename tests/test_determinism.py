"""check_determinism and the pytest plugin's fixture / marker."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict

from lift_graph import (
    BaseNode,
    CanonicalizationError,
    DeterminismError,
    End,
    Fork,
    Graph,
    JoinStrategy,
    RunContext,
    append,
    check_determinism,
    check_determinism_sync,
)


class State(BaseModel):
    items: Annotated[list[str], append] = []
    tags: set[str] = set()


@dataclass
class Work(BaseNode[State]):
    i: int

    async def run(self, ctx: RunContext[State]) -> End[int]:
        await asyncio.sleep(random.uniform(0, 0.003))
        ctx.state.items.append(f"w{self.i}")
        return End(self.i * self.i)


@dataclass
class Start(BaseNode[State]):
    join: JoinStrategy = JoinStrategy.ALL

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Work(i) for i in range(6)], then=Collect(), join=self.join)


@dataclass
class Collect(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[list[int | None]]:
        assert ctx.join is not None
        return End(list(ctx.join.results))


graph = Graph(nodes=[Start, Work, Collect])


@pytest.mark.asyncio
async def test_all_join_is_deterministic_over_100_runs() -> None:
    report = await check_determinism(graph, Start(), state=State(tags={"b", "a"}), runs=100)
    assert report.deterministic
    assert report.runs == 100
    assert sum(report.output_hashes.values()) == 100
    assert len(report.output_hashes) == 1 and len(report.state_hashes) == 1
    assert set(report.by_concurrency) == {1, 2, 8, None}
    assert report.engine_deterministic
    assert report.agreement == 1.0


@pytest.mark.asyncio
async def test_a_race_is_caught() -> None:
    with pytest.raises(DeterminismError) as info:
        await check_determinism(graph, Start(JoinStrategy.FIRST), state=State(), runs=40)
    report = info.value.report
    assert not report.deterministic
    assert not report.engine_deterministic
    assert report.first_divergent_run is not None
    assert "not deterministic" in str(info.value)


def test_sync_variant_outside_a_loop() -> None:
    report = check_determinism_sync(graph, Start(), state=State(), runs=5)
    assert report.deterministic


@pytest.mark.asyncio
@pytest.mark.lift_deterministic(runs=12, max_concurrency=(1, 3))
async def test_plugin_fixture_reads_the_marker(lift_determinism) -> None:  # type: ignore[no-untyped-def]
    report = await lift_determinism(graph, Start(), state=State())
    assert report.runs == 12
    assert set(report.by_concurrency) == {1, 3}
    assert report.deterministic


# --------------------------------------------------------------------------- race joins


@dataclass
class Same(BaseNode[State]):
    """Every branch returns the same value and writes nothing: a race that agrees."""

    i: int

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(random.uniform(0, 0.002))
        return End("same")


@dataclass
class AnyStart(BaseNode[State]):
    join: JoinStrategy = JoinStrategy.ANY

    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        quorum = 2 if self.join is JoinStrategy.QUORUM else None
        return Fork([Same(i) for i in range(4)], then=Distinct(), join=self.join, quorum=quorum)


@dataclass
class Distinct(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[list[str]]:
        assert ctx.join is not None
        return End(sorted({v for v in ctx.join.results if v is not None}))


race_graph = Graph(nodes=[AnyStart, Same, Distinct])


@pytest.mark.asyncio
@pytest.mark.parametrize("join", [JoinStrategy.ANY, JoinStrategy.FIRST, JoinStrategy.QUORUM])
async def test_race_join_whose_outputs_agree_is_not_deterministic(join: JoinStrategy) -> None:
    report = await check_determinism(
        race_graph, AnyStart(join), state=State(), runs=12, raise_on_failure=False
    )
    assert report.results_agree  # every run gave ["same"] ...
    assert len(report.output_hashes) == 1
    assert not report.deterministic  # ... but the engine knows a race decided it
    assert not report.engine_deterministic
    assert report.engine_flagged_runs == 12
    assert report.reason is not None
    assert "12 of 12 runs" in report.reason
    assert "JoinStrategy.ANY / FIRST / QUORUM" in report.reason
    assert "agreed" in report.reason


@pytest.mark.asyncio
async def test_race_join_raises_determinism_error_naming_the_cause() -> None:
    with pytest.raises(DeterminismError) as info:
        await check_determinism(race_graph, AnyStart(), state=State(), runs=6)
    message = str(info.value)
    assert "not deterministic" in message
    assert "race" in message and "JoinStrategy.ANY" in message
    assert "6 of 6 runs" in message
    assert info.value.report.results_agree
    assert not info.value.report.deterministic


@pytest.mark.asyncio
async def test_all_join_report_has_no_reason() -> None:
    report = await check_determinism(graph, Start(), state=State(), runs=8)
    assert report.deterministic and report.results_agree
    assert report.engine_flagged_runs == 0
    assert report.reason is None


@dataclass
class Dice(BaseNode[State]):
    deterministic = False  # declared: the engine flags every run that uses it

    async def run(self, ctx: RunContext[State]) -> End[int]:
        return End(4)


@pytest.mark.asyncio
async def test_node_declared_non_deterministic_is_flagged() -> None:
    dice = Graph(nodes=[Dice])
    report = await check_determinism(dice, Dice(), state=State(), runs=4, raise_on_failure=False)
    assert report.results_agree and not report.deterministic
    assert report.engine_flagged_runs == 4
    assert report.reason is not None and "deterministic = False" in report.reason


def test_determinism_error_lives_in_errors_module() -> None:
    import lift_graph
    import lift_graph.determinism
    import lift_graph.errors

    assert lift_graph.errors.DeterminismError is lift_graph.DeterminismError
    assert lift_graph.determinism.DeterminismError is lift_graph.errors.DeterminismError
    assert issubclass(lift_graph.DeterminismError, lift_graph.LiftGraphError)
    assert issubclass(lift_graph.DeterminismError, AssertionError)


class Opaque:
    pass


@dataclass
class Unhashable(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[dict[str, object]]:
        return End({"answer": Opaque()})


@pytest.mark.asyncio
async def test_output_without_canonical_form_names_run_and_path() -> None:
    from lift_graph import CanonicalizationError

    with pytest.raises(CanonicalizationError) as info:
        await check_determinism(Graph(nodes=[Unhashable]), Unhashable(), state=State(), runs=2)
    assert info.value.path == "output['answer']"
    assert "run 0's output" in str(info.value)
    assert "output['answer'] has no canonical form" in str(info.value)
    assert "0x" not in str(info.value)


class _LockState(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    lock: Any = None
    count: int = 0


@dataclass
class _Bump(BaseNode[_LockState]):
    async def run(self, ctx: RunContext[_LockState]) -> End[int]:
        with ctx.state.lock:
            ctx.state.count += 1
        return End(ctx.state.count)


@pytest.mark.asyncio
async def test_state_holding_a_lock_runs_and_names_the_field_it_cannot_compare() -> None:
    # The runs themselves work (the lock is shared, not deep-copied: no "cannot pickle");
    # comparing final states needs a canonical form, which a lock has not.
    lock = threading.Lock()
    with pytest.raises(CanonicalizationError, match=r"state\.lock.*deps") as info:
        await check_determinism(Graph(nodes=[_Bump]), _Bump(), state=_LockState(lock=lock), runs=4)
    assert info.value.path == "state.lock"
    assert "pickle" not in str(info.value)


@pytest.mark.asyncio
async def test_lock_in_deps_is_checked() -> None:
    @dataclass
    class Guarded(BaseNode[_LockState]):
        async def run(self, ctx: RunContext[_LockState]) -> End[int]:
            with ctx.deps:
                ctx.state.count += 1
            return End(ctx.state.count)

    report = await check_determinism(
        Graph(nodes=[Guarded]), Guarded(), state=_LockState(), deps=threading.Lock(), runs=8
    )
    assert report.deterministic and report.runs == 8
