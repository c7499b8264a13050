"""DSPy's RAG tutorial program over a batch of questions on Ray workers: the DSPy
module, its DummyLM and the node travel to the workers, and the answers equal the
program's own, run by hand."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from typing import Any

import pytest

pytest.importorskip("ray", reason="Ray could not be installed on this platform")
dspy = pytest.importorskip("dspy")

from lift_graph import ProviderLimit  # noqa: E402
from lift_graph.ray import RayBackend, RayLimits  # noqa: E402
from tests.ray_dspy_graphs import QUESTIONS, RAG, Answer, QState, rag_graph, rag_lm  # noqa: E402

pytestmark = pytest.mark.asyncio


async def test_the_rag_tutorial_on_ray_answers_as_the_program_does(ray_cluster: Any) -> None:
    with dspy.context(lm=rag_lm()):
        program = RAG()
        expected = [program(question=q).response for q in QUESTIONS]
    assert expected == [f"answer {i}: {q.lower()}" for i, q in enumerate(QUESTIONS)]

    start = Answer(lm=rag_lm(), program=RAG())  # copied per input on the workers
    inputs = [QState(question=q) for q in QUESTIONS * 3]
    limits = RayLimits(providers={"dummy": ProviderLimit(concurrency=4)})
    batch = await rag_graph().map(
        start, inputs, backend=RayBackend(2, concurrency=3), limits=limits
    )
    assert batch.failed == 0, batch.errors
    assert [r.state.response for r in batch.results] == expected * 3
    local = await rag_graph().map(start, inputs)
    assert [r.state.response for r in local.results] == expected * 3
