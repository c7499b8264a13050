"""Drawing a timeline ``Layout`` as one self-contained SVG document.

Presentation attributes only (no CSS, no script): the picture looks the same
inline in Jupyter, as a notebook output on GitHub (an ``<img>``), in a browser
and in a docs page. The output depends only on the layout, byte for byte.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Sequence

from ._timeline_layout import Bar, Lane, Layout, Mark, Wait

__all__ = ["fmt_ms", "provider_colors", "render_svg"]

_LABEL_W = 180
_RIGHT = 16
_TOP = 34
_LANE_H = 22
_BAR_H = 14
_LEGEND_ROW = 18
#: Bars narrower than this (px) that touch are drawn as one group.
_MIN_PX = 1.0

#: Colour-blind-friendly hues, none of them red or orange (failures, 429 pauses).
_PALETTE = (
    "#4e79a7",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#17becf",
    "#bcbd22",
    "#1f3b73",
)
_NO_PROVIDER = "#a0a0a0"
_FAILED = "#c62828"
_PAUSE = "#f28e2b"
_WAIT = "#cfcfcf"
_INK = "#333333"

_STATUS_TEXT = {
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    "interrupted": "interrupted (asked a person)",
    "retry": "failed, retried",
    "rate_limited": "refused by the provider (429), run again after its pause",
    "replayed": "replayed from the journal or the cache (not run)",
}
_WAIT_TEXT = {
    "queued": "waited for a slot or its provider's limits",
    "backoff": "retry backoff, then any wait for a slot",
    "rate_limit": "refused (429): the provider's pause, then any wait for a slot",
}

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})


def esc(text: object) -> str:
    """``text`` as XML character data or an attribute value."""
    return _INVALID_XML.sub("\N{REPLACEMENT CHARACTER}", str(text)).translate(_ESCAPES)


def fmt_ms(ms: float) -> str:
    """A duration for people: ``0.42 ms``, ``12.5 ms``, ``3.20 s``."""
    if ms >= 1000.0:
        return f"{ms / 1000.0:.2f} s"
    if ms >= 10.0:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def provider_colors(providers: Iterable[str | None]) -> dict[str | None, str]:
    """A colour per provider: chosen by a hash of its name (the same in every run),
    moved to the next free colour when two providers of one run would share one."""
    colors: dict[str | None, str] = {None: _NO_PROVIDER}
    taken: set[int] = set()
    for name in sorted({p for p in providers if p is not None}):
        slot = zlib.crc32(name.encode("utf-8")) % len(_PALETTE)
        for step in range(len(_PALETTE)):
            if (slot + step) % len(_PALETTE) not in taken:
                slot = (slot + step) % len(_PALETTE)
                break
        taken.add(slot)
        if len(taken) == len(_PALETTE):
            taken.clear()  # more providers than colours: reuse, in the same order
        colors[name] = _PALETTE[slot]
    return colors


def _ticks(duration: float) -> tuple[float, list[float]]:
    """A 1-2-5 tick step giving about eight ticks over ``duration`` ms, and the ticks."""
    raw = duration / 8.0
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)
    count = int(duration / step + 1e-9)
    return step, [i * step for i in range(count + 1)]


def _tick_label(value: float, step: float) -> str:
    if step >= 1000.0:
        digits = max(0, -math.floor(math.log10(step / 1000.0)))
        return f"{value / 1000.0:.{digits}f} s"
    digits = max(0, -math.floor(math.log10(step)))
    return f"{value:.{digits}f} ms"


class _Canvas:
    """Geometry shared by the drawing steps."""

    def __init__(self, layout: Layout, width: int, lanes: int, uid: str) -> None:
        self.width = width
        self.plot = width - _LABEL_W - _RIGHT
        self.duration = layout.duration_ms if layout.duration_ms > 0 else 1.0
        self.lanes = lanes
        self.uid = uid
        self.out: list[str] = []

    def x(self, ms: float) -> float:
        return _LABEL_W + ms / self.duration * self.plot

    def y(self, lane: int) -> float:
        """Top of lane ``lane``'s row."""
        return _TOP + lane * _LANE_H

    def mid(self, lane: int) -> float:
        return self.y(lane) + _LANE_H / 2


def _axis(c: _Canvas, bottom: float) -> None:
    step, ticks = _ticks(c.duration)
    out = c.out
    out.append('<g font-size="10" fill="#555555">')
    for value in ticks:
        x = c.x(value)
        out.append(
            f'<line x1="{x:.1f}" y1="{_TOP - 4}" x2="{x:.1f}" y2="{bottom:.1f}" '
            'stroke="#e4e4e4" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{_TOP - 8}" text-anchor="middle">'
            f"{esc(_tick_label(value, step))}</text>"
        )
    out.append("</g>")


def _lane_rows(c: _Canvas, lanes: Sequence[Lane]) -> None:
    out = c.out
    for lane in lanes:
        y = c.y(lane.index)
        if lane.index % 2:
            out.append(
                f'<rect x="0" y="{y:.1f}" width="{c.width}" height="{_LANE_H}" fill="#f6f6f6"/>'
            )
        label = lane.label if len(lane.label) <= 26 else lane.label[:25] + "…"
        where = "the run's main path" if not lane.path else f"path {lane.path}"
        out.append(
            f'<text class="lane" x="{6 + 10 * lane.depth}" y="{y + 15:.1f}" font-size="11" '
            f'fill="{_INK}">{esc(label)}<title>{esc(where)}</title></text>'
        )


def _waits(c: _Canvas, waits: Iterable[Wait]) -> None:
    out = c.out
    for wait in waits:
        if wait.lane >= c.lanes:
            continue
        x0, x1 = c.x(wait.start_ms), c.x(wait.end_ms)
        if x1 - x0 < 0.5:
            continue
        mid = c.mid(wait.lane)
        title = (
            f"<title>{esc(wait.key)}: {_WAIT_TEXT[wait.kind]}, "
            f"{esc(fmt_ms(wait.end_ms - wait.start_ms))}</title>"
        )
        if wait.kind == "backoff":
            out.append(
                f'<line class="wait backoff" x1="{x0:.2f}" y1="{mid:.1f}" x2="{x1:.2f}" '
                f'y2="{mid:.1f}" stroke="#666666" stroke-width="2" stroke-dasharray="3,2">'
                f"{title}</line>"
            )
            continue
        color, height = (_PAUSE, 6) if wait.kind == "rate_limit" else (_WAIT, 4)
        out.append(
            f'<rect class="wait {wait.kind}" x="{x0:.2f}" y="{mid - height / 2:.1f}" '
            f'width="{x1 - x0:.2f}" height="{height}" fill="{color}">{title}</rect>'
        )


def _bar_title(bar: Bar) -> str:
    provider = bar.provider if bar.provider is not None else "no provider"
    took = fmt_ms(bar.duration_ms)
    if bar.status == "replayed":
        took = f"{fmt_ms(bar.record_ms)} when it ran"
    return (
        f"{bar.node} at {bar.key}\nprovider: {provider}\nattempt {bar.attempt}: "
        f"{_STATUS_TEXT.get(bar.status, bar.status)}\n{took}, "
        f"from {fmt_ms(bar.start_ms)} to {fmt_ms(bar.end_ms)}"
    )


def _bar(c: _Canvas, bar: Bar, color: str) -> None:
    x0, x1 = c.x(bar.start_ms), c.x(bar.end_ms)
    w = max(x1 - x0, _MIN_PX)
    y = c.mid(bar.lane) - _BAR_H / 2
    status = bar.status
    style = f'fill="{color}"'
    overlay = ""
    if status in ("failed", "retry", "rate_limited"):
        edge = _PAUSE if status == "rate_limited" else _FAILED
        style += f' stroke="{edge}" stroke-width="1.5"'
        overlay = f"url(#{c.uid}-hatch)"
    elif status == "cancelled":
        style += f' fill-opacity="0.35" stroke="{_INK}" stroke-width="1" stroke-dasharray="3,2"'
    elif status == "interrupted":
        style += ' stroke="#6a1b9a" stroke-width="2"'
    elif status == "replayed":
        w = max(w, 3.0)
        style = f'fill="#ffffff" stroke="{color}" stroke-width="1.5" stroke-dasharray="2,1"'
    geometry = f'x="{x0:.2f}" y="{y:.1f}" width="{w:.2f}" height="{_BAR_H}"'
    c.out.append(
        f'<rect class="bar {status}" data-key="{esc(bar.key)}" data-attempt="{bar.attempt}" '
        f"{geometry} {style}><title>{esc(_bar_title(bar))}</title></rect>"
    )
    if overlay:
        c.out.append(f'<rect class="hatch" {geometry} fill="{overlay}" pointer-events="none"/>')


def _group(c: _Canvas, lane: int, group: Sequence[Bar], colors: dict[str | None, str]) -> None:
    """Many bars too narrow to tell apart, drawn as one."""
    first, last = group[0], max(group, key=lambda b: b.end_ms)
    x0 = c.x(first.start_ms)
    w = max(c.x(last.end_ms) - x0, _MIN_PX)
    providers = {b.provider for b in group}
    color = colors[next(iter(providers))] if len(providers) == 1 else _INK
    failed = sum(b.status not in ("succeeded", "replayed") for b in group)
    title = (
        f"{len(group)} attempts from {fmt_ms(first.start_ms)} to {fmt_ms(last.end_ms)} "
        f"(too short to draw one by one), {failed} not succeeded; first {first.key}"
    )
    edge = f' stroke="{_FAILED}" stroke-width="1"' if failed else ""
    c.out.append(
        f'<rect class="group" data-count="{len(group)}" x="{x0:.2f}" '
        f'y="{c.mid(lane) - _BAR_H / 2:.1f}" width="{w:.2f}" height="{_BAR_H}" '
        f'fill="{color}"{edge}><title>{esc(title)}</title></rect>'
    )


def _bars(c: _Canvas, bars: Sequence[Bar], colors: dict[str | None, str]) -> None:
    """Each lane's bars; runs of touching sub-pixel bars become one group."""
    scale = c.plot / c.duration
    group: list[Bar] = []

    def flush() -> None:
        if len(group) == 1:
            _bar(c, group[0], colors[group[0].provider])
        elif group:
            _group(c, group[0].lane, group, colors)
        group.clear()

    for bar in bars:
        if bar.lane >= c.lanes:
            continue
        if (bar.end_ms - bar.start_ms) * scale >= _MIN_PX:
            flush()
            _bar(c, bar, colors[bar.provider])
            continue
        if group and (
            group[0].lane != bar.lane or (bar.start_ms - group[-1].end_ms) * scale > _MIN_PX
        ):
            flush()
        group.append(bar)
    flush()


def _rest(c: _Canvas, lanes: Sequence[Lane], bars: Sequence[Bar]) -> None:
    """One row standing for the lanes not drawn: when any of them was running."""
    hidden = [b for b in bars if b.lane >= c.lanes]
    y = c.y(c.lanes)
    out = c.out
    out.append(
        f'<text class="lane rest" x="6" y="{y + 15:.1f}" font-size="11" fill="{_INK}">'
        f"+{len(lanes) - c.lanes} more lanes</text>"
    )
    spans: list[list[float]] = []
    touching = _MIN_PX * c.duration / c.plot  # ms a pixel spans
    for bar in sorted(hidden, key=lambda b: b.start_ms):
        if spans and bar.start_ms <= spans[-1][1] + touching:
            spans[-1][1] = max(spans[-1][1], bar.end_ms)
        else:
            spans.append([bar.start_ms, bar.end_ms])
    title = f"{len(hidden)} attempts in {len(lanes) - c.lanes} lanes not drawn: see Timeline.bars"
    out.append(f'<g class="rest" fill="{_INK}" fill-opacity="0.3"><title>{esc(title)}</title>')
    for start, end in spans:
        x0 = c.x(start)
        out.append(
            f'<rect x="{x0:.2f}" y="{c.mid(c.lanes) - _BAR_H / 2:.1f}" '
            f'width="{max(c.x(end) - x0, _MIN_PX):.2f}" height="{_BAR_H}"/>'
        )
    out.append("</g>")


def _marks(c: _Canvas, marks: Sequence[Mark]) -> None:
    out = c.out
    labelled = len(marks) <= 16
    for mark in marks:
        if mark.lane >= c.lanes:
            continue
        shown = [b for b in mark.branches if b < c.lanes] or [c.lanes]
        x = c.x(mark.at_ms)
        top, bottom = c.mid(mark.lane), c.mid(max(shown))
        dash = ' stroke-dasharray="4,2"' if mark.kind == "join" else ""
        what = "fork after" if mark.kind == "fork" else "join of the fork after"
        title = (
            f"<title>{what} {esc(mark.key)} ({len(mark.branches)} paths), "
            f"at {fmt_ms(mark.at_ms)}</title>"
        )
        # A triangle on the forking path: pointing down into the branches at a
        # fork, up out of them at a join.
        tip, base = (top + 6, top - 3) if mark.kind == "fork" else (top - 6, top + 3)
        out.append(
            f'<g class="mark {mark.kind}" data-key="{esc(mark.key)}">{title}'
            f'<line x1="{x:.2f}" y1="{top:.1f}" x2="{x:.2f}" y2="{bottom:.1f}" '
            f'stroke="{_INK}" stroke-width="1.2"{dash}/>'
            f'<path d="M{x - 4:.2f},{base:.1f} L{x + 4:.2f},{base:.1f} L{x:.2f},{tip:.1f} Z" '
            f'fill="{_INK}"/>'
        )
        if labelled:
            out.append(
                f'<text x="{x + 3:.2f}" y="{c.y(mark.lane) + 7:.1f}" font-size="8" '
                f'fill="{_INK}">{mark.kind}</text>'
            )
        out.append("</g>")


def _legend_items(layout: Layout, colors: dict[str | None, str]) -> list[tuple[str, str]]:
    """``(swatch markup at 0,0, label)`` for what this picture shows."""
    items = []
    for name in sorted(p for p in colors if p is not None):
        items.append((f'<rect width="12" height="10" fill="{colors[name]}"/>', name))
    if any(b.provider is None for b in layout.bars):
        items.append((f'<rect width="12" height="10" fill="{_NO_PROVIDER}"/>', "no provider"))
    kinds = {w.kind for w in layout.waits}
    statuses = {b.status for b in layout.bars}
    if "queued" in kinds:
        items.append((f'<rect y="3" width="12" height="4" fill="{_WAIT}"/>', "waiting"))
    if "backoff" in kinds:
        swatch = '<line y1="5" x2="12" y2="5" stroke="#666666" stroke-width="2" '
        items.append((swatch + 'stroke-dasharray="3,2"/>', "retry backoff"))
    if "rate_limit" in kinds:
        items.append((f'<rect y="2" width="12" height="6" fill="{_PAUSE}"/>', "429 pause"))
    if "rate_limited" in statuses:
        swatch = f'<rect width="12" height="10" fill="#ffffff" stroke="{_PAUSE}"/>'
        items.append((swatch, "refused (429)"))
    if statuses & {"failed", "retry"}:
        items.append(
            (f'<rect width="12" height="10" fill="#ffffff" stroke="{_FAILED}"/>', "failed")
        )
    if "cancelled" in statuses:
        swatch = f'<rect width="12" height="10" fill="#ffffff" stroke="{_INK}" '
        items.append((swatch + 'stroke-dasharray="3,2"/>', "cancelled"))
    if "replayed" in statuses:
        swatch = f'<rect width="12" height="10" fill="#ffffff" stroke="{_INK}" '
        items.append((swatch + 'stroke-dasharray="2,1"/>', "replayed"))
    if layout.marks:
        items.append((f'<path d="M2,1 L10,1 L6,9 Z" fill="{_INK}"/>', "fork"))
        items.append((f'<path d="M2,9 L10,9 L6,1 Z" fill="{_INK}"/>', "join"))
    return items


def _legend(items: Sequence[tuple[str, str]], top: float, width: int) -> tuple[str, float]:
    """The legend's markup from ``top``, wrapping at ``width``, and where it ends."""
    x, y = float(_LABEL_W), top
    out = ['<g class="legend" font-size="10" fill="#444444">']
    for swatch, label in items:
        w = 20 + 6 * len(label) + 12  # a label's width, roughly, at this font size
        if x + w > width - _RIGHT and x > _LABEL_W:
            x, y = float(_LABEL_W), y + _LEGEND_ROW
        out.append(
            f'<g transform="translate({x:.0f},{y:.0f})">{swatch}'
            f'<text x="16" y="9">{esc(label)}</text></g>'
        )
        x += w
    out.append("</g>")
    return "".join(out), y + _LEGEND_ROW


def render_svg(layout: Layout, *, title: str, width: int, max_lanes: int, uid: str) -> str:
    """The SVG document of ``layout`` (``uid`` keeps its pattern ids apart from those
    of other timelines on one page)."""
    lanes = layout.lanes
    drawn = min(len(lanes), max_lanes)
    rows = drawn + (1 if len(lanes) > drawn else 0)
    c = _Canvas(layout, width, drawn, uid)
    colors = provider_colors(b.provider for b in layout.bars)
    bottom = c.y(max(rows, 1))
    legend, end = _legend(_legend_items(layout, colors), bottom + 10, width)
    height = end + 4
    out = c.out
    out.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
        f'viewBox="0 0 {width} {height:.0f}" font-family="Helvetica, Arial, sans-serif">'
    )
    out.append(f"<title>{esc(title)}</title>")
    out.append(
        f'<defs><pattern id="{uid}-hatch" width="5" height="5" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="2" height="5" fill="#ffffff" '
        'fill-opacity="0.6"/></pattern></defs>'
    )
    out.append(f'<rect width="{width}" height="{height:.0f}" fill="#ffffff"/>')
    out.append(
        f'<text x="6" y="{_TOP - 18}" font-size="11" font-weight="bold" fill="{_INK}">'
        f"{esc(title)}</text>"
    )
    _lane_rows(c, lanes[:drawn])
    _axis(c, bottom)
    _waits(c, layout.waits)
    _bars(c, layout.bars, colors)
    if len(lanes) > drawn:
        _rest(c, lanes, layout.bars)
    _marks(c, layout.marks)
    out.append(legend)
    out.append("</svg>")
    return "".join(out)
