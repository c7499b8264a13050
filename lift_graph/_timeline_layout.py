"""A run's timeline as plain data: lanes, bars, waits and marks, in ms from the run's start.

Pure: built from ``NodeRecord`` values alone, so what the picture shows can be
checked against the records without drawing anything.

A *lane* is one path: the main path (key prefix ``""``), a fork branch or a
pipeline member (prefix ``f"{fork key}/{branch key}/"``, see ``Scheduler._fork``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._records import NodeRecord, key_order, key_path

__all__ = ["Bar", "Lane", "Layout", "Mark", "Wait", "layout"]

#: Waits shorter than this (ms) are the runner's own bookkeeping, not a wait for a slot.
MIN_WAIT_MS = 0.5

#: Outcomes of an attempt that was not the node's last (see ``NodeRecord.attempt_log``).
_GAP_AFTER = {"retry": "backoff", "rate_limited": "rate_limit"}


@dataclass(frozen=True, slots=True)
class Lane:
    """One path of the run: ``path`` is its key prefix (``""`` for the main path)."""

    index: int
    path: str
    label: str
    depth: int
    #: Key of the node whose fork (or pipeline) started this path; None for the main path.
    fork: str | None


@dataclass(frozen=True, slots=True)
class Bar:
    """One attempt of one node execution.

    ``status`` is the record's ``status`` for its last attempt, ``"retry"`` or
    ``"rate_limited"`` for an earlier one, or ``"replayed"`` for a node answered
    from the journal or the cache (zero length: it did not run).
    """

    lane: int
    key: str
    node: str
    provider: str | None
    attempt: int
    start_ms: float
    end_ms: float
    status: str
    #: The record's ``execution_time_ms`` (the original run's, for a replayed node).
    record_ms: float

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class Wait:
    """Time a node was ready but not running.

    ``kind``: ``"queued"`` (before its first attempt: a slot, a provider's limits),
    ``"backoff"`` (after a failed attempt, before the retry) or ``"rate_limit"``
    (after a 429, the provider's pause).
    """

    lane: int
    key: str
    kind: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class Mark:
    """A fork (at the end of node ``key``) or its join (where its path goes on)."""

    kind: str
    key: str
    lane: int
    #: The lanes the fork started, in branch order.
    branches: tuple[int, ...]
    at_ms: float


@dataclass(frozen=True, slots=True)
class Layout:
    lanes: tuple[Lane, ...]
    bars: tuple[Bar, ...]
    waits: tuple[Wait, ...]
    marks: tuple[Mark, ...]
    duration_ms: float


def _fork_of(path: str) -> tuple[str, str]:
    """``(fork key, branch key)`` of a non-empty lane path."""
    fork, _, branch = path[:-1].rpartition("/")
    return fork, branch


def _end(record: NodeRecord) -> float:
    """When the execution ended (``perf_counter``)."""
    if record.attempt_log:
        return record.attempt_log[-1][1]
    return record.started_at + record.execution_time_ms / 1000.0


def _began(record: NodeRecord) -> tuple[float, str]:
    return record.started_at, record.key


def _order_lanes(by_path: dict[str, list[NodeRecord]]) -> list[str]:
    """Lane paths: each path, then the forks it started in step order, each fork's
    branches in launch order (branch order), each followed by its own forks."""
    for path in list(by_path):  # a path's ancestors get lanes even without records
        while path:
            path = key_path(_fork_of(path)[0])
            by_path.setdefault(path, [])
    # parent path -> fork key -> the branch paths it started
    children: dict[str, dict[str, list[str]]] = {}
    for path in by_path:
        if path:
            fork = _fork_of(path)[0]
            children.setdefault(key_path(fork), {}).setdefault(fork, []).append(path)

    def launched(path: str) -> tuple[float, str]:
        return min((r.queued_at or r.started_at for r in by_path[path]), default=0.0), path

    ordered: list[str] = []
    stack = [""]
    while stack:
        path = stack.pop()
        ordered.append(path)
        forks = children.get(path, {})
        for fork in sorted(forks, key=key_order, reverse=True):
            stack.extend(sorted(forks[fork], key=launched, reverse=True))
    return ordered


def _lanes(ordered: Sequence[str], by_path: dict[str, list[NodeRecord]]) -> list[Lane]:
    lanes = []
    for i, path in enumerate(ordered):
        if not path:
            lanes.append(Lane(i, "", "main", 0, None))
            continue
        fork, branch = _fork_of(path)
        first = min(by_path[path], key=_began, default=None)
        label = branch if first is None else f"{branch}: {first.node}"
        lanes.append(Lane(i, path, label, path.count("/") // 2, fork))
    return lanes


def _attempts(record: NodeRecord, lane: int, origin: float) -> tuple[list[Bar], list[Wait]]:
    """The bars of one record's attempts and the waits before and between them."""

    def at(t: float) -> float:
        return (t - origin) * 1000.0

    key, node, provider, ms = record.key, record.node, record.provider, record.execution_time_ms
    bars: list[Bar] = []
    waits: list[Wait] = []
    log = record.attempt_log
    replayed = bool(log) and log[-1][2] == "replayed"
    queued = record.queued_at
    if queued is not None and not replayed and at(record.started_at) - at(queued) >= MIN_WAIT_MS:
        waits.append(Wait(lane, key, "queued", at(queued), at(record.started_at)))
    if not log:
        start = at(record.started_at)
        status = record.status
        bars.append(Bar(lane, key, node, provider, record.attempts, start, start + ms, status, ms))
        return bars, waits
    last = len(log) - 1
    for i, (began, ended, outcome) in enumerate(log):
        status = outcome if i < last or replayed else record.status
        number = record.attempts if replayed else i + 1
        bars.append(Bar(lane, key, node, provider, number, at(began), at(ended), status, ms))
        if i < last:
            kind = _GAP_AFTER.get(outcome, "backoff")
            waits.append(Wait(lane, key, kind, at(ended), at(log[i + 1][0])))
    return bars, waits


def _marks(
    lanes: Sequence[Lane],
    records: Sequence[NodeRecord],
    bars: Sequence[Bar],
    origin: float,
) -> list[Mark]:
    """A fork mark at the end of each node that started paths, and a join mark
    where its own path went on (or, when it did not, where its last branch ended)."""
    index = {lane.path: lane.index for lane in lanes}
    started: dict[str, list[int]] = {}
    for lane in lanes:
        if lane.fork is not None:
            started.setdefault(lane.fork, []).append(lane.index)
    # When each lane and everything it started last ran: children come after their
    # parent in lane order, so one pass from the end settles every subtree.
    ends = [0.0] * len(lanes)
    for bar in bars:
        ends[bar.lane] = max(ends[bar.lane], bar.end_ms)
    for lane in reversed(lanes):
        if lane.fork is not None:
            parent = index[key_path(lane.fork)]
            ends[parent] = max(ends[parent], ends[lane.index])
    by_key = {r.key: r for r in records}
    by_step: dict[tuple[str, str], NodeRecord] = {}
    for record in records:
        path = key_path(record.key)
        by_step[(path, record.key[len(path) :].split(".", 1)[0])] = record
    marks: list[Mark] = []
    for fork, branches in started.items():
        path = key_path(fork)
        row = index[path]
        forked = by_key.get(fork)
        at = (_end(forked) - origin) * 1000.0 if forked is not None else 0.0
        marks.append(Mark("fork", fork, row, tuple(branches), at))
        step = fork[len(path) :].split(".", 1)[0]
        after = by_step.get((path, str(int(step) + 1))) if step.isdigit() else None
        if after is not None:
            joined = ((after.queued_at or after.started_at) - origin) * 1000.0
        else:
            joined = max(ends[i] for i in branches)
        marks.append(Mark("join", fork, row, tuple(branches), max(joined, at)))
    return marks


def layout(
    records: Iterable[NodeRecord], origin: float | None = None, elapsed_ms: float = 0.0
) -> Layout:
    """The timeline of ``records``; time 0 is ``origin`` (``perf_counter``), or the
    earliest time a record knows when None."""
    records = list(records)
    if origin is None:
        origin = min((r.queued_at or r.started_at for r in records), default=0.0)
    by_path: dict[str, list[NodeRecord]] = {"": []}
    for record in records:
        by_path.setdefault(key_path(record.key), []).append(record)
    ordered = _order_lanes(by_path)
    lanes = _lanes(ordered, by_path)
    index = {lane.path: lane.index for lane in lanes}
    bars: list[Bar] = []
    waits: list[Wait] = []
    for path in ordered:
        for record in sorted(by_path[path], key=_began):
            got, waited = _attempts(record, index[path], origin)
            bars.extend(got)
            waits.extend(waited)
    marks = _marks(lanes, records, bars, origin)
    end = max((b.end_ms for b in bars), default=0.0)
    return Layout(tuple(lanes), tuple(bars), tuple(waits), tuple(marks), max(end, elapsed_ms))
