"""What the journal keeps of a fork's join, and deciding a join as it was
journaled (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._joins import Decision, Verdict
from .blocks import BranchStatus, JoinResult
from .errors import ReplayedError

__all__ = ["PAUSE", "WAIT", "force_statuses", "forced_decision", "join_entry"]

WAIT = Decision(Verdict.WAIT)
#: A fork whose unfinished branches all wait for a person.
PAUSE = Decision(Verdict.WAIT)


def forced_decision(forced: Mapping[str, Any]) -> Decision:
    return Decision(Verdict.SUCCEED, winner=forced["winner"])


def force_statuses(
    forced: Mapping[str, Any],
    statuses: list[BranchStatus | None],
    errors: dict[int, BaseException],
    accepted: list[bool | None],
) -> bool:
    """Give the branches that will not run again their journaled outcome; returns
    whether the fork had timed out."""
    for i, status in enumerate(forced["statuses"]):
        accepted[i] = forced["accepted"][i]
        if status == "failed":
            statuses[i] = BranchStatus.FAILED
            type_name, message = forced["errors"][str(i)]
            errors[i] = ReplayedError(type_name, message)
        elif status == "cancelled":
            statuses[i] = BranchStatus.CANCELLED
    return bool(forced["timed_out"])


def join_entry(
    join: JoinResult[Any], decision: Decision, errors: Mapping[int, BaseException]
) -> dict[str, Any]:
    """What the journal keeps of a join: enough to decide it again the same way."""
    return {
        "statuses": [s.value for s in join.statuses],
        "errors": {str(i): [type(e).__name__, str(e)] for i, e in errors.items()},
        "winner": decision.winner,
        "timed_out": join.timed_out,
        "accepted": list(join.accepted)
        if join.accepted is not None
        else [None] * len(join.statuses),
        "deterministic": join.deterministic,
    }
