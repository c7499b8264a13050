"""Batches: ``Graph.map`` / ``map_sync`` / ``imap`` over many inputs.

Scenario tests: order, failures by index, bounded concurrency and memory measured
by the nodes themselves, lazy sources, cancellation that leaves no task behind,
shared limits, the progress bar, and a batch resumed from a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import io
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel
from tqdm import tqdm

from lift_graph import (
    BaseNode,
    BatchResult,
    ConfigurationError,
    End,
    Graph,
    Limits,
    MemoryStore,
    ProviderLimit,
    RunContext,
    UnknownNodeError,
)

pytestmark = pytest.mark.asyncio

WAIT = 10.0  # generous: only a hang takes this long


class Item(BaseModel):
    x: int
    fetched: int = 0


@dataclass
class Probe:
    """What the nodes saw: inputs in flight, starts, ends, per-node call counts."""

    running: int = 0
    peak: int = 0
    started: int = 0
    ended: int = 0
    cancelled: int = 0
    calls: Counter[tuple[str, int]] = field(default_factory=Counter)
    fail: set[int] = field(default_factory=set)
    fail_once: set[int] = field(default_factory=set)
    #: Inputs whose second node waits for ``gate`` (None: no one waits).
    hold: set[int] = field(default_factory=set)
    gate: asyncio.Event | None = None
    waiting: int = 0
    waiting_target: int = 0
    all_waiting: asyncio.Event | None = None
    sleep: float = 0.0
    yielded: int = 0
    window_seen: int = 0
    reached: asyncio.Event | None = None
    reach_at: int = 0


@dataclass
class Fetch(BaseNode[Item]):
    async def run(self, ctx: RunContext[Item]) -> Score:
        p: Probe = ctx.deps
        p.calls["fetch", ctx.state.x] += 1
        p.running += 1
        p.started += 1
        p.peak = max(p.peak, p.running)
        p.window_seen = max(p.window_seen, p.started - p.yielded)
        if p.reached is not None and p.started >= p.reach_at:
            p.reached.set()
        ctx.state.fetched = ctx.state.x * 10
        try:
            await asyncio.sleep(p.sleep)
        except asyncio.CancelledError:
            p.running -= 1
            p.cancelled += 1
            raise
        return Score()


@dataclass
class Score(BaseNode[Item]):
    async def run(self, ctx: RunContext[Item]) -> End[int]:
        p: Probe = ctx.deps
        x = ctx.state.x
        p.calls["score", x] += 1
        try:
            if x in p.hold and p.gate is not None:
                p.waiting += 1
                if p.all_waiting is not None and p.waiting >= p.waiting_target:
                    p.all_waiting.set()
                await p.gate.wait()
            await asyncio.sleep(p.sleep)
            if x in p.fail:
                raise ValueError(f"input {x} is bad")
            if x in p.fail_once:
                p.fail_once.discard(x)
                raise ConnectionError(f"input {x}: provider went away")
            return End(ctx.state.fetched + 1)
        except asyncio.CancelledError:
            p.cancelled += 1
            raise
        finally:
            p.running -= 1
            p.ended += 1


GRAPH: Graph[Item] = Graph([Fetch, Score], name="batch-test")


def items(n: int) -> list[Item]:
    return [Item(x=i) for i in range(n)]


def expected(n: int, failed: set[int] = frozenset()) -> list[int | None]:  # type: ignore[assignment]
    return [None if i in failed else i * 10 + 1 for i in range(n)]


def _others(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t not in before and not t.done()]


# -- the acceptance scenario ----------------------------------------------------------


async def test_thousand_inputs_sixteen_at_once_three_failures() -> None:
    bad = {3, 517, 998}
    probe = Probe(fail=bad, sleep=0.001)
    result = await GRAPH.map(Fetch(), items(1000), max_concurrency=16, deps=probe)

    assert isinstance(result, BatchResult)
    assert result.outputs == expected(1000, bad)
    assert list(result.errors) == sorted(bad)
    assert all(isinstance(e, ValueError) for e in result.errors.values())
    assert str(result.errors[517]) == "input 517 is bad"
    assert [i for i, r in enumerate(result.results) if r is None] == sorted(bad)
    assert (result.total, result.succeeded, result.failed) == (1000, 997, 3)
    assert 8 <= probe.peak <= 16  # measured by the nodes: inputs in flight
    assert result.peak_concurrency == probe.peak
    ok = result.results[0]
    assert ok is not None and ok.execution_id == f"{result.batch_id}-0"
    assert ok.state.fetched == 0 and ok.output == 1
    assert len(repr(result)) < 300 and "failed=3" in repr(result)


async def test_raise_errors_groups_the_failures_by_index() -> None:
    result = await GRAPH.map(Fetch(), items(6), deps=Probe(fail={4, 1}))
    with pytest.raises(ExceptionGroup, match=r"2 of 6 inputs .* failed \(indexes 1, 4\)") as info:
        result.raise_errors()
    assert [str(e) for e in info.value.exceptions] == ["input 1 is bad", "input 4 is bad"]
    (await GRAPH.map(Fetch(), items(3), deps=Probe())).raise_errors()  # nothing failed


# -- sources ------------------------------------------------------------------------


def _list(n: int) -> Any:
    return items(n)


def _generator(n: int) -> Any:
    return (Item(x=i) for i in range(n))


def _async_generator(n: int) -> Any:
    async def gen() -> AsyncIterator[Item]:
        for i in range(n):
            await asyncio.sleep(0)
            yield Item(x=i)

    return gen()


@pytest.mark.parametrize("source", [_list, _generator, _async_generator])
async def test_sources(source: Any) -> None:
    result = await GRAPH.map(Fetch(), source(40), max_concurrency=5, deps=Probe(fail={7}))
    assert result.outputs == expected(40, {7})
    assert list(result.errors) == [7]


@pytest.mark.parametrize("source", [_list, _generator, _async_generator])
async def test_an_empty_source(source: Any) -> None:
    result = await GRAPH.map(Fetch(), source(0), deps=Probe())
    assert (result.results, result.errors, result.outputs) == ([], {}, [])


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_the_source_is_pulled_only_when_a_run_can_start(asynchronous: bool) -> None:
    probe = Probe(sleep=0.002)
    limit = 3
    pulled: list[int] = []

    def check(i: int) -> Item:
        # Runs still in flight when item i is pulled: fewer than `limit`.
        assert i - probe.ended <= limit - 1, (i, probe.ended)
        pulled.append(i)
        return Item(x=i)

    def sync_source() -> Iterator[Item]:
        for i in range(30):
            yield check(i)

    async def async_source() -> AsyncIterator[Item]:
        for i in range(30):
            yield check(i)

    source = async_source() if asynchronous else sync_source()
    result = await GRAPH.map(Fetch(), source, max_concurrency=limit, deps=probe)
    assert result.outputs == expected(30)
    assert pulled == list(range(30))
    assert probe.peak <= limit


async def test_an_endless_source_with_imap_pulls_a_bounded_number() -> None:
    pulled = 0

    def endless() -> Iterator[Item]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield Item(x=i)

    got = []
    async with contextlib.aclosing(
        GRAPH.imap(Fetch(), endless(), max_concurrency=4, window=8, deps=Probe())
    ) as results:
        async for index, result in results:
            got.append((index, result.output))
            if index == 9:
                break
    assert got == [(i, i * 10 + 1) for i in range(10)]
    assert pulled <= 10 + 8


async def test_a_slow_first_run_does_not_hold_back_the_others() -> None:
    """An async source whose first item is slow to run: the others start and finish."""
    probe = Probe(hold={0}, gate=asyncio.Event())

    async def source() -> AsyncIterator[Item]:
        for i in range(20):
            yield Item(x=i)

    async def release_when_others_done() -> None:
        while probe.ended < 19:
            await asyncio.sleep(0.001)
        assert probe.gate is not None
        probe.gate.set()

    releaser = asyncio.create_task(release_when_others_done())
    result = await asyncio.wait_for(
        GRAPH.map(Fetch(), source(), max_concurrency=4, deps=probe), WAIT
    )
    await releaser
    assert result.outputs == expected(20)


async def test_a_slow_source_item_does_not_hold_back_earlier_results() -> None:
    """The source waits before item 3: results 0-2 still come out meanwhile."""
    more = asyncio.Event()

    async def source() -> AsyncIterator[Item]:
        for i in range(6):
            if i == 3:
                await more.wait()
            yield Item(x=i)

    got = []
    async with contextlib.aclosing(
        GRAPH.imap(Fetch(), source(), max_concurrency=4, deps=Probe())
    ) as results:
        async for index, _ in results:
            got.append(index)
            if index == 2:
                more.set()  # only reachable if 0-2 were handed over while the source waited
    assert got == list(range(6))


async def test_a_source_that_fails_cancels_the_runs_and_raises() -> None:
    probe = Probe(hold=set(range(10)), gate=asyncio.Event())

    async def source() -> AsyncIterator[Item]:
        for i in range(3):
            yield Item(x=i)
        while probe.waiting < 3:
            await asyncio.sleep(0.001)
        raise RuntimeError("the queue went away")

    before = set(asyncio.all_tasks())
    with pytest.raises(RuntimeError, match="the queue went away"):
        await GRAPH.map(Fetch(), source(), max_concurrency=4, deps=probe)
    assert probe.cancelled == 3 and probe.running == 0
    assert _others(before) == []


# -- order and bounded memory ----------------------------------------------------------


async def test_imap_yields_in_input_order_with_a_bounded_window() -> None:
    window = 8
    probe = Probe(hold={0}, gate=asyncio.Event(), reached=asyncio.Event(), reach_at=window)
    order = []

    async def consume() -> None:
        async with contextlib.aclosing(
            GRAPH.imap(Fetch(), items(50), max_concurrency=4, window=window, deps=probe)
        ) as results:
            async for index, result in results:
                order.append(index)
                assert not isinstance(result, BaseException)
                assert result.output == index * 10 + 1
                probe.yielded += 1

    consumer = asyncio.create_task(consume())
    assert probe.reached is not None
    await asyncio.wait_for(probe.reached.wait(), WAIT)
    await asyncio.sleep(0.05)  # input 0 is stuck: nothing past the window may start
    assert probe.started == window
    assert probe.ended == window - 1  # finished, held back for order
    assert probe.gate is not None
    probe.gate.set()
    await asyncio.wait_for(consumer, WAIT)
    assert order == list(range(50))
    assert probe.window_seen <= window
    assert probe.peak <= 4


async def test_imap_yields_failures_in_place() -> None:
    got = [
        (i, type(r).__name__)
        async for i, r in GRAPH.imap(Fetch(), items(5), deps=Probe(fail={1, 3}))
    ]
    names = ["RunResult", "ValueError", "RunResult", "ValueError", "RunResult"]
    assert got == list(enumerate(names))


async def test_closing_imap_early_cancels_and_awaits_every_run() -> None:
    probe = Probe(hold=set(range(1, 100)), gate=asyncio.Event())
    before = set(asyncio.all_tasks())
    async with contextlib.aclosing(
        GRAPH.imap(Fetch(), items(100), max_concurrency=6, deps=probe)
    ) as results:
        async for index, _ in results:
            assert index == 0
            while probe.waiting < 5:  # inputs 1-5 are in flight
                await asyncio.sleep(0.001)
            break
    assert probe.cancelled == 5 and probe.running == 0
    assert _others(before) == []


async def test_cancelling_map_cancels_and_awaits_every_run() -> None:
    probe = Probe(hold=set(range(100)), gate=asyncio.Event())
    probe.all_waiting, probe.waiting_target = asyncio.Event(), 4
    before = set(asyncio.all_tasks())
    task = asyncio.create_task(GRAPH.map(Fetch(), items(100), max_concurrency=4, deps=probe))
    await asyncio.wait_for(probe.all_waiting.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert probe.cancelled == 4 and probe.running == 0 and probe.started == 4
    assert _others(before - {task}) == []


class Fatal(BaseException):
    """Not an Exception: like KeyboardInterrupt, it must stop the whole batch."""


@dataclass
class Explode(BaseNode[Item]):
    async def run(self, ctx: RunContext[Item]) -> End[int]:
        p: Probe = ctx.deps
        p.started += 1
        if ctx.state.x == 3:
            while p.started < 6:
                await asyncio.sleep(0.001)
            raise Fatal("stop")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            p.cancelled += 1
            raise
        return End(0)


async def test_a_base_exception_stops_the_batch_and_propagates() -> None:
    probe = Probe()
    before = set(asyncio.all_tasks())
    with pytest.raises(Fatal):
        await Graph([Explode]).map(Explode(), items(20), max_concurrency=6, deps=probe)
    assert probe.cancelled == 5
    assert _others(before) == []


# -- start, sync use, limits --------------------------------------------------------------


@dataclass
class Tagged(BaseNode[Item]):
    tag: str
    seen: int = 0

    async def run(self, ctx: RunContext[Item]) -> End[str]:
        self.seen += 1  # a run rebinding its start node's field must not leak
        return End(f"{self.tag}:{ctx.state.x}:{self.seen}")


TAGGED: Graph[Item] = Graph([Tagged])


async def test_start_may_be_a_callable_of_index_and_state() -> None:
    def start(index: int, state: Item) -> Tagged:
        if index == 2:
            raise LookupError("no start for input 2")
        return Tagged(tag=f"t{index}")

    result = await TAGGED.map(start, items(4))
    assert result.outputs == ["t0:0:1", "t1:1:1", None, "t3:3:1"]
    assert isinstance(result.errors[2], LookupError)


async def test_a_start_node_is_copied_for_each_input() -> None:
    node = Tagged(tag="n")
    result = await TAGGED.map(node, items(5), max_concurrency=1)
    assert result.outputs == [f"n:{i}:1" for i in range(5)]
    assert node.seen == 0


async def test_map_sync_without_a_running_loop() -> None:
    def call() -> BatchResult[Item]:
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        return GRAPH.map_sync(Fetch(), items(10), deps=Probe(fail={9}))

    result = await asyncio.to_thread(call)
    assert result.outputs == expected(10, {9})


async def test_map_sync_inside_a_running_loop() -> None:
    asyncio.get_running_loop()
    result = GRAPH.map_sync(Fetch(), _generator(10), max_concurrency=3, deps=Probe())
    assert result.outputs == expected(10)


@dataclass
class CallsProvider(BaseNode[Item]):
    provider = "fake"

    async def run(self, ctx: RunContext[Item]) -> End[int]:
        p: Probe = ctx.deps
        p.running += 1
        p.peak = max(p.peak, p.running)
        try:
            await asyncio.sleep(0.002)
        finally:
            p.running -= 1
        return End(ctx.state.x)


async def test_limits_are_shared_by_every_run_of_the_batch() -> None:
    limits = Limits(providers={"fake": ProviderLimit(concurrency=2)})
    probe = Probe()
    graph = Graph([CallsProvider])
    result = await graph.map(
        CallsProvider(), items(30), max_concurrency=8, limits=limits, deps=probe
    )
    assert result.outputs == list(range(30))
    assert probe.peak == 2 and limits.provider_peak("fake") == 2
    assert result.peak_concurrency == 8  # inputs admitted; the provider limit held nodes


async def test_a_global_node_limit_across_the_batch() -> None:
    limits = Limits(max_concurrency=3, providers={"fake": ProviderLimit()})
    probe = Probe()
    graph = Graph([CallsProvider])
    await graph.map(CallsProvider(), items(20), max_concurrency=10, limits=limits, deps=probe)
    assert probe.peak == 3 and limits.peak == 3


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST", default="none")


@dataclass
class SeesContext(BaseNode[Item]):
    async def run(self, ctx: RunContext[Item]) -> End[str]:
        seen = REQUEST.get()
        REQUEST.set(f"set by input {ctx.state.x}")  # must not leak into other inputs
        await asyncio.sleep(0.001)
        return End(seen)


async def test_runs_see_the_callers_context_variables_each_on_its_own_copy() -> None:
    token = REQUEST.set("caller")
    try:
        result = await Graph([SeesContext]).map(SeesContext(), items(10), max_concurrency=1)
    finally:
        REQUEST.reset(token)
    assert result.outputs == ["caller"] * 10


# -- progress ---------------------------------------------------------------------------


async def test_progress_bar_shows_total_done_and_failed() -> None:
    out = io.StringIO()
    bar = functools.partial(tqdm, file=out, mininterval=0, ascii=True)
    result = await GRAPH.map(Fetch(), items(20), progress=bar, deps=Probe(fail={4, 11}))
    assert result.failed == 2
    text = out.getvalue()
    assert "20/20" in text and "failed=2" in text and "run/s" in text


async def test_progress_true_uses_tqdm_auto(capsys: pytest.CaptureFixture[str]) -> None:
    await GRAPH.map(Fetch(), _generator(7), progress=True, deps=Probe())
    err = capsys.readouterr().err
    assert "7run" in err.replace(" ", "") and "failed=0" in err  # no total: a count


async def test_progress_is_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    await GRAPH.map(Fetch(), items(3), deps=Probe())
    assert capsys.readouterr().err == ""


class FakeBar:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs, self.n, self.postfix, self.closed = kwargs, 0, {}, False

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
        self.postfix = kw

    def close(self) -> None:
        self.closed = True


async def test_a_bar_passed_in_is_left_open_and_a_made_one_is_closed_on_cancel() -> None:
    mine = FakeBar()
    await GRAPH.map(Fetch(), items(4), progress=mine, deps=Probe(fail={0}))
    assert (mine.n, mine.postfix, mine.closed) == (4, {"failed": 1}, False)

    made: list[FakeBar] = []

    def factory(**kw: Any) -> FakeBar:
        made.append(FakeBar(**kw))
        return made[-1]

    probe = Probe(hold=set(range(10)), gate=asyncio.Event())
    probe.all_waiting, probe.waiting_target = asyncio.Event(), 2
    task = asyncio.create_task(
        GRAPH.map(Fetch(), items(10), max_concurrency=2, progress=factory, deps=probe)
    )
    await asyncio.wait_for(probe.all_waiting.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (bar,) = made
    assert bar.closed and bar.kwargs["total"] == 10 and bar.kwargs["desc"] == "batch-test"


async def test_a_progress_bar_that_raises_stops_the_batch() -> None:
    class Broken(FakeBar):
        def update(self, n: int) -> None:
            raise OSError("terminal went away")

    before = set(asyncio.all_tasks())
    with pytest.raises(OSError, match="terminal went away"):
        await GRAPH.map(Fetch(), items(10), progress=Broken, deps=Probe())
    assert _others(before) == []


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"limits": 4}, "limits must be a Limits"),
        ({"timeout": -1.0}, "timeout"),
        ({"batch_id": ""}, "batch_id"),
        ({"store": "runs.db"}, "store must be a lift_graph Store"),
        ({"progress": 3}, "progress must be"),
    ],
)
async def test_bad_options_are_refused_before_anything_runs(kwargs: Any, match: str) -> None:
    probe = Probe()
    with pytest.raises(ConfigurationError, match=match):
        await GRAPH.map(Fetch(), items(3), deps=probe, **kwargs)
    assert probe.started == 0


async def test_bad_start_or_states_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="node instance"):
        await GRAPH.map(Fetch, items(2))
    with pytest.raises(UnknownNodeError, match="Tagged is not in this graph"):
        await GRAPH.map(Tagged(tag="x"), items(2))
    with pytest.raises(ConfigurationError, match="states must be an iterable"):
        await GRAPH.map(Fetch(), 5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="window"):
        async for _ in GRAPH.imap(Fetch(), items(2), window=0):
            pass


# -- store: a batch resumes where it stopped ----------------------------------------------


async def test_a_cancelled_batch_resumes_without_rerunning_finished_inputs() -> None:
    n, limit = 12, 4
    reference = await GRAPH.map(Fetch(), items(n), deps=Probe())
    store = MemoryStore()
    # Pass 1: inputs 0-4 finish; 5-8 are stopped in Score (Fetch journaled); then the
    # process "dies" (the map is cancelled).
    first = Probe(hold=set(range(5, n)), gate=asyncio.Event())
    first.all_waiting, first.waiting_target = asyncio.Event(), limit
    task = asyncio.create_task(
        GRAPH.map(Fetch(), items(n), max_concurrency=limit, store=store, batch_id="b1", deps=first)
    )
    await asyncio.wait_for(first.all_waiting.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first.ended == 5 + limit  # 0-4 finished, 5-8 cancelled in Score

    second = Probe()
    result = await GRAPH.map(
        Fetch(), items(n), max_concurrency=limit, store=store, batch_id="b1", deps=second
    )
    assert result.outputs == reference.outputs and result.errors == {}
    assert [r.state for r in result.results if r] == [r.state for r in reference.results if r]
    assert result.batch_id == "b1"
    # Finished inputs ran nothing again; stopped ones ran only what was not journaled.
    assert {k for k in second.calls if k[1] < 5} == set()
    assert {k for k in second.calls if 5 <= k[1] <= 8} == {("score", i) for i in range(5, 9)}
    assert {k for k in second.calls if k[1] > 8} == {
        (name, i) for name in ("fetch", "score") for i in range(9, n)
    }
    assert set(second.calls.values()) == {1}


async def test_failed_inputs_run_again_with_the_same_batch_id() -> None:
    store = MemoryStore()
    probe = Probe(fail_once={2, 7})
    first = await GRAPH.map(Fetch(), items(10), store=store, batch_id="retry", deps=probe)
    assert list(first.errors) == [2, 7]
    assert all(isinstance(e, ConnectionError) for e in first.errors.values())
    probe.calls.clear()
    again = await GRAPH.map(Fetch(), items(10), store=store, batch_id="retry", deps=probe)
    assert again.outputs == expected(10) and again.errors == {}
    assert dict(probe.calls) == {("score", 2): 1, ("score", 7): 1}
    row = store.load_run("retry-7")
    assert row is not None and row.status == "finished"
    assert row.metadata == {"batch_id": "retry", "batch_index": 7}


async def test_a_generated_batch_id_names_every_run() -> None:
    store = MemoryStore()
    result = await GRAPH.map(Fetch(), items(3), store=store, deps=Probe())
    assert result.batch_id
    assert [r.execution_id for r in result.results if r] == [
        f"{result.batch_id}-{i}" for i in range(3)
    ]
    assert store.load_run(f"{result.batch_id}-2") is not None


async def test_resuming_a_finished_run_runs_nothing() -> None:
    store = MemoryStore()
    probe = Probe()
    done = await GRAPH.run(Fetch(), state=Item(x=4), store=store, execution_id="r", deps=probe)
    probe.calls.clear()
    again = await GRAPH.resume("r", store=store, deps=probe)
    assert again.output == done.output == 41 and again.state == done.state
    assert not probe.calls
