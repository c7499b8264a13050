"""Typed events from ``Graph.iter``: order, tags, ``ctx.emit``, cancellation, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from lift_graph import (
    BaseNode,
    ConfigurationError,
    CustomEvent,
    End,
    FakeClock,
    Fork,
    ForkStarted,
    Graph,
    GraphEvent,
    JoinFinished,
    JoinResult,
    Limits,
    NodeFailed,
    NodeFinished,
    NodeRetry,
    NodeStarted,
    ProviderLimit,
    RateLimited,
    RateLimitedEvent,
    RateLimitResumed,
    Retry,
    RunContext,
    RunFinished,
    RunResult,
    RunStarted,
    TokenEvent,
)
from lift_graph._runner import RunSettings
from lift_graph.events import emit_rate_limit_resumed, emit_rate_limited

pytestmark = pytest.mark.asyncio


@dataclass
class S:
    log: list[str] = dataclasses.field(default_factory=list)


@dataclass
class Start(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Ok(), Flaky()], then=Collect())


@dataclass
class Ok(BaseNode[S]):
    writes = frozenset({"log"})

    async def run(self, ctx: RunContext[S]) -> End[str]:
        ctx.state.log.append("ok")
        return End("ok")


class Boom(RuntimeError):
    pass


@dataclass
class Flaky(BaseNode[S]):
    retry = Retry(attempts=2, backoff=0.0)

    async def run(self, ctx: RunContext[S]) -> End[str]:
        if ctx.attempt == 1:
            raise Boom("first attempt fails")
        return End("flaky")


@dataclass
class Collect(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[list[Any]]:
        assert ctx.join is not None
        ctx.emit("progress", {"done": ctx.join.succeeded})
        return End(list(ctx.join.results))


graph = Graph(nodes=[Start, Ok, Flaky, Collect])

A, B = "0.Start/0/0.Ok", "0.Start/1/0.Flaky"
EXPECTED = [
    ("run_started", ""),
    ("node_started", "0.Start"),
    ("node_finished", "0.Start"),
    ("fork_started", "0.Start"),
    ("node_started", A),
    ("node_finished", A),
    ("node_started", B),
    ("node_retry", B),
    ("node_started", B),
    ("node_finished", B),
    ("join_finished", "0.Start"),
    ("node_started", "1.Collect"),
    ("custom", "1.Collect"),
    ("node_finished", "1.Collect"),
    ("run_finished", ""),
]


async def collect(g: Graph[Any], start: Any, **kwargs: Any) -> list[GraphEvent]:
    async with contextlib.aclosing(g.iter(start, **kwargs)) as events:
        return [e async for e in events]


async def test_a_fork_with_a_retried_branch_yields_every_event_in_order() -> None:
    events = await collect(graph, Start(), state=S())
    assert [(e.kind, e.key) for e in events] == EXPECTED
    result = events[-1].result  # type: ignore[attr-defined]
    assert isinstance(events[-1], RunFinished) and isinstance(result, RunResult)
    assert result.output == ["ok", "flaky"]
    # Typed classes, with their own fields.
    assert isinstance(events[0], RunStarted)
    assert (events[0].graph, events[0].start) == ("graph", "Start")
    started = [e for e in events if isinstance(e, NodeStarted) and e.key == B]
    assert [(e.node, e.attempt, e.provider) for e in started] == [
        ("Flaky", 1, None),
        ("Flaky", 2, None),
    ]
    (retry,) = [e for e in events if isinstance(e, NodeRetry)]
    assert (retry.node, retry.attempt, retry.delay) == ("Flaky", 1, 0.0)
    assert isinstance(retry.error, Boom)
    (fork,) = [e for e in events if isinstance(e, ForkStarted)]
    assert (fork.branches, fork.strategy) == (2, "ALL")
    (join,) = [e for e in events if isinstance(e, JoinFinished)]
    assert isinstance(join.join, JoinResult) and join.join.succeeded == 2
    finished = {e.key: e.record for e in events if isinstance(e, NodeFinished)}
    assert finished[B].attempts == 2
    assert finished == {r.key: r for r in result.records}


async def test_every_event_carries_the_run_id_and_a_monotonic_time() -> None:
    events = await collect(graph, Start(), state=S())
    result = events[-1].data["result"]
    assert {e.execution_id for e in events} == {result.execution_id}
    times = [e.time for e in events]
    assert times == sorted(times)  # one loop: the order they were sent is causal
    by_key: dict[str, list[float]] = {}
    for e in events:
        by_key.setdefault(e.key, []).append(e.time)
    assert all(t == sorted(t) for t in by_key.values())
    # node_started is when `run` began: the record's started_at (first attempt).
    first = {e.key: e.time for e in reversed(events) if isinstance(e, NodeStarted)}
    assert {r.key: r.started_at for r in result.records} == first


async def test_causal_order_per_node_and_around_forks() -> None:
    events = await collect(graph, Start(), state=S())
    at = {(e.kind, e.key, i) for i, e in enumerate(events)}
    pos: dict[tuple[str, str], list[int]] = {}
    for kind, key, i in sorted(at, key=lambda t: t[2]):
        pos.setdefault((kind, key), []).append(i)
    s1, s2 = pos[("node_started", B)]
    assert s1 < pos[("node_retry", B)][0] < s2 < pos[("node_finished", B)][0]
    fork = pos[("fork_started", "0.Start")][0]
    assert fork < pos[("node_started", A)][0] and fork < s1
    join = pos[("join_finished", "0.Start")][0]
    assert join > pos[("node_finished", A)][0] and join > pos[("node_finished", B)][0]


async def test_the_given_execution_id_tags_every_event() -> None:
    events = await collect(graph, Start(), state=S(), execution_id="run-7")
    assert {e.execution_id for e in events} == {"run-7"}
    assert events[-1].data["result"].execution_id == "run-7"


async def test_data_keeps_the_old_dict_view() -> None:
    events = await collect(graph, Start(), state=S())
    fork = next(e for e in events if e.kind == "fork_started")
    assert fork.data == {"key": "0.Start", "branches": 2, "strategy": "ALL"}
    join = next(e for e in events if e.kind == "join_finished")
    assert join.data["key"] == "0.Start" and join.data["join"].succeeded == 2
    done = next(e for e in events if e.kind == "node_finished")
    assert done.data["record"].node == "Start"
    with pytest.raises(dataclasses.FrozenInstanceError):
        fork.key = "x"  # type: ignore[misc]


# -- ctx.emit ---------------------------------------------------------------------------


@dataclass
class Chatty(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[None]:
        ctx.emit("step", {"n": 1})
        ctx.emit("step", 2)
        ctx.emit("done")
        return End(None)


async def test_custom_events_carry_name_data_and_the_node_key() -> None:
    events = await collect(Graph(nodes=[Chatty]), Chatty(), state=S())
    custom = [e for e in events if isinstance(e, CustomEvent)]
    assert [(e.kind, e.key, e.name, e.data) for e in custom] == [
        ("custom", "0.Chatty", "step", {"n": 1}),
        ("custom", "0.Chatty", "step", 2),
        ("custom", "0.Chatty", "done", None),
    ]


async def test_ctx_emit_without_a_listener_does_nothing() -> None:
    result = await Graph(nodes=[Chatty]).run(Chatty(), state=S())
    assert result.records[0].status == "succeeded"
    RunContext(state=S(), execution_id="e").emit("alone", [1])  # no sink: no-op


async def test_ctx_emit_refuses_a_name_that_is_not_a_str() -> None:
    ctx = RunContext(state=S(), execution_id="e", node_key="0.X")
    with pytest.raises(ConfigurationError, match=r"0\.X.*non-empty str"):
        ctx.emit("")
    with pytest.raises(ConfigurationError, match="non-empty str"):
        ctx.emit(3)  # type: ignore[arg-type]


# -- failures and cancellation ----------------------------------------------------------


@dataclass
class Fails(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[None]:
        raise Boom("no")


async def test_a_failed_run_yields_node_failed_then_raises() -> None:
    seen: list[GraphEvent] = []
    with pytest.raises(Boom):
        async for event in Graph(nodes=[Fails]).iter(Fails(), state=S()):
            seen.append(event)
    assert [e.kind for e in seen] == ["run_started", "node_started", "node_failed"]
    failed = seen[-1]
    assert isinstance(failed, NodeFailed) and isinstance(failed.error, Boom)
    assert failed.record is not None and failed.record.status == "failed"


began: list[str] = []
stopped: list[str] = []


@dataclass
class Sleeper(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[None]:
        began.append(ctx.node_key)
        try:
            await asyncio.sleep(30)
        finally:
            stopped.append(ctx.node_key)
        return End(None)


@dataclass
class Sleepers(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Sleeper(), Sleeper()])


async def test_leaving_iter_early_cancels_the_run_and_leaves_no_task() -> None:
    stopped.clear()
    before = asyncio.all_tasks()
    g = Graph(nodes=[Sleepers, Sleeper])
    async with contextlib.aclosing(g.iter(Sleepers(), state=S())) as events:
        async for event in events:
            if event.kind == "node_started" and event.key.endswith("Sleeper"):
                break
    assert sorted(stopped) == ["0.Sleepers/0/0.Sleeper", "0.Sleepers/1/0.Sleeper"]
    assert [t for t in asyncio.all_tasks() - before if not t.done()] == []


async def test_cancelling_the_consumer_cancels_the_run() -> None:
    stopped.clear()
    before = asyncio.all_tasks()

    async def consume() -> None:
        async with contextlib.aclosing(Graph(nodes=[Sleeper]).iter(Sleeper(), state=S())) as ev:
            async for _ in ev:
                pass

    began.clear()
    task = asyncio.ensure_future(consume())
    while not began:  # the node is running
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped == ["0.Sleeper"]
    assert [t for t in asyncio.all_tasks() - before if not t.done()] == []


# -- rate-limit helpers -----------------------------------------------------------------


async def test_rate_limit_helpers_send_typed_events_only_to_a_listener() -> None:
    sent: list[GraphEvent] = []
    settings = RunSettings(execution_id="e1", events=sent.append)
    emit_rate_limited(settings, "0.Ask", "openai", 2.5, retry_after=2.0, attempt=3)
    emit_rate_limit_resumed(settings, "0.Ask", "openai", 2.6)
    limited, resumed = sent
    assert isinstance(limited, RateLimitedEvent) and limited.kind == "rate_limited"
    assert (limited.execution_id, limited.key, limited.provider) == ("e1", "0.Ask", "openai")
    assert (limited.delay, limited.retry_after, limited.attempt) == (2.5, 2.0, 3)
    assert isinstance(resumed, RateLimitResumed) and resumed.kind == "rate_limit_resumed"
    assert (resumed.provider, resumed.waited) == ("openai", 2.6)
    assert resumed.time >= limited.time
    quiet = RunSettings(execution_id="e2")
    emit_rate_limited(quiet, "0.Ask", "openai", 1.0)  # nobody listens: nothing happens
    emit_rate_limit_resumed(quiet, "0.Ask", "openai", 1.0)


async def test_every_kind_is_fixed_per_class() -> None:
    kinds = {
        cls.kind
        for cls in (
            RunStarted,
            NodeStarted,
            NodeRetry,
            NodeFinished,
            NodeFailed,
            RateLimitedEvent,
            RateLimitResumed,
            ForkStarted,
            JoinFinished,
            CustomEvent,
            TokenEvent,
            RunFinished,
        )
    }
    assert len(kinds) == 12 and "custom" in kinds and "token" in kinds


@dataclass
class Nap(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[None]:
        await asyncio.sleep(0.01)
        return End(None)


@dataclass
class Naps(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Nap(), Nap()])


async def test_node_started_waits_for_the_slot() -> None:
    # One slot: the second branch's node starts only once the first has finished.
    events = await collect(Graph(nodes=[Naps, Nap]), Naps(), state=S(), max_concurrency=1)
    naps = [(e.kind, e.key) for e in events if e.key.endswith(".Nap")]
    first, second = "0.Naps/0/0.Nap", "0.Naps/1/0.Nap"
    assert naps == [
        ("node_started", first),
        ("node_finished", first),
        ("node_started", second),
        ("node_finished", second),
    ]


# -- a fork/join run with one retry and one rate-limit pause ------------------------
@dataclass
class Throttled(BaseNode[S]):
    """Refused once by its provider (a 429 with a 5 s hint), then answers."""

    provider = "llm"

    async def run(self, ctx: RunContext[S]) -> End[str]:
        if ctx.attempt == 1:
            raise RateLimited(retry_after=5.0)
        return End("throttled")


@dataclass
class StartBoth(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Flaky(), Throttled()], then=Collect())


async def test_a_fork_with_a_retry_and_a_rate_limit_pause_yields_events_in_order() -> None:
    clock = FakeClock()
    limits = Limits(providers={"llm": ProviderLimit(concurrency=2)}, clock=clock)
    g = Graph(nodes=[StartBoth, Flaky, Throttled, Collect])
    events = await collect(g, StartBoth(), state=S(), limits=limits)
    flaky, throttled = "0.StartBoth/0/0.Flaky", "0.StartBoth/1/0.Throttled"
    assert [(e.kind, e.key) for e in events] == [
        ("run_started", ""),
        ("node_started", "0.StartBoth"),
        ("node_finished", "0.StartBoth"),
        ("fork_started", "0.StartBoth"),
        ("node_started", flaky),
        ("node_retry", flaky),
        ("node_started", throttled),
        ("rate_limited", throttled),
        ("node_started", flaky),
        ("node_finished", flaky),
        ("rate_limit_resumed", throttled),
        ("node_started", throttled),
        ("node_finished", throttled),
        ("join_finished", "0.StartBoth"),
        ("node_started", "1.Collect"),
        ("custom", "1.Collect"),
        ("node_finished", "1.Collect"),
        ("run_finished", ""),
    ]
    paused = next(e for e in events if isinstance(e, RateLimitedEvent))
    assert (paused.provider, paused.delay, paused.retry_after, paused.attempt) == (
        "llm",
        5.0,
        5.0,
        1,
    )
    resumed = next(e for e in events if isinstance(e, RateLimitResumed))
    assert (resumed.provider, resumed.waited) == ("llm", 5.0)
    retried = next(e for e in events if isinstance(e, NodeRetry))
    assert isinstance(retried.error, Boom) and retried.attempt == 1
    starts = [e for e in events if isinstance(e, NodeStarted) and e.key == throttled]
    assert [s.attempt for s in starts] == [1, 2]
    finished = events[-1].result  # type: ignore[attr-defined]
    assert finished.output == ["flaky", "throttled"]
    assert limits.status("llm").pauses == ((0.0, 5.0),)
