"""Interrupt: a node asks a person; the run pauses; answers resume it, by key."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    CheckpointError,
    End,
    Fork,
    Graph,
    Interrupt,
    MemoryStore,
    Pipeline,
    RunContext,
)
from lift_graph.reducers import merge_dict

pytestmark = pytest.mark.asyncio

RAN: Counter[str] = Counter()


class State(BaseModel):
    approvals: Annotated[dict[str, str], merge_dict] = {}
    drafts: Annotated[dict[str, str], merge_dict] = {}
    final: str = ""


@dataclass
class Plan(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        RAN[ctx.node_key] += 1
        return Fork(
            {"legal": Draft(team="legal"), "ops": Draft(team="ops"), "pr": Draft(team="pr")},
            then=Publish(),
        )


@dataclass
class Draft(BaseNode[State]):
    team: str = ""

    async def run(self, ctx: RunContext[State]) -> Approve:
        RAN[ctx.node_key] += 1
        ctx.state.drafts[self.team] = f"draft by {self.team}"
        return Approve(team=self.team)


@dataclass
class Approve(BaseNode[State]):
    team: str = ""

    async def run(self, ctx: RunContext[State]) -> End[str]:
        RAN[ctx.node_key] += 1
        if self.team == "pr":
            return End("auto")  # needs nobody
        if ctx.answer is None:
            return Interrupt({"question": f"approve the {self.team} draft?", "team": self.team})
        ctx.state.approvals[self.team] = ctx.answer
        return End(ctx.answer)


@dataclass
class Publish(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        RAN[ctx.node_key] += 1
        assert ctx.join is not None
        ctx.state.final = " | ".join(
            f"{k}={v}" for k, v in zip(ctx.join.keys, ctx.join.results, strict=True)
        )
        return End(ctx.state.final)


graph = Graph([Plan, Draft, Approve, Publish])
LEGAL = "0.Plan/legal/1.Approve"
OPS = "0.Plan/ops/1.Approve"


async def _paused(store: MemoryStore, run_id: str) -> Any:
    result = await graph.run(Plan(), state=State(), store=store, execution_id=run_id)
    assert result.output is None
    assert result.interrupts == {
        LEGAL: {"question": "approve the legal draft?", "team": "legal"},
        OPS: {"question": "approve the ops draft?", "team": "ops"},
    }
    row = store.load_run(run_id)
    assert row is not None and row.status == "interrupted"
    return result


async def test_two_interrupts_answered_in_either_order_give_the_same_state() -> None:
    store = MemoryStore()
    await _paused(store, "in-order")
    await _paused(store, "reversed")

    first = await graph.resume("in-order", store=store, answers={LEGAL: "yes"})
    assert first.interrupts == {OPS: {"question": "approve the ops draft?", "team": "ops"}}
    in_order = await graph.resume("in-order", store=store, answers={OPS: "ok"})

    first = await graph.resume("reversed", store=store, answers={OPS: "ok"})
    assert list(first.interrupts) == [LEGAL]
    reversed_ = await graph.resume("reversed", store=store, answers={LEGAL: "yes"})

    assert in_order.interrupts == {} and reversed_.interrupts == {}
    assert in_order.output == reversed_.output == "legal=yes | ops=ok | pr=auto"
    assert in_order.state.model_dump_json() == reversed_.state.model_dump_json()
    assert in_order.state.approvals == {"legal": "yes", "ops": "ok"}


async def test_other_branches_carry_on_and_never_run_again() -> None:
    RAN.clear()
    store = MemoryStore()
    await _paused(store, "r")
    # The pr branch finished while the others waited; drafts were all written.
    assert RAN["0.Plan/pr/1.Approve"] == 1 and RAN["0.Plan"] == 1
    await graph.resume("r", store=store, answers={LEGAL: "yes", OPS: "no"})
    assert RAN["0.Plan"] == 1
    assert all(RAN[f"0.Plan/{t}/0.Draft"] == 1 for t in ("legal", "ops", "pr"))
    assert RAN[LEGAL] == 2 and RAN[OPS] == 2  # asked, then answered
    assert RAN["1.Publish"] == 1


async def test_answers_must_name_a_pending_interrupt() -> None:
    store = MemoryStore()
    await _paused(store, "r")
    with pytest.raises(CheckpointError, match="no pending interrupt"):
        await graph.resume("r", store=store, answers={"0.Plan/pr/1.Approve": "x"})
    done = await graph.resume("r", store=store, answers={LEGAL: "a", OPS: "b"})
    with pytest.raises(CheckpointError, match="no pending interrupt"):
        await graph.resume("r", store=store, answers={LEGAL: "again"})
    again = await graph.resume("r", store=store)
    assert again.output == done.output


async def test_a_resume_without_answers_keeps_asking() -> None:
    store = MemoryStore()
    await _paused(store, "r")
    RAN.clear()
    still = await graph.resume("r", store=store)
    assert set(still.interrupts) == {LEGAL, OPS}
    assert Counter() == RAN  # nothing ran: the questions came from the journal


async def test_interrupts_are_reported_without_a_store() -> None:
    result = await graph.run(Plan(), state=State())
    assert set(result.interrupts) == {LEGAL, OPS}
    assert result.output is None


# -- a node may ask again after an answer; a pipeline member may ask -------------------


class Form(BaseModel):
    name: str = ""
    age: str = ""
    checked: str = ""


@dataclass
class AskName(BaseNode[Form]):
    writes = frozenset({"name"})

    async def run(self, ctx: RunContext[Form]) -> None:
        if ctx.answer is None:
            return Interrupt("name?")  # type: ignore[return-value]
        if not str(ctx.answer).strip():
            return Interrupt("name, please (it was empty)?")  # type: ignore[return-value]
        ctx.state.name = ctx.answer
        return None


@dataclass
class AskAge(BaseNode[Form]):
    writes = frozenset({"age"})

    async def run(self, ctx: RunContext[Form]) -> None:
        ctx.state.age = "42"


@dataclass
class Check(BaseNode[Form]):
    reads = frozenset({"name", "age"})
    writes = frozenset({"checked"})

    async def run(self, ctx: RunContext[Form]) -> None:
        ctx.state.checked = f"{ctx.state.name}/{ctx.state.age}"


@dataclass
class FormStart(BaseNode[Form]):
    async def run(self, ctx: RunContext[Form]) -> Pipeline[Form]:
        return Pipeline([AskName(), AskAge(), Check()], then=FormEnd())


@dataclass
class FormEnd(BaseNode[Form]):
    async def run(self, ctx: RunContext[Form]) -> End[str]:
        return End(ctx.state.checked)


form_graph = Graph([FormStart, AskName, AskAge, Check, FormEnd])


async def test_a_pipeline_member_asks_twice_and_its_dependents_wait() -> None:
    store = MemoryStore()
    key = "0.FormStart/p0/0.AskName"
    first = await form_graph.run(FormStart(), state=Form(), store=store, execution_id="f")
    assert first.interrupts == {key: "name?"}
    second = await form_graph.resume("f", store=store, answers={key: "  "})
    assert second.interrupts == {key: "name, please (it was empty)?"}
    done = await form_graph.resume("f", store=store, answers={key: "Ada"})
    assert done.interrupts == {}
    assert done.output == "Ada/42"
    rounds = [e.round for e in store.journal("f") if e.kind == "interrupt"]
    assert rounds == [0, 1]
