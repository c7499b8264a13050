"""Back-pressure end to end: DSPy (and LiteLLM) against a local rate-limited HTTP API.

``benchmarks.fake_http_provider.FakeHTTPProvider`` serves an OpenAI-compatible chat
API on 127.0.0.1 that accepts a few requests per real second and answers the rest
with HTTP 429. A fork of ``DSPyNode`` calls whose LM does not retry by itself
(``num_retries=0``) must all succeed: DSPy's rate-limit error reaches the engine,
which pauses the provider and learns its pace. Real time, loopback only; sizes are
small and no assertion depends on tight timing.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import time
from typing import Any

import pytest

dspy = pytest.importorskip("dspy")

from benchmarks.fake_http_provider import FakeHTTPProvider  # noqa: E402
from benchmarks.workloads.backpressure import (  # noqa: E402
    PROVIDER,
    QA_GRAPH,
    AskAll,
    QAState,
    fake_lm,
    questions,
)
from lift_graph import Limits, ProviderLimit  # noqa: E402
from lift_graph._rate_signals import rate_limit_of  # noqa: E402

try:
    import litellm
except ImportError:
    litellm = None

pytestmark = pytest.mark.asyncio
#: litellm builds pydantic schemas of TypedDicts with ReadOnly items on its first
#: calls, which pydantic warns about (a UserWarning, an error in this suite).
LITELLM_READONLY = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")


async def _close_litellm_clients() -> None:
    """Close litellm's cached async clients: they belong to this test's event loop,
    and one left open is a ResourceWarning in whichever later test collects it."""
    if litellm is not None:
        await litellm.close_litellm_async_clients()
        litellm.in_memory_llm_clients_cache.flush_cache()


def _causes(exc: BaseException | None) -> list[BaseException]:
    chain = []
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    return chain


@pytest.mark.parametrize("engine", ["auto", pytest.param("litellm", marks=LITELLM_READONLY)])
async def test_dspy_lm_reaches_the_fake_and_its_429_is_recognized(engine: str) -> None:
    if engine == "litellm" and litellm is None:
        pytest.skip("litellm is not installed")
    with FakeHTTPProvider(limit=2, window=30.0, remaining=True) as api:
        lm = dspy.LM(
            "openai/fake-model",
            api_base=api.base_url,
            api_key="fake",
            num_retries=0,
            cache=False,
            engine=engine,
        )
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm, track_usage=True):
            first = await predict.acall(question="What is 2 + 2?")
            second = await predict.acall(question="What is 3 + 3?")
            with pytest.raises(Exception) as refused:
                await predict.acall(question="One too many?")
        await _close_litellm_clients()
        assert first.answer == "fake answer 0" and second.answer == "fake answer 1"
        usage = first.get_lm_usage()
        assert usage and next(iter(usage.values()))["total_tokens"] > 0
        assert [r.accepted for r in api.snapshot()] == [True, True, False]
    signal = rate_limit_of(refused.value)
    assert signal is not None, f"{refused.value!r} is not seen as a rate limit"
    chain = _causes(refused.value)
    assert any(getattr(e, "status", None) == 429 for e in chain)
    if litellm is not None and engine == "litellm":
        assert any(isinstance(e, litellm.RateLimitError) for e in chain), chain


async def _fork(
    calls: int, limit: int, engine: str = "auto"
) -> tuple[Any, Limits, FakeHTTPProvider]:
    with FakeHTTPProvider(limit=limit, window=1.0) as api:
        lm = fake_lm(api.base_url, num_retries=0)
        if engine != "auto":
            lm = dspy.LM(
                "openai/fake-model",
                api_base=api.base_url,
                api_key="fake",
                num_retries=0,
                cache=False,
                engine=engine,
            )
        limits = Limits(providers={PROVIDER: ProviderLimit(concurrency=16, window=1.0)})
        try:
            res = await QA_GRAPH.run(AskAll(questions(calls), lm), state=QAState(), limits=limits)
        finally:
            await _close_litellm_clients()
    return res, limits, api


async def test_a_fork_of_dspy_nodes_rides_out_the_providers_429s() -> None:
    calls = 30
    began = time.perf_counter()
    res, limits, api = await _fork(calls, limit=10)
    wall = time.perf_counter() - began
    assert res.output == calls, "every call succeeded"
    assert len(res.state.answers) == calls
    assert sorted(int(a.rsplit(" ", 1)[1]) for a in res.state.answers) == sorted(
        i for i, r in enumerate(api.snapshot()) if r.accepted
    ), "each answer is one accepted request's"
    status = limits.status(PROVIDER)
    assert api.refusals > 0, "16 slots against 10/s: the provider must have refused"
    assert status.refusals == api.refusals, "every 429 was recognized as a rate limit"
    assert status.pauses and status.learned_rpm is not None
    # 16 slots against 10 a second: the first burst alone is 6 refusals, and calls
    # whose requests were still on their way through DSPy when the first 429 came
    # back are refused too (17-35 % of requests here; almost all in the first 50 ms,
    # a large share only because this window is one second). The fake-clock
    # acceptance holds the tight bounds.
    assert api.refusals / len(api.snapshot()) <= 0.6
    assert api.max_in_window() <= 10
    assert wall < 60.0  # about 5-9 s here; the bound only catches a hang


@LITELLM_READONLY
async def test_a_fork_through_litellm_rides_out_429s() -> None:
    if litellm is None:
        pytest.skip("litellm is not installed")
    calls = 12
    res, limits, api = await _fork(calls, limit=6, engine="litellm")
    assert res.output == calls
    status = limits.status(PROVIDER)
    assert api.refusals > 0 and status.refusals == api.refusals
    assert api.refusals <= 2 * calls  # 12 starts against 6 a second: 10-12 here
