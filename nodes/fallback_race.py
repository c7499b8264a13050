"""Fallback race: ask every provider at once, continue with the first good answer.

::

    Race --Fork({name: CallProvider(name)}, join=ANY, merge=FIRST_SUCCESS)--> Report

``JoinStrategy.ANY`` continues at the first branch that *succeeds*: a provider
that fails fast only counts against the quorum, and the slower providers still
running when the winner answers are cancelled (their calls show up in the fake
LM's log as ``cancelled``). ``Report`` reads who won from ``ctx.join``:
``winner`` (the winning branch's key), ``keys``, ``errors`` and ``statuses``. A
race is not deterministic, and the run result says so (``RunResult.deterministic``
is False).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    BranchStatus,
    End,
    Fork,
    Graph,
    JoinStrategy,
    Limits,
    MergeStrategy,
    RunContext,
    RunResult,
)

from .fake_lm import FakeLM, TextLM, ask

__all__ = [
    "CallProvider",
    "Race",
    "RaceDeps",
    "RaceOutcome",
    "RaceState",
    "Report",
    "build_graph",
    "default_providers",
    "run_example",
]


class RaceState(BaseModel):
    question: str
    answer: str = ""
    provider: str = ""


class RaceOutcome(BaseModel):
    winner: str
    answer: str
    failed: dict[str, str]
    cancelled: list[str]


@dataclass
class RaceDeps:
    """The run's dependencies: the providers to race, by name (branch order)."""

    providers: Mapping[str, TextLM] = field(default_factory=dict)


def default_providers() -> dict[str, FakeLM]:
    """A fast provider that is down, a healthy fast one and a healthy slow one."""
    return {
        "flaky": FakeLM(name="flaky", latency=0.002, failure_rate=1.0),
        "fast": FakeLM(name="fast", latency=0.02),
        "slow": FakeLM(name="slow", latency=0.25),
    }


def _providers(ctx: RunContext[RaceState]) -> Mapping[str, TextLM]:
    deps = ctx.deps
    if not isinstance(deps, RaceDeps):
        raise TypeError(f"the fallback race needs deps=RaceDeps(providers=...), got {deps!r}")
    return deps.providers


@dataclass
class Race(BaseNode[RaceState]):
    reads = frozenset[str]()
    writes = frozenset[str]()

    async def run(self, ctx: RunContext[RaceState]) -> Fork[RaceState]:
        return Fork(
            {name: CallProvider(name) for name in _providers(ctx)},
            then=Report(),
            join=JoinStrategy.ANY,
            merge=MergeStrategy.FIRST_SUCCESS,
        )


@dataclass
class CallProvider(BaseNode[RaceState]):
    name: str
    reads = frozenset({"question"})
    writes = frozenset({"answer", "provider"})

    async def run(self, ctx: RunContext[RaceState]) -> End[str]:
        lm = _providers(ctx)[self.name]
        answer = await ask(ctx, f"Q: {ctx.state.question}", lm)
        ctx.state.answer = answer
        ctx.state.provider = self.name
        return End(answer)


@dataclass
class Report(BaseNode[RaceState]):
    reads = frozenset({"answer", "provider"})
    writes = frozenset[str]()

    async def run(self, ctx: RunContext[RaceState]) -> End[RaceOutcome]:
        join = ctx.join
        if join is None or join.winner is None:  # pragma: no cover - follows the race
            raise RuntimeError("Report must follow the provider race")
        return End(
            RaceOutcome(
                winner=str(join.winner),
                answer=ctx.state.answer,
                failed={str(k): f"{type(e).__name__}: {e}" for k, e in join.errors.items()},
                cancelled=[
                    str(k)
                    for k, s in zip(join.keys, join.statuses, strict=True)
                    if s is BranchStatus.CANCELLED
                ],
            )
        )


def build_graph() -> Graph[RaceState]:
    return Graph(nodes=[Race, CallProvider, Report], name="fallback_race")


async def run_example(
    question: str = "What is the capital of France?",
    *,
    providers: Mapping[str, TextLM] | None = None,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
) -> RunResult[RaceState]:
    """Race ``providers`` (default ``default_providers()``): the fast healthy one wins."""
    return await build_graph().run(
        Race(),
        state=RaceState(question=question),
        deps=RaceDeps(providers if providers is not None else default_providers()),
        max_concurrency=max_concurrency,
        limits=limits,
    )
