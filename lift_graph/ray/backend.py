"""``RayBackend``: the inputs of a batch run on a pool of Ray actors.

``graph.map(start, states, backend=RayBackend(num_workers=2))`` keeps everything a
local batch does on the driver (the lazy source, the bound on inputs in flight,
results in input order, errors by index, the progress bar, resuming by
``batch_id``) and sends each input's run to the least busy worker: an async actor
that runs up to ``concurrency`` of them at once on its own event loop. Ray places
the workers and restarts one that dies (``max_restarts``); the driver sends the
inputs it was running again, and with a store those resume from their journals,
so nodes that finished there are not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from .._config import check_count
from ..errors import ConfigurationError, ShippingError, WorkerLostError
from ..limits import Limits
from ._shipping import culprit, first_line, loads, pack, store_spec
from ._worker import BatchPayload, BatchWorker, relink
from .limits import RayLimits

if TYPE_CHECKING:
    from ..batch import _Runs
    from ..graph import RunResult

__all__ = ["RayBackend"]

_WorkerActor: Any = ray.remote(BatchWorker)

#: Seconds a worker may take to give back its leases when the batch closes.
_CLOSE_TIMEOUT = 10.0
#: Worker deaths an input may be running through before it fails on its own: an
#: input that kills its worker (memory, a native crash) must not kill them all.
_CRASHES_PER_INPUT = 2


class RayBackend:
    """Where a batch's inputs run: ``num_workers`` Ray actors, ``concurrency``
    inputs at once on each.

    The batch keeps at most ``num_workers * concurrency`` inputs in flight (unless
    ``graph.map`` is given a smaller ``max_concurrency``). ``max_restarts``: how
    often Ray may restart a worker that died; the inputs it was running are sent
    again (to another worker when there is one), and once it cannot restart, the
    other workers take its share. An input that was running each of the two times
    a worker died fails alone (``WorkerLostError``): it may be what kills them.
    ``actor_options`` go to Ray's
    ``.options()`` for each worker (``num_cpus``, ``resources``, ``runtime_env``...).
    Ray is started (``ray.init()``) if it is not running.

    Limits must be ``RayLimits`` (a ``Limits`` would be copied into each worker and
    hold per worker only); without any, the batch shares a ``RayLimits()``, so a
    429 on one worker pauses its provider on all of them.

    :raises ConfigurationError: a count that is not an int >= 1.
    """

    def __init__(
        self,
        num_workers: int = 2,
        *,
        concurrency: int = 32,
        max_restarts: int = 3,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_count("RayBackend.num_workers", num_workers)
        check_count("RayBackend.concurrency (inputs at once per worker)", concurrency)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigurationError(
                f"RayBackend.max_restarts must be an int >= 0, got {max_restarts!r}"
            )
        self.num_workers = num_workers
        self.concurrency = concurrency
        self.max_restarts = max_restarts
        self.actor_options = dict(actor_options or {})
        #: The worker actors of the batch running now (empty between batches).
        self.workers: list[Any] = []

    def __repr__(self) -> str:
        return (
            f"RayBackend(num_workers={self.num_workers}, concurrency={self.concurrency}, "
            f"max_restarts={self.max_restarts})"
        )

    @property
    def capacity(self) -> int:
        """Inputs in flight at once when ``graph.map`` gives no ``max_concurrency``."""
        return self.num_workers * self.concurrency

    def prepare(self, limits: Limits | None, tracer: Any) -> Limits:
        """The batch's limits (checked), before anything starts.

        :raises ConfigurationError: plain ``Limits``, or a tracer to ship.
        """
        if tracer not in (None, False):
            raise ConfigurationError(
                "tracer= cannot be sent to Ray workers: set up OpenTelemetry in each "
                "worker (Ray's runtime_env / worker_process_setup_hook); the workers' runs "
                "then use their global tracer provider"
            )
        if limits is None:
            # The batch's own: its actor goes when the batch ends (see _Pool.aclose).
            owned = RayLimits()
            owned._owned = True
            return owned
        if not isinstance(limits, RayLimits):
            raise ConfigurationError(
                f"{limits!r} would be copied into each Ray worker and hold per worker only: "
                "use lift_graph.ray.RayLimits(...) (same arguments), whose counters every "
                "worker shares"
            )
        return limits

    def _spawn(self, data: bytes) -> list[Any]:
        options = {
            "max_restarts": self.max_restarts,
            # Inputs a dying worker was running are sent again by the pool, which
            # counts how often each was there (Ray's own retries would not).
            "max_task_retries": 0,
            "max_concurrency": self.concurrency + 8,
            **self.actor_options,
        }
        # Ray keeps a restartable actor's constructor arguments: a worker it
        # restarts loads the same batch.
        actor = _WorkerActor.options(**options)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        return [actor.remote(paths, data) for _ in range(self.num_workers)]

    async def start(self, runs: _Runs) -> _Pool:
        """Start the workers with the batch; returns what runs each input.

        :raises ShippingError: a node, the start node, ``deps`` or a store cannot be
            sent to the workers, or the workers could not load the batch.
        """
        if not ray.is_initialized():
            ray.init()
        kwargs = dict(runs.run_kwargs)
        payload = BatchPayload(
            graph=runs.graph,
            start=runs.start,
            batch_id=runs.batch_id,
            store=store_spec(runs.store, "store"),
            cache=store_spec(kwargs.pop("cache"), "cache"),
            run_kwargs=dict(kwargs, tracer=None),
        )
        # Bytes, which a worker loads once it has the driver's import path.
        data = pack(payload, runs.graph, runs.start, kwargs["deps"])
        limits = kwargs["limits"]
        owned = limits if isinstance(limits, RayLimits) and limits._owned else None
        pool = _Pool(owned)
        try:
            if isinstance(limits, RayLimits):
                await limits.aconnect()  # owned by the driver: it outlives every worker
            workers = pool.staff(self._spawn(data))
            await asyncio.gather(*(w.ping.remote() for w in workers))
        except RayActorError as exc:
            await pool.aclose()
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            cause = lines[-1].strip() if lines else type(exc).__name__
            raise ShippingError(
                f"the Ray workers could not load the batch of graph {runs.graph.name!r} "
                f"({cause}); a node module that is not importable on the workers is the "
                "usual cause (ship it with runtime_env={'py_modules': [...]} in "
                "actor_options)",
                what="the batch",
            ) from exc
        except BaseException:
            await pool.aclose()  # cancelled while starting, or Ray refused an option
            raise
        self.workers = workers
        pool.on_close = self.workers.clear
        return pool


class _Pool:
    """The workers of one batch: each input goes to the least busy live one."""

    def __init__(self, owned: RayLimits | None) -> None:
        #: The batch's own limits (none were given): shut down with the pool.
        self._owned = owned
        self._workers: list[Any] = []
        self._load: list[int] = []
        self._dead: set[int] = set()
        self.on_close: Any = None

    def staff(self, workers: list[Any]) -> list[Any]:
        self._workers = workers
        self._load = [0] * len(workers)
        return workers

    def _pick(self, index: int, avoid: int | None) -> int:
        """The least busy live worker, other than ``avoid`` if there is another."""
        live = [i for i in range(len(self._workers)) if i not in self._dead]
        if not live:
            raise WorkerLostError(
                f"input {index} has no worker left to run on: every Ray worker died more "
                "often than max_restarts allows",
                index=index,
            )
        others = [i for i in live if i != avoid] or live
        return min(others, key=lambda i: self._load[i])

    async def run_one(self, index: int, state: Any) -> RunResult[Any]:
        """Run input ``index`` on a worker; on another one if its worker is gone.

        :raises ShippingError: the state cannot be sent (names the field).
        :raises WorkerLostError: no worker is left.
        """
        crashes, avoid = 0, None
        while True:
            slot = self._pick(index, avoid)
            try:
                ref = self._workers[slot].run.remote(index, state)
            except Exception as exc:
                inner = culprit(state)
                where = f" ({inner})" if inner else ""
                raise ShippingError(
                    f"the state of input {index}{where} cannot be sent to a Ray worker: "
                    f"{first_line(exc)}; keep state fields plain data",
                    what=f"input {index}",
                ) from exc
            self._load[slot] += 1
            try:
                ok, value = await ref
            except asyncio.CancelledError:
                ray.cancel(ref)
                raise
            except RayActorError as exc:
                # The worker died while running this input. Unavailable: Ray restarts
                # it; died: its restarts are spent, the other workers go on.
                if not isinstance(exc, ActorUnavailableError):
                    self._dead.add(slot)
                crashes, avoid = crashes + 1, slot
                if crashes >= _CRASHES_PER_INPUT:
                    raise WorkerLostError(
                        f"input {index} was running on a Ray worker each of the {crashes} "
                        "times one died: it is not sent again, as it may be what kills "
                        "them (memory, a native crash); run it alone to see",
                        index=index,
                    ) from exc
                continue
            finally:
                self._load[slot] -= 1
            if not ok:
                raise relink(value)
            return loads(value)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Let each live worker give back its leases, then stop them all."""
        live = [w for i, w in enumerate(self._workers) if i not in self._dead]
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(w.close.remote() for w in live), return_exceptions=True),
                _CLOSE_TIMEOUT,
            )
        for worker in self._workers:
            with contextlib.suppress(Exception):
                ray.kill(worker)
        if self._owned is not None:
            self._owned.shutdown()
        if self.on_close is not None:
            self.on_close()
