"""Durable runs: what is journaled, and what a resume runs again (nothing finished)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    CheckpointError,
    End,
    Fork,
    Graph,
    IncompatibleRunError,
    JoinStrategy,
    MemoryStore,
    RunContext,
    RunNotFoundError,
    RunTimeoutError,
    SQLiteStore,
    Store,
)
from tests import durable_graph as dg

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "r.db")
    yield made
    made.close()


async def _reference() -> tuple[Any, dg.State, dg.Deps]:
    deps = dg.Deps()
    result = await dg.graph.run(dg.Start(), state=dg.State(topic="t"), deps=deps)
    return result.output, result.state, deps


async def test_a_durable_run_equals_a_plain_one_and_journals_every_node(store: Store) -> None:
    output, state, _ = await _reference()
    deps = dg.Deps()
    result = await dg.graph.run(dg.Start(), state=dg.State(topic="t"), deps=deps, store=store)
    assert result.output == output and result.state == state
    journal = store.journal(result.execution_id)
    nodes = sorted(e.key for e in journal if e.kind == "node")
    assert nodes == dg.ALL_KEYS
    assert [e.key for e in journal if e.kind == "join"] == ["0.Start"]
    row = store.load_run(result.execution_id)
    assert row is not None and row.status == "finished"
    assert row.state_snapshot == state.model_dump(mode="json")
    assert row.state_type.endswith("durable_graph.State")
    assert row.graph == "durable"


@pytest.mark.parametrize(
    "failing",
    [
        "0.Start/2/1.Review",
        "0.Start/0/0.Draft",
        "1.Join/p1/0.Body",
        "1.Join/p2/0.Score",
        "2.Finish",
    ],
)
async def test_resume_after_a_failure_runs_only_what_had_not_finished(
    store: Store, failing: str
) -> None:
    output, state, _ = await _reference()
    deps = dg.Deps(fail={failing})
    with pytest.raises(Exception, match="injected failure"):
        await dg.graph.run(
            dg.Start(), state=dg.State(topic="t"), deps=deps, store=store, execution_id="r1"
        )
    first = list(deps.ran)
    assert failing not in first
    row = store.load_run("r1")
    assert row is not None and row.status == "failed"

    again = dg.Deps()
    result = await dg.graph.resume("r1", store=store, deps=again)
    # Nothing that had finished runs again, and everything runs once overall.
    assert not set(again.ran) & set(first)
    assert sorted(first + again.ran) == dg.ALL_KEYS
    assert failing in again.ran
    assert result.output == output
    assert result.state.model_dump_json() == state.model_dump_json()
    assert result.execution_id == "r1"
    # Replayed nodes keep their journaled records.
    assert sorted(r.key for r in result.records) == dg.ALL_KEYS


async def test_resume_after_a_cancelled_run_reruns_only_nodes_in_flight(store: Store) -> None:
    output, state, _ = await _reference()
    deps = dg.Deps(delay=0.02)
    with pytest.raises(RunTimeoutError):
        await dg.graph.run(
            dg.Start(),
            state=dg.State(topic="t"),
            deps=deps,
            store=store,
            execution_id="c1",
            timeout=0.07,
        )
    assert 0 < len(deps.ran) < len(dg.ALL_KEYS)
    again = dg.Deps()
    result = await dg.graph.resume("c1", store=store, deps=again)
    assert Counter(deps.ran + again.ran) == Counter(dg.ALL_KEYS)
    assert result.output == output and result.state == state


async def test_a_finished_run_resumes_to_its_result_without_running_anything(
    store: Store,
) -> None:
    first = await dg.graph.run(dg.Start(), state=dg.State(topic="t"), deps=dg.Deps(), store=store)
    deps = dg.Deps()
    again = await dg.graph.resume(first.execution_id, store=store, deps=deps)
    assert deps.ran == []
    assert again.output == first.output
    assert again.state.model_dump_json() == first.state.model_dump_json()
    assert isinstance(again.output, dg.Report)
    synced = dg.graph.resume_sync(first.execution_id, store=store, deps=deps)
    assert synced.output == first.output and deps.ran == []


async def test_unknown_run_changed_graph_and_changed_state_are_refused(store: Store) -> None:
    with pytest.raises(RunNotFoundError, match="nope"):
        await dg.graph.resume("nope", store=store)
    deps = dg.Deps(fail={"1.Join/p1/0.Body"})
    with pytest.raises(Exception, match="injected failure"):
        await dg.graph.run(dg.Start(), state=dg.State(), deps=deps, store=store, execution_id="g")
    # Finish is named only by Join's journaled return (the pipeline's then=).
    smaller = Graph([dg.Start, dg.Draft, dg.Review, dg.Join, dg.Outline, dg.Body, dg.Score])
    with pytest.raises(IncompatibleRunError, match="Finish"):
        await smaller.resume("g", store=store, deps=dg.Deps())
    row = store.load_run("g")
    assert row is not None
    store.save_run(row.model_copy(update={"state_schema": "something else"}))
    with pytest.raises(IncompatibleRunError, match="state model"):
        await dg.graph.resume("g", store=store, deps=dg.Deps())


async def test_a_taken_execution_id_is_refused(store: Store) -> None:
    await dg.graph.run(dg.Start(), state=dg.State(), deps=dg.Deps(), store=store, execution_id="x")
    with pytest.raises(CheckpointError, match="already exists"):
        await dg.graph.run(
            dg.Start(), state=dg.State(), deps=dg.Deps(), store=store, execution_id="x"
        )


# -- a race join is decided on resume as it was journaled ------------------------------


class RaceState(BaseModel):
    winner: str = ""
    after: int = 0


ATTEMPTS: Counter[str] = Counter()


@dataclass
class Racer(BaseNode[RaceState]):
    name: str = ""
    delay: float = 0.0

    async def run(self, ctx: RunContext[RaceState]) -> End[str]:
        ATTEMPTS[self.name] += 1
        await asyncio.sleep(self.delay)
        ctx.state.winner = self.name
        return End(self.name)


@dataclass
class Race(BaseNode[RaceState]):
    fast: str = "b"

    async def run(self, ctx: RunContext[RaceState]) -> Fork[RaceState]:
        delays = {"a": 0.2, "b": 0.2, "c": 0.2}
        delays[self.fast] = 0.0
        racers = [Racer(name=n, delay=d) for n, d in sorted(delays.items())]
        return Fork(racers, then=After(), join=JoinStrategy.ANY)


FAIL_AFTER = {"on": True}


@dataclass
class After(BaseNode[RaceState]):
    async def run(self, ctx: RunContext[RaceState]) -> End[str]:
        if FAIL_AFTER["on"]:
            FAIL_AFTER["on"] = False
            raise RuntimeError("after failed once")
        assert ctx.join is not None
        ctx.state.after += 1
        return End(f"{ctx.join.winner}:{ctx.state.winner}")


race_graph = Graph([Race, Racer, After], name="race")


async def test_a_race_join_is_replayed_as_journaled_not_run_again(store: Store) -> None:
    ATTEMPTS.clear()
    FAIL_AFTER["on"] = True
    with pytest.raises(RuntimeError, match="after failed once"):
        await race_graph.run(Race(fast="b"), state=RaceState(), store=store, execution_id="race")
    assert ATTEMPTS == {"a": 1, "b": 1, "c": 1}
    result = await race_graph.resume("race", store=store)
    assert ATTEMPTS == {"a": 1, "b": 1, "c": 1}  # no racer ran again
    assert result.output == "None:b"  # ANY with the default merge names no winner
    assert result.state.winner == "b" and result.state.after == 1
    assert result.deterministic is False


# -- what cannot be journaled is refused when it is written -----------------------------


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


class LooseState(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    thing: Any = None
    secret_note: str = ""


@dataclass
class HoldsObject(BaseNode[LooseState]):
    client: Any = None

    async def run(self, ctx: RunContext[LooseState]) -> End[str]:
        return End("ok")


@dataclass
class WritesObject(BaseNode[LooseState]):
    async def run(self, ctx: RunContext[LooseState]) -> End[str]:
        ctx.state.thing = Opaque()
        return End("ok")


@dataclass
class EndsUntyped(BaseNode[LooseState]):
    async def run(self, ctx: RunContext[LooseState]):  # type: ignore[no-untyped-def]
        return End((1, 2))


@dataclass
class LeaksKey(BaseNode[LooseState]):
    async def run(self, ctx: RunContext[LooseState]) -> End[str]:
        ctx.state.secret_note = f"key={ctx.deps}"
        return End("ok")


def _accept_all(value: Any) -> bool:
    return True


@dataclass
class LambdaFork(BaseNode[LooseState]):
    named: bool = False

    async def run(self, ctx: RunContext[LooseState]) -> Fork[LooseState]:
        accept = _accept_all if self.named else (lambda v: True)
        return Fork([HoldsObject()], join=JoinStrategy.FIRST_ACCEPTED, accept=accept)


loose = Graph([HoldsObject, WritesObject, EndsUntyped, LeaksKey, LambdaFork])


async def test_unserializable_values_are_refused_naming_node_and_field(store: Store) -> None:
    with pytest.raises(CheckpointError, match="client") as info:
        await loose.run(HoldsObject(client=Opaque()), state=LooseState(), store=store)
    assert "HoldsObject" in str(info.value)
    with pytest.raises(CheckpointError, match=r"'thing'.*WritesObject"):
        await loose.run(WritesObject(), state=LooseState(), store=store)
    with pytest.raises(CheckpointError, match=r"End value of node EndsUntyped.*annotate"):
        await loose.run(EndsUntyped(), state=LooseState(), store=store)
    with pytest.raises(CheckpointError, match=r"accept.*module level"):
        await loose.run(LambdaFork(), state=LooseState(), store=store)
    named = await loose.run(LambdaFork(named=True), state=LooseState(), store=store)
    assert named.output == ["ok"]
    # Without a store nothing is serialized, so nothing is refused.
    plain = await loose.run(WritesObject(), state=LooseState())
    assert plain.output == "ok"


async def test_secrets_are_never_written(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "not-a-real-key-0123456789"
    monkeypatch.setenv("MY_SERVICE_API_KEY", secret)
    with pytest.raises(CheckpointError, match="secret") as info:
        await loose.run(
            LeaksKey(), state=LooseState(), store=store, deps=secret, execution_id="leak"
        )
    assert info.value.node == "LeaksKey"
    everything = repr(store.load_run("leak")) + repr(store.journal("leak"))
    assert secret not in everything
    with pytest.raises(CheckpointError, match="secret"):
        await loose.run(
            LeaksKey(), state=LooseState(), store=store, deps="sk-" + "a" * 40, execution_id="l2"
        )
