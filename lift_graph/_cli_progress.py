"""The progress display of ``lift-graph run`` / ``resume``: an event sink.

On a terminal it is a tqdm bar counting finished nodes, with how many run now and
how many failed; elsewhere (a pipe, CI logs) one plain line per node start, retry,
finish and failure. It also keeps every finished or failed node's record, so a
run that raises still gets its timing table.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from ._records import CANCELLED, NodeRecord
from .events import (
    ForkStarted,
    GraphEvent,
    JoinFinished,
    NodeFailed,
    NodeFinished,
    NodeRetry,
    NodeStarted,
)

__all__ = ["NodeProgress"]


class NodeProgress:
    """Called with each event of a run (``graph.run(..., _events=progress)``).

    ``show``: False keeps the records and shows nothing; ``bar``: a tqdm bar
    (default: on a terminal) rather than plain lines.
    """

    def __init__(self, stream: TextIO, *, show: bool = True, bar: bool | None = None) -> None:
        self.stream = stream
        self.show = show
        self.running: set[str] = set()
        self.records: dict[str, NodeRecord] = {}
        self._started: dict[str, NodeStarted] = {}
        self.finished = 0
        self.failed = 0
        #: The key of the first node that failed (where a failed run broke).
        self.failed_key: str | None = None
        self._bar: Any = None
        use_bar = stream.isatty() if bar is None else bar
        if show and use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=None, desc="nodes", unit="node", file=stream, leave=False)

    def __call__(self, event: GraphEvent) -> None:
        if isinstance(event, NodeStarted):
            self.running.add(event.key)
            self._started[event.key] = event
            retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            self._say(f"started  {event.key}{retry}")
        elif isinstance(event, NodeRetry):
            self.running.discard(event.key)
            self._say(f"retry    {event.key} in {event.delay:.2f} s: {_short(event.error)}")
        elif isinstance(event, NodeFinished):
            self._ended(event.key, event.record)
            self.finished += 1
            self._say(f"finished {event.key} {event.record.execution_time_ms:.1f} ms", step=True)
        elif isinstance(event, NodeFailed):
            self._ended(event.key, event.record)
            self.failed += 1
            if self.failed_key is None:
                self.failed_key = event.key
            self._say(f"failed   {event.key}: {_short(event.error)}", step=True)
        elif isinstance(event, ForkStarted):
            self._say(f"fork     {event.key}: {event.branches} branches, join {event.strategy}")
        elif isinstance(event, JoinFinished):
            # A race's losers are cancelled without an event of their own.
            prefix = event.key + "/"
            self.running = {k for k in self.running if not k.startswith(prefix)}
            self._say(f"join     {event.key}: {event.join.succeeded}/{event.join.total} succeeded")

    def all_records(self, ended: float | None = None) -> list[NodeRecord]:
        """The records seen, plus one ``cancelled`` record per node that started and
        never finished (a run that raised cancels them without an event)."""
        ended = time.perf_counter() if ended is None else ended
        cancelled = [
            NodeRecord(
                key,
                event.node,
                event.time,
                (ended - event.time) * 1000.0,
                event.attempt,
                CANCELLED,
                event.provider,
            )
            for key, event in self._started.items()
            if key not in self.records
        ]
        return [*self.records.values(), *cancelled]

    def _ended(self, key: str, record: NodeRecord | None) -> None:
        self.running.discard(key)
        if record is not None:
            self.records[key] = record

    def _say(self, line: str, *, step: bool = False) -> None:
        if not self.show:
            return
        status = f"running {len(self.running)}, done {self.finished}, failed {self.failed}"
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(1 if step else 0)
        else:
            print(f"  {line}  [{status}]", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(error: BaseException | None, width: int = 80) -> str:
    if error is None:
        return "error"
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= width else text[: width - 3] + "..."
