"""Agent loop: one node that returns itself, with a step counter, until done.

::

    AgentStep(1) --> AgentStep(2) --> ... --> End(AgentOutcome)

Each step asks the LM for the next action and appends it to the transcript. The
loop ends when the LM answers ``FINISH: ...`` or when ``max_steps`` is reached.
The step counter lives on the node (each step is a new ``AgentStep`` instance, so
each gets its own record key), the transcript in the state. ``retry`` on the class
makes a flaky LM call try again (backing off without holding a slot); a failed
attempt's writes are rolled back before the retry, so the transcript never holds
half a step.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from lift_graph import BaseNode, End, Graph, Limits, Retry, RunContext, RunResult

from .fake_lm import FakeLM, TextLM, ask, hash_answer

__all__ = [
    "AgentOutcome",
    "AgentState",
    "AgentStep",
    "agent_lm",
    "build_graph",
    "run_example",
]


class AgentState(BaseModel):
    goal: str
    max_steps: int = 5
    transcript: list[str] = Field(default_factory=list)
    done: bool = False
    result: str = ""


class AgentOutcome(BaseModel):
    result: str
    steps: int
    stopped: Literal["finished", "step_limit"]


_STEP = re.compile(r"^Step: (\d+)$", re.MULTILINE)


def agent_lm(
    finish_at: int | None = None, *, latency: float = 0.002, fail_on: tuple[int, ...] = ()
) -> FakeLM:
    """A fake LM that acts until step ``finish_at``, where it answers ``FINISH: ...``.

    ``finish_at=None`` never finishes (the loop stops at its step limit).
    ``fail_on`` lists call indices that fail (for retry demos).
    """

    def respond(prompt: str) -> str:
        match = _STEP.search(prompt)
        step = int(match.group(1)) if match else 0
        if finish_at is not None and step >= finish_at:
            return f"FINISH: {hash_answer(prompt, words=0)}"
        return f"ACT: search {hash_answer(prompt, words=0)}"

    responder: Callable[[str], str] = respond
    return FakeLM(name="agent", latency=latency, fail_on=fail_on, responder=responder)


@dataclass
class AgentStep(BaseNode[AgentState]):
    step: int = 1
    provider = "fake"
    reads = frozenset({"goal", "max_steps", "transcript"})
    writes = frozenset({"transcript", "done", "result"})
    retry = Retry(attempts=3, backoff=0.001, jitter=0.5)

    async def run(self, ctx: RunContext[AgentState]) -> AgentStep | End[AgentOutcome]:
        state = ctx.state
        prompt = (
            f"Goal: {state.goal}\nHistory: {len(state.transcript)} steps\n"
            f"Step: {self.step}\nNext action?"
        )
        reply = await ask(ctx, prompt)
        state.transcript.append(f"{self.step}. {reply}")
        if reply.startswith("FINISH:"):
            state.done = True
            state.result = reply.removeprefix("FINISH:").strip()
            return End(AgentOutcome(result=state.result, steps=self.step, stopped="finished"))
        if self.step >= state.max_steps:
            state.result = reply
            return End(AgentOutcome(result=reply, steps=self.step, stopped="step_limit"))
        return dataclasses.replace(self, step=self.step + 1)


def build_graph() -> Graph[AgentState]:
    return Graph(nodes=[AgentStep], name="agent_loop")


async def run_example(
    goal: str = "find the fastest healthy provider",
    *,
    max_steps: int = 5,
    finish_at: int | None = None,
    lm: TextLM | None = None,
    max_concurrency: int | None = None,
    limits: Limits | None = None,
) -> RunResult[AgentState]:
    """Run the loop; with the default LM it finishes at ``finish_at`` or the step limit."""
    return await build_graph().run(
        AgentStep(),
        state=AgentState(goal=goal, max_steps=max_steps),
        deps=lm if lm is not None else agent_lm(finish_at),
        max_concurrency=max_concurrency,
        limits=limits,
    )
