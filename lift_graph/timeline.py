"""``Timeline``: what overlapped in one run, as an SVG picture and as data.

``RunResult.timeline()`` builds one. It shows one lane per path (the main path,
each fork branch, each pipeline member), a bar per node attempt coloured by
provider, the waits for a slot or a provider's limits, retry backoffs and 429
pauses, and where each fork started and joined.

The picture is SVG written here, not drawn by a plotting library: a dozen kinds
of rectangles need no dependency, and plain SVG renders the same in Jupyter, in
a notebook committed to GitHub, in a browser and in a docs page. It is built
from the records alone, so the same records give the same bytes.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._records import NodeRecord
from ._timeline_layout import Bar, Lane, Mark, Wait, layout
from ._timeline_svg import esc, fmt_ms, render_svg
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .graph import RunResult

__all__ = ["Bar", "Lane", "Mark", "Timeline", "Wait"]

#: Lanes listed by the text form (``str(timeline)``).
_TEXT_LANES = 20
#: Bars listed per lane by the text form.
_TEXT_BARS = 6

_SAFE_ID = re.compile(r"[^A-Za-z0-9]")


class Timeline:
    """A run's timeline. Displays itself in Jupyter; ``save(path)`` writes it.

    The layout is plain data, in milliseconds from the run's start: ``lanes``
    (``Lane``: ``index``, ``path``, ``label``, ``depth``, ``fork``), ``bars`` (a
    ``Bar`` per attempt: ``lane``, ``key``, ``node``, ``provider``, ``attempt``,
    ``start_ms``, ``end_ms``, ``status``), ``waits`` (``Wait``: ``kind``
    ``"queued"`` / ``"backoff"`` / ``"rate_limit"``) and ``marks`` (``Mark``:
    ``"fork"`` / ``"join"``, with the lanes of the branches).

    ``width`` is the picture's width in pixels; at most ``max_lanes`` lanes are
    drawn one by one, the rest as one row showing when any of them ran (the data
    keeps them all).

    :raises ConfigurationError: ``width`` below 400 or ``max_lanes`` below 1.
    """

    def __init__(
        self,
        records: Iterable[NodeRecord],
        *,
        origin: float | None = None,
        elapsed_ms: float = 0.0,
        execution_id: str = "",
        width: int = 960,
        max_lanes: int = 40,
    ) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 400:
            raise ConfigurationError(f"Timeline width must be an int >= 400 (px), got {width!r}")
        if isinstance(max_lanes, bool) or not isinstance(max_lanes, int) or max_lanes < 1:
            raise ConfigurationError(f"Timeline max_lanes must be an int >= 1, got {max_lanes!r}")
        built = layout(records, origin, elapsed_ms)
        self.lanes: tuple[Lane, ...] = built.lanes
        self.bars: tuple[Bar, ...] = built.bars
        self.waits: tuple[Wait, ...] = built.waits
        self.marks: tuple[Mark, ...] = built.marks
        self.duration_ms: float = built.duration_ms
        self.execution_id = execution_id
        self.width = width
        self.max_lanes = max_lanes
        self._layout = built
        self._svg: str | None = None

    @classmethod
    def of(cls, result: RunResult[Any], *, width: int = 960, max_lanes: int = 40) -> Timeline:
        """The timeline of ``result``; time 0 is when the run began."""
        return cls(
            result.records,
            origin=result._began,
            elapsed_ms=result.elapsed_ms,
            execution_id=result.execution_id,
            width=width,
            max_lanes=max_lanes,
        )

    # -- pictures -----------------------------------------------------------------
    def svg(self) -> str:
        """The picture: one SVG element, with ``xmlns`` (also valid as a file)."""
        if self._svg is None:
            # A run's id may hold anything; pattern ids must be XML names.
            digest = zlib.crc32(self.execution_id.encode("utf-8"))
            uid = f"lgt{_SAFE_ID.sub('', self.execution_id)[:12]}{digest:08x}"
            self._svg = render_svg(
                self._layout,
                title=self._title(),
                width=self.width,
                max_lanes=self.max_lanes,
                uid=uid,
            )
        return self._svg

    def html(self) -> str:
        """The picture in a ``<div>`` that scrolls sideways when the page is narrow."""
        return f'<div class="lift-graph-timeline" style="overflow-x:auto">{self.svg()}</div>'

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the picture to ``path``: ``.svg`` (an SVG file) or ``.html`` / ``.htm``
        (a page holding it, with tooltips in any browser). Returns the path.

        :raises ConfigurationError: ``path`` has another suffix.
        """
        target = Path(path)
        suffix = target.suffix.lower()
        if suffix == ".svg":
            text = '<?xml version="1.0" encoding="UTF-8"?>\n' + self.svg() + "\n"
        elif suffix in (".html", ".htm"):
            text = (
                '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
                f"<title>{esc(self._title())}</title></head>\n<body>\n{self.html()}\n"
                "</body>\n</html>\n"
            )
        else:
            raise ConfigurationError(
                f"Timeline.save writes .svg, .html or .htm files, not {target.name!r}: "
                "give the path one of those suffixes"
            )
        target.write_text(text, encoding="utf-8")
        return target

    # -- Jupyter's display protocol -----------------------------------------------
    def _repr_svg_(self) -> str:
        return self.svg()

    def _repr_html_(self) -> str:
        return self.html()

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, str]:
        bundle = {"image/svg+xml": self.svg(), "text/html": self.html(), "text/plain": str(self)}
        if include is not None:
            wanted = set(include)
            bundle = {k: v for k, v in bundle.items() if k in wanted}
        if exclude is not None:
            for mime in exclude:
                bundle.pop(mime, None)
        return bundle

    # -- text -----------------------------------------------------------------------
    def _title(self) -> str:
        run = f"run {self.execution_id[:12]}" if self.execution_id else "run"
        bars, lanes = _count(len(self.bars), "attempt"), _count(len(self.lanes), "lane")
        return f"{run}: {bars} in {lanes}, {self._span()}"

    def _span(self) -> str:
        return fmt_ms(self.duration_ms)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for wait in self.waits:
            counts[wait.kind] = counts.get(wait.kind, 0) + 1
        extra = "".join(f", {k}={v}" for k, v in sorted(counts.items()))
        return (
            f"<Timeline {self.execution_id[:12] or 'run'}: lanes={len(self.lanes)} "
            f"bars={len(self.bars)} forks={len(self.marks) // 2}{extra} "
            f"over {self._span()}>"
        )

    def __str__(self) -> str:
        """A text form: each lane with its first bars (start, length, status)."""
        lines = [f"Timeline of {self._title()}"]
        by_lane: dict[int, list[Bar]] = {}
        for bar in self.bars:
            by_lane.setdefault(bar.lane, []).append(bar)
        width = min(max((len(lane.label) + 2 * lane.depth for lane in self.lanes), default=4), 30)
        for lane in self.lanes[:_TEXT_LANES]:
            bars = by_lane.get(lane.index, [])
            shown = ", ".join(
                f"{b.node}@{b.start_ms:.1f}+{b.duration_ms:.1f}ms"
                + ("" if b.status == "succeeded" else f" {b.status}")
                for b in bars[:_TEXT_BARS]
            )
            more = f", ... {len(bars) - _TEXT_BARS} more" if len(bars) > _TEXT_BARS else ""
            name = ("  " * lane.depth + lane.label)[:width].ljust(width)
            lines.append(f"  {name}  {shown}{more}")
        if len(self.lanes) > _TEXT_LANES:
            lines.append(f"  ... {len(self.lanes) - _TEXT_LANES} more lanes")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
