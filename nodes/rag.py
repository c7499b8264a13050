"""Retrieval-augmented generation: retrieve, summarize each hit in parallel, answer.

::

    Retrieve --Fork({doc_id: SummarizeDoc})--> Answer --> End(answer)

``Retrieve`` ranks the corpus by word overlap with the question (deterministic,
ties by document id) and forks one ``SummarizeDoc`` per hit, keyed by document id.
Each branch appends its summary to ``summaries``; the join (ALL) merges those
appends in branch order, so ``Answer`` sees them in retrieval rank order whatever
order the LM calls finished in. The corpus is read, never written, so branches
share it instead of copying it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from lift_graph import BaseNode, End, Fork, Graph, Limits, RunContext, RunResult

from .fake_lm import FakeLM, TextLM, ask

__all__ = [
    "DEFAULT_CORPUS",
    "Answer",
    "RagState",
    "Retrieve",
    "SummarizeDoc",
    "build_graph",
    "rank",
    "run_example",
]

DEFAULT_CORPUS: dict[str, str] = {
    "asyncio": "asyncio runs coroutines concurrently on one event loop thread.",
    "dspy": "DSPy programs call language models through typed signatures and modules.",
    "forks": "A fork runs branches concurrently on isolated copies of the state.",
    "joins": "A join merges branch states in branch order and continues at one node.",
    "limits": "Provider limits cap concurrent requests and requests per minute.",
    "pydantic": "Pydantic models validate the state that every node reads and writes.",
}


class RagState(BaseModel):
    question: str
    corpus: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CORPUS))
    top_k: int = 3
    retrieved: list[str] = Field(default_factory=list)
    summaries: list[str] = Field(default_factory=list)
    answer: str = ""


_WORD = re.compile(r"[a-z0-9]+")


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def rank(question: str, corpus: dict[str, str], top_k: int) -> list[str]:
    """Ids of the ``top_k`` documents sharing most words with ``question``."""
    q = _terms(question)
    scores = {doc_id: len(q & _terms(text)) for doc_id, text in corpus.items()}
    ranked = sorted((d for d in corpus if scores[d] > 0), key=lambda d: (-scores[d], d))
    return ranked[:top_k]


@dataclass
class Retrieve(BaseNode[RagState]):
    reads = frozenset({"question", "corpus", "top_k"})
    writes = frozenset({"retrieved"})

    async def run(self, ctx: RunContext[RagState]) -> Fork[RagState]:
        state = ctx.state
        state.retrieved = rank(state.question, state.corpus, state.top_k)
        return Fork({doc_id: SummarizeDoc(doc_id) for doc_id in state.retrieved}, then=Answer())


@dataclass
class SummarizeDoc(BaseNode[RagState]):
    doc_id: str
    provider = "fake"
    reads = frozenset({"question", "corpus"})
    writes = frozenset({"summaries"})

    async def run(self, ctx: RunContext[RagState]) -> End[str]:
        text = ctx.state.corpus[self.doc_id]
        summary = await ask(ctx, f"Question: {ctx.state.question}\nSummarize: {text}")
        line = f"[{self.doc_id}] {summary}"
        ctx.state.summaries.append(line)
        return End(line)


@dataclass
class Answer(BaseNode[RagState]):
    provider = "fake"
    reads = frozenset({"question", "summaries"})
    writes = frozenset({"answer"})

    async def run(self, ctx: RunContext[RagState]) -> End[str]:
        state = ctx.state
        sources = [str(k) for k in ctx.join.keys] if ctx.join is not None else []
        if not sources:
            state.answer = "no relevant documents"
            return End(state.answer)
        notes = "\n".join(state.summaries)
        reply = await ask(ctx, f"Notes:\n{notes}\nAnswer from the notes: {state.question}")
        state.answer = f"{reply} (sources: {', '.join(sources)})"
        return End(state.answer)


def build_graph() -> Graph[RagState]:
    return Graph(nodes=[Retrieve, SummarizeDoc, Answer], name="rag")


async def run_example(
    question: str = "How does a fork merge branch state in a join?",
    *,
    lm: TextLM | None = None,
    corpus: dict[str, str] | None = None,
    top_k: int = 3,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
) -> RunResult[RagState]:
    """Answer ``question`` over ``corpus`` (default ``DEFAULT_CORPUS``) offline."""
    state = RagState(question=question, top_k=top_k)
    if corpus is not None:
        state.corpus = dict(corpus)
    return await build_graph().run(
        Retrieve(),
        state=state,
        deps=lm if lm is not None else FakeLM(name="fake", latency=0.01),
        max_concurrency=max_concurrency,
        limits=limits,
    )
