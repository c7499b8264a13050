"""The batch driver: pulls inputs lazily, runs each as a task, hands outcomes back.

Completion-driven, with no loop of its own: a run's done callback frees its slot
and admits the next input (pulling it from the source only then), so runs go on
while the consumer is busy with an earlier result. The consumer awaits
``next_outcome``, which wakes on those callbacks.

Bounds. At most ``limit`` runs are in flight. With a ``window`` (``imap``), input
``i`` is admitted only while ``i < next_to_yield + window``: everything admitted
and not yet handed over lies in that range, so a slow input 0 holds at most
``window`` finished results back, never an unbounded buffer.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any

from ._tasks import cancel_and_wait
from ._text import short_repr
from .errors import ConfigurationError

__all__ = ["Batcher", "Source"]

RunOne = Callable[[int, Any], Coroutine[Any, Any, Any]]

_END = object()


class Source:
    """``states`` pulled one item at a time: a sync or an async iterable.

    ``total`` is ``len(states)`` when it has one (for the progress bar), else None.

    :raises ConfigurationError: ``states`` is neither kind of iterable.
    """

    __slots__ = ("_aiter", "_iter", "total")

    def __init__(self, states: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._aiter: AsyncIterator[Any] | None = None
        self._iter: Iterator[Any] | None = None
        if isinstance(states, AsyncIterable):
            self._aiter = aiter(states)
        elif isinstance(states, Iterable):
            self._iter = iter(states)
        else:
            raise ConfigurationError(
                f"states must be an iterable or an async iterable of states, got "
                f"{short_repr(states)} of type {type(states).__name__}"
            )
        try:
            self.total: int | None = len(states)  # type: ignore[arg-type]
        except TypeError:
            self.total = None

    @property
    def is_async(self) -> bool:
        return self._aiter is not None

    def next(self) -> Any:
        """The next item of a sync source. :raises StopIteration: it is exhausted."""
        assert self._iter is not None
        return next(self._iter)

    async def anext(self) -> Any:
        """The next item of an async source, or ``_END``."""
        assert self._aiter is not None
        try:
            return await anext(self._aiter)
        except StopAsyncIteration:
            return _END


class Batcher:
    """The runs of one batch. Make it inside the loop; ``admit()`` starts it;
    ``aclose()`` (always, in a ``finally``) cancels and awaits whatever still runs.

    ``run_one(index, item)`` runs one input; its exception (an ``Exception``) is
    that input's outcome. Any other ``BaseException`` of a run, or an error raised
    by the source, is fatal: ``next_outcome`` raises it (the caller then closes).
    ``on_done(succeeded)`` is called as each input finishes (the progress bar).
    """

    def __init__(
        self,
        run_one: RunOne,
        source: Source,
        *,
        limit: int,
        window: int | None,
        on_done: Callable[[bool], None] | None = None,
    ) -> None:
        self._run_one = run_one
        self._source = source
        self._limit = limit
        self._window = window
        self._on_done = on_done
        self._loop = asyncio.get_running_loop()
        # Each run gets a copy of the caller's context variables (an LM set with
        # dspy.context, say); the source's pulls share one, as an `async for` would.
        self._context = contextvars.copy_context()
        self._pull_context = self._context.copy()
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._pull: asyncio.Task[Any] | None = None
        self._finished: dict[int, Any] = {}  # index -> outcome, in completion order
        self._wake = asyncio.Event()
        self._fatal: BaseException | None = None
        self._exhausted = False
        self._closed = False
        self.admitted = 0  # inputs pulled from the source and started
        self.next_to_yield = 0
        self.peak_running = 0

    # -- admission --------------------------------------------------------------
    def _may_admit(self) -> bool:
        return (
            not self._closed
            and not self._exhausted
            and self._fatal is None
            and self._pull is None
            and len(self._tasks) < self._limit
            and (self._window is None or self.admitted < self.next_to_yield + self._window)
        )

    def admit(self) -> None:
        """Start inputs while a slot (and the window) allows; pull each only then."""
        while self._may_admit():
            if self._source.is_async:
                # One pull at a time (an async iterator allows no more); the runs
                # already started go on while it waits for a slow item.
                self._pull = self._loop.create_task(
                    self._source.anext(), context=self._pull_context
                )
                self._pull.add_done_callback(self._on_pulled)
                return
            try:
                item = self._source.next()
            except StopIteration:
                self._stop()
                return
            except Exception as exc:  # noqa: BLE001 - the source failed: raised to the caller
                self._fail(exc)
                return
            self._launch(item)

    def _on_pulled(self, task: asyncio.Task[Any]) -> None:
        self._pull = None
        if self._closed:
            if not task.cancelled():
                task.exception()  # retrieved: nothing to report after a close
            return
        if task.cancelled():
            self._fail(asyncio.CancelledError("the batch's source was cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)
        elif task.result() is _END:
            self._stop()
        else:
            self._launch(task.result())
            self.admit()

    def _launch(self, item: Any) -> None:
        index = self.admitted
        self.admitted += 1
        task = self._loop.create_task(self._run_one(index, item), context=self._context.copy())
        self._tasks[index] = task
        self.peak_running = max(self.peak_running, len(self._tasks))
        task.add_done_callback(functools.partial(self._on_run_done, index))

    def _on_run_done(self, index: int, task: asyncio.Task[Any]) -> None:
        if self._closed:
            if not task.cancelled():
                task.exception()  # retrieved: the batch was closed, no one is told
            return
        del self._tasks[index]
        outcome: Any
        if task.cancelled():
            # Not by us (we only cancel on close): someone cancelled this run's task.
            outcome = asyncio.CancelledError(f"the run of input {index} was cancelled")
        else:
            exc = task.exception()
            outcome = task.result() if exc is None else exc
            if exc is not None and not isinstance(exc, Exception):
                self._fail(exc)  # KeyboardInterrupt, SystemExit: stop everything
                return
        self._finished[index] = outcome
        self._wake.set()
        self.admit()
        if self._on_done is not None:
            try:
                self._on_done(not isinstance(outcome, BaseException))
            except Exception as exc:  # noqa: BLE001 - a broken progress bar stops the batch
                self._fail(exc)

    def _stop(self) -> None:
        self._exhausted = True
        self._wake.set()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._wake.set()

    # -- handing over -----------------------------------------------------------
    def _take(self, ordered: bool) -> tuple[int, Any] | None:
        if ordered:
            if self.next_to_yield not in self._finished:
                return None
            index = self.next_to_yield
            self.next_to_yield += 1
            outcome = self._finished.pop(index)
            self.admit()  # the window moved on
            return index, outcome
        if not self._finished:
            return None
        index = next(iter(self._finished))
        return index, self._finished.pop(index)

    async def next_outcome(self, *, ordered: bool) -> tuple[int, Any] | None:
        """The next ``(index, RunResult | exception)``: in input order when
        ``ordered``, else in completion order. None once every input is handed over.

        :raises BaseException: the source's error, or a run's non-``Exception``
            error (``KeyboardInterrupt``); close the batcher then.
        """
        while True:
            if self._fatal is not None:
                raise self._fatal
            taken = self._take(ordered)
            if taken is not None:
                return taken
            if self._exhausted and not self._tasks and self._pull is None:
                return None
            # Callbacks run only while we await, so none is lost between the
            # checks above and this clear.
            self._wake.clear()
            await self._wake.wait()

    @property
    def held(self) -> int:
        """Inputs admitted and not handed over: running, or finished and waiting."""
        return len(self._tasks) + len(self._finished)

    async def aclose(self) -> None:
        """Cancel the source's pending pull and every run, and wait for them all.

        Runs that finished but were not handed over are dropped. If we are
        cancelled while waiting, we keep waiting, then re-raise (``cancel_and_wait``).
        """
        self._closed = True
        pending = list(self._tasks.values())
        if self._pull is not None:
            pending.append(self._pull)
        self._tasks.clear()
        await cancel_and_wait(pending)
