"""Batches on Ray: the same results as locally, limits that hold across workers
(measured from the fake provider's own log), and a worker killed mid-batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("ray", reason="Ray could not be installed on this platform")

from benchmarks.fake_provider import max_in_window
from benchmarks.ray_provider import SharedProvider
from lift_graph import ProviderLimit, SQLiteStore
from lift_graph.ray import RayBackend, RayLimits
from tests.ray_graphs import Ask, Draft, EvalState, ask_graph, eval_graph, states

pytestmark = pytest.mark.asyncio


def comparable(batch: Any) -> list[Any]:
    """Everything a batch's result says, except timings and where it ran."""
    rows = []
    for result in batch.results:
        records = [(r.key, r.node, r.status, r.attempts) for r in result.records]
        rows.append((result.output, result.state.model_dump(), records, result.deterministic))
    return rows


async def test_200_inputs_give_identical_results_locally_and_on_ray(ray_cluster: Any) -> None:
    graph = eval_graph()
    local = await graph.map(Draft(), states(200), max_concurrency=32)
    limits = RayLimits(providers={"fake": ProviderLimit(concurrency=24)})
    backend = RayBackend(num_workers=2, concurrency=16)
    remote = await graph.map(Draft(), states(200), backend=backend, limits=limits)
    assert (local.failed, remote.failed) == (0, 0)
    assert comparable(remote) == comparable(local)
    assert remote.outputs == local.outputs
    assert [r.execution_id for r in remote.results] == [
        f"{remote.batch_id}-{i}" for i in range(200)
    ]
    gauges = limits.gauges()
    assert gauges.leases == 0  # every permit came back
    assert gauges.provider_peaks["fake"] == 24  # and the shared cap was reached
    assert backend.workers == []  # the pool is gone with the batch


async def test_errors_are_collected_by_index_as_locally(ray_cluster: Any) -> None:
    graph = eval_graph()

    def start(index: int, state: EvalState) -> Any:
        if index % 7 == 3:
            raise ValueError(f"no start for input {index}")
        return Draft()

    local = await graph.map(start, states(30))
    remote = await graph.map(start, states(30), backend=RayBackend(2, concurrency=4))
    assert list(remote.errors) == list(local.errors) == [3, 10, 17, 24]
    assert [str(e) for e in remote.errors.values()] == [str(e) for e in local.errors.values()]
    assert all(isinstance(e, ValueError) for e in remote.errors.values())
    assert remote.outputs == local.outputs


async def test_a_failed_node_comes_back_with_its_cause(ray_cluster: Any) -> None:
    """A node's error keeps its cause (``raise ... from``), as locally."""
    inputs = states(4)
    inputs[2] = EvalState(index=2, question="")  # Ask fails on an empty question
    local = await ask_graph().map(Ask(), inputs)
    remote = await ask_graph().map(Ask(), inputs, backend=RayBackend(1, concurrency=2))
    assert list(remote.errors) == list(local.errors) == [2]
    mine, theirs = remote.errors[2], local.errors[2]
    assert type(mine) is type(theirs) and str(mine) == str(theirs)
    assert isinstance(theirs.__cause__, LookupError)  # pickling alone would drop it
    assert type(mine.__cause__) is type(theirs.__cause__)
    assert str(mine.__cause__) == str(theirs.__cause__)


async def test_cluster_wide_concurrency_and_rpm_hold_at_the_provider(ray_cluster: Any) -> None:
    rpm, window = 24, 2.0
    provider = SharedProvider.spawn(latency=0.2)
    limits = RayLimits(providers={"fake": ProviderLimit(concurrency=3, rpm=rpm, window=window)})
    batch = await ask_graph().map(
        Ask(), states(60), backend=RayBackend(2, concurrency=8), limits=limits, deps=provider
    )
    assert batch.failed == 0
    log = ray_cluster.get(provider.report.remote())
    starts = sorted(call[0] for call in log["calls"])
    assert len(starts) == 60
    assert log["peak"] == 3  # reached, never exceeded, across both workers
    assert rpm - 2 <= max_in_window(starts, window) <= rpm
    pids = {call[2].split("/")[0] for call in log["calls"]}
    assert len(pids) == 2  # both workers called the provider


async def test_a_429_pauses_the_provider_on_every_worker(ray_cluster: Any) -> None:
    # The provider allows 10 calls a second; the limits do not know it.
    provider = SharedProvider.spawn(latency=0.01, rpm=10, window=1.0)
    limits = RayLimits(providers={"fake": ProviderLimit(concurrency=8)})
    batch = await ask_graph().map(
        Ask(), states(40), backend=RayBackend(2, concurrency=8), limits=limits, deps=provider
    )
    assert batch.failed == 0
    log = ray_cluster.get(provider.report.remote())
    assert log["refused"], "the provider never refused: nothing was tested"
    status = limits.status("fake")
    assert status.refusals == len(log["refused"])
    # No accepted call arrived inside a pause the provider announced, on any worker
    # (after the first refusals of a burst, which were already on their way).
    first_pause = min(r[0] for r in log["refused"])
    inside = [
        c for c in log["calls"] for (at, until, _) in log["refused"] if at < c[0] < until - 0.02
    ]
    assert not [c for c in inside if c[0] > first_pause + 0.1]


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
async def test_a_killed_worker_restarts_and_finished_inputs_do_not_run_again(
    ray_cluster: Any, tmp_path: Any, how: str
) -> None:
    """A worker actor killed mid-batch (by Ray, or its process by the OS, as an
    out-of-memory killer would): Ray restarts it, its inputs resume from the store,
    and no input that had finished runs again."""
    import os
    import signal

    provider = SharedProvider.spawn(latency=0.05)
    store = SQLiteStore(tmp_path / "runs.db")
    limits = RayLimits(providers={"fake": ProviderLimit(concurrency=6)}, lease_ttl=2.0)
    backend = RayBackend(2, concurrency=4)
    graph = eval_graph()
    task = asyncio.ensure_future(
        graph.map(
            Draft(),
            states(80),
            backend=backend,
            limits=limits,
            deps=provider,
            store=store,
            batch_id="kill",
        )
    )
    while len(ray_cluster.get(provider.report.remote())["calls"]) < 60:
        await asyncio.sleep(0.02)
    finished = {i for i in range(80) if _finished(store, f"kill-{i}")}
    victim = backend.workers[0]
    if how == "ray.kill":
        ray_cluster.kill(victim, no_restart=False)
    else:
        os.kill(ray_cluster.get(victim.ping.remote()), signal.SIGKILL)
    batch = await asyncio.wait_for(task, 60)
    assert batch.failed == 0
    local = await graph.map(Draft(), states(80))
    assert batch.outputs == local.outputs
    calls = _calls_per_node(ray_cluster.get(provider.report.remote()))
    assert finished, "nothing had finished before the kill: nothing was tested"
    for index in finished:
        assert all(calls[(index, node)] == 1 for node in _NODES), index
    # Inputs the victim was running resumed from their journals: only the calls in
    # flight when it died ran twice (4 inputs at once, at most 2 calls each).
    assert all(count <= 2 for count in calls.values())
    assert sum(count - 1 for count in calls.values()) <= 4 * 2
    assert {(i, node) for i in range(80) for node in _NODES} == set(calls)
    pids = {int(c.split("/")[0]) for c in _callers(provider, ray_cluster)}
    assert len(pids) == 3  # the two workers, and the process that replaced the victim
    assert limits.gauges().leases == 0  # the victim's permits were taken back


def _finished(store: SQLiteStore, execution_id: str) -> bool:
    run = store.load_run(execution_id)
    return run is not None and run.status == "finished"


_NODES = ("Draft", "Critique.style", "Critique.facts")


def _callers(provider: Any, ray: Any) -> list[str]:
    return [call[2] for call in ray.get(provider.report.remote())["calls"]]


def _calls_per_node(log: dict[str, Any]) -> dict[tuple[int, str], int]:
    counts: dict[tuple[int, str], int] = {}
    for _, _, caller in log["calls"]:
        index, node = caller.split("/")[1].split(":")
        counts[(int(index), node)] = counts.get((int(index), node), 0) + 1
    return counts


async def test_a_worker_that_cannot_restart_hands_its_inputs_to_the_others(
    ray_cluster: Any, tmp_path: Any
) -> None:
    provider = SharedProvider.spawn(latency=0.05)
    store = SQLiteStore(tmp_path / "runs.db")
    backend = RayBackend(2, concurrency=4, max_restarts=0)
    task = asyncio.ensure_future(
        eval_graph().map(
            Draft(), states(60), backend=backend, deps=provider, store=store, batch_id="gone"
        )
    )
    while len(ray_cluster.get(provider.report.remote())["calls"]) < 30:
        await asyncio.sleep(0.02)
    ray_cluster.kill(backend.workers[1], no_restart=True)
    batch = await asyncio.wait_for(task, 60)
    assert batch.failed == 0
    assert batch.outputs == (await eval_graph().map(Draft(), states(60))).outputs
    calls = _calls_per_node(ray_cluster.get(provider.report.remote()))
    assert all(count <= 2 for count in calls.values())


async def test_a_batch_resumes_after_the_driver_stopped(ray_cluster: Any, tmp_path: Any) -> None:
    """The driver's batch is cancelled midway (as if it died); run again with the same
    batch_id and store, the finished inputs are not run again."""
    provider = SharedProvider.spawn(latency=0.05)
    store = SQLiteStore(tmp_path / "runs.db")
    graph = eval_graph()
    first = asyncio.ensure_future(
        graph.map(
            Draft(),
            states(60),
            backend=RayBackend(2, concurrency=4),
            deps=provider,
            store=store,
            batch_id="again",
        )
    )
    while len(ray_cluster.get(provider.report.remote())["calls"]) < 40:
        await asyncio.sleep(0.02)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    finished = {i for i in range(60) if _finished(store, f"again-{i}")}
    assert 0 < len(finished) < 60
    batch = await graph.map(
        Draft(),
        states(60),
        backend=RayBackend(2, concurrency=4),
        deps=provider,
        store=store,
        batch_id="again",
    )
    assert batch.failed == 0
    assert batch.outputs == (await graph.map(Draft(), states(60))).outputs
    calls = _calls_per_node(ray_cluster.get(provider.report.remote()))
    for index in finished:
        assert all(calls[(index, node)] == 1 for node in _NODES), index


async def test_imap_map_sync_and_progress_work_on_ray(ray_cluster: Any) -> None:
    import contextlib
    import threading

    graph = eval_graph()
    expected = (await graph.map(Draft(), states(12))).outputs
    seen = []
    async with contextlib.aclosing(
        graph.imap(Draft(), states(12), backend=RayBackend(2, concurrency=2), window=4)
    ) as results:
        async for index, result in results:
            seen.append((index, result.output))
    assert seen == list(enumerate(expected))

    import io

    from tqdm import tqdm

    bar = tqdm(total=12, file=io.StringIO())
    box: list[Any] = []
    # map_sync from a thread with no loop: it runs its own.
    thread = threading.Thread(
        target=lambda: box.append(
            graph.map_sync(Draft(), states(12), backend=RayBackend(1), progress=bar)
        )
    )
    thread.start()
    await asyncio.to_thread(thread.join)
    assert box[0].outputs == expected
    assert bar.n == 12


async def test_an_input_that_kills_its_worker_fails_alone(ray_cluster: Any) -> None:
    """Input 5 kills the worker process running it, every time: after two deaths it
    fails with WorkerLostError, and the batch goes on without it."""
    from lift_graph import Graph, WorkerLostError
    from tests.ray_graphs import Fatal

    graph = Graph([Fatal])
    batch = await graph.map(Fatal(), states(20), backend=RayBackend(2, concurrency=1))
    assert list(batch.errors) == [5]
    error = batch.errors[5]
    assert isinstance(error, WorkerLostError) and error.index == 5
    assert "each of the 2 times" in str(error)
    assert batch.succeeded == 19
