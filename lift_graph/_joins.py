"""Join decisions (pure): when a fork continues, fails, and what it cancels.

Every join strategy and failure mode is a policy over one primitive: branch
outcomes arrive one at a time, and ``JoinTracker.decide`` says whether the join
is still waiting, has succeeded or has failed, and whether the unfinished
branches are to be cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .blocks import FailureMode, JoinStrategy

__all__ = ["Decision", "JoinTracker", "Verdict"]


class Verdict(Enum):
    WAIT = "wait"
    SUCCEED = "succeed"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    cancel_rest: bool = False


_WAIT = Decision(Verdict.WAIT)


class JoinTracker:
    """Counts outcomes of ``total`` branches and applies one join policy."""

    __slots__ = ("total", "strategy", "on_error", "required", "succeeded", "failed", "decided")

    def __init__(
        self, total: int, strategy: JoinStrategy, on_error: FailureMode, required: int
    ) -> None:
        self.total = total
        self.strategy = strategy
        self.on_error = on_error
        self.required = required
        self.succeeded = 0
        self.failed = 0
        self.decided: Decision | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    def start(self) -> Decision:
        """The decision before any branch finished (empty forks, quorum 0)."""
        if self.strategy is JoinStrategy.ALL:
            return self._set(Decision(Verdict.SUCCEED)) if self.total == 0 else _WAIT
        if self.required == 0:
            return self._set(Decision(Verdict.SUCCEED, cancel_rest=True))
        if self.total == 0:
            return self._set(Decision(Verdict.FAIL))
        return _WAIT

    def _set(self, decision: Decision) -> Decision:
        self.decided = decision
        return decision

    def record(self, ok: bool) -> Decision:
        """Fold one finished branch in; returns the (possibly final) decision."""
        if self.decided is not None:
            # Already decided: later finishers (FAIL_FIRST stragglers) change nothing.
            return _WAIT
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        s = self.strategy
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
        # ANY and QUORUM: a failure only counts against the quorum.
        if self.succeeded >= self.required:
            return self._set(Decision(Verdict.SUCCEED, cancel_rest=True))
        if self.succeeded + (self.total - self.finished) < self.required:
            return self._set(Decision(Verdict.FAIL, cancel_rest=True))
        return _WAIT

    def timed_out(self) -> Decision:
        """The fork's timeout fired: every unfinished branch counts as failed."""
        if self.decided is not None:
            return self.decided
        if self.strategy is JoinStrategy.ALL or self.strategy is JoinStrategy.FIRST:
            if self.on_error is FailureMode.CONTINUE:
                return self._set(Decision(Verdict.SUCCEED, cancel_rest=True))
            return self._set(Decision(Verdict.FAIL, cancel_rest=True))
        return self._set(Decision(Verdict.FAIL, cancel_rest=True))
