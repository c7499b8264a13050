"""A batch's progress bar: ``tqdm.auto`` (terminal or notebook), or one you pass.

tqdm is imported only when a bar is asked for, so a batch without one costs
nothing. The bar counts finished inputs (``n/total``; tqdm adds the rate and, when
the source has a length, the ETA) and shows the failures in its postfix.
"""

from __future__ import annotations

from typing import Any

from ._text import short_repr
from .errors import ConfigurationError

__all__ = ["Progress", "open_progress"]


class Progress:
    """Counts finished inputs on a tqdm-like ``bar`` (``update``, ``set_postfix``, ``close``).

    ``owned``: the bar was made here, so ``close`` closes it; a bar passed in is
    left open for its owner.
    """

    __slots__ = ("bar", "failed", "owned")

    def __init__(self, bar: Any, *, owned: bool) -> None:
        self.bar = bar
        self.owned = owned
        self.failed = 0
        bar.set_postfix(failed=0, refresh=False)

    def step(self, succeeded: bool) -> None:
        """One input finished (``succeeded`` False: it failed)."""
        if not succeeded:
            self.failed += 1
            self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar if it was made here (also after an error or a cancel)."""
        if self.owned:
            self.bar.close()


def open_progress(progress: Any, *, total: int | None, desc: str) -> Progress | None:
    """The ``Progress`` that ``map(..., progress=...)`` asks for, or None.

    ``progress`` is False / None (no bar), True (a ``tqdm.auto.tqdm``), a callable
    taking tqdm's keywords (``tqdm.tqdm``, ``functools.partial(tqdm, file=...)``) or a
    bar already made (an object with ``update`` and ``set_postfix``).

    :raises ConfigurationError: ``progress`` is none of these.
    """
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        return Progress(tqdm(total=total, desc=desc, unit="run"), owned=True)
    # A tqdm class has `update` too (unbound): tell classes and factories from bars.
    if isinstance(progress, type) or (callable(progress) and not hasattr(progress, "update")):
        return Progress(progress(total=total, desc=desc, unit="run"), owned=True)
    if hasattr(progress, "update") and hasattr(progress, "set_postfix"):
        return Progress(progress, owned=False)
    raise ConfigurationError(
        f"progress must be True / False, a tqdm-like class or factory, or a bar, got "
        f"{short_repr(progress)}"
    )
