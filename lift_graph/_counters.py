"""The counters behind ``Limits``: a FIFO slot semaphore and a provider's windows."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .limits import ProviderLimit

__all__ = ["Rate", "Slots"]


class Slots:
    """A FIFO counting semaphore with a no-await fast path and a peak gauge.

    Not bound to an event loop: waiter futures come from the caller's loop.
    """

    __slots__ = ("limit", "in_use", "peak", "_waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            if self.in_use > self.peak:
                self.peak = self.in_use
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted and cancelled in the same turn: the slot is ours, pass it on.
                self.release()
            else:
                self._waiters.remove(fut)
            raise

    def set_limit(self, limit: int) -> None:
        """Change the cap (adaptive concurrency): a lower one takes effect as slots are
        given back, a higher one wakes waiters now."""
        self.limit = limit
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                self.peak = max(self.peak, self.in_use)
                fut.set_result(None)

    def release(self) -> None:
        if self.in_use > self.limit:  # the cap was lowered: this slot goes away
            self.in_use -= 1
            return
        # A release hands the slot straight to the oldest waiter (in_use unchanged).
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.in_use -= 1


class Rate:
    """Sliding-window request and token counters of one provider.

    Tokens are reserved when a call starts (the node's estimate) and settled to what
    it reported when it ends, at the start's place in the window: a provider counts a
    call's tokens when it accepts it, and a burst must not overshoot before anyone
    has reported usage.
    """

    __slots__ = ("limit", "requests", "tokens", "_token_total", "peak_tokens")

    def __init__(self, limit: ProviderLimit) -> None:
        self.limit = limit
        self.requests: deque[float] = deque()
        #: ``[start time, tokens]`` per call in the window; the list is the reservation.
        self.tokens: deque[list[Any]] = deque()
        self._token_total = 0
        #: Most tokens ever counted in one window (reserved or settled), for tests.
        self.peak_tokens = 0

    def wait_time(self, now: float, tokens: int = 0) -> float:
        """Seconds until one more request reserving ``tokens`` may start (0: now)."""
        window = self.limit.window
        self._prune(now)
        requests, entries = self.requests, self.tokens
        wait = 0.0
        if self.limit.rpm is not None and len(requests) >= self.limit.rpm:
            wait = requests[len(requests) - self.limit.rpm] + window - now
        tpm = self.limit.tpm
        # A call with no estimate needs some room left; one with an estimate, all of it.
        if tpm is not None and self._token_total + max(tokens, 1) > tpm:
            excess = self._token_total + max(tokens, 1) - tpm
            for stamp, amount in entries:
                excess -= amount
                if excess <= 0:
                    wait = max(wait, stamp + window - now)
                    break
        return wait

    def _prune(self, now: float) -> None:
        horizon = now - self.limit.window
        requests, entries = self.requests, self.tokens
        while requests and requests[0] <= horizon:
            requests.popleft()
        while entries and entries[0][0] <= horizon:
            self._token_total -= entries.popleft()[1]

    def record_request(self, now: float) -> None:
        if self.limit.rpm is not None:
            self.requests.append(now)

    @property
    def token_total(self) -> int:
        return self._token_total

    def reserve(self, now: float, amount: int) -> list[Any] | None:
        if self.limit.tpm is None:
            return None
        entry = [now, amount]
        self.tokens.append(entry)
        self._add(amount)
        return entry

    def settle(self, entry: list[Any], amount: int, now: float) -> None:
        """Replace a reservation by the tokens really spent (if still in the window)."""
        self._prune(now)
        if entry[0] > now - self.limit.window:
            self._add(amount - entry[1])
        entry[1] = amount

    def shift(self, counted: float, moved: float, entry: list[Any] | None) -> None:
        """Count a request made at ``counted`` (and its token ``entry``) from ``moved``,
        later, instead: it was granted before it started. Nothing happens to what
        already left the window."""
        with contextlib.suppress(ValueError):  # ValueError: it left the window already
            self.requests.remove(counted)
            bisect.insort(self.requests, moved)
        at = next((i for i, e in enumerate(self.tokens) if e is entry), None)
        if entry is not None and at is not None:
            del self.tokens[at]
            entry[0] = moved
            self.tokens.insert(bisect.bisect_right([e[0] for e in self.tokens], moved), entry)

    def _add(self, amount: int) -> None:
        self._token_total += amount
        if self._token_total > self.peak_tokens:
            self.peak_tokens = self._token_total
