"""A node whose ``run`` is a plain ``def`` is refused up front, not at its first await."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    End,
    Fork,
    Graph,
    InvalidNodeError,
    ParallelExecutor,
    Pipeline,
    RunContext,
)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class S(BaseModel):
    n: int = 0


@dataclass
class SyncRun(BaseNode[S]):
    def run(self, ctx: RunContext[S]) -> End[int]:  # type: ignore[override]
        return End(1)


@dataclass
class AsyncRun(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> End[int]:
        return End(2)


@dataclass
class SyncChild(AsyncRun):
    def run(self, ctx: RunContext[S]) -> End[int]:  # type: ignore[override]
        return End(3)


@dataclass
class InheritsAsync(AsyncRun):
    pass


def logged(fn: F) -> F:
    """A sync wrapper that hands back the coroutine of the async function it wraps."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class Wrapped(BaseNode[S]):
    @logged
    async def run(self, ctx: RunContext[S]) -> End[int]:
        return End(4)


@dataclass
class ForksSync(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> Fork[S]:
        return Fork([AsyncRun(), SyncRun()])


@dataclass
class ListsSync(BaseNode[S]):
    async def run(self, ctx: RunContext[S]) -> list[BaseNode[S]]:
        return [AsyncRun(), SyncRun()]


@pytest.mark.parametrize("cls", [SyncRun, SyncChild])
def test_graph_refuses_a_plain_def_run(cls: type) -> None:
    with pytest.raises(InvalidNodeError) as info:
        Graph(nodes=[AsyncRun, cls])
    message = str(info.value)
    assert cls.__name__ in message and "async def run" in message


@pytest.mark.asyncio
async def test_async_inherited_and_wrapped_runs_are_accepted() -> None:
    graph = Graph(nodes=[AsyncRun, InheritsAsync, Wrapped])
    assert (await graph.run(InheritsAsync(), state=S())).output == 2
    assert (await graph.run(Wrapped(), state=S())).output == 4


@pytest.mark.skipif(sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is 3.12+")
@pytest.mark.asyncio
async def test_a_run_marked_as_coroutine_function_is_accepted() -> None:
    async def body(self: Any, ctx: RunContext[S]) -> End[int]:
        return End(5)

    def run(self: Any, ctx: RunContext[S]) -> Awaitable[End[int]]:
        return body(self, ctx)

    marked = type("Marked", (BaseNode,), {"run": inspect.markcoroutinefunction(run)})  # type: ignore[attr-defined]
    assert (await Graph(nodes=[marked]).run(marked(), state=S())).output == 5


@pytest.mark.parametrize(
    "build",
    [
        lambda: Fork([AsyncRun(), SyncRun()]),
        lambda: Fork([AsyncRun()], then=SyncRun()),
        lambda: Pipeline([SyncRun()]),
    ],
)
def test_blocks_refuse_a_plain_def_run(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidNodeError, match=r"SyncRun.*async def run"):
        build()


@pytest.mark.asyncio
async def test_a_block_returned_at_run_time_fails_the_node_that_built_it() -> None:
    graph = Graph(nodes=[ForksSync, AsyncRun])
    with pytest.raises(InvalidNodeError, match="SyncRun"):
        await graph.run(ForksSync(), state=S())


@pytest.mark.asyncio
async def test_executor_refuses_a_plain_def_run() -> None:
    ctx: RunContext[S] = RunContext(state=S(), execution_id="x")
    executor = ParallelExecutor()
    with pytest.raises(InvalidNodeError, match="SyncRun"):
        await executor.execute_single_with_isolation(SyncRun(), ctx)
    with pytest.raises(InvalidNodeError, match="SyncRun"):
        await executor.execute_parallel([AsyncRun(), SyncRun()], ctx)


@pytest.mark.asyncio
async def test_a_returned_list_with_a_plain_def_run_fails_its_execution() -> None:
    graph = Graph(nodes=[ListsSync, AsyncRun])
    kinds: list[tuple[str, str | None]] = []
    with pytest.raises(InvalidNodeError, match="SyncRun"):
        async for event in graph.iter(ListsSync(), state=S()):
            record = event.data.get("record")
            kinds.append((event.kind, record.status if record else None))
    assert kinds == [("run_started", None), ("node_started", None), ("node_failed", "failed")]
