"""A DSPyNode's tpm reservation: estimated from its prompt before the call."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

dspy = pytest.importorskip("dspy")
from dspy.utils import DummyLM  # noqa: E402

from lift_graph import DSPyNode, FakeClock, Graph, Limits, ProviderLimit  # noqa: E402
from lift_graph.dspy_node import DEFAULT_OUTPUT_TOKENS  # noqa: E402

pytestmark = pytest.mark.asyncio


def dummy(answers: dict[str, dict[str, Any]], **kwargs: Any) -> Any:
    lm = DummyLM(answers)
    lm.cache = False
    lm.kwargs.update(kwargs)  # what dspy.LM(..., max_tokens=...) would hold
    return lm


class State(BaseModel):
    question: str = ""
    answer: str = ""


class Ask(DSPyNode[State]):
    signature = "question -> answer"
    provider: ClassVar[str | None] = "llm"
    lm = dummy({"Why is the sky blue?": {"answer": "Rayleigh scattering"}})


class Capped(Ask):
    lm = dummy({"Why is the sky blue?": {"answer": "Rayleigh scattering"}}, max_tokens=200)


class Declared(Ask):
    estimated_tokens: ClassVar[int | None] = 321


async def test_the_estimate_is_the_prompt_plus_the_output_allowance() -> None:
    short = Ask().estimate_tokens(State(question="Why is the sky blue?"))
    longer = Ask().estimate_tokens(State(question="Why is the sky blue? " * 40))
    assert short is not None and longer is not None
    assert DEFAULT_OUTPUT_TOKENS < short < longer
    assert longer - short >= 40 * len("Why is the sky blue? ") // 4 - 10
    capped = Capped().estimate_tokens(State(question="Why is the sky blue?"))
    assert capped is not None and capped == short - DEFAULT_OUTPUT_TOKENS + 200
    assert Declared().estimate_tokens(State()) == 321


async def test_a_missing_input_leaves_the_error_to_the_call() -> None:
    class NoQuestion(BaseModel):
        answer: str = ""

    assert Ask().estimate_tokens(NoQuestion()) is None  # type: ignore[arg-type]


async def test_a_dspy_run_under_tpm_reserves_its_estimate() -> None:
    clock = FakeClock()
    limits = Limits(providers={"llm": ProviderLimit(tpm=5_000)}, clock=clock)
    estimate = Capped().estimate_tokens(State(question="Why is the sky blue?"))
    result = await Graph([Capped]).run(
        Capped(), state=State(question="Why is the sky blue?"), limits=limits
    )
    assert result.state.answer == "Rayleigh scattering"
    assert estimate is not None and limits.status("llm").peak_tokens >= estimate
