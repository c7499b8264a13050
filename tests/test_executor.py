"""ParallelExecutor: concurrency, isolation of the caller's state, error capture, bad input,
retry and timeout (issue 2's acceptance list)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    ConfigurationError,
    End,
    InvalidNodeError,
    MergeStrategy,
    NodeExecutionError,
    NodeResult,
    NodeTimeoutError,
    ParallelExecutionError,
    ParallelExecutor,
    Retry,
    RunContext,
)


class State(BaseModel):
    counter: int = 0
    items: list[str] = []


def make_ctx(state: State | None = None, **kw: Any) -> RunContext[State]:
    return RunContext(state=state if state is not None else State(), execution_id="test", **kw)


# --------------------------------------------------------------------------- nodes


@dataclass
class SleepNode(BaseNode[State]):
    name: str
    delay: float = 0.1

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(self.delay)
        return End(self.name)


@dataclass
class IncrementNode(BaseNode[State]):
    seen: int | None = None

    async def run(self, ctx: RunContext[State]) -> End[int]:
        self.seen = ctx.state.counter
        await asyncio.sleep(0.001)  # let siblings interleave
        ctx.state.counter += 1
        ctx.state.items.append("inc")
        return End(ctx.state.counter)


@dataclass
class InFlight:
    current: int = 0
    peak: int = 0
    done: int = 0


@dataclass
class TrackedNode(BaseNode[State]):
    index: int

    async def run(self, ctx: RunContext[State]) -> End[int]:
        tracker: InFlight = ctx.deps
        tracker.current += 1
        tracker.peak = max(tracker.peak, tracker.current)
        try:
            await asyncio.sleep(0.002)
        finally:
            tracker.current -= 1
        tracker.done += 1
        return End(self.index)


@dataclass
class OkNode(BaseNode[State]):
    value: str

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(0.001)
        return End(self.value)


@dataclass
class FailNode(BaseNode[State]):
    message: str = "boom"
    raised: BaseException | None = field(default=None, repr=False)

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(0.001)
        exc = ValueError(self.message)
        self.raised = exc
        raise exc


@dataclass
class FlakyNode(BaseNode[State]):
    retry: ClassVar[Retry | None] = Retry(attempts=3, backoff=0.01)
    failures: int = 2
    calls: int = 0

    async def run(self, ctx: RunContext[State]) -> End[str]:
        self.calls += 1
        ctx.state.items.append(f"attempt{self.calls}")
        if self.calls <= self.failures:
            raise ConnectionError(f"transient failure {self.calls}")
        return End(f"ok after {self.calls}")


@dataclass
class SlowNode(BaseNode[State]):
    timeout: ClassVar[float | None] = 0.05

    async def run(self, ctx: RunContext[State]) -> End[str]:
        await asyncio.sleep(5.0)
        return End("too late")


# --------------------------------------------------------------------------- concurrency


@pytest.mark.asyncio
async def test_four_100ms_nodes_run_at_least_2x_faster_than_sequentially() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    ctx = make_ctx()

    started = time.perf_counter()
    sequential = [await ex.execute_single_with_isolation(SleepNode(f"s{i}"), ctx) for i in range(4)]
    sequential_s = time.perf_counter() - started

    started = time.perf_counter()
    parallel = await ex.execute_parallel([SleepNode(f"p{i}") for i in range(4)], ctx)
    parallel_s = time.perf_counter() - started

    assert [r.error for r in sequential + parallel] == [None] * 8
    assert [r.value for r in parallel] == ["p0", "p1", "p2", "p3"]
    # each node really slept: its own timing is about 100 ms
    assert all(r.execution_time_ms >= 80.0 for r in sequential + parallel)
    assert sequential_s / parallel_s >= 2.0, (sequential_s, parallel_s)


@pytest.mark.asyncio
async def test_100_quick_nodes_complete_with_at_most_4_in_flight() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    tracker = InFlight()
    ctx = make_ctx(deps=tracker)
    nodes = [TrackedNode(i) for i in range(100)]

    results = await asyncio.wait_for(ex.execute_parallel(nodes, ctx), timeout=30.0)

    assert len(results) == 100
    assert [r.value for r in results] == list(range(100))
    assert all(r.error is None for r in results)
    assert tracker.done == 100
    assert tracker.current == 0
    # measured inside the nodes: the limit was reached and never exceeded
    assert tracker.peak == 4
    assert ex.peak_in_flight == 4


@pytest.mark.asyncio
async def test_max_concurrent_1_runs_one_node_at_a_time() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=1)
    tracker = InFlight()
    results = await asyncio.wait_for(
        ex.execute_parallel([TrackedNode(i) for i in range(10)], make_ctx(deps=tracker)), 10.0
    )
    assert [r.value for r in results] == list(range(10))
    assert tracker.peak == 1


# --------------------------------------------------------------------------- isolation


@pytest.mark.asyncio
async def test_increment_nodes_each_see_zero_and_caller_state_is_unchanged() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    state = State(counter=0, items=["start"])
    ctx = make_ctx(state, metadata={"k": "v"}, provenance=[{"node": "root"}])
    before = state.model_dump()
    nodes = [IncrementNode() for _ in range(10)]

    results = await ex.execute_parallel(nodes, ctx)

    assert [n.seen for n in nodes] == [0] * 10
    assert [r.value for r in results] == [1] * 10
    assert [r.context.state.counter for r in results] == [1] * 10
    assert [r.context.state.items for r in results] == [["start", "inc"]] * 10
    # every node worked on its own state object
    assert len({id(r.context.state) for r in results}) == 10
    assert all(r.context.state is not state for r in results)
    # the caller's context and state object are untouched
    assert ctx.state is state
    assert state.model_dump() == before
    assert state.counter == 0
    assert state.items == ["start"]
    assert ctx.metadata == {"k": "v"}
    assert ctx.provenance == [{"node": "root"}]


@pytest.mark.asyncio
async def test_execute_single_with_isolation_leaves_caller_state_unchanged() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    state = State(counter=5)
    ctx = make_ctx(state)
    node = IncrementNode()
    result = await ex.execute_single_with_isolation(node, ctx)
    assert isinstance(result, NodeResult)
    assert result.error is None
    assert result.node is node
    assert isinstance(result.next_node, End)
    assert result.next_node.value == 6
    assert node.seen == 5
    assert result.context.state.counter == 6
    assert state.counter == 5
    assert state.items == []
    assert ctx.state is state


# --------------------------------------------------------------------------- errors


@pytest.mark.asyncio
async def test_middle_failure_is_captured_in_input_order() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    bad = FailNode("middle broke")
    nodes: list[Any] = [OkNode("a"), bad, OkNode("c")]

    results = await ex.execute_parallel(nodes, make_ctx())

    assert len(results) == 3
    assert [r.node for r in results] == nodes
    assert results[0].error is None and results[0].value == "a"
    assert results[2].error is None and results[2].value == "c"
    err = results[1].error
    assert isinstance(err, ValueError)
    assert err is bad.raised
    assert str(err) == "middle broke"
    assert results[1].next_node is None
    assert results[1].execution_time_ms >= 0.0
    # the successes still merge (FIRST_SUCCESS skips the failure)
    merged = ex.merge_states(results, MergeStrategy.FIRST_SUCCESS)
    assert merged.metadata["merge"]["winner"] == results[0].key


@pytest.mark.asyncio
async def test_all_failing_raises_parallel_execution_error_with_partial_results() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    nodes = [FailNode(f"f{i}") for i in range(3)]

    with pytest.raises(ParallelExecutionError) as info:
        await ex.execute_parallel(nodes, make_ctx())

    exc = info.value
    assert exc.failed_nodes == nodes
    assert len(exc.partial_results) == 3
    assert [r.node for r in exc.partial_results] == nodes
    for node, result in zip(nodes, exc.partial_results, strict=True):
        assert isinstance(result.error, ValueError)
        assert result.error is node.raised
    assert "3" in str(exc)
    assert "FailNode" in str(exc)


@pytest.mark.asyncio
async def test_empty_node_list_gives_empty_results() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    assert await ex.execute_parallel([], make_ctx()) == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.asyncio
async def test_string_in_nodes_is_invalid_node_error() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    with pytest.raises(InvalidNodeError) as info:
        await ex.execute_parallel([OkNode("a"), "not a node"], make_ctx())
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "'not a node'" in message
    assert "str" in message
    assert "nodes[1]" in message


@pytest.mark.asyncio
async def test_node_class_instead_of_instance_is_invalid_node_error() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    with pytest.raises(InvalidNodeError) as info:
        await ex.execute_parallel([OkNode], make_ctx())
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "OkNode" in message
    assert "instantiate" in message
    with pytest.raises(InvalidNodeError, match="OkNode"):
        await ex.execute_single_with_isolation(OkNode, make_ctx())


@pytest.mark.asyncio
async def test_invalid_node_is_rejected_before_anything_runs() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    tracker = InFlight()
    with pytest.raises(InvalidNodeError):
        await ex.execute_parallel([TrackedNode(0), 42], make_ctx(deps=tracker))
    assert tracker.done == 0


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_max_concurrent_below_one_is_configuration_error(bad: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        ParallelExecutor(max_concurrent=bad)
    assert isinstance(info.value, ValueError)
    assert "max_concurrent" in str(info.value)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("bad", [1.5, "4", True, None])
def test_max_concurrent_of_wrong_type_is_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_concurrent"):
        ParallelExecutor(max_concurrent=bad)


# --------------------------------------------------------------------------- retry / timeout


@pytest.mark.asyncio
async def test_retry_fails_twice_then_succeeds() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    node = FlakyNode()
    ctx = make_ctx(State(items=["base"]))
    result = await ex.execute_single_with_isolation(node, ctx)
    assert result.error is None
    assert result.attempts == 3
    assert node.calls == 3
    assert result.value == "ok after 3"
    # a failed attempt's writes are rolled back before the next one
    assert result.context.state.items == ["base", "attempt3"]
    assert ctx.state.items == ["base"]


@pytest.mark.asyncio
async def test_retry_exhausted_reports_last_error() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    node = FlakyNode(failures=5)
    results = await ex.execute_parallel([node, OkNode("x")], make_ctx())
    assert node.calls == 3
    assert results[0].attempts == 3
    assert isinstance(results[0].error, ConnectionError)
    assert "3" in str(results[0].error)
    assert results[1].error is None


@pytest.mark.asyncio
async def test_node_timeout_is_captured_as_node_timeout_error() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    started = time.perf_counter()
    results = await ex.execute_parallel([SlowNode(), OkNode("fine")], make_ctx())
    elapsed = time.perf_counter() - started
    err = results[0].error
    assert isinstance(err, NodeTimeoutError)
    assert isinstance(err, TimeoutError)
    assert err.node == "SlowNode"
    assert "SlowNode" in str(err)
    assert results[1].error is None and results[1].value == "fine"
    assert elapsed < 2.5  # the 5 s sleep was cut short
    assert results[0].attempts == 1
    assert results[0].execution_time_ms < 2500.0


@dataclass
class Hog(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[None]:
        await asyncio.sleep(0.15)
        return End(None)


@pytest.mark.asyncio
async def test_failed_node_time_excludes_waiting_for_a_slot() -> None:
    # max_concurrent=1: the failing node waits ~150 ms behind Hog, then fails at once
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=1)
    results = await ex.execute_parallel([Hog(), FailNode("quick")], make_ctx())
    assert results[0].error is None
    assert isinstance(results[1].error, ValueError)
    assert results[0].execution_time_ms >= 100.0
    assert results[1].execution_time_ms < 75.0


@pytest.mark.asyncio
async def test_a_generator_of_nodes_is_accepted() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    results = await ex.execute_parallel((OkNode(v) for v in "abc"), make_ctx())
    assert [r.value for r in results] == ["a", "b", "c"]


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [OkNode("solo"), "abc", 3])
async def test_nodes_that_is_not_a_collection_is_invalid_node_error(bad: Any) -> None:
    ex: ParallelExecutor[State] = ParallelExecutor()
    with pytest.raises(InvalidNodeError) as info:
        await ex.execute_parallel(bad, make_ctx())
    assert isinstance(info.value, TypeError)
    assert repr(bad) in str(info.value)


# --------------------------------------------------------------------------- cancellation


@dataclass
class Blocking(BaseNode[State]):
    index: int

    async def run(self, ctx: RunContext[State]) -> End[int]:
        tracker: InFlight = ctx.deps
        tracker.current += 1
        try:
            await asyncio.sleep(5.0)
        finally:
            tracker.current -= 1
        return End(self.index)


@dataclass
class CancelsItself(BaseNode[State]):
    async def run(self, ctx: RunContext[State]) -> End[None]:
        await asyncio.sleep(0.01)
        raise asyncio.CancelledError()


@pytest.mark.asyncio
async def test_cancelling_execute_parallel_leaves_nothing_running() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    tracker = InFlight()
    task = asyncio.ensure_future(
        ex.execute_parallel([Blocking(i) for i in range(8)], make_ctx(deps=tracker))
    )
    for _ in range(100):
        await asyncio.sleep(0.005)
        if tracker.current == 4:
            break
    assert tracker.current == 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the call returned only after every node had stopped, and no slot is held
    assert tracker.current == 0
    results = await asyncio.wait_for(
        ex.execute_parallel([TrackedNode(i) for i in range(4)], make_ctx(deps=InFlight())), 5.0
    )
    assert [r.value for r in results] == [0, 1, 2, 3]


@pytest.mark.asyncio
async def test_a_node_raising_cancelled_error_itself_is_captured() -> None:
    ex: ParallelExecutor[State] = ParallelExecutor(max_concurrent=4)
    tracker = InFlight()
    results = await asyncio.wait_for(
        ex.execute_parallel([CancelsItself(), TrackedNode(1)], make_ctx(deps=tracker)), 5.0
    )
    # Nobody cancelled the call: the node's own CancelledError is its failure.
    assert isinstance(results[0].error, NodeExecutionError)
    assert isinstance(results[0].error.__cause__, asyncio.CancelledError)
    assert results[0].error.node == "CancelsItself"
    assert results[1].error is None and results[1].value == 1
    assert tracker.current == 0
    assert tracker.done == 1
