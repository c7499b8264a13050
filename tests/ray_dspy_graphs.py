"""DSPy's RAG tutorial program as a one-node graph per question, for the Ray tests
(an importable module, so workers can load it by reference)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.utils import DummyLM
from pydantic import BaseModel

from lift_graph import DSPyNode, Graph

CORPUS = [
    "Eiffel Tower | The Eiffel Tower is a wrought iron tower in Paris built by Gustave Eiffel.",
    "Mona Lisa | The Mona Lisa is a portrait painted by Leonardo da Vinci.",
    "Python | Python is a programming language created by Guido van Rossum.",
    "asyncio | asyncio runs coroutines concurrently on one event loop.",
    "DSPy | DSPy programs language models with signatures and modules.",
    "Tokyo | Tokyo is the capital of Japan.",
]
QUESTIONS = [
    "Who built the Eiffel Tower?",
    "Who painted the Mona Lisa?",
    "Who created the Python language?",
    "What does asyncio run?",
    "What is DSPy for?",
    "What is the capital of Japan?",
]
_WORD = re.compile(r"[a-z0-9]+")


def search(query: str, k: int = 2) -> list[str]:
    """The ``k`` passages sharing most words with ``query`` (ties: corpus order)."""
    terms = {w for w in _WORD.findall(query.lower()) if len(w) > 3}
    score = [len(terms & set(_WORD.findall(p.lower()))) for p in CORPUS]
    return [CORPUS[i] for i in sorted(range(len(CORPUS)), key=lambda i: (-score[i], i))[:k]]


def rag_lm() -> Any:
    """DummyLM in dict mode: deterministic under concurrency; never cached."""
    lm = DummyLM(
        {
            q: {"reasoning": f"The context answers: {q}", "response": f"answer {i}: {q.lower()}"}
            for i, q in enumerate(QUESTIONS)
        }
    )
    lm.cache = False
    return lm


class RAG(dspy.Module):  # type: ignore[misc]
    """The tutorial's module: search, then ChainOfThought over the passages."""

    def __init__(self) -> None:
        self.respond = dspy.ChainOfThought("context, question -> response")

    def forward(self, question: str) -> Any:
        return self.respond(context=search(question), question=question)

    async def aforward(self, question: str) -> Any:
        return await self.respond.acall(context=search(question), question=question)


class QState(BaseModel):
    question: str
    response: str = ""


@dataclass
class Answer(DSPyNode[QState]):
    """One question through the RAG program (its ``lm`` and ``program`` are fields)."""

    signature = "question -> response"


def rag_graph() -> Graph[QState]:
    return Graph(nodes=[Answer], name="rag")
