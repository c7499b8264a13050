"""What a provider says about its rate limit, read from errors and headers (pure).

A provider refuses with HTTP 429 and usually says when to come back and how much is
left. Each client library wraps that differently: ``httpx.HTTPStatusError`` and
``openai.RateLimitError`` keep the response (``.response.headers``), litellm (and so
DSPy's ``engine="litellm"``) subclasses openai's error, DSPy's own engine raises
``dspy.LMRateLimitError`` with ``status``, ``retry_after`` and ``rate_limit_headers``,
pydantic-ai's ``ModelHTTPError`` keeps lowercased ``headers``. ``rate_limit_of`` reads
them all into one ``RateSignal``.

Headers read, first found wins for the wait:

* ``retry-after-ms`` (milliseconds), then ``retry-after`` (seconds or an HTTP date);
* ``x-ratelimit-reset-requests`` / ``-tokens`` (OpenAI durations such as ``6m0s``,
  ``1.5s``, ``20ms``), ``x-ratelimit-reset``, ``ratelimit-reset``, and Anthropic's
  ``anthropic-ratelimit-*-reset`` (RFC 3339 times): of the dimensions that are
  exhausted, the longest;
* ``x-ratelimit-remaining-requests`` (and the same spellings) and
  ``x-ratelimit-limit-requests`` for pacing before the provider refuses.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import RateLimited

__all__ = ["RateSignal", "rate_limit_of", "signal_from_headers"]

#: How far down ``__cause__`` to look for a 429 (pydantic-ai and SDK wrappers nest).
_MAX_CHAIN = 8

_REMAINING = (
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining",
    "ratelimit-remaining",
    "anthropic-ratelimit-requests-remaining",
)
_LIMIT = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit",
    "ratelimit-limit",
    "anthropic-ratelimit-requests-limit",
)
#: (reset header, the remaining header that says whether that dimension is spent).
_RESETS = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
    ("x-ratelimit-reset", "x-ratelimit-remaining"),
    ("ratelimit-reset", "ratelimit-remaining"),
    ("anthropic-ratelimit-requests-reset", "anthropic-ratelimit-requests-remaining"),
    ("anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-tokens-remaining"),
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


@dataclass(frozen=True, slots=True)
class RateSignal:
    """One provider answer about its limit; ``None`` where it said nothing."""

    #: Seconds until the provider accepts again.
    retry_after: float | None = None
    #: Requests left in the provider's current window.
    remaining: int | None = None
    #: Requests the provider allows per window.
    limit: int | None = None
    #: The provider a ``RateLimited`` named (overrides the node's own).
    provider: str | None = None


def rate_limit_of(exc: BaseException) -> RateSignal | None:
    """The rate-limit signal ``exc`` carries, or ``None`` if it is no rate limit.

    Looks at ``exc`` and its explicit causes (``raise ... from``), not at the
    exceptions it was raised while handling: a node that turns a 429 into its own
    ``ValueError`` has failed, it is not being throttled.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < _MAX_CHAIN:
        if isinstance(current, RateLimited):
            return RateSignal(retry_after=current.retry_after, provider=current.provider)
        if _status(current) == 429:
            signal = signal_from_headers(_headers(current))
            hint: Any = getattr(current, "retry_after", None)  # DSPy's LMRateLimitError
            if signal.retry_after is None and _is_seconds(hint):
                signal = replace(signal, retry_after=float(hint))
            return signal
        current = current.__cause__
        seen += 1
    return None


def signal_from_headers(headers: Mapping[str, Any] | None, now: float | None = None) -> RateSignal:
    """Read a response's rate-limit headers (any casing); ``now`` is wall time (tests)."""
    if not headers:
        return RateSignal()
    lower = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    wall = time.time() if now is None else now
    retry_after = _milliseconds(lower.get("retry-after-ms"))
    if retry_after is None:
        retry_after = _seconds(lower.get("retry-after"), wall)
    if retry_after is None:
        resets = [
            _seconds(lower.get(reset), wall)
            for reset, left in _RESETS
            if reset in lower and _count(lower.get(left)) in (None, 0)
        ]
        known = [r for r in resets if r is not None]
        retry_after = max(known) if known else None
    return RateSignal(
        retry_after=retry_after,
        remaining=_first_count(lower, _REMAINING),
        limit=_first_count(lower, _LIMIT),
    )


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _headers(exc: BaseException) -> dict[str, Any]:
    """The response's headers, overlaid with headers the error carries itself
    (``headers``; DSPy's ``rate_limit_headers``, whose values are sequences)."""
    merged: dict[str, Any] = {}
    response_headers = getattr(getattr(exc, "response", None), "headers", None)
    own = getattr(exc, "headers", None)
    captured = getattr(exc, "rate_limit_headers", None)
    for source in (response_headers, own, captured):
        if source is not None and hasattr(source, "items"):
            try:
                merged.update({str(k).lower(): _first(v) for k, v in source.items()})
            except (TypeError, ValueError):
                continue  # a headers-like object we cannot read: no hint, not a failure
    return merged


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else ""
    return value


def _is_seconds(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _count(text: str | None) -> int | None:
    value = _number(text)
    return None if value is None else int(value)


def _first_count(headers: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = _count(headers.get(name))
        if value is not None:
            return value
    return None


def _milliseconds(text: str | None) -> float | None:
    count = _number(text)
    return None if count is None else count / 1000.0


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _seconds(text: str | None, wall: float) -> float | None:
    """Seconds from ``wall`` until ``text``: a number, a duration, or a date."""
    if text is None or not text:
        return None
    value = _number(text)
    if value is not None:
        # Some providers send the reset as a Unix time rather than a delay.
        return max(0.0, value - wall) if value > 1e9 else value
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    moment = _date(text)
    return None if moment is None else max(0.0, moment - wall)


def _date(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
