"""Time for the limiter: the real monotonic clock, and ``FakeClock`` for tests.

Rate limits wait through a ``Clock``; a ``FakeClock`` makes a 60 s window take
milliseconds of real time, so rate-limit behaviour can be tested exactly.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """Where the limiter reads time and waits."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """Virtual time that jumps to the next sleeper's deadline once the loop is idle.

    Every ``sleep`` parks the caller until virtual time reaches its deadline; a
    driver task lets the other tasks run for a few loop turns, then jumps time to
    the earliest deadline. Use it where all waiting goes through the clock (rate-limit
    tests), so a 60 s window takes milliseconds of real time.
    """

    def __init__(self, start: float = 0.0, *, idle_turns: int = 8) -> None:
        self._now = start
        self._idle_turns = idle_turns
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self._now + max(0.0, seconds), next(self._seq), fut))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive(), name="lift_graph.FakeClock")
        await fut

    async def _drive(self) -> None:
        while self._heap:
            for _ in range(self._idle_turns):
                await asyncio.sleep(0)
            if not self._heap:
                return
            deadline = self._heap[0][0]
            self._now = max(self._now, deadline)
            while self._heap and self._heap[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._heap)
                if not fut.done():
                    fut.set_result(None)
