"""Tracing: what OpenTelemetry spans cost a chain of n no-op nodes, in µs per node.

The chain of the chain workload, run three ways: untraced (``tracer=None`` with no
tracer provider configured, the default), ``tracer=False``, and traced into an SDK
``TracerProvider`` (spans are created, attributed and ended, then dropped: no
exporter, so the figure is the engine's and the SDK's cost, not an exporter's).
The floor is the SDK itself: one span started and ended, in µs. A traced node makes
one span (its attempt, with its attributes, current while the node runs) plus a
path lookup; the target keeps the traced cost within four bare spans a node.

Peers are not run: LangGraph traces to LangSmith through callbacks and
pydantic-graph through logfire, neither to a plain OpenTelemetry tracer.
"""

from __future__ import annotations

import time
from typing import Any

from .._harness import LIFT, Config, Outcome, Row, Target, expect, median_time, run_async
from .chain import LIFT_GRAPH, ChainState, Step

__all__ = ["run"]

UNIT = "µs/node"
TRACED = f"{LIFT} (traced, SDK provider)"
OFF = f"{LIFT} (tracer=False)"
SDK_SPAN = "opentelemetry-sdk (one span)"


def _span_cost(provider: Any, n: int) -> float:
    """µs to start and end one SDK span (best of 5 batches of ``n``)."""
    tracer = provider.get_tracer("bench")
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(n):
            tracer.start_span("span").end()
        best = min(best, (time.perf_counter() - began) / n * 1e6)
    return best


async def _measure(cfg: Config) -> Outcome:
    n = cfg.chain_n
    wl = f"tracing chain {n}"
    what = f"chain of {n}"
    out = Outcome()
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        out.add(Row(wl, LIFT, None, UNIT, "skipped: pip install 'lift_graph[otel]'"))
        return out
    provider = TracerProvider()

    def timed(tracer: Any) -> Any:
        async def once() -> int:
            result = await LIFT_GRAPH.run(Step(0, n), state=ChainState(), tracer=tracer)
            return int(result.output)

        return once

    ways = (
        (LIFT, None, "tracer=None, no provider configured (the default)"),
        (OFF, False, "tracing switched off"),
        (TRACED, provider, "a span per node attempt, no exporter"),
    )
    # Interleaved rounds, best median of each: the first way measured must not pay
    # for the process warming up, since the first target compares two of them.
    per_node = {engine: float("inf") for engine, _, _ in ways}
    for _ in range(3):
        for engine, tracer, _ in ways:
            seconds = await median_time(
                timed(tracer), cfg, verify=expect(engine, what, n), reps=max(cfg.reps, 5)
            )
            per_node[engine] = min(per_node[engine], seconds / n * 1e6)
    for engine, _, note in ways:
        out.add(Row(wl, engine, per_node[engine], UNIT, note))
    span = _span_cost(provider, max(n, 1000))
    out.add(Row(wl, SDK_SPAN, span, "µs/span", "floor: start and end one span"))

    untraced, off, traced = per_node[LIFT], per_node[OFF], per_node[TRACED]
    out.targets += [
        # Both skip tracing: any gap is per-node work the default added, or noise
        # (up to ~5% between interleaved medians here).
        Target(wl, "untraced (tracer=None) / tracer=False", untraced / off, "<=", 1.15),
        # A node's span carries 4-6 attributes and becomes the current context while
        # the node runs (attach / detach): about three bare spans' worth, measured.
        Target(wl, "traced overhead per node / one SDK span", (traced - untraced) / span, "<=", 4),
    ]
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
