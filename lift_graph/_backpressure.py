"""Back-pressure of one provider: pauses after a 429, the pace it learns, adaptive slots.

When a provider refuses (HTTP 429), every node on it waits, not only the one that
was refused: the provider pauses until its hint (``Retry-After``) or, without one,
for a backoff that doubles per refusal episode, with jitter. Pausing alone would let
a whole concurrency cap of calls rush in after every pause and be refused again, so
the provider's rate is also *learned*: the requests it accepted in the last window
when it refused, or its own ``x-ratelimit-limit`` / ``-remaining`` headers when the
node reports them. From then on starts are paced to that many per window, and the
pace grows back by 1% per window without a refusal (one request at a time, after a
first calm window), in case it was learned low: other clients of the same account
may have gone away.

Time comes from the ``Limits`` clock; all state lives in one ``Pressure`` per provider,
shared by every run that shares the ``Limits``.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import deque
from typing import TYPE_CHECKING

from ._rate_signals import RateSignal

if TYPE_CHECKING:
    from ._counters import Slots as _Slots

__all__ = ["BACKOFF_BASE", "Pressure", "Start"]

#: First backoff (seconds) of a refusal without a hint; doubles per episode.
BACKOFF_BASE = 1.0
#: The learned pace grows by this fraction per calm window (at least one request).
_GROWTH = 0.01
#: The shortest window a pace is counted over (seconds).
_MIN_WINDOW = 0.001
#: The margin added to the pace's window is at most this share of the window.
_MAX_MARGIN = 0.05
#: Calls accepted in a window before a refusal teaches a pace.
_MIN_EVIDENCE = 4
#: Starts remembered per provider, at most (paces above this are not learned).
_MAX_TRACKED = 100_000


class Start:
    """One request start on a provider, counted until it leaves the window."""

    __slots__ = ("time", "count", "seq")

    def __init__(self, time: float, count: int, seq: int) -> None:
        self.time = time
        #: Starts in the window when this one started, itself included, less those
        #: the provider refused since: what the provider had accepted by then.
        self.count = count
        self.seq = seq


class Pressure:
    """What one provider told us, and the waits that follow from it."""

    __slots__ = (
        "window",
        "pace_window",
        "margin",
        "learn",
        "paused_until",
        "episode",
        "streak",
        "learned",
        "ceiling",
        "next_growth",
        "probing",
        "starts",
        "history",
        "_seq",
        "refusals",
        "pauses",
        "slots",
        "cap",
        "_grown",
    )

    def __init__(self, window: float, *, learn: bool = True, slots: _Slots | None = None) -> None:
        self.window = window
        #: The window the learned pace counts over: ``window``, or shorter when a
        #: provider's hint shows its window frees sooner (a per-second limit, say).
        self.pace_window = window
        #: Pacing waits this much longer than the window: the longest a refusal took
        #: to come back. A request reaches the provider after it starts, so the
        #: provider's window slides later than ours by up to about that much.
        self.margin = 0.0
        #: Whether starts are counted (a provider known from the first start): only
        #: then can the accepted count teach the pace.
        self.learn = learn
        self.paused_until = -math.inf
        #: When the current pause was decided: refusals of requests that started
        #: before it belong to the same episode and do not double the backoff.
        self.episode = -math.inf
        self.streak = 0
        #: Requests per window the provider accepts, once learned.
        self.learned: int | None = None
        #: The provider's own stated limit (a header): the pace never grows above it.
        self.ceiling: int | None = None
        #: When the learned pace may next grow by one request.
        self.next_growth = math.inf
        self.probing = False
        #: Starts in the last window (the pace) and the last two (what to learn);
        #: bounded, so a provider tag on a fast local node cannot grow them unchecked.
        self.starts: deque[Start] = deque(maxlen=_MAX_TRACKED)
        self.history: deque[Start] = deque(maxlen=_MAX_TRACKED)
        self._seq = 0
        #: Gauges: refusals seen, and every pause decided as (from, until).
        self.refusals = 0
        self.pauses: list[tuple[float, float]] = []
        #: Adaptive concurrency: the provider's slots and their configured cap.
        self.slots = slots
        self.cap = slots.limit if slots is not None else 0
        self._grown = 0

    # -- waiting ------------------------------------------------------------------
    def wait_time(self, now: float) -> float:
        """Seconds until one more request may start on this provider (0: now)."""
        if self.paused_until > now:
            return self.paused_until - now
        learned = self.learned
        if learned is None:
            return 0.0
        starts = self._prune(now)
        if now >= self.next_growth and (self.ceiling is None or learned < self.ceiling):
            # One request at a time, spread out: a probe above the real limit then
            # costs one refusal, not a burst of them.
            learned = self.learned = learned + 1
            self.probing = True
            self.next_growth = now + self._growth_step(learned)
        # Paced over the window plus the margin; counted (for learning) over the window.
        if len(starts) < learned:
            return 0.0
        return starts[len(starts) - learned].time + self.pace_window + self.margin - now

    def start(self, now: float) -> Start | None:
        if not self.learn:
            return None
        starts = self._prune(now)
        self._seq += 1
        entry = Start(now, self._in_window(now) + 1, self._seq)
        starts.append(entry)
        self.history.append(entry)
        return entry

    def _in_window(self, now: float) -> int:
        """Starts within the pace's window (``starts`` also keeps the margin's)."""
        starts, horizon = self.starts, now - self.pace_window
        skipped = 0
        for entry in starts:
            if entry.time > horizon:
                break
            skipped += 1
        return len(starts) - skipped

    def _prune(self, now: float) -> deque[Start]:
        starts, horizon = self.starts, now - self.pace_window - self.margin
        while starts and starts[0].time <= horizon:
            starts.popleft()
        history, horizon = self.history, now - 2 * self.window
        while history and history[0].time <= horizon:
            history.popleft()
        return starts

    # -- what the provider said ---------------------------------------------------
    def refused(
        self, now: float, entry: Start | None, signal: RateSignal, rng: random.Random
    ) -> float:
        """A 429: pause the provider and learn its pace; returns when the pause ends."""
        self.refusals += 1
        if entry is not None:
            self.margin = min(max(self.margin, now - entry.time), self.window * _MAX_MARGIN)
            self._forget(entry)
        self._learn_from_refusal(now, signal, entry.time if entry is not None else now)
        # A refused probe of a grown pace is expected: the pace is learned back, but
        # it is no new episode (no longer backoff, no cut of adaptive slots).
        same_episode = self.probing or (entry is not None and entry.time < self.episode)
        self.probing = False
        if signal.retry_after is not None:
            until = now + signal.retry_after
        elif same_episode:
            until = self.paused_until
        else:
            self.streak += 1
            backoff = min(self.window, BACKOFF_BASE * 2.0 ** (self.streak - 1))
            until = now + backoff * (0.5 + 0.5 * rng.random())
        if not same_episode:
            self._cut_slots()
        if until > self.paused_until:
            self.paused_until = until
            self.episode = now
            self.pauses.append((now, until))
        # The pace grows again only after a full calm window of paced starts.
        calm = max(now, self.paused_until)
        self.next_growth = calm + max(self.pace_window, self._growth_step(self.learned or 1))
        return max(0.0, self.paused_until - now)

    def reported(self, now: float, entry: Start | None, signal: RateSignal) -> None:
        """Headers of an accepted response: learn the pace before any refusal."""
        if signal.limit is not None and signal.limit > 0:
            self.ceiling = signal.limit
            self._set_learned(now, signal.limit)
        elif signal.remaining is not None and entry is not None and self.learn:
            self._set_learned(now, max(1, entry.count + signal.remaining))

    def succeeded(self) -> None:
        """A call the provider accepted: the backoff resets, adaptive slots grow."""
        self.streak = 0
        slots = self.slots
        if slots is not None and slots.limit < self.cap:
            self._grown += 1
            if self._grown >= slots.limit:  # additive increase: +1 per full round
                self._grown = 0
                slots.set_limit(slots.limit + 1)

    def _forget(self, entry: Start) -> None:
        """The provider did not count ``entry``: neither do the starts after it."""
        for queue in (self.starts, self.history):
            with contextlib.suppress(ValueError):  # ValueError: it left the window
                queue.remove(entry)
        end = entry.time + self.pace_window
        for later in reversed(self.history):
            if later.seq < entry.seq:
                break
            if later.time < end:
                later.count -= 1

    def _learn_from_refusal(self, now: float, signal: RateSignal, oldest: float) -> None:
        """The pace: the most the provider accepted in one window, as counted when
        each accepted call started. Counting at each start, not now, keeps calls that
        left our window but not yet the provider's (their requests reached it later)
        from being forgotten, so a burst of refusals cannot talk the pace down to 1."""
        if signal.limit is not None and signal.limit > 0:
            self.ceiling = signal.limit
            self._set_learned(now, signal.limit)
        elif self.learn:
            if signal.retry_after is not None:
                self._fit_window(now, signal.retry_after, oldest)
            self._prune(now)
            in_window = self._in_window(now)
            most = max((s.count for s in self.history), default=0)
            learned = max(in_window, most)
            # A refusal after a handful of our calls says the quota went elsewhere,
            # not how fast we may go: leave that to the pauses.
            if learned >= _MIN_EVIDENCE:
                self._set_learned(now, learned)

    def _fit_window(self, now: float, retry_after: float, oldest: float) -> None:
        """Shorten the pace's window to what the provider's hint implies.

        A sliding window frees its oldest request first: if ours is the oldest the
        provider counts, it frees at ``now + retry_after``, so the provider's window
        is that minus its start. A hint far shorter than the configured window means
        a shorter window (a per-second limit, a bucket refilling fast): pacing per
        60 s then would hold the provider back far longer than it asked. A fitted
        window of more than a quarter of the configured one is more likely a fixed
        window about to reset (its hint is the time to the boundary): kept as is.
        """
        if self.starts:
            oldest = min(oldest, self.starts[0].time)
        fitted = max(now + retry_after - oldest, retry_after, _MIN_WINDOW)
        self.pace_window = fitted if fitted <= self.window / 4 else self.window

    def _set_learned(self, now: float, learned: int) -> None:
        if self.ceiling is not None:
            learned = min(learned, self.ceiling)
        if self.learned is None:
            self.next_growth = now + max(self.pace_window, self._growth_step(learned))
        self.learned = learned

    def _growth_step(self, learned: int) -> float:
        """Seconds between two growths: 1% of the pace per window, one at a time."""
        return self.pace_window / (learned * _GROWTH)

    def _cut_slots(self) -> None:
        slots = self.slots
        if slots is not None:
            self._grown = 0
            slots.set_limit(max(1, slots.limit // 2))
