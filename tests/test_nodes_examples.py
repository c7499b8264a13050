"""The example nodes in ``nodes/`` run offline and give the expected outputs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lift_graph import JoinError, Limits, ProviderLimit, canonical_json
from nodes import agent_loop, fallback_race, map_reduce, rag, self_consistency
from nodes.demo import BATCH_QUESTIONS, EXAMPLES, batch_summary, run_all, run_batch, summarize
from nodes.fake_lm import FakeLM, FakeLMError, count_tokens, hash_answer

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- FakeLM


@pytest.mark.asyncio
async def test_fake_lm_answers_are_a_pure_function_of_the_prompt() -> None:
    a, b = FakeLM(seed=1), FakeLM(seed=2, latency=0.001, jitter=1.0)
    for prompt in ["Summarize: the cat sat", "", "x\ny: z"]:
        assert await a(prompt) == await b(prompt) == a.answer(prompt) == hash_answer(prompt)
    assert (await a("Summarize: the cat sat")).startswith("the cat sat #")
    scripted = FakeLM(responses={"hi": "hello"}, responder=lambda p: p.upper())
    assert await scripted("hi") == "hello"
    assert await scripted("other") == "OTHER"


@pytest.mark.asyncio
async def test_fake_lm_counts_tokens_and_logs_calls() -> None:
    lm = FakeLM(name="m")
    completion = await lm.complete("one two  three\nfour")
    assert completion.prompt_tokens == 4 == count_tokens("one two  three\nfour")
    assert completion.completion_tokens == count_tokens(completion.text)
    assert completion.total_tokens == 4 + completion.completion_tokens
    await lm("five six")
    assert lm.call_count == 2
    assert lm.prompts() == ["one two  three\nfour", "five six"]
    assert lm.prompt_tokens == 6
    assert [c.index for c in lm.calls] == [0, 1] and all(c.ok for c in lm.calls)
    lm.reset()
    assert lm.calls == [] and lm.call_count == 0


@pytest.mark.asyncio
async def test_fake_lm_latency_and_seeded_jitter() -> None:
    lm = FakeLM(latency=0.03)
    began = time.perf_counter()
    await lm("p")
    assert time.perf_counter() - began >= 0.025
    jittered = [FakeLM(latency=0.001, jitter=0.9, seed=3) for _ in range(2)]
    for lm in jittered:
        for i in range(5):
            await lm(f"prompt {i}")
    first, second = ([c.latency for c in lm.calls] for lm in jittered)
    assert first == second  # same seed, same draws
    assert len(set(first)) == 5 and all(0.0001 <= x <= 0.0019 for x in first)


@pytest.mark.asyncio
async def test_fake_lm_failures_rate_schedule_and_marker() -> None:
    scheduled = FakeLM(fail_on={1})
    await scheduled("a")
    with pytest.raises(FakeLMError, match="call 1"):
        await scheduled("a")
    await scheduled("a")
    assert [c.ok for c in scheduled.calls] == [True, False, True]
    with pytest.raises(FakeLMError):
        await FakeLM(failure_rate=1.0)("x")
    marked = FakeLM(fail_if_contains=["BAD"])
    with pytest.raises(FakeLMError):
        await marked("this is BAD")
    assert await marked("this is fine")
    # A failure rate draws from a seeded RNG per (prompt, occurrence): reproducible.
    outcomes = []
    for _ in range(2):
        lm = FakeLM(failure_rate=0.5, seed=11)
        for i in range(20):
            with contextlib.suppress(FakeLMError):
                await lm(f"q{i}")
        outcomes.append([c.ok for c in lm.calls])
    assert outcomes[0] == outcomes[1] and 0 < sum(outcomes[0]) < 20
    for bad in ({"latency": -1.0}, {"jitter": 2.0}, {"failure_rate": 1.5}):
        with pytest.raises(ValueError):
            FakeLM(**bad)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_fake_lm_logs_cancelled_calls() -> None:
    lm = FakeLM(latency=5.0)
    task = asyncio.create_task(lm("slow"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [c.error for c in lm.calls] == ["cancelled"]


# ----------------------------------------------------------------------------- RAG


@pytest.mark.asyncio
async def test_rag_summarizes_retrieved_docs_in_rank_order() -> None:
    lm = FakeLM(latency=0.005, jitter=0.9, seed=5)
    question = "How does a fork merge branch state in a join?"
    result = await rag.run_example(question, lm=lm)
    expected_ids = rag.rank(question, rag.DEFAULT_CORPUS, 3)
    assert expected_ids == ["forks", "joins", "pydantic"]
    assert result.state.retrieved == expected_ids
    assert [s.split("]")[0].lstrip("[") for s in result.state.summaries] == expected_ids
    for doc_id, line in zip(expected_ids, result.state.summaries, strict=True):
        prompt = f"Question: {question}\nSummarize: {rag.DEFAULT_CORPUS[doc_id]}"
        assert line == f"[{doc_id}] {lm.answer(prompt)}"
    assert result.output == result.state.answer
    assert result.output.endswith("(sources: forks, joins, pydantic)")
    assert result.deterministic
    assert len(result.records) == 2 + len(expected_ids)
    assert lm.call_count == 1 + len(expected_ids)


@pytest.mark.asyncio
async def test_rag_without_hits_answers_without_calling_the_lm() -> None:
    lm = FakeLM()
    result = await rag.run_example("zzz qqq", lm=lm)
    assert result.output == "no relevant documents"
    assert result.state.retrieved == [] and lm.call_count == 0


# ----------------------------------------------------------------------------- map-reduce


@pytest.mark.asyncio
async def test_map_reduce_keeps_every_chunk_summary_in_order() -> None:
    lm = FakeLM(latency=0.004, jitter=0.9, seed=7)
    result = await map_reduce.run_example(chunk_words=10, lm=lm)
    chunks = map_reduce.chunk_text(map_reduce.DEFAULT_TEXT, 10)
    assert len(chunks) > 5 and result.state.chunks == chunks
    expected = [f"{i}: {lm.answer(f'Summarize chunk {i}: {c}')}" for i, c in enumerate(chunks)]
    assert result.state.summaries == expected
    positions = [result.output.index(line) for line in expected]
    assert positions == sorted(positions)
    assert result.output == result.state.summary
    # The simulated latencies are not in chunk order, and the result still is.
    latency_by_chunk = {int(c.prompt.split()[2].rstrip(":")): c.latency for c in lm.calls[:-1]}
    latencies = [latency_by_chunk[i] for i in range(len(chunks))]
    assert latencies != sorted(latencies)
    assert result.deterministic
    assert len(result.records) == len(chunks) + 2


@pytest.mark.asyncio
async def test_map_reduce_is_byte_identical_at_any_concurrency() -> None:
    seen = set()
    for max_concurrency in (1, 2, 8, None):
        lm = FakeLM(latency=0.002, jitter=0.9, seed=max_concurrency or 0)
        result = await map_reduce.run_example(lm=lm, max_concurrency=max_concurrency)
        seen.add(canonical_json([result.output, result.state]))
    assert len(seen) == 1


@pytest.mark.asyncio
async def test_map_reduce_under_a_shared_provider_limit() -> None:
    limits = Limits(providers={"fake": ProviderLimit(concurrency=2)})
    result = await map_reduce.run_example(lm=FakeLM(latency=0.005), limits=limits)
    assert limits.provider_peak("fake") == 2
    assert len(result.state.summaries) == len(result.state.chunks)


def test_chunk_text_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="chunk_words"):
        map_reduce.chunk_text("a b", 0)


# ----------------------------------------------------------------------------- self-consistency


@pytest.mark.asyncio
async def test_self_consistency_reports_majority_agreement() -> None:
    result = await self_consistency.run_example(samples=5)
    out = result.output
    assert isinstance(out, self_consistency.Consensus)
    assert (out.answer, out.agreement, out.total, out.ratio, out.winner, out.failed) == (
        "Paris",
        3,
        5,
        0.6,
        0,
        0,
    )
    assert result.state.answer == "Paris"
    assert (result.state.agreement, result.state.agreement_ratio) == (3, 0.6)
    # The winner's whole state is kept: its reasoning, not another sample's.
    lm = self_consistency.noisy_sampler_lm()
    prompt = self_consistency.sampler_prompt("What is the capital of France?", 0)
    assert result.state.reasoning == self_consistency.parse_reply(lm.answer(prompt))[0]
    assert result.deterministic


@pytest.mark.asyncio
async def test_self_consistency_votes_on_the_answer_field_only() -> None:
    lm = self_consistency.noisy_sampler_lm(wrong={})
    result = await self_consistency.run_example(samples=4, lm=lm)
    reasonings = {self_consistency.parse_reply(c.answer or "")[0] for c in lm.calls}
    assert len(reasonings) == 4  # branch outputs all differ...
    assert result.output.agreement == 4  # ...but the answers agree


@pytest.mark.asyncio
async def test_self_consistency_tie_goes_to_lowest_index() -> None:
    lm = self_consistency.noisy_sampler_lm(wrong={0: "Lyon"})
    result = await self_consistency.run_example(samples=2, lm=lm)
    assert (result.output.answer, result.output.agreement, result.output.winner) == ("Lyon", 1, 0)


@pytest.mark.asyncio
async def test_self_consistency_continues_past_a_failed_sampler() -> None:
    lm = self_consistency.noisy_sampler_lm()
    lm.fail_if_contains = ["Sample: 0\n"]
    result = await self_consistency.run_example(samples=5, lm=lm)
    out = result.output
    assert (out.answer, out.agreement, out.ratio, out.winner, out.failed) == (
        "Paris",
        2,
        0.5,
        2,
        1,
    )


# ----------------------------------------------------------------------------- agent loop


@pytest.mark.asyncio
async def test_agent_loop_stops_at_its_step_limit() -> None:
    lm = agent_loop.agent_lm(finish_at=None)
    result = await agent_loop.run_example(max_steps=4, lm=lm)
    assert result.output == agent_loop.AgentOutcome(
        result=result.state.transcript[-1].split(". ", 1)[1], steps=4, stopped="step_limit"
    )
    assert len(result.state.transcript) == 4 and not result.state.done
    assert [r.node for r in result.records] == ["AgentStep"] * 4
    assert lm.call_count == 4
    assert result.deterministic


@pytest.mark.asyncio
async def test_agent_loop_finishes_when_the_lm_says_so() -> None:
    result = await agent_loop.run_example(max_steps=10, finish_at=3)
    assert result.output.stopped == "finished" and result.output.steps == 3
    assert result.state.done and result.state.result == result.output.result
    assert len(result.records) == 3


@pytest.mark.asyncio
async def test_agent_loop_retries_a_flaky_step() -> None:
    lm = agent_loop.agent_lm(fail_on=(1,))
    result = await agent_loop.run_example(max_steps=3, lm=lm)
    assert result.output.steps == 3
    assert [r.attempts for r in result.records] == [1, 2, 1]
    assert len(result.state.transcript) == 3
    assert [c.ok for c in lm.calls] == [True, False, True, True]


# ----------------------------------------------------------------------------- fallback race


@pytest.mark.asyncio
async def test_fallback_race_picks_the_fast_healthy_provider() -> None:
    providers = fallback_race.default_providers()
    began = time.perf_counter()
    result = await fallback_race.run_example(providers=providers)
    elapsed = time.perf_counter() - began
    out = result.output
    assert isinstance(out, fallback_race.RaceOutcome)
    assert out.winner == "fast" == result.state.provider
    assert out.answer == providers["fast"].answer("Q: What is the capital of France?")
    assert list(out.failed) == ["flaky"] and "FakeLMError" in out.failed["flaky"]
    assert out.cancelled == ["slow"]
    assert [c.error for c in providers["slow"].calls] == ["cancelled"]
    assert elapsed < 0.2  # did not wait for the slow provider (0.25 s)
    assert not result.deterministic  # a race says so


@pytest.mark.asyncio
async def test_fallback_race_falls_back_to_the_slow_provider() -> None:
    providers = {
        "flaky": FakeLM(name="flaky", latency=0.001, failure_rate=1.0),
        "down": FakeLM(name="down", latency=0.002, failure_rate=1.0),
        "slow": FakeLM(name="slow", latency=0.03),
    }
    result = await fallback_race.run_example(providers=providers)
    assert result.output.winner == "slow"
    assert sorted(result.output.failed) == ["down", "flaky"] and result.output.cancelled == []


@pytest.mark.asyncio
async def test_fallback_race_fails_when_every_provider_fails() -> None:
    providers = {n: FakeLM(name=n, failure_rate=1.0) for n in ("a", "b")}
    with pytest.raises(JoinError) as info:
        await fallback_race.run_example(providers=providers)
    assert sorted(info.value.errors) == ["a", "b"]
    assert isinstance(info.value.__cause__, FakeLMError)


# ----------------------------------------------------------------------------- demo


@pytest.mark.asyncio
async def test_demo_rows_cover_every_example() -> None:
    rows = await run_all()
    assert [r.name for r in rows] == list(EXAMPLES)
    by_name = {r.name: r for r in rows}
    assert not by_name["fallback_race"].deterministic
    assert all(r.deterministic for n, r in by_name.items() if n != "fallback_race")
    assert all(r.nodes > 0 and r.elapsed_ms > 0 for r in rows)
    assert summarize("x" * 200, width=10) == "xxxxxxx..."


def test_demo_module_runs_and_exits_zero() -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nodes.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - began < 10
    for name in EXAMPLES:
        assert f"== {name}" in proc.stdout
    for label in ("output:", "elapsed:", "nodes run:", "deterministic:", "flowchart TD"):
        assert label in proc.stdout
    assert "== batch: rag over" in proc.stdout
    assert "5 succeeded, 1 failed ([4] JoinError)" in proc.stdout
    assert "6/6" in proc.stderr  # the progress bar is on in the demo


@pytest.mark.asyncio
async def test_demo_batch_keeps_the_failure_by_index() -> None:
    batch = await run_batch(progress=False)
    assert batch.total == len(BATCH_QUESTIONS) and list(batch.errors) == [4]
    assert all(
        isinstance(o, str) and "sources:" in o for i, o in enumerate(batch.outputs) if i != 4
    )
    assert batch_summary(batch).startswith("6 inputs: 5 succeeded, 1 failed ([4] JoinError) in ")


def test_demo_rejects_unknown_examples() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nodes.demo", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "unknown example" in proc.stderr


# ----------------------------------------------------------------------------- DSPy helper


@pytest.mark.asyncio
async def test_dummy_lm_drives_a_dspy_node() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytest.importorskip("dspy")
    from pydantic import BaseModel

    from lift_graph import DSPyNode, Graph
    from nodes.fake_lm import dummy_lm

    class QA(BaseModel):
        question: str
        answer: str = ""

    class Answerer(DSPyNode[QA]):
        signature = "question -> answer"

    Answerer.lm = dummy_lm({"capital of France": {"answer": "Paris"}})
    result = await Graph[QA](nodes=[Answerer]).run(
        Answerer(), state=QA(question="What is the capital of France?")
    )
    assert result.state.answer == "Paris"
