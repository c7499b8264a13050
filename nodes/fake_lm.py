"""A local, offline fake LLM for examples, tests and benchmarks.

``FakeLM`` answers every prompt with a *pure function of the prompt* (a scripted
answer, a custom responder, or a short hash-based template), so graphs driven by it
are deterministic whatever order concurrent calls happen in. It simulates what
matters to a scheduler: latency (optionally jittered), failures (a rate and / or an
explicit schedule), token counts and a call log.

Randomness (latency jitter, the failure rate) comes from ``random.Random`` seeded
with ``(seed, prompt, how many times this prompt was asked before)``: string seeds
are hashed with SHA-512, so the draws are the same in every process, whatever
``PYTHONHASHSEED`` is and whatever order concurrent calls arrive in.

``dummy_lm`` builds a deterministic ``dspy.utils.DummyLM`` (dict mode) for
``DSPyNode``s, importing dspy only when called.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from lift_graph import RunContext

__all__ = [
    "CallRecord",
    "Completion",
    "FakeLM",
    "FakeLMError",
    "TextLM",
    "ask",
    "count_tokens",
    "dummy_lm",
    "hash_answer",
    "lm_of",
]


class FakeLMError(RuntimeError):
    """A simulated provider failure (rate limit, outage, 500...)."""

    def __init__(self, model: str, call_index: int, prompt: str) -> None:
        short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
        super().__init__(f"{model}: simulated failure on call {call_index} ({short!r})")
        self.model = model
        self.call_index = call_index
        self.prompt = prompt


def count_tokens(text: str) -> int:
    """The fake tokenizer: whitespace-separated words."""
    return len(text.split())


def hash_answer(prompt: str, *, words: int = 4) -> str:
    """A short deterministic answer: a few words of the prompt and a digest.

    The words come from the prompt's last line, after its last colon (where a
    templated prompt puts its payload): ``hash_answer("Summarize: the cat sat")``
    -> ``"the cat sat #<8 hex digits>"``.
    """
    payload = prompt.strip().splitlines()[-1] if prompt.strip() else ""
    payload = payload.rsplit(":", 1)[-1] if payload.rsplit(":", 1)[-1].strip() else payload
    head = " ".join(w.strip(".,:;!?()[]\"'").lower() for w in payload.split()[:words])
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    return f"{head} #{digest}".strip()


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer of the fake LM, with its token counts."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One entry of ``FakeLM.calls`` (logged when the call ends, so the log is in
    completion order); ``index`` is the call's arrival order."""

    index: int
    prompt: str
    started_at: float
    latency: float
    prompt_tokens: int
    answer: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FakeLM:
    """An async fake LLM: ``await lm.complete(prompt)`` -> ``Completion``.

    ``latency`` seconds per call, scaled by a factor drawn from ``[1 - jitter,
    1 + jitter]``. A call fails with ``FakeLMError`` when its index (0-based, in
    arrival order) is in ``fail_on``, when the prompt contains one of
    ``fail_if_contains`` (deterministic under concurrency), or with probability
    ``failure_rate`` (1.0: an outage). A call cancelled while it "thinks" is logged
    with ``error="cancelled"``. The answer is ``responses[prompt]`` if present, else
    ``responder(prompt)`` if set, else ``hash_answer(prompt)``.
    """

    name: str = "fake"
    latency: float = 0.0
    jitter: float = 0.0
    failure_rate: float = 0.0
    fail_on: Collection[int] = ()
    fail_if_contains: Collection[str] = ()
    seed: int = 0
    responses: Mapping[str, str] = field(default_factory=dict)
    responder: Callable[[str], str] | None = None
    calls: list[CallRecord] = field(default_factory=list, init=False, repr=False)
    _asked: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _next_index: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"FakeLM.latency must be >= 0, got {self.latency}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"FakeLM.jitter must be within [0, 1], got {self.jitter}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"FakeLM.failure_rate must be within [0, 1], got {self.failure_rate}")

    # -- pure parts ---------------------------------------------------------------
    def answer(self, prompt: str) -> str:
        """What this LM answers to ``prompt`` (no latency, no failure, no log)."""
        scripted = self.responses.get(prompt)
        if scripted is not None:
            return scripted
        if self.responder is not None:
            return self.responder(prompt)
        return hash_answer(prompt)

    def _rng(self, prompt: str, occurrence: int) -> random.Random:
        return random.Random(f"{self.seed}|{occurrence}|{prompt}")

    # -- the call -----------------------------------------------------------------
    async def complete(self, prompt: str) -> Completion:
        """Answer ``prompt`` after the simulated latency, or raise ``FakeLMError``."""
        index = self._next_index
        self._next_index += 1
        occurrence = self._asked[prompt]
        self._asked[prompt] += 1
        rng = self._rng(prompt, occurrence)
        delay = self.latency * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))
        fails = (
            rng.random() < self.failure_rate
            or index in self.fail_on
            or any(marker in prompt for marker in self.fail_if_contains)
        )
        tokens = count_tokens(prompt)
        started = time.perf_counter()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.calls.append(
                    CallRecord(index, prompt, started, delay, tokens, error="cancelled")
                )
                raise
        if fails:
            error = FakeLMError(self.name, index, prompt)
            self.calls.append(CallRecord(index, prompt, started, delay, tokens, error=str(error)))
            raise error
        text = self.answer(prompt)
        self.calls.append(CallRecord(index, prompt, started, delay, tokens, answer=text))
        return Completion(text, self.name, tokens, count_tokens(text), delay)

    async def __call__(self, prompt: str) -> str:
        """``(await lm.complete(prompt)).text``."""
        return (await self.complete(prompt)).text

    # -- the log ------------------------------------------------------------------
    @property
    def call_count(self) -> int:
        return len(self.calls)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of every logged call, answered or not."""
        return sum(c.prompt_tokens for c in self.calls)

    def prompts(self) -> list[str]:
        """The prompts of the logged calls, in arrival order."""
        return [c.prompt for c in sorted(self.calls, key=lambda c: c.index)]

    def reset(self) -> None:
        """Forget the call log (and the per-prompt draw counters)."""
        self.calls.clear()
        self._asked.clear()
        self._next_index = 0


@runtime_checkable
class TextLM(Protocol):
    """What the example nodes need of an LM: ``FakeLM`` or a thin real-LM wrapper."""

    name: str

    async def complete(self, prompt: str) -> Completion: ...


def lm_of(ctx: RunContext[Any]) -> TextLM:
    """The LM a node should call: ``ctx.deps`` itself, or ``ctx.deps.lm``.

    :raises TypeError: the run was started without an LM in ``deps``.
    """
    deps = ctx.deps
    if isinstance(deps, TextLM):
        return deps
    lm = getattr(deps, "lm", None)
    if isinstance(lm, TextLM):
        return lm
    raise TypeError(
        f"node {ctx.node_key or '?'} needs an LM: run the graph with deps=FakeLM(...) "
        f"(or deps with an .lm attribute); got deps={deps!r}"
    )


async def ask(ctx: RunContext[Any], prompt: str, lm: TextLM | None = None) -> str:
    """Ask ``lm`` (default ``lm_of(ctx)``) and charge its tokens to the node.

    Tokens recorded with ``ctx.record_tokens`` count against the provider's
    tokens-per-minute limit, if the run has ``Limits`` for the node's provider.
    """
    completion = await (lm or lm_of(ctx)).complete(prompt)
    ctx.record_tokens(completion.total_tokens)
    return completion.text


def dummy_lm(answers: Mapping[str, Mapping[str, Any]]) -> Any:
    """A deterministic ``dspy.utils.DummyLM`` in dict mode.

    ``answers`` maps a text contained in the prompt's last message to the output
    fields, e.g. ``{"What is 2+2?": {"answer": "4"}}``. Dict mode looks answers up
    by prompt, so it is deterministic under concurrency (list mode is not).

    :raises ImportError: dspy is not installed (``pip install 'lift_graph[dspy]'``).
    """
    try:
        from dspy.utils import DummyLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("dummy_lm needs dspy: pip install 'lift_graph[dspy]'") from exc
    return DummyLM({k: dict(v) for k, v in answers.items()})
