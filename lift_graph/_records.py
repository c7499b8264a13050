"""What a run keeps of each node execution: ``NodeRecord`` and its status values."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

__all__ = ["CANCELLED", "INTERRUPTED", "NodeRecord", "key_order", "key_path", "record_order"]

_NUMBER = re.compile(r"(\d+)")

#: ``NodeRecord.error`` of an execution cancelled while it ran (see ``status``).
CANCELLED = "cancelled"
#: ``NodeRecord.error`` of an execution that returned ``Interrupt``.
INTERRUPTED = "interrupted"


class NodeRecord(NamedTuple):
    """One node execution: where (``key``), what, how long, how often, how it ended.

    A tuple of plain values, so a run with 100,000 of them adds nothing to the
    cyclic garbage collector's work.
    """

    key: str
    node: str
    started_at: float
    execution_time_ms: float
    attempts: int
    error: str | None = None
    provider: str | None = None
    #: When the node was handed to the runner, before it waited for a slot or a
    #: provider's limits (``perf_counter``); ``started_at - queued_at`` is that wait.
    queued_at: float | None = None
    #: Only for a node run more than once: ``(began, ended, outcome)`` per attempt,
    #: outcome ``"retry"`` (failed, retried), ``"rate_limited"`` (refused by its
    #: provider, run again after the pause) or the last attempt's ``"succeeded"`` /
    #: ``"failed"``. Gaps between attempts are backoff or a provider's pause. A node
    #: answered from the journal or the cache without running has one zero-length
    #: entry, outcome ``"replayed"`` (its ``execution_time_ms`` is the original run's).
    attempt_log: tuple[tuple[float, float, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()

    @property
    def status(self) -> str:
        """``"succeeded"``, ``"failed"``, ``"cancelled"`` (a race's loser, a timeout) or
        ``"interrupted"`` (the node returned ``Interrupt``).

        A failure's ``error`` is ``"Type: message"``; a cancellation's is ``CANCELLED``.
        """
        if self.error is None:
            return "succeeded"
        if self.error in (CANCELLED, INTERRUPTED):
            return self.error
        return "failed"

    def provenance(self) -> dict[str, Any]:
        """The entry this execution adds to ``RunContext.provenance``."""
        return {"node": self.node, "key": self.key, "execution_time_ms": self.execution_time_ms}


def key_path(key: str) -> str:
    """The key prefix of the path that ran node ``key``: up to its last ``/`` (""
    for the main path).

    A node key is ``{path}{step}.{NodeClass}`` and a branch's path is
    ``{fork key}/{branch key}/``; the part after the last ``/`` never holds one, so a
    branch key containing ``/`` cannot confuse this.
    """
    return key[: key.rfind("/") + 1]


def key_order(key: str) -> list[tuple[int, int | str]]:
    """Sort key of a node key: numeric parts as numbers, so step 10 follows step 9."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in _NUMBER.split(key) if p]


def record_order(record: NodeRecord) -> list[tuple[int, int | str]]:
    """``key_order`` of a record's key: records listed as ``RunResult.records`` lists them."""
    return key_order(record.key)
