"""``RunResult.timeline()``: its layout checked against the run's records, and its SVG."""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    CachePolicy,
    ConfigurationError,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinStrategy,
    Limits,
    MemoryStore,
    NodeRecord,
    ProviderLimit,
    RateLimited,
    Retry,
    RunContext,
    RunResult,
    Timeline,
)

pytestmark = pytest.mark.asyncio

SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parent.parent


class State(BaseModel):
    note: str = ""


@dataclass
class Alpha(BaseNode[State]):
    ms: int = 10
    provider: ClassVar[str | None] = "alpha"

    async def run(self, ctx: RunContext[State]) -> End[int]:
        await asyncio.sleep(self.ms / 1000)
        return End(self.ms)


@dataclass
class Beta(Alpha):
    provider: ClassVar[str | None] = "beta"


@dataclass
class Limited(BaseNode[State]):
    """Refused once by its provider (a 429 asking for a 50 ms pause), then accepted."""

    provider: ClassVar[str | None] = "beta"

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(0.005)
        if ctx.attempt == 1:
            raise RateLimited(retry_after=0.05)
        return End("accepted")


@dataclass
class Flaky(BaseNode[State]):
    """Fails its first attempt; retried after a 20 ms backoff."""

    retry: ClassVar[Retry | None] = Retry(attempts=3, backoff=0.02, jitter=0.0)

    async def run(self, ctx: RunContext[State]) -> End[int]:
        await asyncio.sleep(0.01)
        if ctx.attempt == 1:
            raise ConnectionError("flaky")
        return End(ctx.attempt)


@dataclass
class Nested(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork([Alpha(30), Alpha(25)])


@dataclass
class Join(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(0.005)
        return End(f"{ctx.join.succeeded if ctx.join else 0} joined")


@dataclass
class Start(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        # Not in alphabetical order: lanes follow branch order.
        branches = {
            "fast": Alpha(20),
            "slow": Alpha(90),
            "limited": Limited(),
            "waiter": Beta(30),
            "flaky": Flaky(),
            "nested": Nested(),
        }
        return Fork(branches, then=Join())


BRANCHES = ["fast", "slow", "limited", "waiter", "flaky", "nested"]
GRAPH = Graph([Start, Alpha, Beta, Limited, Flaky, Nested, Join])


async def _fork_join_run() -> RunResult[State]:
    # beta runs one call at a time: `waiter` waits for `limited`'s slot and pause.
    limits = Limits(
        providers={"alpha": ProviderLimit(concurrency=8), "beta": ProviderLimit(concurrency=1)}
    )
    return await GRAPH.run(Start(), state=State(), limits=limits)


@pytest_asyncio.fixture
async def run() -> RunResult[State]:
    return await _fork_join_run()


def _lane_of(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


def _span(record: NodeRecord, origin: float) -> tuple[float, float]:
    """A record's (start, end) in ms from ``origin``, from the record alone."""
    start = (record.started_at - origin) * 1000.0
    if record.attempt_log:
        return start, (record.attempt_log[-1][1] - origin) * 1000.0
    return start, start + record.execution_time_ms


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


async def test_lanes_are_paths_in_branch_order(run: RunResult[State]) -> None:
    timeline = run.timeline()
    expected = ["", *(f"0.Start/{b}/" for b in BRANCHES)]
    expected[-1:] = ["0.Start/nested/", "0.Start/nested/0.Nested/0/", "0.Start/nested/0.Nested/1/"]
    assert [lane.path for lane in timeline.lanes] == expected
    assert [lane.index for lane in timeline.lanes] == list(range(len(expected)))
    assert [lane.depth for lane in timeline.lanes] == [0, 1, 1, 1, 1, 1, 1, 2, 2]
    assert timeline.lanes[0].label == "main"
    assert timeline.lanes[3].label == "limited: Limited"
    assert timeline.lanes[7].fork == "0.Start/nested/0.Nested"
    # Every record's bars are in the lane of its own path, and only there.
    lane_path = {lane.index: lane.path for lane in timeline.lanes}
    for bar in timeline.bars:
        assert lane_path[bar.lane] == _lane_of(bar.key)
    assert {b.key for b in timeline.bars} == {r.key for r in run.records}


async def test_bars_match_the_records(run: RunResult[State]) -> None:
    timeline = run.timeline()
    origin = run._began
    assert origin is not None
    for record in run.records:
        bars = [b for b in timeline.bars if b.key == record.key]
        assert all(b.node == record.node and b.provider == record.provider for b in bars)
        if record.attempt_log:
            assert [(b.start_ms, b.end_ms) for b in bars] == [
                pytest.approx(((s - origin) * 1000, (e - origin) * 1000))
                for s, e, _ in record.attempt_log
            ]
            assert [b.attempt for b in bars] == list(range(1, record.attempts + 1))
        else:
            (bar,) = bars
            assert (bar.start_ms, bar.end_ms) == pytest.approx(_span(record, origin))
            assert bar.attempt == record.attempts == 1
        assert bars[-1].status == record.status
    assert timeline.duration_ms >= run.elapsed_ms
    assert max(b.end_ms for b in timeline.bars) <= timeline.duration_ms


async def test_start_order_and_overlap_follow_the_records(run: RunResult[State]) -> None:
    timeline = run.timeline()
    origin = run._began
    assert origin is not None
    first: dict[str, float] = {}
    for bar in timeline.bars:
        first[bar.key] = min(first.get(bar.key, bar.start_ms), bar.start_ms)
    by_bars = sorted(first, key=first.__getitem__)
    by_records = [r.key for r in sorted(run.records, key=lambda r: r.started_at)]
    assert by_bars == by_records

    spans = {r.key: _span(r, origin) for r in run.records}
    drawn = {k: (first[k], max(b.end_ms for b in timeline.bars if b.key == k)) for k in first}
    for a in spans:
        for b in spans:
            assert _overlap(drawn[a], drawn[b]) == _overlap(spans[a], spans[b]), (a, b)
    # What ran in parallel overlaps: branches with each other, nested branches too.
    key = {
        b: f"0.Start/{b}/0.{n}"
        for b, n in zip(
            BRANCHES, ["Alpha", "Alpha", "Limited", "Beta", "Flaky", "Nested"], strict=True
        )
    }
    assert _overlap(drawn[key["fast"]], drawn[key["slow"]])
    assert _overlap(drawn[key["slow"]], drawn[key["flaky"]])
    assert _overlap(drawn[key["slow"]], drawn[key["limited"]])
    nested = [k for k in drawn if k.startswith("0.Start/nested/0.Nested/")]
    assert len(nested) == 2 and _overlap(drawn[nested[0]], drawn[nested[1]])
    # The join starts after every branch ended; the fork before any started.
    branch_bars = [b for b in timeline.bars if b.key.startswith("0.Start/")]
    (join,) = [b for b in timeline.bars if b.key == "1.Join"]
    (start,) = [b for b in timeline.bars if b.key == "0.Start"]
    assert join.start_ms >= max(b.end_ms for b in branch_bars)
    assert start.end_ms <= min(b.start_ms for b in branch_bars)


async def test_fork_and_join_marks(run: RunResult[State]) -> None:
    timeline = run.timeline()
    marks = {(m.kind, m.key): m for m in timeline.marks}
    assert set(marks) == {
        ("fork", "0.Start"),
        ("join", "0.Start"),
        ("fork", "0.Start/nested/0.Nested"),
        ("join", "0.Start/nested/0.Nested"),
    }
    outer_fork, outer_join = marks[("fork", "0.Start")], marks[("join", "0.Start")]
    assert outer_fork.lane == 0 and outer_fork.branches == (1, 2, 3, 4, 5, 6)
    assert outer_join.branches == outer_fork.branches
    branch_bars = [b for b in timeline.bars if b.key.startswith("0.Start/")]
    branch_waits = [w for w in timeline.waits if w.key.startswith("0.Start/")]
    assert outer_fork.at_ms <= min(b.start_ms for b in branch_bars)
    assert outer_fork.at_ms <= min(w.start_ms for w in branch_waits)
    assert max(b.end_ms for b in branch_bars) <= outer_join.at_ms
    (join,) = [b for b in timeline.bars if b.key == "1.Join"]
    assert outer_join.at_ms <= join.start_ms
    # The nested fork has no `then`: it joins when its last branch ends.
    inner_join = marks[("join", "0.Start/nested/0.Nested")]
    inner = [b for b in timeline.bars if b.key.startswith("0.Start/nested/0.Nested/")]
    assert inner_join.lane == 6 and inner_join.at_ms == max(b.end_ms for b in inner)


async def test_retries_pauses_and_waits_are_drawn_as_such(run: RunResult[State]) -> None:
    timeline = run.timeline()
    flaky = [b for b in timeline.bars if b.node == "Flaky"]
    assert [b.status for b in flaky] == ["retry", "succeeded"]
    (backoff,) = [w for w in timeline.waits if w.kind == "backoff"]
    assert backoff.key == flaky[0].key
    assert (backoff.start_ms, backoff.end_ms) == (flaky[0].end_ms, flaky[1].start_ms)
    assert backoff.end_ms - backoff.start_ms >= 20 * 0.9  # the 20 ms backoff

    limited = [b for b in timeline.bars if b.node == "Limited"]
    assert [b.status for b in limited] == ["rate_limited", "succeeded"]
    (pause,) = [w for w in timeline.waits if w.kind == "rate_limit"]
    assert (pause.start_ms, pause.end_ms) == (limited[0].end_ms, limited[1].start_ms)
    assert pause.end_ms - pause.start_ms >= 50 * 0.8  # the provider's 50 ms pause

    # `waiter` (beta, one at a time) waited for `limited`'s slot and the pause.
    (waiter,) = [b for b in timeline.bars if b.node == "Beta"]
    (queued,) = [w for w in timeline.waits if w.key == waiter.key]
    assert queued.kind == "queued" and queued.end_ms == waiter.start_ms
    assert queued.end_ms - queued.start_ms >= 50 * 0.8
    record = next(r for r in run.records if r.key == waiter.key)
    assert record.queued_at is not None
    assert queued.start_ms == pytest.approx((record.queued_at - (run._began or 0)) * 1000)


def _svg_tree(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    return root


def _classed(root: ET.Element, tag: str, first_class: str) -> list[ET.Element]:
    return [
        e
        for e in root.iter(f"{SVG}{tag}")
        if (e.get("class") or "").split(" ")[:1] == [first_class]
    ]


async def test_the_svg_draws_every_bar_in_its_lane(run: RunResult[State]) -> None:
    timeline = run.timeline()
    root = _svg_tree(timeline.svg())
    rects = _classed(root, "rect", "bar")
    assert len(rects) == len(timeline.bars)
    lane_of = {lane.index: lane for lane in timeline.lanes}
    rows: dict[float, list[tuple[float, str]]] = {}
    for rect, bar in zip(rects, timeline.bars, strict=True):
        assert rect.get("data-key") == bar.key
        assert rect.get("class") == f"bar {bar.status}"
        title = rect.find(f"{SVG}title")
        assert title is not None and title.text is not None
        assert bar.node in title.text and f"attempt {bar.attempt}" in title.text
        assert (bar.provider or "no provider") in title.text
        rows.setdefault(float(rect.get("y", "0")), []).append((float(rect.get("x", "0")), bar.key))
        assert lane_of[bar.lane].path == _lane_of(bar.key)
    # One row per lane holding bars, bars left to right in start order.
    assert len(rows) == len({b.lane for b in timeline.bars})
    for row in rows.values():
        assert [x for x, _ in row] == sorted(x for x, _ in row)
    # The main path's row is above every branch's.
    assert min(rows) == float(rects[0].get("y", "0"))
    assert len(_classed(root, "rect", "hatch")) == 2  # the retried and the refused attempt
    # waiter's wait and the 429 pause (and, on a busy machine, maybe a short wait more)
    waits = _classed(root, "rect", "wait")
    assert {e.get("class") for e in waits} >= {"wait queued", "wait rate_limit"}
    assert len(waits) == len([w for w in timeline.waits if w.kind != "backoff"])
    assert len(_classed(root, "line", "wait")) == 1  # the backoff
    marks = [g.get("class") for g in _classed(root, "g", "mark")]
    assert sorted(marks) == ["mark fork", "mark fork", "mark join", "mark join"]
    lanes = [t.text for t in _classed(root, "text", "lane")]
    assert lanes == [lane.label for lane in timeline.lanes]
    legend = "".join(root.find(f"{SVG}g[@class='legend']").itertext())  # type: ignore[union-attr]
    for word in ["alpha", "beta", "no provider", "waiting", "retry backoff", "429 pause", "fork"]:
        assert word in legend


async def test_display_protocol_and_text(run: RunResult[State]) -> None:
    timeline = run.timeline()
    bundle = timeline._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/html", "text/plain"}
    assert bundle["image/svg+xml"] == timeline._repr_svg_() == timeline.svg()
    assert bundle["text/html"] == timeline._repr_html_()
    assert timeline._repr_html_().startswith("<div") and timeline.svg() in timeline._repr_html_()
    assert set(timeline._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    assert "text/html" not in timeline._repr_mimebundle_(exclude=["text/html"])
    text = bundle["text/plain"]
    assert text.splitlines()[0].startswith(f"Timeline of run {run.execution_id[:12]}")
    assert "Flaky@" in text and " retry" in text and "rate_limited" in text
    assert len(text.splitlines()) == 1 + len(timeline.lanes)
    assert repr(timeline).startswith(f"<Timeline {run.execution_id[:12]}: lanes=9 bars=")
    assert "rate_limit=1" in repr(timeline) and "backoff=1" in repr(timeline)


async def test_save_svg_and_html(run: RunResult[State], tmp_path: Path) -> None:
    timeline = run.timeline()
    svg = timeline.save(tmp_path / "run.svg")
    assert svg == tmp_path / "run.svg"
    assert _svg_tree(svg.read_text(encoding="utf-8")).get("width") == "960"
    page = timeline.save(str(tmp_path / "run.HTML")).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and timeline.svg() in page
    with pytest.raises(ConfigurationError, match=r"\.svg, \.html or \.htm.*'run\.png'"):
        timeline.save(tmp_path / "run.png")
    assert not (tmp_path / "run.png").exists()


async def test_same_records_same_bytes(run: RunResult[State]) -> None:
    assert run.timeline().svg() == run.timeline().svg()
    narrow = run.timeline(width=500, max_lanes=3)
    root = _svg_tree(narrow.svg())
    assert root.get("width") == "500"
    drawn = {e.get("data-key") for e in _classed(root, "rect", "bar")}
    assert drawn == {b.key for b in narrow.bars if b.lane < 3}
    rest = _classed(root, "text", "lane")[-1]
    assert rest.text == f"+{len(narrow.lanes) - 3} more lanes"
    assert _classed(root, "g", "rest")  # when the hidden lanes ran
    for bad in [{"width": 100}, {"width": 960.0}, {"max_lanes": 0}, {"max_lanes": True}]:
        with pytest.raises(ConfigurationError):
            run.timeline(**bad)


# -- names that are not XML-safe -------------------------------------------------------
#: A node class whose name is not XML-safe (``type`` takes any name).
Odd: Any = type("Odd<&>\"'", (Alpha,), {"__module__": __name__})


@dataclass
class Boom(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[int]:
        await asyncio.sleep(0.001)
        raise ValueError("<boom> & </svg>")


@dataclass
class Weird(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> Fork[State]:
        return Fork(
            {'<b>&"x"\x01': Odd(15), "boom": Boom(), "loser": Alpha(200)},
            join=JoinStrategy.ANY,
            on_error=FailureMode.CONTINUE,
        )


async def test_odd_names_failures_and_cancellations_are_escaped() -> None:
    graph = Graph([Weird, Odd, Boom, Alpha])
    result = await graph.run(Weird(), state=State(), execution_id='id "<&>"')
    timeline = result.timeline()
    statuses = {b.node: b.status for b in timeline.bars}
    assert statuses == {
        "Weird": "succeeded",
        Odd.__name__: "succeeded",
        "Boom": "failed",
        "Alpha": "cancelled",
    }
    root = _svg_tree(timeline.svg())
    texts = "".join(root.itertext())
    assert "Odd<&>\"'" in texts and '<b>&"x"' in texts and 'id "<&>"' in texts
    assert "\x01" not in timeline.svg()
    classes = {e.get("class") for e in _classed(root, "rect", "bar")}
    assert classes == {"bar succeeded", "bar failed", "bar cancelled"}
    # The fork's first winner decides: the loser is cut short well before 200 ms.
    loser = next(b for b in timeline.bars if b.status == "cancelled")
    assert loser.duration_ms < 150
    pattern = root.find(f"{SVG}defs/{SVG}pattern")
    assert pattern is not None and re.fullmatch(r"[A-Za-z0-9-]+", pattern.get("id", ""))


# -- replayed and cached nodes -----------------------------------------------------
CALLS: list[str] = []


@dataclass
class Slow(BaseNode[State]):
    cache: ClassVar[CachePolicy] = CachePolicy()

    async def run(self, ctx: RunContext[State]) -> Then:
        CALLS.append("slow")
        await asyncio.sleep(0.03)
        return Then()


@dataclass
class Then(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[str]:
        if "failed" not in CALLS:  # the first run fails here; its resume goes on
            CALLS.append("failed")
            raise ConnectionError("provider went away")
        return End("done")


async def test_replayed_nodes_take_no_time() -> None:
    store, cache = MemoryStore(), MemoryStore()
    graph = Graph([Slow, Then])
    CALLS.clear()
    with pytest.raises(ConnectionError):
        await graph.run(Slow(), state=State(), store=store, cache=cache, execution_id="r1")
    resumed = await graph.resume("r1", store=store)
    replayed = [b for b in resumed.timeline().bars if b.key == "0.Slow"]
    assert [(b.status, b.duration_ms, b.attempt) for b in replayed] == [("replayed", 0.0, 1)]
    assert replayed[0].record_ms >= 30 * 0.9  # what it took when it ran
    assert not [w for w in resumed.timeline().waits if w.key == "0.Slow"]
    # A cache hit in a new run is not run either.
    hit = await graph.run(Slow(), state=State(), cache=cache)
    assert hit.cache_hits == 1 and CALLS.count("slow") == 1
    (bar,) = [b for b in hit.timeline().bars if b.key == "0.Slow"]
    assert (bar.status, bar.duration_ms, bar.attempt) == ("replayed", 0.0, 0)
    root = _svg_tree(hit.timeline().svg())
    assert {e.get("class") for e in _classed(root, "rect", "bar")} == {
        "bar replayed",
        "bar succeeded",
    }


# -- layouts from records alone ----------------------------------------------------
def _record(key: str, start: float, ms: float = 1.0) -> NodeRecord:
    return NodeRecord(key, key.rsplit(".", 1)[-1], start, ms, 1, queued_at=start)


async def test_forks_of_one_path_in_step_order_each_under_its_node() -> None:
    records = [
        _record("0.A", 0.000),
        _record("0.A/x/0.B", 0.001),
        _record("0.A/x/0.B/0/0.C", 0.002),
        _record("1.A", 0.003),
        _record("2.A", 0.004),
        _record("2.A/y/0.B", 0.006),
        _record("2.A/x/0.B", 0.005),  # launched first: branch order
        _record("10.A", 0.007),
        _record("10.A/x/0.B", 0.008),
    ]
    timeline = Timeline(reversed(records), origin=0.0)
    assert [lane.path for lane in timeline.lanes] == [
        "",
        "0.A/x/",
        "0.A/x/0.B/0/",
        "2.A/x/",
        "2.A/y/",
        "10.A/x/",
    ]
    marks = {(m.kind, m.key): m for m in timeline.marks}
    assert marks[("join", "0.A")].at_ms == pytest.approx(3.0)  # where 1.A was queued
    assert marks[("join", "2.A")].at_ms == pytest.approx(7.0)  # no step 3: its last branch
    assert marks[("fork", "10.A")].branches == (5,)
    assert Timeline([]).svg().startswith("<svg")


async def test_ten_thousand_records_render_quickly() -> None:
    wide = [_record("0.Fan", 0.0)] + [
        _record(f"0.Fan/{i}/0.Leaf", 0.001 + i * 1e-5, 0.5) for i in range(10_000)
    ]
    chain = [_record(f"{i}.Step", i * 1e-4, 0.05) for i in range(10_000)]
    for records in (wide, chain):
        began = time.perf_counter()
        timeline = Timeline(records, origin=0.0)
        svg = timeline.svg()
        took = time.perf_counter() - began
        assert took < 5.0  # about 0.1 s here; generous for slow machines
        root = _svg_tree(svg)
        assert len(timeline.bars) == len(records)
        drawn = _classed(root, "rect", "bar") + _classed(root, "rect", "group")
        assert 0 < len(drawn) <= 40 * 200  # capped lanes, tiny bars grouped
        assert len(svg) < 2_000_000
    groups = _classed(root, "rect", "group")
    assert sum(int(g.get("data-count", "0")) for g in groups) + len(
        _classed(root, "rect", "bar")
    ) == len(chain)


# -- the docs page's example runs --------------------------------------------------
async def test_docs_timeline_example_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "timeline.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/timeline.md: update this test with its examples"
    printed = re.findall(r"prints\n\n```text\n(.*?)```", text, flags=re.DOTALL)
    assert len(printed) == 1, "docs/timeline.md: the example's output follows it"
    # The example calls run_sync, which runs the graph in a helper thread here.
    code = compile(blocks[0], "docs/timeline.md[block 0]", "exec", dont_inherit=True)
    exec(code, {"__name__": "docs_timeline"})
    assert capsys.readouterr().out.splitlines() == printed[0].splitlines()
    assert (tmp_path / "timeline.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
