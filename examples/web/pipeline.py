"""The graph the web example runs: research a few topics in parallel, then report.

::

    Plan --Fork([Research(t) for t in topics])--> Report --> End(report)

Every node calls the offline ``FakeLM`` (``nodes.fake_lm``), so the example needs
no API key. ``Plan`` and ``Research`` send ``custom`` events with ``ctx.emit`` to
show progress; a topic listed in ``fail_topics`` makes the fake provider fail
(``Research`` retries once, then the run fails), to show what a failure looks like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, Field

from lift_graph import BaseNode, End, Fork, Graph, Retry, RunContext, append
from nodes.fake_lm import FakeLM, ask

__all__ = ["Plan", "Report", "Research", "ResearchState", "RunRequest", "build_graph"]


class RunRequest(BaseModel):
    """The body of ``POST /runs``."""

    topics: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(
        default_factory=lambda: ["forks", "joins", "limits"], min_length=1, max_length=16
    )
    #: Seconds each fake LM call takes (scaled by a deterministic jitter).
    latency: float = Field(default=0.3, ge=0.0, le=5.0)
    #: Topics whose fake LM calls fail (to see ``node_retry`` and ``run_failed``).
    fail_topics: list[str] = Field(default_factory=list, max_length=16)

    def lm(self) -> FakeLM:
        markers = [f"topic: {topic}" for topic in self.fail_topics]
        return FakeLM(
            name="fake", latency=self.latency, jitter=0.5, seed=3, fail_if_contains=markers
        )


class ResearchState(BaseModel):
    topics: list[str]
    notes: Annotated[list[str], append] = Field(default_factory=list)
    report: str = ""


@dataclass
class Plan(BaseNode[ResearchState]):
    async def run(self, ctx: RunContext[ResearchState]) -> Fork[ResearchState]:
        ctx.emit("plan", {"topics": list(ctx.state.topics)})
        return Fork([Research(topic) for topic in ctx.state.topics], then=Report())


@dataclass
class Research(BaseNode[ResearchState]):
    topic: str
    provider = "fake"
    retry = Retry(attempts=2, backoff=0.01)

    async def run(self, ctx: RunContext[ResearchState]) -> End[str]:
        ctx.emit("progress", {"topic": self.topic, "step": "asking", "attempt": ctx.attempt})
        answer = await ask(ctx, f"Research the topic: {self.topic}")
        ctx.state.notes.append(f"{self.topic}: {answer}")
        ctx.emit("progress", {"topic": self.topic, "step": "done", "words": len(answer.split())})
        return End(answer)


@dataclass
class Report(BaseNode[ResearchState]):
    provider = "fake"

    async def run(self, ctx: RunContext[ResearchState]) -> End[str]:
        notes = "\n".join(ctx.state.notes)
        headline = await ask(ctx, f"Notes:\n{notes}\nOne line for {len(ctx.state.notes)} topics")
        ctx.state.report = f"{headline}\n{notes}"
        return End(ctx.state.report)


def build_graph() -> Graph[ResearchState]:
    return Graph(nodes=[Plan, Research, Report], name="research")
