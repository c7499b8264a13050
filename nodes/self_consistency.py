"""Self-consistency: sample k answers in parallel, keep the majority answer.

::

    Ask --Fork([Sample(0), ..., Sample(k-1)], merge=MAJORITY, vote_on=["answer"])--> Decide

Each ``Sample`` writes its parsed ``answer`` and its (always different)
``reasoning`` to the state. The fork votes on the ``answer`` field only: voting
on the whole branch output would find no two samples alike. The majority's state
wins the merge (ties go to the lowest branch index), and ``Decide`` reads the
vote from ``ctx.join``: ``winner``, ``agreement`` and ``agreement_ratio``. With
``on_error=CONTINUE`` a failed sampler is reported, and the others still vote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    FailureMode,
    Fork,
    Graph,
    Limits,
    MergeStrategy,
    RunContext,
    RunResult,
)

from .fake_lm import FakeLM, TextLM, ask, hash_answer

__all__ = [
    "Ask",
    "Consensus",
    "Decide",
    "Sample",
    "VoteState",
    "build_graph",
    "noisy_sampler_lm",
    "parse_reply",
    "run_example",
    "sampler_prompt",
]


class VoteState(BaseModel):
    question: str
    samples: int = 5
    answer: str = ""
    reasoning: str = ""
    agreement: int = 0
    agreement_ratio: float = 0.0


class Consensus(BaseModel):
    """The ensemble's answer and how many samples agreed on it."""

    answer: str
    agreement: int
    total: int
    ratio: float
    winner: int
    failed: int


def sampler_prompt(question: str, index: int) -> str:
    return f"Question: {question}\nSample: {index}\nThink step by step, then give ANSWER: x"


_SAMPLE = re.compile(r"^Sample: (\d+)$", re.MULTILINE)


def noisy_sampler_lm(
    correct: str = "Paris",
    wrong: Mapping[int, str] | None = None,
    *,
    latency: float = 0.01,
    jitter: float = 0.5,
    seed: int = 0,
) -> FakeLM:
    """A fake LM whose sample ``i`` answers ``wrong[i]`` (default: 1 and 3 stray).

    The answer is still a pure function of the prompt, which names the sample.
    """
    strays: Mapping[int, str] = {1: "Lyon", 3: "Marseille"} if wrong is None else wrong

    def respond(prompt: str) -> str:
        match = _SAMPLE.search(prompt)
        index = int(match.group(1)) if match else 0
        answer = strays.get(index, correct)
        return f"reasoning {hash_answer(prompt, words=0)} ANSWER: {answer}"

    responder: Callable[[str], str] = respond
    return FakeLM(name="sampler", latency=latency, jitter=jitter, seed=seed, responder=responder)


def parse_reply(reply: str) -> tuple[str, str]:
    """``(reasoning, answer)`` of a ``"... ANSWER: x"`` reply (normalized answer)."""
    reasoning, sep, answer = reply.rpartition("ANSWER:")
    if not sep:
        return "", reply.strip()
    return reasoning.strip(), answer.strip().rstrip(".").strip()


@dataclass
class Ask(BaseNode[VoteState]):
    reads = frozenset({"samples"})
    writes = frozenset[str]()

    async def run(self, ctx: RunContext[VoteState]) -> Fork[VoteState]:
        return Fork(
            [Sample(i) for i in range(ctx.state.samples)],
            then=Decide(),
            merge=MergeStrategy.MAJORITY,
            vote_on=["answer"],
            on_error=FailureMode.CONTINUE,
        )


@dataclass
class Sample(BaseNode[VoteState]):
    index: int
    provider = "fake"
    reads = frozenset({"question"})
    writes = frozenset({"answer", "reasoning"})

    async def run(self, ctx: RunContext[VoteState]) -> End[dict[str, str]]:
        reply = await ask(ctx, sampler_prompt(ctx.state.question, self.index))
        reasoning, answer = parse_reply(reply)
        ctx.state.answer = answer
        ctx.state.reasoning = reasoning
        return End({"answer": answer, "reasoning": reasoning})


@dataclass
class Decide(BaseNode[VoteState]):
    reads = frozenset({"answer"})
    writes = frozenset({"agreement", "agreement_ratio"})

    async def run(self, ctx: RunContext[VoteState]) -> End[Consensus]:
        join = ctx.join
        if join is None:  # pragma: no cover - Decide only runs after the vote
            raise RuntimeError("Decide must follow the sampling fork")
        ctx.state.agreement = join.agreement or 0
        ctx.state.agreement_ratio = join.agreement_ratio or 0.0
        return End(
            Consensus(
                answer=ctx.state.answer,
                agreement=ctx.state.agreement,
                total=join.total,
                ratio=ctx.state.agreement_ratio,
                winner=join.winner if join.winner is not None else -1,
                failed=join.failed,
            )
        )


def build_graph() -> Graph[VoteState]:
    return Graph(nodes=[Ask, Sample, Decide], name="self_consistency")


async def run_example(
    question: str = "What is the capital of France?",
    *,
    samples: int = 5,
    lm: TextLM | None = None,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
) -> RunResult[VoteState]:
    """Vote over ``samples`` answers; default LM: samples 1 and 3 disagree."""
    return await build_graph().run(
        Ask(),
        state=VoteState(question=question, samples=samples),
        deps=lm if lm is not None else noisy_sampler_lm(),
        max_concurrency=max_concurrency,
        limits=limits,
    )
