"""A fake LLM API with a provider's rate limit, for back-pressure tests and benchmarks.

``FakeProvider(clock, limit=R)`` accepts at most ``R`` requests in any sliding
``window`` (or per fixed window with ``fixed=True``) and refuses the rest the way
HTTP APIs do: an ``httpx.HTTPStatusError`` with status 429 whose response carries
``Retry-After`` (whole seconds, rounded up) when ``retry_after`` is on, and
``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests`` when
``remaining`` is on (on accepted responses too). An accepted call answers after
``latency`` seconds, a refusal after ``refusal_latency``. ``tpm`` adds a token limit
that is *measured* only (``max_tokens_in_window``), to check the engine's reservations.

Everything is logged (``log``: one ``Call`` per request) so a test can check, from
the provider's side, what the engine did: how many 429s, whether a request started
inside a pause it was told about, the most requests or tokens in any window.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from lift_graph.clock import Clock

__all__ = ["Call", "FakeProvider", "max_in_window"]


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the provider saw it."""

    time: float
    accepted: bool
    tokens: int = 0
    #: For a refusal: the wait it announced (``Retry-After``, before rounding up).
    retry_after: float | None = None
    #: When the refusal's response reached the caller.
    answered: float | None = None


@dataclass
class FakeProvider:
    clock: Clock
    limit: int
    window: float = 60.0
    latency: float = 1.0
    refusal_latency: float = 0.05
    retry_after: bool = True
    remaining: bool = False
    fixed: bool = False
    tpm: int | None = None
    log: list[Call] = field(default_factory=list)
    _accepted: deque[float] = field(default_factory=deque)

    async def complete(self, tokens: int = 0) -> dict[str, str]:
        """One request: returns the response headers, or raises the 429."""
        now = self.clock.now()
        used = self._used(now)
        if used < self.limit:
            self._accepted.append(now)
            self.log.append(Call(now, True, tokens))
            headers = self._headers(now, used + 1)
            await self.clock.sleep(self.latency)
            return headers
        wait = self._free_at(now) - now
        await self.clock.sleep(self.refusal_latency)
        self.log.append(Call(now, False, 0, wait, self.clock.now()))
        headers = self._headers(now, used)
        if self.retry_after:
            headers["retry-after"] = str(max(1, math.ceil(wait - self.refusal_latency)))
        request = httpx.Request("POST", "https://fake.invalid/v1/chat/completions")
        response = httpx.Response(429, headers=headers, request=request)
        raise httpx.HTTPStatusError("429 Too Many Requests", request=request, response=response)

    # -- the provider's window -----------------------------------------------------
    def _used(self, now: float) -> int:
        if self.fixed:
            start = math.floor(now / self.window) * self.window
            return sum(1 for t in self._accepted if t >= start)
        horizon = now - self.window
        while self._accepted and self._accepted[0] <= horizon:
            self._accepted.popleft()
        return len(self._accepted)

    def _free_at(self, now: float) -> float:
        if self.fixed:
            return (math.floor(now / self.window) + 1) * self.window
        return self._accepted[0] + self.window

    def _headers(self, now: float, used: int) -> dict[str, str]:
        if not self.remaining:
            return {}
        reset = self._free_at(now) - now if self._accepted else 0.0
        return {
            "x-ratelimit-remaining-requests": str(max(0, self.limit - used)),
            "x-ratelimit-reset-requests": f"{max(0.0, reset):.3f}s",
        }

    # -- what the log shows --------------------------------------------------------
    @property
    def refusals(self) -> int:
        return sum(1 for c in self.log if not c.accepted)

    @property
    def accepted(self) -> list[float]:
        return sorted(c.time for c in self.log if c.accepted)

    def throughput(self) -> float:
        """Accepted requests per window, counting the last one's window in full."""
        times = self.accepted
        if not times:
            return 0.0
        return len(times) * self.window / (times[-1] - times[0] + self.window)

    def starts_inside(self, pauses: list[tuple[float, float]] | None = None) -> list[float]:
        """Request starts strictly inside a pause: the engine's own (``pauses``), or
        every refusal's announced wait from when its answer arrived."""
        if pauses is None:
            pauses = [
                (c.answered, c.answered + math.ceil((c.retry_after or 0.0) - self.refusal_latency))
                for c in self.log
                if not c.accepted and c.answered is not None and c.retry_after is not None
            ]
        starts = sorted(c.time for c in self.log)
        inside = []
        for begin, end in pauses:
            i = bisect.bisect_right(starts, begin)
            while i < len(starts) and starts[i] < end:
                inside.append(starts[i])
                i += 1
        return inside

    def max_tokens_in_window(self) -> int:
        calls = sorted((c.time, c.tokens) for c in self.log if c.accepted)
        return max_in_window([t for t, _ in calls], self.window, [n for _, n in calls])


def max_in_window(times: list[float], window: float, weights: list[Any] | None = None) -> int:
    """Most requests (or summed ``weights``) whose times fall in any (t - window, t]."""
    best = total = 0
    left = 0
    for right, t in enumerate(times):
        total += weights[right] if weights is not None else 1
        while times[left] <= t - window:
            total -= weights[left] if weights is not None else 1
            left += 1
        best = max(best, total)
    return best
