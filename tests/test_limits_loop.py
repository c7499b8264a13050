"""A Limits object is shared within one event loop; another loop gets a clear error."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from pydantic import BaseModel

from lift_graph import BaseNode, ConfigurationError, End, Graph, Limits, RunContext


class S(BaseModel):
    n: int = 0


@dataclass
class Hold(BaseNode[S]):
    seconds: float

    async def run(self, ctx: RunContext[S]) -> End[int]:
        await asyncio.sleep(self.seconds)
        return End(1)


graph = Graph(nodes=[Hold])


def test_a_second_loop_is_refused_while_the_first_holds_permits() -> None:
    limits = Limits(max_concurrency=2)
    started = threading.Event()
    errors: list[BaseException] = []

    async def first() -> None:
        task = asyncio.ensure_future(graph.run(Hold(0.5), state=S(), limits=limits))
        await asyncio.sleep(0.05)
        started.set()
        await task

    def other_loop() -> None:
        started.wait(5)
        try:
            asyncio.run(graph.run(Hold(0.0), state=S(), limits=limits))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    asyncio.run(first())
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], ConfigurationError)
    assert "another event loop" in str(errors[0])


def test_sequential_loops_may_reuse_an_idle_limits() -> None:
    limits = Limits(max_concurrency=1)
    for _ in range(2):
        result = asyncio.run(graph.run(Hold(0.0), state=S(), limits=limits))
        assert result.output == 1
    assert limits.in_flight() == 0
