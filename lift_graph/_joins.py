"""Join decisions (pure): when a fork continues, fails, and what it cancels.

Every join strategy and failure mode is a policy over one primitive: branch
outcomes arrive one at a time, and ``JoinTracker.record`` says whether the join
is still waiting, has succeeded or has failed, and whether the unfinished
branches are to be cancelled.

Joins with ``accept`` (FIRST_ACCEPTED, and ANY given ``accept``) count a branch as
*passed* only when it succeeded and ``accept`` passed its value; a rejected value
counts like a failure. FIRST_ACCEPTED is the one policy that looks at branch
indices: it waits for the lowest index that can still pass, so its winner does not
depend on which branch finished first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .blocks import BranchStatus, FailureMode, JoinResult, JoinStrategy
from .errors import JoinError

__all__ = ["Decision", "JoinTracker", "Verdict", "join_error", "settle_above_winner"]


class Verdict(Enum):
    WAIT = "wait"
    SUCCEED = "succeed"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    cancel_rest: bool = False
    #: An accept-join's winner (branch index): its state alone is merged.
    winner: int | None = None


_WAIT = Decision(Verdict.WAIT)

# FIRST_ACCEPTED outcome of one branch, kept in a bytearray (one byte per branch).
_PENDING = 0
_PASSED = 1
_NOT_PASSED = 2  # failed, or succeeded and rejected by ``accept``


class JoinTracker:
    """Counts outcomes of ``total`` branches and applies one join policy.

    ``accepting``: the fork has an ``accept`` predicate (implied by FIRST_ACCEPTED).
    """

    __slots__ = (
        "total",
        "strategy",
        "on_error",
        "required",
        "accepting",
        "succeeded",
        "failed",
        "rejected",
        "decided",
        "_outcomes",
        "_frontier",
    )

    def __init__(
        self,
        total: int,
        strategy: JoinStrategy,
        on_error: FailureMode,
        required: int,
        *,
        accepting: bool = False,
    ) -> None:
        self.total = total
        self.strategy = strategy
        self.on_error = on_error
        self.required = required
        self.accepting = accepting or strategy is JoinStrategy.FIRST_ACCEPTED
        self.succeeded = 0
        self.failed = 0
        #: Successes whose value ``accept`` rejected (also counted in ``succeeded``).
        self.rejected = 0
        self.decided: Decision | None = None
        ordered = strategy is JoinStrategy.FIRST_ACCEPTED
        self._outcomes = bytearray(total if ordered else 0)
        #: FIRST_ACCEPTED: every branch below this index has not passed.
        self._frontier = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def passed(self) -> int:
        """Successes that count for the join: all of them, or those ``accept`` passed."""
        return self.succeeded - self.rejected

    def start(self) -> Decision:
        """The decision before any branch finished (empty forks, quorum 0)."""
        if self.strategy is JoinStrategy.ALL:
            return self._set(Decision(Verdict.SUCCEED)) if self.total == 0 else _WAIT
        if self.accepting and self.total == 0:
            return self._set(Decision(Verdict.FAIL))  # no value at all can pass
        if self.required == 0:
            return self._set(Decision(Verdict.SUCCEED, cancel_rest=True))
        if self.total == 0:
            return self._set(Decision(Verdict.FAIL))
        return _WAIT

    def _set(self, decision: Decision) -> Decision:
        self.decided = decision
        return decision

    def record(self, index: int, ok: bool, accepted: bool = True) -> Decision:
        """Fold branch ``index``'s outcome in; returns the (possibly final) decision.

        ``accepted``: what ``accept`` said of a successful branch's value (ignored
        when the fork has no ``accept``).
        """
        if self.decided is not None:
            # Already decided: later finishers (FAIL_FIRST stragglers) change nothing.
            return _WAIT
        passed = ok and (accepted or not self.accepting)
        if ok:
            self.succeeded += 1
            if not passed:
                self.rejected += 1
        else:
            self.failed += 1
        s = self.strategy
        if s is JoinStrategy.FIRST_ACCEPTED:
            self._outcomes[index] = _PASSED if passed else _NOT_PASSED
            return self._in_order()
        if s is JoinStrategy.ALL:
            if not ok and self.on_error is FailureMode.FAIL_ALL:
                return self._set(Decision(Verdict.FAIL, cancel_rest=True))
            if self.finished < self.total:
                return _WAIT
            if self.failed and self.on_error is FailureMode.FAIL_FIRST:
                return self._set(Decision(Verdict.FAIL))
            return self._set(Decision(Verdict.SUCCEED))
        if s is JoinStrategy.FIRST:
            if ok or self.on_error is FailureMode.CONTINUE:
                return self._set(Decision(Verdict.SUCCEED, cancel_rest=True))
            return self._set(Decision(Verdict.FAIL, cancel_rest=True))
        # ANY and QUORUM: a failure (or a rejected value) only counts against the quorum.
        if self.passed >= self.required:
            # Only this branch can have made the count: with accept it is the winner.
            winner = index if self.accepting else None
            return self._set(Decision(Verdict.SUCCEED, cancel_rest=True, winner=winner))
        if self.passed + (self.total - self.finished) < self.required:
            return self._set(Decision(Verdict.FAIL, cancel_rest=True))
        return _WAIT

    def _in_order(self) -> Decision:
        """FIRST_ACCEPTED: skip the leading branches that did not pass; the first
        one left decides if it passed, else the join waits for it."""
        outcomes, i, n = self._outcomes, self._frontier, self.total
        while i < n and outcomes[i] == _NOT_PASSED:
            i += 1
        self._frontier = i
        if i == n:
            return self._set(Decision(Verdict.FAIL, cancel_rest=True))
        if outcomes[i] == _PASSED:
            # Every lower index has finished without passing: nothing can beat i.
            return self._set(Decision(Verdict.SUCCEED, cancel_rest=True, winner=i))
        return _WAIT

    def timed_out(self) -> Decision:
        """The fork's timeout fired: every unfinished branch counts as failed."""
        if self.decided is not None:
            return self.decided
        if self.strategy is JoinStrategy.FIRST_ACCEPTED:
            # A lower-index branch that finished and passed still wins.
            self.failed += self.total - self.finished
            outcomes = self._outcomes
            for i in range(self._frontier, self.total):
                if outcomes[i] == _PENDING:
                    outcomes[i] = _NOT_PASSED
            return self._in_order()
        if self.strategy is JoinStrategy.ALL or self.strategy is JoinStrategy.FIRST:
            if self.on_error is FailureMode.CONTINUE:
                return self._set(Decision(Verdict.SUCCEED, cancel_rest=True))
            return self._set(Decision(Verdict.FAIL, cancel_rest=True))
        return self._set(Decision(Verdict.FAIL, cancel_rest=True))


def settle_above_winner(
    winner: int,
    statuses: list[BranchStatus],
    values: list[Any],
    errors: dict[int, BaseException],
    accepted: list[bool | None],
) -> None:
    """FIRST_ACCEPTED: report every branch above ``winner`` as cancelled.

    The join did not need them, and whether one happened to finish before the
    decision is a matter of timing: reporting what they did would make the
    ``JoinResult`` (and a ``then=None`` fork's output) differ from run to run.
    ``RunResult.records`` still shows what each of their nodes did.
    """
    for i in range(winner + 1, len(statuses)):
        statuses[i] = BranchStatus.CANCELLED
        values[i] = None
        accepted[i] = None
        errors.pop(i, None)


def join_error(
    key: str,
    join: JoinResult[Any],
    errors: dict[int, BaseException],
    keys: Sequence[Any],
    *,
    accepting: bool = False,
) -> JoinError:
    """The ``JoinError`` of a failed join after ``key``; its cause is the error of the
    lowest-index failed branch. ``accepting``: the fork had ``accept``."""
    first = min(errors) if errors else None
    counts = (
        f"{join.failed} failed, {join.succeeded} succeeded, {join.cancelled} cancelled "
        f"of {join.total}"
    )
    if accepting:
        rejected = sum(1 for a in join.accepted if a is False)
        msg = (
            f"join after {key} failed: no branch value passed `accept` (strategy "
            f"{join.strategy.name}; {rejected} rejected, {join.failed} failed, "
            f"{join.cancelled} cancelled of {join.total} branches)"
        )
        if first is not None:
            exc = errors[first]
            msg += f"; branch {keys[first]!r} raised {type(exc).__name__}: {exc}"
    elif first is None:
        msg = (
            f"join after {key} failed: no branch can succeed ({join.total} branches, "
            f"strategy {join.strategy.name})"
        )
    else:
        exc = errors[first]
        msg = (
            f"join after {key} failed: branch {keys[first]!r} raised "
            f"{type(exc).__name__}: {exc} ({counts})"
        )
    err = JoinError(msg, errors=join.errors, join=join)
    if first is not None:
        err.__cause__ = errors[first]
    return err
