"""Deterministic parallel helpers: a thread-pool fan-out and a bounded ``asyncio`` gather.

``run_parallel`` runs zero-argument thunks (sequentially or on a thread pool) and hands
their results to ``merge_fn`` in a fixed order, so the aggregate never depends on which
task finished first. ``gather_limited`` / ``par_all`` are the ``asyncio`` counterparts:
results come back in input order with at most ``limit`` awaitables in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from .errors import ConfigurationError, ParallelError, TaskError

__all__ = ["gather_limited", "par_all", "par_all_limit", "run_parallel"]

T = TypeVar("T")
R = TypeVar("R")
_Item = Callable[[], Awaitable[T]] | Awaitable[T]  # a factory or an awaitable


def _identity(index: int) -> int:
    return index


def _check_thunk(index: int, task: object) -> None:
    """Raise ``TypeError`` naming ``index`` if ``task`` cannot be called without arguments."""
    if not callable(task):
        raise TypeError(f"run_parallel: task {index} is not callable: {task!r}")
    try:
        signature = inspect.signature(task)
    except (TypeError, ValueError):
        return  # not introspectable (some builtins): just call it later
    try:
        signature.bind()
    except TypeError as exc:
        raise TypeError(
            f"run_parallel: task {index} must take no arguments, "
            f"but its signature is {signature} ({exc})"
        ) from None


def run_parallel(
    tasks: Sequence[Callable[[], T]],
    *,
    max_workers: int,
    merge_fn: Callable[[list[T]], R],
    order_key: Callable[[int], Any] | None = None,
) -> R:
    """Run every thunk in ``tasks`` and return ``merge_fn(results)``.

    ``results`` is ordered by ``(order_key(i), i)`` for submit index ``i`` (``order_key``
    defaults to the identity), whatever order the tasks finish in. Order keys must be
    mutually comparable; duplicate keys are broken by submit index.

    ``max_workers <= 1`` (0 and negatives included) runs the tasks in the calling thread,
    one after another in submit order, without a pool. Otherwise a ``ThreadPoolExecutor``
    with ``min(max_workers, len(tasks))`` threads runs them. ``tasks == []`` returns
    ``merge_fn([])``.

    Failure:
        * Before anything runs, a task that is not callable or that requires arguments
          raises ``TypeError`` naming its index (checked with ``inspect.signature``;
          tasks whose signature cannot be inspected are simply called). Order keys that
          raise or cannot be compared also fail here, before any task runs.
        * If tasks raise ``Exception``, every task still runs to completion; then
          ``ParallelError`` is raised with one ``TaskError(key, exc_type, message)`` per
          failure, sorted by ``(order_key, index)``, and ``__cause__`` set to the first
          one's exception. ``merge_fn`` is not called.
        * ``KeyboardInterrupt``, ``SystemExit`` and other non-``Exception`` errors are
          never wrapped: they propagate as they are.
    """
    tasks = list(tasks)
    for index, task in enumerate(tasks):
        _check_thunk(index, task)
    key_of = order_key if order_key is not None else _identity
    keys = [key_of(index) for index in range(len(tasks))]
    order = sorted(range(len(tasks)), key=lambda index: (keys[index], index))
    if not tasks:
        return merge_fn([])

    results: dict[int, T] = {}
    failures: dict[int, Exception] = {}
    if max_workers <= 1:
        for index, task in enumerate(tasks):
            try:
                results[index] = task()
            except Exception as exc:  # noqa: BLE001 - collected, re-raised in ParallelError
                failures[index] = exc
    else:
        pool = ThreadPoolExecutor(max_workers=min(max_workers, len(tasks)))
        try:
            futures = [pool.submit(task) for task in tasks]
            wait(futures)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for index, future in enumerate(futures):
            error = future.exception()
            if error is None:
                results[index] = future.result()
            elif isinstance(error, Exception):
                failures[index] = error
            else:
                raise error  # KeyboardInterrupt, SystemExit, ...: never swallowed

    if failures:
        failed = [index for index in order if index in failures]
        errors = [
            TaskError(
                key=keys[index],
                exc_type=type(failures[index]).__name__,
                message=str(failures[index]),
            )
            for index in failed
        ]
        raise ParallelError(errors) from failures[failed[0]]
    return merge_fn([results[index] for index in order])


def _close_if_coroutine(item: object) -> None:
    if inspect.iscoroutine(item):
        item.close()  # it will never be awaited: avoid the "never awaited" warning


async def gather_limited(
    aws: Iterable[_Item[T]],
    *,
    limit: int | None = None,
) -> list[T]:
    """Await coroutine factories (or awaitables) concurrently; return results in input order.

    Each item is either an awaitable or a zero-argument callable returning one (a
    "factory"; it is only called once a slot is free). At most ``limit`` items are in
    flight at once; ``limit=None`` means unlimited.

    Failure:
        * ``limit < 1`` raises ``ConfigurationError`` before anything starts.
        * With ``asyncio.TaskGroup`` semantics, the first failure cancels all other
          items and waits for them to finish (no task is left running); the failures
          are then raised as an ``ExceptionGroup``. Items that never started are not
          called, and coroutine objects among them are closed.
        * ``asyncio.CancelledError`` is never swallowed: cancelling the caller cancels
          every item and the cancellation propagates.
    """
    items = list(aws)
    if limit is not None and limit < 1:
        for item in items:
            _close_if_coroutine(item)
        raise ConfigurationError(f"gather_limited: limit must be >= 1, got {limit!r}")

    slots: contextlib.AbstractAsyncContextManager[Any] = (
        asyncio.Semaphore(limit) if limit is not None else contextlib.nullcontext()
    )
    results: dict[int, T] = {}
    failed = False  # set by the first failure, before the TaskGroup gets to cancel

    async def run_one(index: int, item: _Item[T]) -> None:
        nonlocal failed
        started = False
        try:
            async with slots:
                if failed:
                    return  # a slot freed by the failing item: start nothing new
                started = True
                awaitable = item if isinstance(item, Awaitable) else item()
                results[index] = await awaitable
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                failed = True
            raise
        finally:
            if not started:
                _close_if_coroutine(item)

    async with asyncio.TaskGroup() as group:
        for index, item in enumerate(items):
            group.create_task(run_one(index, item))
    return [results[index] for index in range(len(items))]


async def par_all(*aws: _Item[T]) -> list[T]:
    """``gather_limited(aws, limit=None)``: await everything concurrently, in input order.

    Fails like ``gather_limited``: the first failure cancels the rest and an
    ``ExceptionGroup`` is raised once nothing is left running.
    """
    return await gather_limited(aws, limit=None)


async def par_all_limit(limit: int, *aws: _Item[T]) -> list[T]:
    """``gather_limited(aws, limit=limit)``: at most ``limit`` in flight, input order.

    :raises ConfigurationError: ``limit < 1``.
    """
    return await gather_limited(aws, limit=limit)
