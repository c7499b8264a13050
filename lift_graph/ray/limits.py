"""``RayLimits``: one ``Limits`` for a whole Ray cluster.

The counters live in one named actor (``_limiter.LimiterCore``); each process
holding a ``RayLimits`` (the driver, every worker) is a client of it. A node's
permit is a lease from that actor, so a provider's concurrency, rpm and tpm
windows and its 429 pauses hold across every worker.

What one permit costs, and how it is kept low:

- a node with no provider, under no global ``max_concurrency``, takes no lease:
  it runs on local counters (so a 429 it reports pauses its own process only);
- acquires waiting at once for the same provider share one actor call, which waits
  for the first permit and takes as many more as are free (``lease_batch``);
- releases and rate-limit reports are sent without waiting, all those of one
  event-loop turn together, with the next acquire call when there is one; only a
  429 waits for the actor (to learn the pause).

A grant is counted in the rpm / tpm windows from when the actor made it; one used
more than ``margin / 2`` later is reported and counted from its use instead
(``LimiterCore._late``), so the windows hold at the provider when workers are busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray

from .._config import check_count, check_number
from .._counters import Slots
from .._rate_signals import RateSignal
from ..clock import Clock, MonotonicClock
from ..errors import ConfigurationError, WorkerLostError
from ..limits import Limits, Permit, ProviderLimit, ProviderStatus
from ._limiter import LimiterConfig, LimiterCore, LimiterGauges

__all__ = ["RayLimits"]

#: Acquire calls in flight at once per (provider, tokens): more overlap round trips.
_CALLS_PER_LANE = 4
#: Flushes remembered before those already applied are dropped.
_UNACKED_CHECK = 256

_LimiterActor: Any = ray.remote(LimiterCore)


@dataclass(slots=True)
class _Leased(Permit):
    """A permit lent by the limiter actor."""

    lease: int = 0


class _Lane:
    """Acquires waiting for one (provider, tokens), and the calls asking for them."""

    __slots__ = ("waiters", "asked", "calls")

    def __init__(self) -> None:
        self.waiters: deque[asyncio.Future[tuple[int, float]]] = deque()
        self.asked = 0
        self.calls = 0


class RayLimits(Limits):
    """``Limits`` whose counters every Ray worker shares (``from lift_graph.ray``).

    Takes ``Limits``' arguments; the counters live in one named actor, created by
    the first process that uses them (make that the driver: an actor dies with
    the process that created it). Pass the object to ``graph.map(...,
    backend=RayBackend(...))`` or to any run on any worker: copies sent to other
    processes attach to the same actor. ``name`` makes the actor findable by other
    jobs on the cluster (``RayLimits(..., name="openai-team")``): they then share
    the limits, and must give the same arguments.

    ``margin`` (seconds) widens every rpm / tpm window: a grant reaches the
    provider a little after the actor made it, by a delay that differs between
    workers, so without it two calls granted a window apart could land inside one
    window at the provider. ``lease_ttl``: a client silent for that long (a dead
    worker) has its permits taken back; live clients renew every third of it.
    ``lease_batch``: most permits one actor call may grant.

    Only the real clock works across processes (``clock`` must be None or a
    ``MonotonicClock``).

    :raises ConfigurationError: as ``Limits``, or a bad ``margin`` / ``lease_ttl`` /
        ``lease_batch`` / ``clock``.
    """

    def __init__(
        self,
        max_concurrency: int | None = None,
        providers: Mapping[str, ProviderLimit] | None = None,
        *,
        clock: Clock | None = None,
        strict: bool = False,
        name: str | None = None,
        namespace: str = "lift_graph",
        margin: float = 0.05,
        lease_ttl: float = 30.0,
        lease_batch: int = 32,
    ) -> None:
        super().__init__(max_concurrency, providers, clock=clock, strict=strict)
        if clock is not None and not isinstance(clock, MonotonicClock):
            raise ConfigurationError(
                f"RayLimits keeps time in its actor, on the real clock: clock={clock!r} "
                "cannot be shared by processes; leave clock=None (test with Limits and "
                "FakeClock in one process)"
            )
        check_number("RayLimits.margin (seconds)", margin)
        check_number("RayLimits.lease_ttl (seconds)", lease_ttl, strictly_above=True)
        check_count("RayLimits.lease_batch", lease_batch)
        for what, text in (("name", name), ("namespace", namespace)):
            if text is not None and (not isinstance(text, str) or not text):
                raise ConfigurationError(f"RayLimits.{what} must be a non-empty str, got {text!r}")
        self.name = name or f"lift_graph-limits-{uuid.uuid4().hex[:16]}"
        self.namespace = namespace
        self.margin = float(margin)
        self.lease_ttl = float(lease_ttl)
        self.lease_batch = lease_batch
        #: Made by a RayBackend for one batch (none was given): shut down with it.
        self._owned = False
        self._attach()

    def _attach(self) -> None:
        """Per-process client state (also after unpickling in another process)."""
        self._actor: Any = None
        self._client = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lanes: dict[tuple[str | None, int], _Lane] = {}
        self._lane_loop: asyncio.AbstractEventLoop | None = None
        self._ops: list[tuple[Any, ...]] = []
        self._flushing = False
        #: Flushes sent without waiting and maybe not applied yet: the actor may run
        #: an async actor's calls out of order, so ``detach`` waits for them.
        self._unacked: list[Any] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._peak = 0

    def __reduce__(self) -> tuple[Any, ...]:
        # Another process gets the arguments and the actor's name, never the
        # counters: it attaches to the same actor.
        return (_restore, (self._arguments(),))

    def _arguments(self) -> dict[str, Any]:
        return {
            "max_concurrency": self.max_concurrency,
            "providers": dict(self.providers),
            "strict": self.strict,
            "name": self.name,
            "namespace": self.namespace,
            "margin": self.margin,
            "lease_ttl": self.lease_ttl,
            "lease_batch": self.lease_batch,
        }

    def __repr__(self) -> str:
        return (
            f"RayLimits(name={self.name!r}, max_concurrency={self.max_concurrency}, "
            f"providers={self.providers})"
        )

    # -- the actor ----------------------------------------------------------------
    def _config(self) -> LimiterConfig:
        return LimiterConfig(
            self.max_concurrency, dict(self.providers), self.margin, self.lease_ttl
        )

    def connect(self) -> Any:
        """The limiter actor's handle: found by name, or created (``ray.init`` first
        if Ray is not running), and checked to enforce these arguments. Call it in the
        driver (the RayBackend does): the actor lives as long as its creator.

        :raises ConfigurationError: an actor of that name enforces other limits.
        """
        if self._actor is None:
            actor = self._create()
            self._check(ray.get(actor.config_of.remote()))
            self._actor = actor
        return self._actor

    async def aconnect(self) -> Any:
        """``connect`` without blocking the event loop."""
        if self._actor is None:
            actor = self._create()
            self._check(await actor.config_of.remote())
            self._actor = actor
        return self._actor

    def _create(self) -> Any:
        if not ray.is_initialized():
            ray.init()
        return _LimiterActor.options(
            name=self.name,
            namespace=self.namespace,
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=100_000,
            max_restarts=0,
        ).remote(self._config())

    def _check(self, theirs: LimiterConfig) -> None:
        if theirs != self._config():
            raise ConfigurationError(
                f"a limiter actor named {self.name!r} already enforces {theirs}, not "
                f"{self._config()}: give these limits another name, or the same arguments"
            )

    def _handle(self) -> Any:
        """The actor, found or created without waiting (``connect`` checks it)."""
        if self._actor is None:
            self._actor = self._create()
        return self._actor

    def _local(self, provider: str | None) -> bool:
        """Whether a node on ``provider`` runs without a lease (nothing to share)."""
        return provider is None and self.max_concurrency is None

    # -- the Limiter protocol ------------------------------------------------------
    async def acquire(
        self, provider: str | None, run_slots: Slots | None = None, tokens: int = 0
    ) -> Permit:
        """A lease for ``provider``'s node from the shared actor, then the run's own
        slot (a node holding a lease waits only for nodes that are running)."""
        if self._local(provider):
            return await super().acquire(provider, run_slots, tokens)
        self.check_tokens(provider, tokens)
        lease, granted_at = await self._lease(provider, tokens)
        if run_slots is not None:
            try:
                await run_slots.acquire()
            except BaseException:
                self._send(("release", lease, 0))
                raise
        # The windows counted this call from its grant: if it starts much later, the
        # actor counts it from now (see LimiterCore._late).
        late = time.time() - granted_at
        if late > self.margin / 2:
            self._send(("late", lease, late))
        return _Leased(provider, run_slots, False, False, lease=lease)

    def release(self, permit: Permit, tokens: int = 0) -> None:
        if not isinstance(permit, _Leased):
            super().release(permit, tokens)
            return
        if permit.run_slots is not None:
            permit.run_slots.release()
        self._send(("release", permit.lease, tokens))

    def reported(self, permit: Permit, signal: RateSignal) -> None:
        if not isinstance(permit, _Leased):
            super().reported(permit, signal)
            return
        self._send(("reported", permit.lease, signal))

    async def throttle(
        self, permit: Permit | None, provider: str | None, signal: RateSignal, rng: random.Random
    ) -> float:
        """The provider refused: the actor pauses it for every worker; returns the pause."""
        if self._local(provider) and not isinstance(permit, _Leased):
            return await super().throttle(permit, provider, signal, rng)
        await self._flush_now()  # this client's earlier reports land first
        lease = permit.lease if isinstance(permit, _Leased) else None
        pause = await self._call("throttle", lease, provider, signal, rng.random())
        return float(pause)

    def rate_limited(
        self, permit: Permit | None, provider: str | None, signal: RateSignal, rng: random.Random
    ) -> float:
        """Synchronous callers cannot wait for the actor: the pause is decided there,
        and this returns the provider's own hint (0.0 without one). Runs use
        ``throttle``."""
        if self._local(provider) and not isinstance(permit, _Leased):
            return super().rate_limited(permit, provider, signal, rng)
        lease = permit.lease if isinstance(permit, _Leased) else None
        self._handle().throttle.remote(self._client, lease, provider, signal, rng.random())
        return signal.retry_after or 0.0

    async def wait_out(self, provider: str | None) -> None:
        if self._local(provider):
            await super().wait_out(provider)
            return
        while (wait := float(await self._call("wait_time", provider))) > 0:
            await asyncio.sleep(wait)

    # -- gauges ----------------------------------------------------------------------
    def gauges(self) -> LimiterGauges:
        """The shared counters now (a blocking call to the actor).

        Not for a worker's event loop: there the sync gauges (``peak``...) return
        what the actor last said instead.
        """
        return ray.get(self._handle().gauges.remote())  # type: ignore[no-any-return]

    def _live(self) -> LimiterGauges | None:
        if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is not None:
            return None  # no actor to ask (Ray not started), or a worker's loop to keep
        return self.gauges()

    @property
    def peak(self) -> int:
        """Most permits lent at once under ``max_concurrency`` (0 if unlimited).
        In a worker: the figure of the last grant it received."""
        live = self._live()
        return self._peak if live is None else live.peak

    def provider_peak(self, provider: str) -> int:
        live = self._live()
        return 0 if live is None else live.provider_peaks.get(provider, 0)

    def in_flight(self, provider: str | None = None) -> int:
        live = self._live()
        return 0 if live is None else live.in_flight.get(provider, 0)

    def tokens_in_window(self, provider: str) -> int:
        live = self._live()
        return 0 if live is None else live.tokens_in_window.get(provider, 0)

    def status(self, provider: str | None) -> ProviderStatus:
        live = self._live()
        status = None if live is None else live.status.get(provider)
        return status if status is not None else super().status(provider)

    async def detach(self) -> None:
        """Give back every lease this process holds (a worker about to stop)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._actor is None:
            return
        await self._flush_now()
        if self._unacked:
            unacked, self._unacked = self._unacked, []
            await asyncio.gather(*unacked, return_exceptions=True)
        await self._call("forget")

    def shutdown(self) -> None:
        """Kill the limiter actor (every copy of these limits stops working)."""
        if self._actor is None:
            with contextlib.suppress(ValueError):
                self._actor = ray.get_actor(self.name, namespace=self.namespace)
        if self._actor is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to stop
                ray.get(self._actor.stop.remote(), timeout=5)
            ray.kill(self._actor)
            self._actor = None

    # -- leases: batched acquires ------------------------------------------------------
    async def _lease(self, provider: str | None, tokens: int) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        if self._lane_loop is not loop:
            if any(lane.waiters for lane in self._lanes.values()):
                raise ConfigurationError(
                    f"{self!r} is in use on another event loop of this process: share one "
                    "RayLimits object between runs of one event loop per process"
                )
            self._lanes.clear()
            self._lane_loop = loop
        self._beat(loop)
        lane = self._lanes.setdefault((provider, tokens), _Lane())
        waiter: asyncio.Future[tuple[int, float]] = loop.create_future()
        lane.waiters.append(waiter)
        self._pump(provider, tokens, lane)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._send(("release", waiter.result()[0], 0))  # granted as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    lane.waiters.remove(waiter)
            raise

    def _pump(self, provider: str | None, tokens: int, lane: _Lane) -> None:
        while lane.calls < _CALLS_PER_LANE and len(lane.waiters) > lane.asked:
            count = min(len(lane.waiters) - lane.asked, self.lease_batch)
            lane.asked += count
            lane.calls += 1
            # Releases waiting for their flush ride along, applied first.
            ops, self._ops = self._ops, []
            ref = self._handle().acquire.remote(self._client, provider, tokens, count, ops)
            self._spawn(self._granted(provider, tokens, lane, ref, count))

    async def _granted(
        self, provider: str | None, tokens: int, lane: _Lane, ref: Any, count: int
    ) -> None:
        try:
            leases, peak, granted_at = await ref
        except Exception as exc:  # noqa: BLE001 - the actor is gone: every waiter learns why
            error = WorkerLostError(
                f"the limiter actor {self.name!r} failed or died ({type(exc).__name__}: "
                f"{exc}); these RayLimits cannot grant permits any more"
            )
            while lane.waiters:
                waiter = lane.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(error)
            return
        finally:
            lane.asked -= count
            lane.calls -= 1
        self._peak = max(self._peak, peak)
        for lease in leases:
            while lane.waiters and lane.waiters[0].done():
                lane.waiters.popleft()
            if lane.waiters:
                lane.waiters.popleft().set_result((lease, granted_at))
            else:
                self._send(("release", lease, 0))  # its waiter was cancelled meanwhile
        self._pump(provider, tokens, lane)

    # -- releases and reports: sent in batches, without waiting -------------------------
    def _send(self, op: tuple[Any, ...]) -> None:
        self._ops.append(op)
        if self._flushing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flushing = True
        loop.call_soon(self._flush)

    def _flush(self) -> Any:
        self._flushing = False
        if not self._ops:
            return None
        ops, self._ops = self._ops, []
        ref = self._handle().apply.remote(self._client, ops)
        self._unacked.append(ref)
        if len(self._unacked) >= _UNACKED_CHECK:
            # Forget those applied already (a check that does not wait).
            _, self._unacked = ray.wait(
                self._unacked, num_returns=len(self._unacked), timeout=0, fetch_local=False
            )
        return ref

    async def _flush_now(self) -> None:
        ref = self._flush()
        if ref is not None:
            await ref

    async def _call(self, method: str, *args: Any) -> Any:
        return await getattr(self._handle(), method).remote(self._client, *args)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        """Renew this client's leases every third of ``lease_ttl``, on this loop."""
        beat = self._heartbeat
        if beat is not None and not beat.done() and beat.get_loop() is loop:
            return
        self._heartbeat = loop.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            with contextlib.suppress(Exception):  # a missed beat is retried next time
                await self._call("renew")


def _restore(arguments: dict[str, Any]) -> RayLimits:
    return RayLimits(**arguments)
