"""Workload 9: DSPy's RAG tutorial program over n questions, and BestOfN, under a
latency-injecting LM.

RAG: ``dspy.ChainOfThought('context, question -> response')`` over a local search,
one LM call per question, each call taking ``dspy_latency`` seconds, in two
variants of the module:

- *tutorial module, forward only*, as DSPy's tutorial writes it. A DSPyNode runs it
  on threads (DSPy's sync path), as ``dspy.Parallel`` does. Target: lift_graph /
  ``dspy.Parallel`` <= 1.1.
- *module with aforward*: a DSPyNode awaits ``acall`` (DSPy's async path, which a
  cancelled node or a timeout can interrupt). Target: lift_graph / an asyncio
  ``gather`` of ``module.acall`` under ``Semaphore(k)`` <= 1.05, what the engine
  adds. ``dspy.Parallel`` is shown, not targeted: DSPy's async path costs more per
  call than its sync one (``acall`` hops to a thread for ``prepare`` and for
  pricing; 0.8 vs 0.5 ms of CPU per call measured here), about 7 ms per wave of 16
  calls on two cores, which any asyncio driver of ``acall`` pays (1.12x at 50 ms per
  call, 1.08x at 100 ms, 1.03x at 200 ms).

lift_graph is ``Fork([Answer(question=q) ...])``, ``Answer`` a ``DSPyNode`` whose
``program=`` is the RAG module, ``max_concurrency=k``. Figure: wall time in ms
(median; the engines' runs interleaved); the note gives the ideal
``ceil(n / k) * latency``.

BestOfN: ``dspy.BestOfN(module, N, reward_fn, threshold)`` whose first rollout
passes (one LM call) vs ``Fork([Ask(lm=lm.copy(rollout_id=i, temperature=1.0))
...], join=FIRST_ACCEPTED, accept=reward >= threshold)``: the fork starts all N
rollouts, accepts rollout 0 as soon as it finishes and cancels the others. The
asyncio floor does the same by hand (N ``acall`` tasks, the first passing one by
index wins, the rest cancelled). Target: fork / BestOfN <= 1.1 (one LM latency
each; what starting N concurrent ``acall``s costs DSPy, about 1 ms at N = 4 on two
cores, is in both the fork and the asyncio floor).

The LM is a ``dspy.LM`` with a custom engine pair (``complete(Request) ->
Response``, DSPy 3.4's engine contract): the sync engine ``time.sleep``s (what
``dspy.Parallel``'s threads call), the async one ``asyncio.sleep``s (what ``acall``
awaits). No cache, no retries, no network.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
import os
import re
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from lift_graph import BaseNode, DSPyNode, End, Fork, Graph, JoinStrategy, RunContext

from .._harness import (
    ASYNCIO,
    LIFT,
    Config,
    Outcome,
    Row,
    Target,
    check,
    run_async,
    skipped,
)

__all__ = ["latency_lm", "run"]

UNIT = "ms"
DSPY_PARALLEL = "dspy.Parallel"
DSPY_BEST_OF_N = "dspy.BestOfN"
RESPONSE = "fixed answer"

CORPUS = [
    f"{topic} | {topic} is topic number {i} of the benchmark corpus, about {topic.lower()}."
    for i, topic in enumerate(
        [
            "Asyncio",
            "Threads",
            "Forks",
            "Joins",
            "Pipelines",
            "Signatures",
            "Modules",
            "Retrieval",
            "Latency",
            "Limits",
            "Reducers",
            "Checkpoints",
        ]
    )
]
_WORD = re.compile(r"[a-z0-9]+")


def search(query: str, k: int = 3) -> list[str]:
    """The ``k`` passages sharing most words with ``query`` (ties: corpus order)."""
    q = set(_WORD.findall(query.lower()))
    ranked = sorted(
        range(len(CORPUS)), key=lambda i: (-len(q & set(_WORD.findall(CORPUS[i].lower()))), i)
    )
    return [CORPUS[i] for i in ranked[:k]]


def questions(n: int) -> list[str]:
    topics = [c.split(" | ", 1)[0] for c in CORPUS]
    return [f"Question {i}: what is said about {topics[i % len(topics)]}?" for i in range(n)]


def _dspy() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    return dspy


def _response(text: str) -> Any:
    from dspy.lm15 import Message, Response, TextPart, Usage

    return Response(
        id=None,
        model="bench-latency",
        message=Message.assistant([TextPart(text)]),
        finish_reason="stop",
        usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
    )


_TEXT = (
    "[[ ## reasoning ## ]]\nThe context says so.\n\n"
    f"[[ ## response ## ]]\n{RESPONSE}\n\n"
    f"[[ ## answer ## ]]\n{RESPONSE}\n\n"
    "[[ ## completed ## ]]"
)


class _Counter:
    """LM calls started, on either path (threads included)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def tick(self) -> None:
        with self._lock:
            self.value += 1

    def take(self) -> int:
        """The count since the previous ``take()``."""
        with self._lock:
            out, self.value = self.value, 0
        return out


class _SyncEngine:
    def __init__(self, seconds: float, counter: _Counter) -> None:
        self.seconds = seconds
        self.counter = counter

    def complete(self, request: Any) -> Any:
        self.counter.tick()
        time.sleep(self.seconds)
        return _response(_TEXT)

    def close(self) -> None:
        pass


class _AsyncEngine:
    def __init__(self, seconds: float, counter: _Counter) -> None:
        self.seconds = seconds
        self.counter = counter

    async def complete(self, request: Any) -> Any:
        self.counter.tick()
        await asyncio.sleep(self.seconds)
        return _response(_TEXT)

    async def aclose(self) -> None:
        pass


def latency_lm(seconds: float, counter: _Counter) -> Any:
    """A ``dspy.LM`` answering every call after ``seconds`` (sync path: time.sleep,
    async path: asyncio.sleep) with the fields ``reasoning``, ``response`` and
    ``answer``; ``counter`` counts the calls."""
    return _dspy().LM(
        "bench/latency",
        engine=_SyncEngine(seconds, counter),
        async_engine=_AsyncEngine(seconds, counter),
        cache=False,
        num_retries=0,
    )


async def _interleaved(
    engines: Sequence[tuple[str, Callable[[], Awaitable[Any]]]],
    cfg: Config,
    reps: int,
    what: str,
    expected: Any,
) -> dict[str, float]:
    """Median wall time (s) per engine over ``reps`` rounds, each round running every
    engine once (A B C A B C ...), so drift in the machine's load hits all alike.

    ``cfg.warmup`` untimed runs each first; garbage collected before each timed run;
    every result must equal ``expected``.
    """
    for _, make in engines:
        for _ in range(cfg.warmup):
            await make()
    samples: dict[str, list[float]] = {engine: [] for engine, _ in engines}
    for _ in range(reps):
        for engine, make in engines:
            gc.collect()
            began = time.perf_counter()
            got = await make()
            samples[engine].append(time.perf_counter() - began)
            check(engine, what, got, expected)
    return {engine: statistics.median(times) for engine, times in samples.items()}


# -- RAG -----------------------------------------------------------------------------


def rag_module(num_docs: int = 3, *, with_aforward: bool = True) -> Any:
    """The tutorial's RAG module; ``with_aforward=False`` is it as the tutorial
    writes it (``forward`` only), which a DSPyNode runs on a thread."""
    dspy = _dspy()

    class RAG(dspy.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.num_docs = num_docs
            self.respond = dspy.ChainOfThought("context, question -> response")

        def forward(self, question: str) -> Any:
            return self.respond(context=search(question, k=self.num_docs), question=question)

    class AsyncRAG(RAG):
        async def aforward(self, question: str) -> Any:
            context = search(question, k=self.num_docs)
            return await self.respond.acall(context=context, question=question)

    return AsyncRAG() if with_aforward else RAG()


class RagState(BaseModel):
    responses: list[str] = Field(default_factory=list)


@dataclass
class Answer(DSPyNode[RagState]):
    question: str
    signature = "question -> response"
    outputs: ClassVar[dict[str, str]] = {"response": "responses"}


@dataclass
class AskAll(BaseNode[RagState]):
    questions: list[str]
    lm: Any
    program: Any

    async def run(self, ctx: RunContext[RagState]) -> Fork[RagState]:
        return Fork([Answer(question=q, lm=self.lm, program=self.program) for q in self.questions])


RAG_GRAPH: Graph[RagState] = Graph(nodes=[AskAll, Answer], name="bench-dspy-rag")


def _count_answers(responses: list[Any]) -> int:
    return sum(1 for r in responses if r == RESPONSE)


#: The RAG variants: (label, module has aforward, the targets it is held to).
#: As the tutorial writes it (forward only), a DSPyNode takes DSPy's sync path on
#: threads, as dspy.Parallel does; with ``aforward`` it takes DSPy's async path,
#: whose own per-call thread hops cost ~7 ms per wave of 16 calls on two cores,
#: which any asyncio driver pays (so there the floor is the asyncio gather).
RAG_VARIANTS = (
    ("tutorial module, forward only", False, ((DSPY_PARALLEL, 1.1),)),
    ("module with aforward", True, ((ASYNCIO, 1.05),)),
)


async def _rag(cfg: Config, out: Outcome) -> None:
    for label, with_aforward, targets in RAG_VARIANTS:
        await _rag_variant(cfg, out, label, with_aforward, targets)


async def _rag_variant(
    cfg: Config,
    out: Outcome,
    label: str,
    with_aforward: bool,
    targets: Sequence[tuple[str, float]],
) -> None:
    dspy = _dspy()
    n, k, latency = cfg.dspy_questions, cfg.dspy_slots, cfg.dspy_latency
    qs = questions(n)
    counter = _Counter()
    lm = latency_lm(latency, counter)
    rag = rag_module(with_aforward=with_aforward)
    ideal = math.ceil(n / k) * latency
    wl = f"dspy RAG {n} @ {k}, {label}"
    # A run is a few waves of LM latency; DSPy's own per-call work jitters it by
    # +-10 % on a 2-core machine: take more samples.
    reps = max(cfg.reps, 7)

    async def lift() -> int:
        res = await RAG_GRAPH.run(AskAll(qs, lm, rag), state=RagState(), max_concurrency=k)
        return _count_answers(res.state.responses)

    parallel = dspy.Parallel(num_threads=k, disable_progress_bar=True)
    pairs = [(rag, {"question": q}) for q in qs]

    async def threads() -> int:
        # Blocks the loop on purpose: nothing else runs, and dspy.Parallel is sync.
        with dspy.context(lm=lm):
            return _count_answers([p.response for p in parallel(pairs)])

    async def gather() -> int:
        sem = asyncio.Semaphore(k)

        async def one(q: str) -> str:
            async with sem:
                with dspy.context(lm=lm):
                    return str((await rag.acall(question=q)).response)

        return _count_answers(list(await asyncio.gather(*(one(q) for q in qs))))

    path = "DSPy's async path (acall)" if with_aforward else "forward() on threads"
    engines: list[tuple[str, Callable[[], Awaitable[int]], str]] = [
        (LIFT, lift, f"Fork of DSPyNode(program=RAG), max_concurrency={k}: {path}"),
        (DSPY_PARALLEL, threads, f"dspy.Parallel(num_threads={k}), sync path in threads"),
    ]
    if with_aforward:
        engines.append((ASYNCIO, gather, f"gather of module.acall under Semaphore({k})"))
    counter.take()
    times = await _interleaved([(e, make) for e, make, _ in engines], cfg, reps, "dspy RAG", n)
    calls, expected = counter.take(), n * len(engines) * (cfg.warmup + reps)
    check("every engine", "dspy RAG LM calls", calls, expected)
    for engine, _, note in engines:
        out.add(
            Row(
                wl,
                engine,
                times[engine] * 1000,
                UNIT,
                f"{note}; ideal {ideal * 1000:.0f} ms ({latency * 1000:g} ms per call)",
                extra={"wall_s": times[engine], "ideal_s": ideal},
            )
        )
    mine = out.figure(wl, LIFT)
    for peer, limit in targets:
        theirs = out.figure(wl, peer)
        ratio = mine / theirs if mine is not None and theirs else None
        what = "lift_graph / " + ("asyncio acall gather" if peer == ASYNCIO else peer)
        out.targets.append(Target(wl, what, ratio, "<=", limit))


# -- BestOfN ---------------------------------------------------------------------------


class AskState(BaseModel):
    question: str
    answer: str = ""


class Ask(DSPyNode[AskState]):
    signature = "question -> answer"


@dataclass
class Picked(BaseNode[AskState]):
    async def run(self, ctx: RunContext[AskState]) -> End[Any]:
        join = ctx.join
        assert join is not None
        return End((join.winner, join[join.winner].answer))


def reward(args: dict[str, Any], pred: Any) -> float:
    return 1.0 if pred.answer == RESPONSE else 0.0


@dataclass
class Rollouts(BaseNode[AskState]):
    lm: Any
    n: int

    async def run(self, ctx: RunContext[AskState]) -> Fork[AskState]:
        args = {"question": ctx.state.question}
        return Fork(
            [Ask(lm=self.lm.copy(rollout_id=i, temperature=1.0)) for i in range(self.n)],
            then=Picked(),
            join=JoinStrategy.FIRST_ACCEPTED,
            accept=lambda pred: reward(args, pred) >= 1.0,
        )


BEST_GRAPH: Graph[AskState] = Graph(nodes=[Rollouts, Ask, Picked], name="bench-dspy-best-of-n")


async def _best_of_n(cfg: Config, out: Outcome) -> None:
    dspy = _dspy()
    n, latency = cfg.dspy_rollouts, cfg.dspy_latency
    question = "What is the benchmark about?"
    lm = latency_lm(latency, _Counter())
    best = dspy.BestOfN(
        module=dspy.Predict("question -> answer"), N=n, reward_fn=reward, threshold=1.0
    )
    wl = f"dspy BestOfN {n}, rollout 0 passes"

    async def fork() -> Any:
        res = await BEST_GRAPH.run(Rollouts(lm, n), state=AskState(question=question))
        return res.output

    async def sequential() -> Any:
        with dspy.context(lm=lm):
            return (0, best(question=question).answer)

    ask = dspy.Predict("question -> answer")

    async def tasks() -> Any:
        async def rollout(i: int) -> Any:
            with dspy.context(lm=lm.copy(rollout_id=i, temperature=1.0)):
                return await ask.acall(question=question)

        started = [asyncio.create_task(rollout(i)) for i in range(n)]
        try:
            for i, task in enumerate(started):  # index order, as BestOfN accepts
                try:
                    pred = await task
                except Exception:
                    continue
                if reward({"question": question}, pred) >= 1.0:
                    return (i, pred.answer)
            return None
        finally:
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

    engines = [
        (LIFT, fork, f"Fork of {n} LM copies, join=FIRST_ACCEPTED"),
        (DSPY_BEST_OF_N, sequential, f"dspy.BestOfN(N={n}), stops at the first pass"),
        (ASYNCIO, tasks, f"{n} acall tasks, first passing by index, the rest cancelled"),
    ]
    times = await _interleaved(
        [(e, make) for e, make, _ in engines], cfg, max(cfg.reps, 9), "BestOfN", (0, RESPONSE)
    )
    for engine, _, note in engines:
        out.add(
            Row(
                wl,
                engine,
                times[engine] * 1000,
                UNIT,
                f"{note}; ideal {latency * 1000:g} ms (one call)",
                extra={"wall_s": times[engine], "ideal_s": latency},
            )
        )
    mine, theirs = out.figure(wl, LIFT), out.figure(wl, DSPY_BEST_OF_N)
    ratio = mine / theirs if mine is not None and theirs else None
    out.targets.append(Target(wl, "fork / dspy.BestOfN", ratio, "<=", 1.1))


async def _measure(cfg: Config) -> Outcome:
    out = Outcome()
    if importlib.util.find_spec("dspy") is None:
        reason = "skipped: dspy is not installed (pip install 'lift_graph[dspy]')"
        rag = f"dspy RAG {cfg.dspy_questions} @ {cfg.dspy_slots}"
        for wl, engines in (
            (f"{rag}, {RAG_VARIANTS[0][0]}", (LIFT, DSPY_PARALLEL)),
            (f"{rag}, {RAG_VARIANTS[1][0]}", (LIFT, DSPY_PARALLEL, ASYNCIO)),
            (
                f"dspy BestOfN {cfg.dspy_rollouts}, rollout 0 passes",
                (LIFT, DSPY_BEST_OF_N, ASYNCIO),
            ),
        ):
            out.add(*(skipped(wl, engine, UNIT, reason) for engine in engines))
        return out
    await _rag(cfg, out)
    await _best_of_n(cfg, out)
    return out.compare()


def run(cfg: Config) -> Outcome:
    return run_async(_measure(cfg))
