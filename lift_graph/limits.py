"""Concurrency and rate limits: global and per provider, shareable across runs.

One ``Limits`` object owns the live counters, so passing the same object to several
concurrent runs (in one event loop) makes them share every limit::

    limits = Limits(max_concurrency=8,
                    providers={"openai": ProviderLimit(concurrency=4, rpm=500)})
    await asyncio.gather(graph.run(A(), state=s1, limits=limits),
                         graph.run(A(), state=s2, limits=limits))

A node holds its slots only while its ``run`` executes: never while it waits for
its children (so nested forks cannot deadlock), and never during retry backoff.
Rate limits use a sliding window: at most ``rpm`` requests start in any window of
``window`` seconds. Time comes from a ``Clock``; tests use ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._config import check_count, check_number
from .errors import ConfigurationError, UnknownProviderWarning

__all__ = [
    "Clock",
    "FakeClock",
    "Limiter",
    "Limits",
    "MonotonicClock",
    "Permit",
    "ProviderLimit",
]


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


@dataclass(frozen=True, slots=True)
class ProviderLimit:
    """Limits of one provider: concurrent calls, requests and tokens per ``window``.

    :raises ConfigurationError: a count that is not an int >= 1, a window that is not a
        finite number > 0.
    """

    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "rpm", "tpm"):
            check_count(f"ProviderLimit.{name}", getattr(self, name))
        check_number("ProviderLimit.window", self.window, strictly_above=True)


class _Slots:
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

    def release(self) -> None:
        # A release hands the slot straight to the oldest waiter (in_use unchanged).
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.in_use -= 1


class _Rate:
    """Sliding-window request and token counters of one provider."""

    __slots__ = ("limit", "requests", "tokens", "_token_total")

    def __init__(self, limit: ProviderLimit) -> None:
        self.limit = limit
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self._token_total = 0

    def wait_time(self, now: float) -> float:
        """Seconds until one more request may start (0: now)."""
        window = self.limit.window
        horizon = now - window
        requests, tokens = self.requests, self.tokens
        while requests and requests[0] <= horizon:
            requests.popleft()
        while tokens and tokens[0][0] <= horizon:
            self._token_total -= tokens.popleft()[1]
        wait = 0.0
        if self.limit.rpm is not None and len(requests) >= self.limit.rpm:
            wait = requests[len(requests) - self.limit.rpm] + window - now
        if self.limit.tpm is not None and self._token_total >= self.limit.tpm:
            # Wait until enough old tokens leave the window to drop below the limit.
            excess = self._token_total - self.limit.tpm
            for stamp, amount in tokens:
                excess -= amount
                if excess < 0:
                    wait = max(wait, stamp + window - now)
                    break
        return wait

    def record_request(self, now: float) -> None:
        if self.limit.rpm is not None:
            self.requests.append(now)

    @property
    def token_total(self) -> int:
        return self._token_total

    def record_tokens(self, now: float, amount: int) -> None:
        if self.limit.tpm is not None and amount > 0:
            self.tokens.append((now, amount))
            self._token_total += amount


@dataclass(slots=True)
class Permit:
    """Held while one node runs; give it back with ``Limiter.release``."""

    provider: str | None
    run_slots: _Slots | None
    global_slot: bool
    provider_slot: bool


class Limiter(Protocol):
    """The seam: anything that grants and takes back run permits."""

    async def acquire(self, provider: str | None, run_slots: _Slots | None) -> Permit: ...

    def release(self, permit: Permit, tokens: int = 0) -> None: ...


class Limits:
    """Global and per-provider limits, and the live counters that enforce them.

    ``max_concurrency`` caps nodes running at once across every run that shares this
    object; ``providers`` maps a node's ``provider`` class attribute to its
    ``ProviderLimit``. Share one object between runs of one event loop.

    With ``strict=True`` a node whose ``provider`` is not in ``providers`` fails
    with ``ConfigurationError``; otherwise it runs without provider limits and
    ``UnknownProviderWarning`` is issued once per provider name (when ``providers``
    is not empty).

    :raises ConfigurationError: a limit that is not a positive int, a non-ProviderLimit.
    """

    def __init__(
        self,
        max_concurrency: int | None = None,
        providers: Mapping[str, ProviderLimit] | None = None,
        *,
        clock: Clock | None = None,
        strict: bool = False,
    ) -> None:
        check_count("Limits.max_concurrency", max_concurrency)
        if not isinstance(strict, bool):
            raise ConfigurationError(f"Limits.strict must be a bool, got {strict!r}")
        if providers is not None and not isinstance(providers, Mapping):
            raise ConfigurationError(
                "Limits.providers must be a mapping of provider name to ProviderLimit, got "
                f"{type(providers).__name__}"
            )
        self.max_concurrency = max_concurrency
        self.strict = strict
        self.providers: dict[str, ProviderLimit] = dict(providers or {})
        for name, limit in self.providers.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"Limits.providers keys must be non-empty provider names (str), got {name!r}"
                )
            if not isinstance(limit, ProviderLimit):
                raise ConfigurationError(
                    f"Limits.providers[{name!r}] must be a ProviderLimit, got "
                    f"{type(limit).__name__}"
                )
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigurationError(
                f"Limits.clock must have now() and async sleep(seconds), got {clock!r}"
            )
        self.clock: Clock = clock or MonotonicClock()
        self._global = _Slots(max_concurrency) if max_concurrency else None
        self._provider_slots = {
            n: _Slots(p.concurrency) for n, p in self.providers.items() if p.concurrency
        }
        self._rates = {n: _Rate(p) for n, p in self.providers.items() if p.rpm is not None or p.tpm}
        # The counters are plain (not thread-safe) and their waiters are futures of
        # one loop: remember it while anyone is acquiring or holding a permit.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0
        # Providers already warned about: one warning per name, not one per node run.
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        strict = ", strict=True" if self.strict else ""
        return f"Limits(max_concurrency={self.max_concurrency}, providers={self.providers}{strict})"

    def check_provider(self, provider: str | None, node: str) -> None:
        """Refuse (``strict``) or warn once about a provider these limits do not know.

        A node whose ``provider`` is not in ``providers`` runs without provider limits,
        which is what a misspelled name would silently do. Limits with no providers at
        all limit no provider on purpose: nothing to warn about unless ``strict``.

        :raises ConfigurationError: ``strict`` and ``provider`` is unknown.
        """
        if provider is None or provider in self.providers:
            return
        known = sorted(self.providers)
        if self.strict:
            raise ConfigurationError(
                f"node {node} uses provider {provider!r}, which Limits(strict=True) does not "
                f"know (known providers: {known}): fix the node's `provider` or add "
                f"providers={{{provider!r}: ProviderLimit(...)}}"
            )
        if known and provider not in self._warned:
            self._warned.add(provider)
            warnings.warn(
                UnknownProviderWarning(
                    f"node {node} uses provider {provider!r}, which is not in "
                    f"Limits.providers (known providers: {known}); it runs without provider "
                    f"limits: fix the node's `provider`, add {provider!r} to providers, or "
                    "pass Limits(strict=True) to make this an error"
                ),
                stacklevel=2,
            )

    # -- gauges, for tests and progress displays --------------------------------
    @property
    def peak(self) -> int:
        """Most nodes ever in flight at once under the global limit (0 if unlimited)."""
        return self._global.peak if self._global else 0

    def provider_peak(self, provider: str) -> int:
        slots = self._provider_slots.get(provider)
        return slots.peak if slots else 0

    def tokens_in_window(self, provider: str) -> int:
        """Tokens charged to ``provider`` within its current window (0 without tpm)."""
        rate = self._rates.get(provider)
        if rate is None:
            return 0
        rate.wait_time(self.clock.now())  # drops what left the window
        return rate.token_total

    def in_flight(self, provider: str | None = None) -> int:
        slots = self._provider_slots.get(provider) if provider else self._global
        return slots.in_use if slots else 0

    # -- the Limiter protocol ----------------------------------------------------
    async def acquire(self, provider: str | None, run_slots: _Slots | None = None) -> Permit:
        """Wait for every slot ``provider``'s node needs, in a fixed order.

        Order: provider concurrency, the run's own slots, the global slot, then the
        rate window. Rate waits hand the run and global slots back first, so a node
        waiting on its provider's window never blocks another provider's node.
        Cancellation while waiting gives back whatever was taken.
        """
        loop = asyncio.get_running_loop()
        if self._users and self._loop is not loop:
            raise ConfigurationError(
                f"{self!r} is in use by runs on another event loop (another thread, or a "
                "run_sync inside Jupyter): share one Limits object between runs of one "
                "event loop only"
            )
        self._loop = loop
        self._users += 1
        pslots = self._provider_slots.get(provider) if provider else None
        rate = self._rates.get(provider) if provider else None
        try:
            if pslots is not None:
                await pslots.acquire()
        except BaseException:
            self._users -= 1
            raise
        try:
            while True:
                if run_slots is not None:
                    await run_slots.acquire()
                try:
                    if self._global is not None:
                        await self._global.acquire()
                except BaseException:
                    if run_slots is not None:
                        run_slots.release()
                    raise
                if rate is None:
                    break
                now = self.clock.now()
                wait = rate.wait_time(now)
                if wait <= 0:
                    rate.record_request(now)
                    break
                if self._global is not None:
                    self._global.release()
                if run_slots is not None:
                    run_slots.release()
                await self.clock.sleep(wait)
        except BaseException:
            if pslots is not None:
                pslots.release()
            self._users -= 1
            raise
        return Permit(provider, run_slots, self._global is not None, pslots is not None)

    def release(self, permit: Permit, tokens: int = 0) -> None:
        """Give back a permit; ``tokens`` spent are charged to the provider's window."""
        self._users -= 1
        if permit.global_slot and self._global is not None:
            self._global.release()
        if permit.run_slots is not None:
            permit.run_slots.release()
        if permit.provider is not None:
            if permit.provider_slot:
                self._provider_slots[permit.provider].release()
            rate = self._rates.get(permit.provider)
            if rate is not None and tokens:
                rate.record_tokens(self.clock.now(), tokens)
