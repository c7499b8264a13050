"""A fake LLM API that every Ray worker calls: its log is the provider's own view.

``SharedProvider`` runs as one Ray actor (``SharedProvider.spawn(...)``): a call
arrives, is logged with the provider's clock, waits ``latency`` seconds and
leaves. It counts the calls in flight (their peak is what a cluster-wide
concurrency limit must bound) and, given ``rpm``, refuses calls beyond ``rpm`` in
any sliding ``window`` the way an API answers 429, with a ``retry_after`` hint.
Nodes call it through ``ask_shared`` with the actor handle as their ``deps``;
``fake_provider.max_in_window`` counts its log's busiest window.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import Any

from lift_graph import RateLimited

__all__ = ["SharedProvider", "ask_shared"]


class SharedProvider:
    """The provider. Plain asyncio: ``spawn`` wraps it in a Ray actor."""

    def __init__(self, latency: float = 0.05, rpm: int | None = None, window: float = 60.0) -> None:
        self.latency = latency
        self.rpm = rpm
        self.window = window
        self.in_flight = 0
        self.peak = 0
        #: ``(arrived, left, caller)`` per accepted call; ``left`` is None while in flight.
        self.calls: list[list[Any]] = []
        #: ``(arrived, until, caller)`` per refused call: the pause it announced.
        self.refused: list[tuple[float, float, str]] = []
        self._accepted: deque[float] = deque()

    @classmethod
    def spawn(cls, **kwargs: Any) -> Any:
        import ray

        actor = ray.remote(cls).options(num_cpus=0, max_concurrency=10_000)
        return actor.remote(**kwargs)

    async def call(self, caller: str) -> float | None:
        """One request: None when served, else the seconds it asks the caller to wait."""
        now = time.monotonic()
        if self.rpm is not None:
            while self._accepted and self._accepted[0] <= now - self.window:
                self._accepted.popleft()
            if len(self._accepted) >= self.rpm:
                retry_after = self._accepted[0] + self.window - now
                self.refused.append((now, now + retry_after, caller))
                return retry_after
            self._accepted.append(now)
        entry: list[Any] = [now, None, caller]
        self.calls.append(entry)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
            entry[1] = time.monotonic()
        return None

    def report(self) -> dict[str, Any]:
        return {
            "calls": [tuple(c) for c in self.calls],
            "refused": list(self.refused),
            "peak": self.peak,
        }

    def reset(self) -> None:
        self.calls.clear()
        self.refused.clear()
        self._accepted.clear()
        self.peak = 0


async def ask_shared(provider: Any, caller: str) -> None:
    """Call the shared provider as ``"<pid>/<caller>"``; a refusal becomes
    ``RateLimited`` (a 429)."""
    retry_after = await provider.call.remote(f"{os.getpid()}/{caller}")
    if retry_after is not None:
        raise RateLimited(retry_after=retry_after)
