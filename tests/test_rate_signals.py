"""Which errors are rate limits, and what their headers say."""

from __future__ import annotations

import email.utils
import os

import httpx
import pytest

from lift_graph import RateLimited
from lift_graph._rate_signals import RateSignal, rate_limit_of, signal_from_headers

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

WALL = 1_900_000_000.0


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", "https://api.invalid/v1/chat/completions")
    return httpx.Response(status, headers=headers or {}, request=request)


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"Retry-After": email.utils.formatdate(WALL + 30, usegmt=True)}, 30.0),
        ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-remaining-requests": "0"}, 360.0),
        ({"x-ratelimit-reset-requests": "1.5s", "x-ratelimit-remaining-requests": "0"}, 1.5),
        ({"x-ratelimit-reset-tokens": "20ms", "x-ratelimit-remaining-tokens": "0"}, 0.02),
        # Of the dimensions spent, the longest wait; one not spent does not count.
        (
            {
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-tokens": "1m",
                "x-ratelimit-remaining-tokens": "100",
            },
            2.0,
        ),
        ({"anthropic-ratelimit-requests-reset": "2030-03-17T17:47:00Z"}, None),
        ({"x-ratelimit-reset": str(int(WALL + 12))}, 12.0),  # a Unix time
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_the_wait_is_read_from_the_headers_providers_send(
    headers: dict[str, str], retry_after: float | None
) -> None:
    signal = signal_from_headers(headers, now=WALL)
    if headers.get("anthropic-ratelimit-requests-reset"):
        assert signal.retry_after is not None and signal.retry_after > 0
    elif retry_after is None:
        assert signal.retry_after is None
    else:
        assert signal.retry_after == pytest.approx(retry_after, abs=1.0)


def test_remaining_and_limit_are_read_in_any_spelling() -> None:
    signal = signal_from_headers(
        {"X-RateLimit-Remaining-Requests": "41", "X-RateLimit-Limit-Requests": "500"}
    )
    assert (signal.remaining, signal.limit) == (41, 500)
    anthropic = signal_from_headers({"anthropic-ratelimit-requests-remaining": "3"})
    assert anthropic.remaining == 3


def test_rate_limited_is_a_rate_limit() -> None:
    signal = rate_limit_of(RateLimited(retry_after=3.0, provider="openai"))
    assert signal == RateSignal(retry_after=3.0, provider="openai")
    assert RateLimited(2).retry_after == 2.0  # positional, as DESIGN spells it
    assert "retry after 2 s" in str(RateLimited(2))


def test_httpx_status_429_is_recognized_and_other_statuses_are_not() -> None:
    refused = _response(429, {"Retry-After": "4"})
    error = httpx.HTTPStatusError("429", request=refused.request, response=refused)
    assert rate_limit_of(error) == RateSignal(retry_after=4.0)
    broken = _response(503, {"Retry-After": "4"})
    other = httpx.HTTPStatusError("503", request=broken.request, response=broken)
    assert rate_limit_of(other) is None
    assert rate_limit_of(ValueError("429 in the message is not a status")) is None


def test_openai_and_litellm_rate_limit_errors_are_recognized() -> None:
    openai = pytest.importorskip("openai")
    litellm = pytest.importorskip("litellm")
    response = _response(429, {"retry-after-ms": "250", "x-ratelimit-remaining-requests": "0"})
    error = openai.RateLimitError("slow down", response=response, body=None)
    assert rate_limit_of(error) == RateSignal(retry_after=0.25, remaining=0)
    lite = litellm.RateLimitError(
        "slow down", llm_provider="openai", model="gpt-4o-mini", response=response
    )
    signal = rate_limit_of(lite)
    assert signal is not None and signal.retry_after == pytest.approx(0.25)


def test_pydantic_ai_model_http_error_is_recognized() -> None:
    exceptions = pytest.importorskip("pydantic_ai.exceptions")
    error = exceptions.ModelHTTPError(
        status_code=429, model_name="test", body=None, headers={"retry-after": "3"}
    )
    assert rate_limit_of(error) == RateSignal(retry_after=3.0)


def test_a_wrapped_429_is_found_through_its_cause_but_not_its_context() -> None:
    refused = _response(429, {"Retry-After": "1"})
    inner = httpx.HTTPStatusError("429", request=refused.request, response=refused)
    try:
        raise RuntimeError("the SDK wrapped it") from inner
    except RuntimeError as wrapped:
        assert rate_limit_of(wrapped) == RateSignal(retry_after=1.0)
    try:
        try:
            raise inner
        except httpx.HTTPStatusError:
            raise ValueError("the node gave up on its own") from None
    except ValueError as own:
        assert rate_limit_of(own) is None


def test_dspys_own_rate_limit_error_gives_its_hint_and_headers() -> None:
    dspy = pytest.importorskip("dspy")
    error = dspy.LMRateLimitError("Rate limit reached", status=429, retry_after=2.5)
    assert rate_limit_of(error) == RateSignal(retry_after=2.5)
    error.rate_limit_headers = {"x-ratelimit-remaining-requests": ("0",), "retry-after": ("3",)}
    assert rate_limit_of(error) == RateSignal(retry_after=3.0, remaining=0)
