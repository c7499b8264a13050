"""One worker of a Ray batch: an async actor running many inputs' runs on its loop.

It gets the batch once (graph, start, options, a store it opens itself) and then
``run(index, state)`` per input, which is exactly what a local batch does for that
input (``batch._Runs.run_one``): with a store, a run the store knows is resumed, so
an input re-sent after its worker died replays what its journal holds.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..batch import _Runs
from ..errors import ShippingError
from ._shipping import StoreSpec, culprit, dumps, first_line, loads, open_store

__all__ = ["BatchPayload", "BatchWorker", "relink"]


@dataclass(frozen=True, slots=True)
class BatchPayload:
    """What every worker of one batch shares."""

    graph: Any
    start: Any
    batch_id: str
    store: StoreSpec | None
    cache: StoreSpec | None
    run_kwargs: dict[str, Any]


class BatchWorker:
    """Wrapped by ``ray.remote`` in ``RayBackend``; one instance per worker process."""

    def __init__(self, paths: list[str], data: bytes) -> None:
        # The driver's import path, after the worker's own, so a node class
        # pickled by reference (its module's name) imports here as it does there: a
        # test module, a script's folder. Folders this host lacks are skipped.
        for path in paths:
            if path not in sys.path and os.path.isdir(path):
                sys.path.append(path)
        payload: BatchPayload = loads(data)
        store = open_store(payload.store)
        kwargs = dict(payload.run_kwargs, cache=open_store(payload.cache))
        self._runs = _Runs(payload.graph, payload.start, payload.batch_id, store, kwargs)
        self._stores = [s for s in (store, kwargs["cache"]) if s is not None]

    async def run(self, index: int, state: Any) -> tuple[bool, Any]:
        """``(True, result)`` with the pickled ``RunResult``, or ``(False, chain)``:
        the input's error and its causes (``raise ... from``), which pickling drops
        and ``relink`` restores.

        The result is serialized here, so a field that cannot travel back is named
        by a ``ShippingError`` rather than lost in a Ray error.
        """
        try:
            result = await self._runs.run_one(index, state)
        except Exception as exc:  # noqa: BLE001 - the input's failure, kept by index
            return False, _chain(exc, index)
        try:
            return True, dumps(result)
        except Exception as exc:  # noqa: BLE001 - reported as this input's failure
            inner = culprit(result.state) or culprit(result)
            where = f" (state {inner})" if inner else ""
            error = ShippingError(
                f"input {index}'s result cannot be sent back from its worker{where}: "
                f"{first_line(exc)}; keep state fields and outputs plain data",
                what=f"input {index}",
            )
            return False, [error]

    async def close(self) -> None:
        """Give back this worker's leases and close its stores (before it is killed)."""
        limits = self._runs.run_kwargs.get("limits")
        detach = getattr(limits, "detach", None)
        if detach is not None:
            await detach()
        for store in self._stores:
            store.close()

    def ping(self) -> int:
        return os.getpid()


#: Causes sent back with an input's error, at most.
_MAX_CAUSES = 8


def _chain(exc: BaseException, index: int) -> list[BaseException]:
    """``exc`` and its explicit causes, each replaced by a ``ShippingError`` that
    says what it was if it cannot be pickled."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < _MAX_CAUSES:
        chain.append(_shippable(current, index))
        current = current.__cause__
    return chain


def _shippable(exc: BaseException, index: int) -> BaseException:
    try:
        dumps(exc)
    except Exception:  # noqa: BLE001 - replaced by an error that travels
        return ShippingError(
            f"input {index} failed with {type(exc).__name__}: {exc} (the exception itself "
            "cannot be sent back from its worker)",
            what=f"input {index}",
        )
    return exc


def relink(chain: list[BaseException]) -> BaseException:
    """The input's error with its causes linked again (on the driver)."""
    for error, cause in itertools.pairwise(chain):
        error.__cause__ = cause
    return chain[0]
