"""The counters of a ``RayLimits``: one ``Limits`` in one actor, lent out as leases.

Every worker process asks this one object for its permits, so a provider's
concurrency, its rpm / tpm windows and its 429 pauses hold across the cluster. A
permit lent to a client is a *lease*: the client renews its leases by calling
(every call counts) or by a heartbeat, and the leases of a client silent for
``lease_ttl`` seconds are taken back, so a worker that died holding permits does
not shrink the cluster's limits for good.

Plain asyncio, no Ray import: ``RayLimits`` wraps this class in a Ray actor, and
tests drive it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._rate_signals import RateSignal
from ..limits import Limits, Permit, ProviderLimit, ProviderStatus

__all__ = ["LimiterConfig", "LimiterCore", "LimiterGauges"]


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    """What a limiter actor enforces: ``Limits``' arguments, and how it lends."""

    max_concurrency: int | None
    providers: Mapping[str, ProviderLimit]
    #: Seconds added to every rpm / tpm window (see ``RayLimits``).
    margin: float
    lease_ttl: float


@dataclass(frozen=True, slots=True)
class LimiterGauges:
    """A snapshot of the shared counters (``RayLimits`` reads its gauges from it)."""

    peak: int
    provider_peaks: dict[str, int]
    in_flight: dict[str | None, int]
    tokens_in_window: dict[str, int]
    status: dict[str | None, ProviderStatus]
    #: Leases lent and not given back, and leases taken back from silent clients.
    leases: int
    reclaimed: int
    #: Acquire calls served and permits granted by them (granted / calls: the batching).
    calls: int
    granted: int


class LimiterCore:
    """One ``Limits`` and the leases of its permits, keyed by client id."""

    def __init__(self, config: LimiterConfig) -> None:
        self.config = config
        # The margin widens each provider's windows: a grant reaches the provider a
        # little after the limiter decided it, by a delay that differs per worker.
        widened = {
            name: replace(limit, window=limit.window + config.margin)
            for name, limit in config.providers.items()
        }
        self.limits = Limits(config.max_concurrency, widened)
        self._leases: dict[int, tuple[str, Permit]] = {}
        #: Leases whose request may still be moved later (once, see ``_late``).
        self._movable: set[int] = set()
        self._seen: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None
        self._stopped = False
        self.reclaimed = 0
        self.calls = 0
        self.granted = 0

    # -- leases -----------------------------------------------------------------
    async def acquire(
        self,
        client: str,
        provider: str | None,
        tokens: int,
        count: int,
        ops: Sequence[tuple[Any, ...]] = (),
    ) -> tuple[list[int], int, float]:
        """Wait for one permit, then take up to ``count - 1`` more that are free now.

        Returns the lease ids, the global peak and the grant's wall-clock time (the
        client measures how late the grant reached it). A client that stopped
        waiting gives the surplus back; one that died has it reclaimed after
        ``lease_ttl``. ``ops``: the client's releases and reports not sent yet, applied
        first (one call instead of two when a node ends and the next one starts).
        """
        self.apply(client, ops)
        self.calls += 1
        permits = [await self.limits.acquire(provider, None, tokens)]
        while len(permits) < count:
            more = self.limits.try_acquire(provider, tokens)
            if more is None:
                break
            permits.append(more)
        self._touch(client)
        ids = []
        for permit in permits:
            lease = next(self._ids)
            self._leases[lease] = (client, permit)
            if permit.start is not None:
                self._movable.add(lease)
            ids.append(lease)
        self.granted += len(ids)
        return ids, self.limits.peak, time.time()

    def apply(self, client: str, ops: Sequence[tuple[Any, ...]]) -> None:
        """Releases and rate-limit reports, in the order the client made them."""
        self._touch(client)
        for op in ops:
            if op[0] == "release":
                self._release(op[1], op[2])
            elif op[0] == "reported":
                held = self._leases.get(op[1])
                if held is not None:
                    self.limits.reported(held[1], op[2])
            elif op[0] == "late":
                self._late(op[1], op[2])

    async def throttle(
        self,
        client: str,
        lease: int | None,
        provider: str | None,
        signal: RateSignal,
        seed: float,
    ) -> float:
        """A 429: pause ``provider`` for every client; returns the pause (seconds)."""
        self._touch(client)
        held = self._leases.get(lease) if lease is not None else None
        permit = held[1] if held is not None else None
        return self.limits.rate_limited(permit, provider, signal, random.Random(seed))

    def wait_time(self, client: str, provider: str | None) -> float:
        """Seconds until ``provider``'s pause is over (0: it is not paused)."""
        self._touch(client)
        return self.limits.paused_for(provider)

    def renew(self, client: str) -> None:
        self._touch(client)

    def forget(self, client: str) -> int:
        """``client`` is going away: give back every lease it holds; returns how many."""
        self._seen.pop(client, None)
        return self._reclaim({client})

    def gauges(self) -> LimiterGauges:
        limits = self.limits
        named: list[str | None] = [None, *limits.providers]
        named += [p for p in limits._pressure if p not in limits.providers and p is not None]
        return LimiterGauges(
            peak=limits.peak,
            provider_peaks={p: limits.provider_peak(p) for p in limits.providers},
            in_flight={p: limits.in_flight(p) for p in named},
            tokens_in_window={p: limits.tokens_in_window(p) for p in limits.providers},
            status={p: limits.status(p) for p in named},
            leases=len(self._leases),
            reclaimed=self.reclaimed,
            calls=self.calls,
            granted=self.granted,
        )

    def config_of(self) -> LimiterConfig:
        return self.config

    async def stop(self) -> None:
        """Before the actor is killed: no task left pending behind it."""
        self._stopped = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    # -- housekeeping -----------------------------------------------------------
    def _late(self, lease: int, delay: float) -> None:
        """Lease ``lease`` was used ``delay`` seconds after its grant (it reached a busy
        worker late, or waited for the run's own slot): count its request from then.

        The windows must count each call from no earlier than a bounded time before
        it reaches the provider; the grant time is early by this delay, which a
        loaded worker can make longer than ``margin``. Moving the request later is
        safe while it is still in the window, as every grant since counted it.
        """
        held = self._leases.get(lease)
        if lease in self._movable and held is not None:
            self._movable.discard(lease)
            self.limits.started_late(held[1], delay)

    def _release(self, lease: int, tokens: int) -> None:
        self._movable.discard(lease)
        held = self._leases.pop(lease, None)
        if held is not None:  # None: taken back already (the client was silent)
            self.limits.release(held[1], tokens)

    def _touch(self, client: str) -> None:
        self._seen[client] = time.monotonic()
        if self._reaper is None and math.isfinite(self.config.lease_ttl) and not self._stopped:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        ttl = self.config.lease_ttl
        while True:
            await asyncio.sleep(ttl / 4)
            horizon = time.monotonic() - ttl
            silent = {c for c, seen in self._seen.items() if seen < horizon}
            for client in silent:
                del self._seen[client]
            if silent:
                self._reclaim(silent)

    def _reclaim(self, clients: set[str]) -> int:
        gone = [lease for lease, (client, _) in self._leases.items() if client in clients]
        for lease in gone:
            self._release(lease, 0)
        self.reclaimed += len(gone)
        return len(gone)
