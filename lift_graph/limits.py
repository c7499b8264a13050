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
``window`` seconds, and a call's estimated tokens are reserved against ``tpm`` when
it starts, then settled with what it reported. When a provider refuses anyway (429),
``rate_limited`` pauses it for every run sharing the object and its pace is learned
(``_backpressure``). Time comes from a ``Clock``; tests use ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._backpressure import Pressure, Start
from ._config import check_count, check_number
from ._counters import Rate as _Rate
from ._counters import Slots as _Slots
from ._rate_signals import RateSignal
from .clock import Clock, FakeClock, MonotonicClock
from .errors import ConfigurationError, UnknownProviderWarning

__all__ = [
    "Clock",
    "FakeClock",
    "Limiter",
    "Limits",
    "MonotonicClock",
    "Permit",
    "ProviderLimit",
    "ProviderStatus",
]


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
    #: Halve the provider's concurrency on a 429 and grow it back by one per round
    #: of accepted calls, never above ``concurrency`` (which it requires).
    adaptive: bool = False
    #: Times one node execution may be paused by a 429 and run again before the
    #: rate-limit error fails it. These do not count against the node's ``Retry``.
    max_rate_limit_retries: int = 8

    def __post_init__(self) -> None:
        for name in ("concurrency", "rpm", "tpm"):
            check_count(f"ProviderLimit.{name}", getattr(self, name))
        check_number("ProviderLimit.window", self.window, strictly_above=True)
        if not isinstance(self.adaptive, bool):
            raise ConfigurationError(
                f"ProviderLimit.adaptive must be a bool, got {self.adaptive!r}"
            )
        if self.adaptive and self.concurrency is None:
            raise ConfigurationError(
                "ProviderLimit(adaptive=True) adapts the provider's concurrency below a cap: "
                "give the cap too, e.g. ProviderLimit(concurrency=64, adaptive=True)"
            )
        retries = self.max_rate_limit_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(
                f"ProviderLimit.max_rate_limit_retries must be an int >= 0, got {retries!r}"
            )


@dataclass(slots=True)
class Permit:
    """Held while one node runs; give it back with ``Limiter.release``."""

    provider: str | None
    run_slots: _Slots | None
    global_slot: bool
    provider_slot: bool
    #: This start in the provider's back-pressure window (None when not counted).
    start: Start | None = None
    #: The tokens reserved for this call (``[time, tokens]`` in the tpm window).
    reservation: list[Any] | None = None
    #: The provider refused this call (429): its tokens are not charged.
    refused: bool = False


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """A snapshot of one provider's back-pressure (``Limits.status(provider)``)."""

    #: Calls the provider refused (429) so far.
    refusals: int
    #: Every pause decided, as ``(from, until)`` clock times.
    pauses: tuple[tuple[float, float], ...]
    #: When the current pause ends (clock time), None when not paused.
    paused_until: float | None
    #: Requests per window learned from the provider, None until it said anything.
    learned_rpm: int | None
    #: The provider's concurrency cap now (lower than configured after 429s when
    #: ``adaptive``), None without one.
    concurrency: int | None
    #: Most tokens ever counted in one tpm window, reserved or settled.
    peak_tokens: int


class Limiter(Protocol):
    """The seam: anything that grants and takes back run permits."""

    async def acquire(
        self, provider: str | None, run_slots: _Slots | None, tokens: int = 0
    ) -> Permit: ...

    def release(self, permit: Permit, tokens: int = 0) -> None: ...

    def rate_limited(
        self, permit: Permit | None, provider: str | None, signal: RateSignal, rng: random.Random
    ) -> float: ...


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
        self._pressure: dict[str | None, Pressure] = {}
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

    def status(self, provider: str | None) -> ProviderStatus:
        """What back-pressure has done to ``provider`` so far (a snapshot)."""
        pressure = self._pressure.get(provider)
        rate = self._rates.get(provider) if provider is not None else None
        slots = self._provider_slots.get(provider) if provider is not None else None
        now = self.clock.now()
        paused = pressure is not None and pressure.paused_until > now
        return ProviderStatus(
            refusals=pressure.refusals if pressure else 0,
            pauses=tuple(pressure.pauses) if pressure else (),
            paused_until=pressure.paused_until if pressure and paused else None,
            learned_rpm=pressure.learned if pressure else None,
            concurrency=slots.limit if slots else None,
            peak_tokens=rate.peak_tokens if rate else 0,
        )

    # -- the Limiter protocol ----------------------------------------------------
    async def acquire(
        self, provider: str | None, run_slots: _Slots | None = None, tokens: int = 0
    ) -> Permit:
        """Wait for every slot ``provider``'s node needs, in a fixed order.

        Order: provider concurrency, the run's own slots, the global slot, then the
        provider's windows (rpm, ``tokens`` reserved against tpm) and its back-pressure
        (a pause after a 429, the pace learned from it). These waits hand the run and
        global slots back first, so a node waiting on its provider never blocks another
        provider's node. Cancellation while waiting gives back whatever was taken.

        :raises ConfigurationError: ``tokens`` can never fit in the provider's tpm.
        """
        loop = asyncio.get_running_loop()
        if self._users and self._loop is not loop:
            raise ConfigurationError(
                f"{self!r} is in use by runs on another event loop (another thread, or a "
                "run_sync inside Jupyter): share one Limits object between runs of one "
                "event loop only"
            )
        pslots = self._provider_slots.get(provider) if provider else None
        rate = self._rates.get(provider) if provider else None
        pressure = self._pressure_of(provider)
        self.check_tokens(provider, tokens)
        self._loop = loop
        self._users += 1
        try:
            if pslots is not None:
                await pslots.acquire()
        except BaseException:
            self._users -= 1
            raise
        try:
            permit = await self._take(provider, run_slots, pslots, rate, pressure, tokens)
        except BaseException:
            if pslots is not None:
                pslots.release()
            self._users -= 1
            raise
        return permit

    async def _take(
        self,
        provider: str | None,
        run_slots: _Slots | None,
        pslots: _Slots | None,
        rate: _Rate | None,
        pressure: Pressure | None,
        tokens: int,
    ) -> Permit:
        """The run and global slots, then the provider's windows, waiting without them."""
        clock = self.clock
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
            permit, wait = self._admit(provider, run_slots, pslots, rate, pressure, tokens)
            if permit is not None:
                return permit
            if self._global is not None:
                self._global.release()
            if run_slots is not None:
                run_slots.release()
            await clock.sleep(wait)

    def try_acquire(self, provider: str | None, tokens: int = 0) -> Permit | None:
        """A permit for ``provider``'s node if every slot and window allows it now, else
        None (nothing taken). No run slots: for lending permits in batches."""
        pslots = self._provider_slots.get(provider) if provider else None
        if pslots is not None and not pslots.try_acquire():
            return None
        if self._global is not None and not self._global.try_acquire():
            if pslots is not None:
                pslots.release()
            return None
        rate = self._rates.get(provider) if provider else None
        permit, _ = self._admit(provider, None, pslots, rate, self._pressure_of(provider), tokens)
        if permit is None:
            if self._global is not None:
                self._global.release()
            if pslots is not None:
                pslots.release()
            return None
        self._users += 1
        return permit

    def _admit(
        self,
        provider: str | None,
        run_slots: _Slots | None,
        pslots: _Slots | None,
        rate: _Rate | None,
        pressure: Pressure | None,
        tokens: int,
    ) -> tuple[Permit | None, float]:
        """With the slots held: the permit if the provider's windows and back-pressure
        let a request start now (counting it), else None and the seconds to wait."""
        has_global = self._global is not None
        if rate is None and pressure is None:
            return Permit(provider, run_slots, has_global, pslots is not None), 0.0
        now = self.clock.now()
        wait = rate.wait_time(now, tokens) if rate is not None else 0.0
        if pressure is not None:
            wait = max(wait, pressure.wait_time(now))
        if wait > 0:
            return None, wait
        reservation = None
        if rate is not None:
            rate.record_request(now)
            reservation = rate.reserve(now, tokens)
        start = pressure.start(now) if pressure is not None else None
        permit = Permit(provider, run_slots, has_global, pslots is not None, start, reservation)
        return permit, 0.0

    def release(self, permit: Permit, tokens: int = 0) -> None:
        """Give back a permit; ``tokens`` spent settle the call's tpm reservation.

        With no tokens reported the reservation stands (the estimate is all we know);
        a refused call (429) is charged nothing.
        """
        self._users -= 1
        if permit.global_slot and self._global is not None:
            self._global.release()
        if permit.run_slots is not None:
            permit.run_slots.release()
        provider = permit.provider
        if provider is None:
            return
        if permit.provider_slot:
            self._provider_slots[provider].release()
        rate = self._rates.get(provider)
        # A reservation exists whenever the provider has a tpm (see `_take`).
        if rate is not None and permit.reservation is not None:
            if permit.refused:
                rate.settle(permit.reservation, 0, self.clock.now())
            elif tokens > 0:
                rate.settle(permit.reservation, tokens, self.clock.now())
        if not permit.refused:
            pressure = self._pressure.get(provider)
            if pressure is not None:
                pressure.succeeded()

    def rate_limited(
        self, permit: Permit | None, provider: str | None, signal: RateSignal, rng: random.Random
    ) -> float:
        """The provider refused ``permit``'s call: pause it for every run sharing these
        limits and learn its pace. Call before ``release``. Returns the pause (seconds).
        """
        pressure = self._pressure_of(provider, create=True)
        assert pressure is not None
        start = None
        if permit is not None and permit.provider == provider:
            permit.refused = True
            start = permit.start
        return pressure.refused(self.clock.now(), start, signal, rng)

    async def throttle(
        self, permit: Permit | None, provider: str | None, signal: RateSignal, rng: random.Random
    ) -> float:
        """``rate_limited`` for the runner, which awaits it: limits whose counters live
        elsewhere (``lift_graph.ray.RayLimits``) must ask them."""
        return self.rate_limited(permit, provider, signal, rng)

    async def wait_out(self, provider: str | None) -> None:
        """Wait, holding nothing, until ``provider``'s pause (if any) is over."""
        while (left := self.paused_for(provider)) > 0:
            await self.clock.sleep(left)

    def paused_for(self, provider: str | None) -> float:
        """Seconds until ``provider``'s pause is over (0.0: it is not paused)."""
        pressure = self._pressure.get(provider)
        if pressure is None:
            return 0.0
        return max(0.0, pressure.paused_until - self.clock.now())

    def started_late(self, permit: Permit, delay: float) -> None:
        """``permit``'s call started ``delay`` seconds after it was granted: count its
        request and tokens in the provider's windows from then (see ``Rate.shift``)."""
        rate = self._rates.get(permit.provider) if permit.provider is not None else None
        if rate is not None and permit.start is not None and delay > 0:
            rate.shift(permit.start.time, permit.start.time + delay, permit.reservation)

    def reported(self, permit: Permit, signal: RateSignal) -> None:
        """Rate-limit headers of an accepted call (``RunContext.report_rate_limit``)."""
        pressure = self._pressure_of(permit.provider)
        if pressure is not None:
            pressure.reported(self.clock.now(), permit.start, signal)

    def _pressure_of(self, provider: str | None, *, create: bool = False) -> Pressure | None:
        """The provider's back-pressure, created on first use for a named provider.

        Nodes without a provider share one, created only once one of them is refused:
        until then they pay nothing for it (and their pace cannot be learned).
        """
        pressure = self._pressure.get(provider)
        if pressure is None and (provider is not None or create):
            limit = self.providers.get(provider) if provider is not None else None
            slots = (
                self._provider_slots.get(provider)
                if provider and limit and limit.adaptive
                else None
            )
            pressure = Pressure(
                limit.window if limit else 60.0, learn=provider is not None, slots=slots
            )
            self._pressure[provider] = pressure
        return pressure

    def max_rate_limit_retries(self, provider: str | None) -> int:
        limit = self.providers.get(provider) if provider is not None else None
        return (limit or _DEFAULT_PROVIDER).max_rate_limit_retries

    def check_tokens(self, provider: str | None, tokens: int, who: str = "a call") -> None:
        """:raises ConfigurationError: ``tokens`` can never fit ``provider``'s tpm
        (``who`` names the node in the message)."""
        rate = self._rates.get(provider) if provider is not None else None
        tpm = rate.limit.tpm if rate is not None else None
        if tpm is not None and tokens > tpm:
            raise ConfigurationError(
                f"{who} estimates {tokens} tokens per call, which can never fit provider "
                f"{provider!r}'s tpm={tpm}: lower its estimated_tokens or raise the tpm"
            )

    def reserves_tokens(self, provider: str | None) -> bool:
        """Whether ``provider`` has a tokens/min limit (so node estimates matter)."""
        rate = self._rates.get(provider) if provider is not None else None
        return rate is not None and rate.limit.tpm is not None


_DEFAULT_PROVIDER = ProviderLimit()
