"""OpenTelemetry spans: the run → fork → branch → node tree, its attributes and
events, races, the global provider, and running without opentelemetry at all."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    CachePolicy,
    ConfigurationError,
    End,
    Fork,
    Graph,
    JoinError,
    JoinStrategy,
    Limits,
    MemoryStore,
    Pipeline,
    ProviderLimit,
    RateLimited,
    Retry,
    RunContext,
    _tracing,
)

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parent.parent


class S(BaseModel):
    done: list[str] = []


class Open(SpanProcessor):
    """Counts spans started and ended: none may be left open."""

    def __init__(self) -> None:
        self.started: Counter[int] = Counter()
        self.ended: Counter[int] = Counter()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started[span.context.span_id] += 1

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ended[span.context.span_id] += 1


@dataclass
class Otel:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    open: Open

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def all_ended(self) -> bool:
        return self.open.started == self.open.ended and bool(self.open.started)


@pytest.fixture
def otel() -> Otel:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    tracked = Open()
    provider.add_span_processor(tracked)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Otel(provider, exporter, tracked)


def label(span: ReadableSpan) -> str:
    a = span.attributes or {}
    if span.name == "lift_graph.node":
        return f"node {a['lift_graph.node.key']} #{a['lift_graph.attempt']}"
    if span.name == "lift_graph.fork":
        return f"{a['lift_graph.fork.kind']} {a['lift_graph.fork.key']}"
    if span.name == "lift_graph.branch":
        return f"branch {a['lift_graph.branch.key']}"
    if span.name == "lift_graph.run":
        return f"run {a['lift_graph.graph']}"
    return span.name


def tree(spans: list[ReadableSpan]) -> dict[str, Any]:
    """The spans as nested dicts of labels (children in start order)."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None else None
        children.setdefault(parent if parent in by_id else None, []).append(s)

    def build(parent: int | None) -> dict[str, Any]:
        kids = sorted(children.get(parent, []), key=lambda s: s.start_time or 0)
        return {label(s): build(s.context.span_id) for s in kids if s.context is not None}

    return build(None)


def find(spans: list[ReadableSpan], text: str) -> ReadableSpan:
    matches = [s for s in spans if label(s) == text]
    assert len(matches) == 1, (text, [label(s) for s in spans])
    return matches[0]


def events(span: ReadableSpan) -> dict[str, dict[str, Any]]:
    return {e.name: dict(e.attributes or {}) for e in span.events}


# -- the nested fork graph -------------------------------------------------------------


def once(ctx: RunContext[Any], exc: Exception) -> None:
    """Raise ``exc`` on the first attempt of this node key (counts in ``deps``)."""
    seen: Counter[str] = ctx.deps
    seen[ctx.node_key] += 1
    if seen[ctx.node_key] == 1:
        raise exc


@dataclass
class Plan(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork({"a": Ask(), "b": Nested()}, then=Join(), join=JoinStrategy.ALL)


@dataclass
class Ask(BaseNode[S]):
    provider: ClassVar[str] = "llm"

    async def run(self, ctx: RunContext[S]) -> End[str]:
        once(ctx, RateLimited(retry_after=0.01))
        ctx.record_tokens(7)
        return End("a")


@dataclass
class Nested(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork({"x": Flaky(), "y": Leaf()}, then=Collect())


@dataclass
class Flaky(BaseNode[S]):
    retry: ClassVar[Retry] = Retry(attempts=2, backoff=0.001)

    async def run(self, ctx: RunContext[S]) -> End[str]:
        once(ctx, ValueError("flaky"))
        return End("x")


@dataclass
class Leaf(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        return End("y")


@dataclass
class Collect(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        return End("b")


@dataclass
class Join(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        return End("done")


NESTED = Graph([Plan, Ask, Nested, Flaky, Leaf, Collect, Join], name="nested")


def limits() -> Limits:
    return Limits(providers={"llm": ProviderLimit(concurrency=2)})


async def test_a_nested_fork_run_gives_the_full_span_tree(otel: Otel) -> None:
    result = await NESTED.run(
        Plan(), state=S(), deps=Counter(), limits=limits(), tracer=otel.provider
    )
    assert result.output == "done"
    assert tree(otel.spans) == {
        "run nested": {
            "node 0.Plan #1": {},
            "fork 0.Plan": {
                "branch a": {
                    "node 0.Plan/a/0.Ask #1": {},
                    "node 0.Plan/a/0.Ask #2": {},
                },
                "branch b": {
                    "node 0.Plan/b/0.Nested #1": {},
                    "fork 0.Plan/b/0.Nested": {
                        "branch x": {
                            "node 0.Plan/b/0.Nested/x/0.Flaky #1": {},
                            "node 0.Plan/b/0.Nested/x/0.Flaky #2": {},
                        },
                        "branch y": {"node 0.Plan/b/0.Nested/y/0.Leaf #1": {}},
                    },
                    "node 0.Plan/b/1.Collect #1": {},
                },
            },
            "node 1.Join #1": {},
        }
    }
    assert otel.all_ended()
    # Every span of the run is in one trace.
    assert len({s.context.trace_id for s in otel.spans if s.context is not None}) == 1


async def test_span_attributes_and_events(otel: Otel) -> None:
    result = await NESTED.run(
        Plan(), state=S(), deps=Counter(), limits=limits(), tracer=otel.provider
    )
    spans = otel.spans
    run = find(spans, "run nested")
    assert run.attributes == {
        "lift_graph.graph": "nested",
        "lift_graph.execution_id": result.execution_id,
        "lift_graph.start_node": "Plan",
        "lift_graph.deterministic": True,
        "lift_graph.status": "succeeded",
    }
    fork = find(spans, "fork 0.Plan")
    assert fork.attributes is not None
    assert fork.attributes["lift_graph.fork.branches"] == 2
    assert fork.attributes["lift_graph.join.strategy"] == "ALL"
    assert fork.attributes["lift_graph.join.succeeded"] == 2
    assert fork.attributes["lift_graph.join.failed"] == 0
    assert fork.attributes["lift_graph.join.cancelled"] == 0
    assert find(spans, "branch a").attributes == {
        "lift_graph.branch.key": "a",
        "lift_graph.fork.key": "0.Plan",
        "lift_graph.status": "succeeded",
    }

    refused = find(spans, "node 0.Plan/a/0.Ask #1")
    assert refused.attributes is not None
    assert refused.attributes["lift_graph.node.class"] == "Ask"
    assert refused.attributes["lift_graph.provider"] == "llm"
    assert refused.attributes["lift_graph.status"] == "rate_limited"
    assert refused.attributes["lift_graph.cache_hit"] is False
    assert refused.status.status_code is trace.StatusCode.ERROR
    limited = events(refused)["rate_limited"]
    assert limited["lift_graph.provider"] == "llm"
    assert limited["lift_graph.retry_after_ms"] == pytest.approx(10.0)
    assert limited["lift_graph.pause_ms"] >= 10.0 - 1e-6  # (now + 0.01) - now, in floats
    assert events(refused)["exception"]["exception.type"].endswith("RateLimited")

    resumed = find(spans, "node 0.Plan/a/0.Ask #2")
    assert resumed.attributes is not None
    assert resumed.attributes["lift_graph.tokens"] == 7
    assert resumed.attributes["lift_graph.status"] == "succeeded"
    assert resumed.status.status_code is trace.StatusCode.UNSET
    assert [e.name for e in resumed.events] == ["rate_limit_resumed", "slot_acquired"]
    assert events(resumed)["rate_limit_resumed"]["lift_graph.waited_ms"] >= 10.0 - 1e-6
    # The second attempt got its slot only once the pause was over. Its wait counts
    # from the end of the refused attempt, which a busy machine may delay past the
    # pause's start: half the pause is the bound that cannot flake.
    assert events(resumed)["slot_acquired"]["lift_graph.wait_ms"] >= 5.0

    failed = find(spans, "node 0.Plan/b/0.Nested/x/0.Flaky #1")
    assert failed.attributes is not None
    assert failed.attributes["lift_graph.status"] == "retry"
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert events(failed)["exception"]["exception.message"] == "flaky"
    retried = find(spans, "node 0.Plan/b/0.Nested/x/0.Flaky #2")
    retry = events(retried)["retry"]
    assert retry["lift_graph.after_attempt"] == 1
    assert 0 < retry["lift_graph.delay_ms"] <= 1.0
    assert retried.attributes is not None and "lift_graph.provider" not in retried.attributes


@dataclass
class Call(BaseNode[S]):
    """Starts spans of its own, as an instrumented LLM client would: inline and in
    a task of its own."""

    async def run(self, ctx: RunContext[S]) -> End[str]:
        tracer = ctx.deps.get_tracer("client")
        with tracer.start_as_current_span("llm.call"):
            await asyncio.sleep(0)

        async def in_task() -> None:
            with tracer.start_as_current_span("llm.stream"):
                await asyncio.sleep(0)

        await asyncio.create_task(in_task())
        return End("ok")


@dataclass
class FanOut(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Call(), Call()], then=None)


async def test_spans_started_inside_a_node_are_its_children(otel: Otel) -> None:
    graph = Graph([FanOut, Call], name="calls")
    outer = otel.provider.get_tracer("app")
    with outer.start_as_current_span("request"):
        await graph.run(FanOut(), state=S(), deps=otel.provider, tracer=otel.provider)
    assert tree(otel.spans) == {
        "request": {
            "run calls": {
                "node 0.FanOut #1": {},
                "fork 0.FanOut": {
                    "branch 0": {"node 0.FanOut/0/0.Call #1": {"llm.call": {}, "llm.stream": {}}},
                    "branch 1": {"node 0.FanOut/1/0.Call #1": {"llm.call": {}, "llm.stream": {}}},
                },
            }
        }
    }
    # After the run, the caller's context is as it was.
    assert not trace.get_current_span().get_span_context().is_valid


# -- races, failures, pipelines, replays ---------------------------------------------------


@dataclass
class Nap(BaseNode[S]):
    delay: float

    async def run(self, ctx: RunContext[S]) -> End[float]:
        await asyncio.sleep(self.delay)
        return End(self.delay)


@dataclass
class Race(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork({"fast": Nap(0.0), "slow": Nap(30.0)}, join=JoinStrategy.ANY)


async def test_a_race_loser_span_is_cancelled_and_ended(otel: Otel) -> None:
    result = await Graph([Race, Nap], name="race").run(Race(), state=S(), tracer=otel.provider)
    assert result.deterministic is False
    spans = otel.spans
    loser = find(spans, "node 0.Race/slow/0.Nap #1")
    assert loser.attributes is not None
    assert loser.attributes["lift_graph.status"] == "cancelled"
    assert loser.status.status_code is trace.StatusCode.UNSET  # a lost race is no error
    assert find(spans, "branch slow").attributes["lift_graph.status"] == "cancelled"  # type: ignore[index]
    fork = find(spans, "fork 0.Race").attributes
    assert fork is not None
    assert (fork["lift_graph.join.succeeded"], fork["lift_graph.join.cancelled"]) == (1, 1)
    assert fork["lift_graph.join.deterministic"] is False
    assert find(spans, "run race").attributes["lift_graph.deterministic"] is False  # type: ignore[index]
    assert otel.all_ended()


@dataclass
class Broken(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        raise KeyError("no such document")


@dataclass
class Both(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([Broken(), Nap(30.0)])


async def test_a_failed_run_records_the_error_on_each_level(otel: Otel) -> None:
    with pytest.raises(JoinError):
        await Graph([Both, Broken, Nap], name="broken").run(Both(), state=S(), tracer=otel.provider)
    spans = otel.spans
    node = find(spans, "node 0.Both/0/0.Broken #1")
    assert node.attributes is not None and node.attributes["lift_graph.status"] == "failed"
    assert node.status.status_code is trace.StatusCode.ERROR
    assert node.status.description == "KeyError: 'no such document'"
    assert events(node)["exception"]["exception.type"] == "KeyError"
    fork = find(spans, "fork 0.Both")
    assert fork.status.status_code is trace.StatusCode.ERROR
    assert fork.attributes is not None
    assert (
        fork.attributes["lift_graph.join.failed"],
        fork.attributes["lift_graph.join.cancelled"],
    ) == (1, 1)
    run = find(spans, "run broken")
    assert run.status.status_code is trace.StatusCode.ERROR
    assert events(run)["exception"]["exception.type"] == "lift_graph.errors.JoinError"
    sleeper = find(spans, "node 0.Both/1/0.Nap #1").attributes
    assert sleeper is not None and sleeper["lift_graph.status"] == "cancelled"
    assert otel.all_ended()


class Doc(BaseModel):
    text: str = "sky"
    upper: str = ""
    size: int = 0


@dataclass
class Upper(BaseNode[Doc]):
    reads: ClassVar[frozenset[str]] = frozenset({"text"})
    writes: ClassVar[frozenset[str]] = frozenset({"upper"})
    cache: ClassVar[CachePolicy] = CachePolicy(version="1")

    async def run(self, ctx: RunContext[Doc]) -> None:
        ctx.state.upper = ctx.state.text.upper()


@dataclass
class Size(BaseNode[Doc]):
    reads: ClassVar[frozenset[str]] = frozenset({"upper"})
    writes: ClassVar[frozenset[str]] = frozenset({"size"})

    async def run(self, ctx: RunContext[Doc]) -> None:
        ctx.state.size = len(ctx.state.upper)


@dataclass
class Prepare(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Pipeline[Doc]:
        return Pipeline([Upper(), Size()], then=Finish())


@dataclass
class Finish(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> End[int]:
        return End(ctx.state.size)


PIPE = Graph([Prepare, Upper, Size, Finish], name="pipe")


async def test_a_pipeline_span_holds_its_members_and_cache_hits_are_marked(otel: Otel) -> None:
    cache = MemoryStore()
    await PIPE.run(Prepare(), state=Doc(), cache=cache, tracer=otel.provider)
    first = otel.spans
    assert tree(first) == {
        "run pipe": {
            "node 0.Prepare #1": {},
            "pipeline 0.Prepare": {
                "node 0.Prepare/p0/0.Upper #1": {},
                "node 0.Prepare/p1/0.Size #1": {},
            },
            "node 1.Finish #1": {},
        }
    }
    pipe = find(first, "pipeline 0.Prepare").attributes
    assert pipe is not None and pipe["lift_graph.fork.branches"] == 2
    assert pipe["lift_graph.join.succeeded"] == 2
    otel.exporter.clear()

    await PIPE.run(Prepare(), state=Doc(), cache=cache, tracer=otel.provider)
    hit = [s for s in otel.spans if label(s).startswith("node 0.Prepare/p0/0.Upper")]
    assert len(hit) == 1 and hit[0].attributes is not None
    assert hit[0].attributes["lift_graph.cache_hit"] is True
    assert hit[0].attributes["lift_graph.replay"] == "cache"
    size = find(otel.spans, "node 0.Prepare/p1/0.Size #1").attributes
    assert size is not None and size["lift_graph.cache_hit"] is False


@dataclass
class Work(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fail:
        ctx.state.done = [*ctx.state.done, "work"]
        return Fail()


@dataclass
class Fail(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[str]:
        if ctx.deps == "fail":
            raise RuntimeError("down")
        return End("ok")


async def test_a_resume_marks_journaled_nodes_as_replayed(otel: Otel) -> None:
    graph = Graph([Work, Fail], name="durable")
    store = MemoryStore()
    with pytest.raises(RuntimeError):
        await graph.run(Work(), state=S(), store=store, deps="fail", execution_id="r1")
    assert otel.spans == []  # not traced: no tracer, no global provider
    result = await graph.resume("r1", store=store, deps="ok", tracer=otel.provider)
    assert result.output == "ok"
    replayed = find(otel.spans, "node 0.Work #1").attributes
    assert replayed is not None
    assert (replayed["lift_graph.cache_hit"], replayed["lift_graph.replay"]) == (True, "journal")
    ran = find(otel.spans, "node 1.Fail #1").attributes
    assert ran is not None and ran["lift_graph.cache_hit"] is False


# -- which tracer ------------------------------------------------------------------------


@dataclass
class One(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[int]:
        return End(1)


ONE = Graph([One], name="one")


async def test_none_uses_the_global_provider_once_one_is_configured(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ONE.run(One(), state=S())  # the API's default provider: nothing is traced
    assert otel.spans == []
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: otel.provider)
    await ONE.run(One(), state=S())
    assert [s.name for s in otel.spans] == ["lift_graph.node", "lift_graph.run"]
    otel.exporter.clear()
    await ONE.run(One(), state=S(), tracer=False)  # off, although a provider is set
    assert otel.spans == []
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
    assert _tracing.open_tracing(None, "g", "e") is None


async def test_nothing_configured_means_no_seam(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert _tracing.open_tracing(None, "g", "e") is None

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a run nobody traces built a RunTracing")

    monkeypatch.setattr(_tracing.RunTracing, "__init__", refuse)
    assert (await ONE.run(One(), state=S())).output == 1
    assert ONE.run_sync(One(), state=S()).output == 1


async def test_an_explicit_tracer_is_used_as_given(otel: Otel) -> None:
    tracer = otel.provider.get_tracer("mine")
    await ONE.run(One(), state=S(), tracer=tracer)
    assert {s.instrumentation_scope.name for s in otel.spans if s.instrumentation_scope} == {"mine"}
    otel.exporter.clear()
    ONE.run_sync(One(), state=S(), tracer=otel.provider)
    assert {s.instrumentation_scope.name for s in otel.spans if s.instrumentation_scope} == {
        "lift_graph"
    }


@pytest.mark.parametrize("bad", [True, "otel", object()])
async def test_a_wrong_tracer_is_a_configuration_error(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="tracer must be an opentelemetry"):
        await ONE.run(One(), state=S(), tracer=bad)
    with pytest.raises(ConfigurationError, match="tracer"):
        ONE.resume_sync("nope", store=MemoryStore(), tracer=bad)


async def test_without_opentelemetry_runs_go_on_untraced(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import` of it raises ImportError
    assert _tracing.resolve_tracer(None) is None
    assert (await ONE.run(One(), state=S())).output == 1
    with pytest.raises(ConfigurationError, match=r"pip install 'lift_graph\[otel\]'"):
        await ONE.run(One(), state=S(), tracer=object())


async def test_lift_graph_imports_and_runs_when_opentelemetry_cannot_be_imported() -> None:
    script = textwrap.dedent(
        """
        import sys

        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ImportError("opentelemetry is not installed")

        sys.meta_path.insert(0, Blocked())
        from lift_graph import BaseNode, End, Graph, RunContext

        class One(BaseNode[dict]):
            async def run(self, ctx: RunContext[dict]) -> End[int]:
                return End(1)

        ONE = Graph([One])
        assert ONE.run_sync(One(), state={}).output == 1
        assert ONE.run_sync(One(), state={}, tracer=False).output == 1
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_a_batch_traces_each_input_as_a_run(otel: Otel) -> None:
    outer = otel.provider.get_tracer("app")
    with outer.start_as_current_span("batch"):
        batch = await ONE.map(One(), [S(), S(), S()], tracer=otel.provider, batch_id="b")
    assert batch.outputs == [1, 1, 1]
    runs = [s for s in otel.spans if s.name == "lift_graph.run"]
    assert sorted(str((s.attributes or {})["lift_graph.execution_id"]) for s in runs) == [
        "b-0",
        "b-1",
        "b-2",
    ]
    batch_span = find(otel.spans, "batch").context
    assert batch_span is not None
    assert all(s.parent is not None and s.parent.span_id == batch_span.span_id for s in runs)
    nodes = [s for s in otel.spans if s.name == "lift_graph.node"]
    run_ids = {s.context.span_id for s in runs if s.context is not None}
    assert len(nodes) == 3 and {s.parent.span_id for s in nodes if s.parent} == run_ids
    with pytest.raises(ConfigurationError, match="tracer must be"):
        await ONE.map(One(), [S()], tracer="yes")


async def test_a_run_started_while_handling_an_error_is_not_marked_failed(otel: Otel) -> None:
    try:
        raise LookupError("the caller's own error, being handled")
    except LookupError:
        result = await ONE.run(One(), state=S(), tracer=otel.provider)
    assert result.output == 1
    statuses = {label(s): (s.attributes or {})["lift_graph.status"] for s in otel.spans}
    assert statuses == {"node 0.One #1": "succeeded", "run one": "succeeded"}
    assert all(s.status.status_code is trace.StatusCode.UNSET for s in otel.spans)


async def test_iter_passes_the_tracer_on(otel: Otel) -> None:
    async with contextlib.aclosing(ONE.iter(One(), state=S(), tracer=otel.provider)) as stream:
        kinds = [event.kind async for event in stream]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert sorted(s.name for s in otel.spans) == ["lift_graph.node", "lift_graph.run"]
