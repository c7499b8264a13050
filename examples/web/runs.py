"""Runs in the background, each with a bounded log of its events that any number
of clients can follow, from the start or from the last event they saw.

A run is a task that drains ``graph.iter(...)`` into a ``RunLog``; clients never
touch the generator, so a client that leaves (or is slow) neither stops nor slows
the run, and a client that connects late is replayed what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from lift_graph import GraphEvent, RunFinished

from .sse import error_text, event_fields, summary

__all__ = ["Message", "RunLog", "RunRegistry", "TooManyRuns"]

#: Builds a run's event stream given the execution id chosen for it.
EventSource = Callable[[str], AsyncGenerator[GraphEvent, None]]


class TooManyRuns(RuntimeError):
    """Every slot of the registry holds a run that is still going."""


@dataclass(frozen=True, slots=True)
class Message:
    """One event as sent: its sequence number, its kind, its fields as JSON text."""

    id: int
    event: str
    data: str


class RunLog:
    """The events of one run, numbered from 1, the latest ``max_events`` kept."""

    def __init__(self, execution_id: str, max_events: int) -> None:
        self.execution_id = execution_id
        self.status = "running"  # then "succeeded", "failed" or "cancelled"
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.followers = 0
        self.task: asyncio.Task[None] | None = None
        self._messages: deque[Message] = deque(maxlen=max_events)
        self._next_id = 1
        self._changed = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.status != "running"

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    @property
    def first_kept(self) -> int:
        """The id of the oldest event still kept (older ones were dropped)."""
        return self._messages[0].id if self._messages else self._next_id

    def add(self, event: str, fields: dict[str, Any]) -> None:
        data = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        self._messages.append(Message(self._next_id, event, data))
        self._next_id += 1
        self._wake()

    def finish(self, status: str, *, result: dict[str, Any] | None = None, error: str = "") -> None:
        self.status, self.result, self.error = status, result, error or None
        self._wake()

    def _wake(self) -> None:
        # Followers wait on the current event; a fresh one is for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    def since(self, after: int) -> list[Message]:
        """The kept messages with an id above ``after``."""
        skip = max(after + 1 - self.first_kept, 0)
        return list(itertools.islice(self._messages, skip, None))

    def snapshot(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "events": self.last_id,
            "followers": self.followers,
            "result": self.result,
            "error": self.error,
        }

    async def follow(self, after: int, keepalive: float) -> AsyncGenerator[Message | str, None]:
        """The messages after id ``after`` as they come, until the run has ended and
        all were given; a ``str`` (a comment to send) after ``keepalive`` idle seconds
        or where events were dropped before the client read them."""
        self.followers += 1
        try:
            while True:
                changed = self._changed  # taken first: a change after this wakes us
                if after + 1 < self.first_kept:
                    yield f"events {after + 1}..{self.first_kept - 1} were dropped"
                batch = self.since(after)
                for message in batch:
                    yield message
                    after = message.id
                if batch:
                    continue  # more may have come while the client was sent these
                if self.done:
                    return
                try:
                    await asyncio.wait_for(changed.wait(), keepalive)
                except TimeoutError:
                    yield "keep-alive"
        finally:
            self.followers -= 1


class RunRegistry:
    """Starts runs as tasks and keeps their logs: at most ``max_runs`` (the oldest
    finished ones make room), each with at most ``max_events`` events."""

    def __init__(self, *, max_runs: int = 100, max_events: int = 10_000) -> None:
        if max_runs < 1 or max_events < 1:
            raise ValueError(f"max_runs and max_events must be >= 1, got {max_runs}, {max_events}")
        self.max_runs = max_runs
        self.max_events = max_events
        self._runs: dict[str, RunLog] = {}

    def get(self, execution_id: str) -> RunLog | None:
        return self._runs.get(execution_id)

    def start(self, events: EventSource) -> RunLog:
        """Start ``events(execution_id)`` in a task; its events go to the log returned.

        :raises TooManyRuns: ``max_runs`` runs are still going.
        """
        self._make_room()
        log = RunLog(uuid.uuid4().hex, self.max_events)
        log.task = asyncio.create_task(self._drive(log, events), name=f"run {log.execution_id}")
        log.task.add_done_callback(lambda _: self._settle(log))
        self._runs[log.execution_id] = log
        return log

    def _make_room(self) -> None:
        finished = iter([log for log in self._runs.values() if log.done])  # oldest first
        while len(self._runs) >= self.max_runs:
            oldest = next(finished, None)
            if oldest is None:
                raise TooManyRuns(
                    f"{len(self._runs)} runs are still going (max_runs={self.max_runs}): "
                    "wait for one to finish, or cancel one with DELETE /runs/{id}"
                )
            del self._runs[oldest.execution_id]

    async def _drive(self, log: RunLog, events: EventSource) -> None:
        started = time.perf_counter()
        result: dict[str, Any] | None = None
        try:
            async with contextlib.aclosing(events(log.execution_id)) as stream:
                async for event in stream:
                    if event.kind == "run_started":
                        started = event.time
                    log.add(event.kind, event_fields(event, started))
                    if isinstance(event, RunFinished):
                        result = summary(event.result)
        except asyncio.CancelledError:
            self._settle(log, started)
            raise
        except Exception as exc:  # noqa: BLE001 - the run failed: its followers are told
            self._add_end(log, "run_failed", started, error_text(exc))
            log.finish("failed", error=error_text(exc))
        else:
            log.finish("succeeded", result=result)

    def _settle(self, log: RunLog, started: float | None = None) -> None:
        """End a log whose task was cancelled (perhaps before it ever ran)."""
        if not log.done:
            error = "the run was cancelled"
            self._add_end(log, "run_cancelled", started or time.perf_counter(), error)
            log.finish("cancelled", error=error)

    @staticmethod
    def _add_end(log: RunLog, kind: str, started: float, error: str) -> None:
        t = round(time.perf_counter() - started, 6)
        fields = {"kind": kind, "execution_id": log.execution_id, "t": t, "key": ""}
        log.add(kind, {**fields, "error": error})

    async def cancel(self, log: RunLog) -> None:
        """Cancel ``log``'s run and wait until it has stopped."""
        if log.task is not None and not log.task.done():
            log.task.cancel()
            await asyncio.wait([log.task])

    async def aclose(self) -> None:
        """Cancel every run still going and wait for them (at the app's shutdown)."""
        tasks = [log.task for log in self._runs.values() if log.task and not log.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
