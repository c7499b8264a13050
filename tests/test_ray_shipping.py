"""What cannot travel to Ray workers is named before or when it fails; options that
would silently hold per worker are refused; a RayLimits copy attaches to its actor."""

from __future__ import annotations

import asyncio
import pickle
import threading
from typing import Any

import pytest

pytest.importorskip("ray", reason="Ray could not be installed on this platform")

from lift_graph import (
    BaseNode,
    ConfigurationError,
    End,
    Graph,
    Limits,
    MemoryStore,
    ProviderLimit,
    RunContext,
    ShippingError,
    SQLiteStore,
)
from lift_graph.ray import RayBackend, RayLimits
from tests.ray_graphs import Ask, EvalState, Grab, Holder, ask_graph, states

pytestmark = pytest.mark.asyncio

_LOCK = threading.Lock()


def local_graph() -> Graph[EvalState]:
    """A node class defined in a function: shipped by value, with what it closes over."""
    lock = _LOCK

    class Locked(BaseNode[EvalState]):
        writes = frozenset({"verdict"})

        async def run(self, ctx: RunContext[EvalState]) -> End[str]:
            with lock:
                ctx.state.verdict = "done"
            return End("done")

    return Graph(nodes=[Locked], name="locked")


async def test_a_node_that_cannot_be_shipped_is_named(ray_cluster: Any) -> None:
    graph = local_graph()
    (cls,) = graph.node_classes
    with pytest.raises(ShippingError, match=r"node Locked cannot be sent to the Ray workers"):
        await graph.map(cls(), states(3), backend=RayBackend(2))


async def test_deps_that_cannot_be_shipped_are_named(ray_cluster: Any) -> None:
    with pytest.raises(ShippingError, match=r"deps cannot be sent.*field 'lock'") as info:
        await ask_graph().map(Ask(), states(3), backend=RayBackend(1), deps={"lock": _LOCK})
    assert info.value.what == "deps"


async def test_a_state_that_cannot_be_shipped_fails_its_input_only(ray_cluster: Any) -> None:
    inputs: list[EvalState] = [Holder(**s.model_dump()) for s in states(6)]
    inputs[4] = Holder(**states(6)[4].model_dump(), handle=_LOCK)
    batch = await ask_graph().map(Ask(), inputs, backend=RayBackend(2, concurrency=2))
    assert list(batch.errors) == [4]
    error = batch.errors[4]
    assert isinstance(error, ShippingError)
    assert "input 4" in str(error) and "field 'handle'" in str(error)
    assert batch.succeeded == 5


async def test_a_result_that_cannot_come_back_names_the_field(ray_cluster: Any) -> None:
    inputs = [Holder(**s.model_dump()) for s in states(3)]
    batch = await Graph(nodes=[Grab]).map(Grab(), inputs, backend=RayBackend(1))
    assert list(batch.errors) == [1]
    assert "input 1's result cannot be sent back" in str(batch.errors[1])
    assert "field 'handle'" in str(batch.errors[1])


async def test_options_that_would_hold_per_worker_are_refused(
    ray_cluster: Any, tmp_path: Any
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    graph, backend = ask_graph(), RayBackend(1)
    with pytest.raises(ConfigurationError, match=r"use lift_graph.ray.RayLimits"):
        await graph.map(Ask(), states(2), backend=backend, limits=Limits(4))
    with pytest.raises(ConfigurationError, match=r"tracer= cannot be sent"):
        await graph.map(Ask(), states(2), backend=backend, tracer=TracerProvider())
    with pytest.raises(ShippingError, match=r"MemoryStore lives in this process"):
        await graph.map(Ask(), states(2), backend=backend, store=MemoryStore())
    with pytest.raises(ShippingError, match=r"in-memory SQLiteStore"):
        await graph.map(Ask(), states(2), backend=backend, store=SQLiteStore(":memory:"))
    with pytest.raises(ConfigurationError, match=r"backend must be a batch backend"):
        await graph.map(Ask(), states(2), backend="ray")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"RayBackend.num_workers"):
        RayBackend(0)
    assert backend.workers == []


async def test_ray_limits_take_limits_arguments_and_refuse_a_fake_clock() -> None:
    from lift_graph import FakeClock

    with pytest.raises(ConfigurationError, match=r"Limits.max_concurrency"):
        RayLimits(0)
    with pytest.raises(ConfigurationError, match=r"real clock"):
        RayLimits(clock=FakeClock())
    with pytest.raises(ConfigurationError, match=r"lease_ttl"):
        RayLimits(lease_ttl=0)


async def test_a_copy_attaches_to_the_same_actor_and_names_must_agree(ray_cluster: Any) -> None:
    limits = RayLimits(providers={"p": ProviderLimit(concurrency=2)}, name="shared-test")
    limits.connect()
    copy = pickle.loads(pickle.dumps(limits))
    assert copy is not limits and copy.name == "shared-test"
    held = [await limits.acquire("p"), await copy.acquire("p")]
    third = asyncio.ensure_future(copy.acquire("p"))
    await asyncio.sleep(0.2)
    assert not third.done()  # two permits between the two objects: the cap holds
    assert limits.gauges().in_flight["p"] == 2
    limits.release(held[0])
    limits.release(await asyncio.wait_for(third, 5))
    copy.release(held[1])
    await asyncio.sleep(0.2)
    assert limits.gauges().leases == 0
    other = RayLimits(providers={"p": ProviderLimit(concurrency=3)}, name="shared-test")
    with pytest.raises(ConfigurationError, match=r"already enforces"):
        other.connect()
    limits.shutdown()


async def test_graph_run_in_the_driver_uses_ray_limits_too(ray_cluster: Any) -> None:
    limits = RayLimits(providers={"fake": ProviderLimit(concurrency=1)})
    graph = ask_graph()
    results = await asyncio.gather(*(graph.run(Ask(), state=s, limits=limits) for s in states(4)))
    assert [r.output for r in results] == [s.state.verdict for s in results]
    assert limits.provider_peak("fake") == 1
    assert limits.in_flight("fake") == 0
    limits.shutdown()


async def test_workers_that_cannot_import_a_node_module_say_which(
    ray_cluster: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module the driver imported from a folder that is gone (as a folder this
    host has and a worker's host lacks): the workers fail to load the batch, and the
    error names the module."""
    import importlib
    import shutil
    import sys

    (tmp_path / "driver_only_nodes.py").write_text(
        "from lift_graph import BaseNode, End, RunContext\n"
        "class Echo(BaseNode):\n"
        "    async def run(self, ctx: RunContext) -> End[int]:\n"
        "        return End(ctx.state.index)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("driver_only_nodes")
    shutil.rmtree(tmp_path)
    try:
        with pytest.raises(ShippingError, match=r"No module named 'driver_only_nodes'") as info:
            await Graph([module.Echo]).map(
                module.Echo(), states(2), backend=RayBackend(1, max_restarts=0)
            )
        assert info.value.what == "the batch"
    finally:
        sys.modules.pop("driver_only_nodes", None)


async def test_a_batch_that_cannot_start_raises_rays_error_and_stops(ray_cluster: Any) -> None:
    """Ray refuses a worker option: its error reaches the caller, and the pool is
    gone (a batch cancelled while starting goes the same way)."""
    backend = RayBackend(1, actor_options={"num_cpus": -1})
    with pytest.raises(ValueError, match=r"num_cpus"):
        await ask_graph().map(Ask(), states(2), backend=backend)
    assert backend.workers == []
    starting = asyncio.ensure_future(ask_graph().map(Ask(), states(2), backend=RayBackend(1)))
    await asyncio.sleep(0.05)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting


class Shout(BaseNode[EvalState]):
    """Defined in this test module: workers import it by name, as the driver does."""

    writes = frozenset({"verdict"})

    async def run(self, ctx: RunContext[EvalState]) -> End[str]:
        ctx.state.verdict = ctx.state.question.upper()
        return End(ctx.state.verdict)


async def test_nodes_of_a_test_module_run_on_the_workers(ray_cluster: Any) -> None:
    batch = await Graph([Shout]).map(Shout(), states(4), backend=RayBackend(2, concurrency=2))
    assert batch.failed == 0, batch.errors
    assert batch.outputs == [s.question.upper() for s in states(4)]
