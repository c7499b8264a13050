"""Deterministic parallel helpers: a thread-pool fan-out and a bounded ``asyncio`` gather.

``run_parallel`` runs ``(key, thunk)`` tasks (sequentially or on a thread pool) and hands
the ``(key, result)`` pairs to ``merge_fn`` sorted by ``order_key(key)``, so the aggregate
never depends on which task finished first. ``gather_limited`` / ``par_all`` are the
``asyncio`` counterparts: results come back in input order with at most ``limit``
awaitables in flight.
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
K = TypeVar("K")
R = TypeVar("R")
A = TypeVar("A")
_Item = Callable[[], Awaitable[T]] | Awaitable[T]  # a factory or an awaitable


def _check_task(index: int, task: object) -> tuple[Any, Callable[[], Any]]:
    """Unpack one ``(key, thunk)`` pair; ``TypeError`` naming the task if it is unusable."""
    if not isinstance(task, (tuple, list)) or len(task) != 2:
        raise TypeError(
            f"run_parallel: task {index} must be a (key, thunk) pair, got {task!r}; "
            "write tasks as [(key, lambda k=key: work(k)), ...]"
        )
    key, thunk = task
    if not callable(thunk):
        raise TypeError(
            f"run_parallel: the thunk of task {index} (key {key!r}) is not callable: {thunk!r}"
        )
    try:
        signature = inspect.signature(thunk)
    except (TypeError, ValueError):
        return key, thunk  # not introspectable (some builtins): just call it later
    try:
        signature.bind()
    except TypeError as exc:
        raise TypeError(
            f"run_parallel: the thunk of task {index} (key {key!r}) must take no arguments, "
            f"but its signature is {signature} ({exc}); wrap it: lambda k={key!r}: fn(k)"
        ) from None
    return key, thunk


def _submit_order(keys: Sequence[Any], order_key: Callable[[Any], Any]) -> list[int]:
    """Task indexes sorted by ``(order_key(key), index)``: a stable sort by order key."""
    ranks = [order_key(key) for key in keys]
    try:
        return sorted(range(len(keys)), key=lambda index: (ranks[index], index))
    except TypeError as exc:
        raise TypeError(
            f"run_parallel: order_key must map every task key to mutually comparable "
            f"values ({exc}); return tuples of one type, e.g. order_key=lambda k: (k,)"
        ) from exc


def _run_all(
    thunks: Sequence[Callable[[], R]], max_workers: int
) -> tuple[dict[int, R], dict[int, Exception]]:
    """Run every thunk to completion; results and ``Exception`` failures by submit index.

    ``KeyboardInterrupt``, ``SystemExit`` and other non-``Exception`` errors propagate.
    """
    results: dict[int, R] = {}
    failures: dict[int, Exception] = {}
    if max_workers <= 1:
        for index, thunk in enumerate(thunks):
            try:
                results[index] = thunk()
            except Exception as exc:  # noqa: BLE001 - collected, re-raised in ParallelError
                failures[index] = exc
        return results, failures
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(thunks)))
    try:
        futures = [pool.submit(thunk) for thunk in thunks]
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
    return results, failures


def run_parallel(
    tasks: Sequence[tuple[K, Callable[[], R]]],
    *,
    max_workers: int,
    merge_fn: Callable[[list[tuple[K, R]]], A],
    order_key: Callable[[K], Any],
) -> A:
    """Run every ``(key, thunk)`` task and return ``merge_fn`` of the sorted results.

    ``merge_fn`` receives the list of ``(key, result)`` pairs sorted by
    ``order_key(key)``, ties broken by submit index, whatever order the tasks finished
    in. ``order_key`` maps a task *key* to a total-orderable value (use tuples for
    multi-field keys).

    ``max_workers <= 1`` (0 and negatives included) is the sequential identity path:
    the thunks run in the calling thread in submit order, then the results are stably
    sorted. Otherwise a ``ThreadPoolExecutor`` with ``min(max_workers, len(tasks))``
    threads runs them. ``tasks == []`` returns ``merge_fn([])`` (called once).

    Failure:
        * Before anything runs: a task that is not a ``(key, thunk)`` pair raises
          ``TypeError`` naming its index; a thunk that is not callable or requires
          arguments raises ``TypeError`` naming its key (checked with
          ``inspect.signature``; thunks whose signature cannot be inspected are simply
          called). ``order_key`` values that cannot be compared raise ``TypeError``.
        * If thunks raise ``Exception``, every task still runs to completion; then
          ``ParallelError`` is raised with one ``TaskError(key, exc_type, message)``
          per failure (``key`` is the task's key), sorted by ``order_key(key)`` then
          submit index, and ``__cause__`` set to the first one's exception.
          ``merge_fn`` is not called.
        * ``KeyboardInterrupt``, ``SystemExit`` and other non-``Exception`` errors are
          never wrapped: they propagate as they are.
    """
    pairs = [_check_task(index, task) for index, task in enumerate(tasks)]
    keys = [key for key, _ in pairs]
    order = _submit_order(keys, order_key)
    if not pairs:
        return merge_fn([])

    results, failures = _run_all([thunk for _, thunk in pairs], max_workers)
    if failures:
        failed = [index for index in order if index in failures]
        errors = [
            TaskError(keys[index], type(failures[index]).__name__, str(failures[index]))
            for index in failed
        ]
        raise ParallelError(errors) from failures[failed[0]]
    return merge_fn([(keys[index], results[index]) for index in order])


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
