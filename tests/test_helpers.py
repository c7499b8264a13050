"""Tests for lift_graph.helpers: run_parallel, gather_limited and par_all."""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

import lift_graph.helpers as helpers
from lift_graph.errors import ConfigurationError, LiftGraphError, ParallelError, TaskError
from lift_graph.helpers import gather_limited, par_all, par_all_limit, run_parallel

# --------------------------------------------------------------------------- run_parallel


def _by_key(key: Any) -> Any:
    return key


def _sleeper(i: int, seconds: float, done: list[int]) -> Callable[[], int]:
    def task() -> int:
        time.sleep(seconds)
        done.append(i)
        return i * 10

    return task


def test_runtime_skew_does_not_change_merge_order() -> None:
    n = 6
    done: list[int] = []
    seen: list[list[tuple[str, int]]] = []
    # task i sleeps (n - i) * 10 ms: later tasks finish first
    tasks = [(f"k{i}", _sleeper(i, (n - i) * 0.010, done)) for i in range(n)]

    def merge(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        seen.append(pairs)
        return pairs

    expected = [(f"k{i}", i * 10) for i in range(n)]
    assert run_parallel(tasks, max_workers=n, merge_fn=merge, order_key=_by_key) == expected
    assert seen == [expected]
    assert sorted(done) == list(range(n))
    assert done != list(range(n))  # completion order really was skewed
    assert done[0] == n - 1


def test_order_key_maps_task_keys_not_indexes() -> None:
    # keys deliberately differ from submit indexes
    tasks = [(key, functools.partial(lambda k: k * 2, key)) for key in (30, 10, 40, 20)]
    out = run_parallel(tasks, max_workers=3, merge_fn=list, order_key=_by_key)
    assert out == [(10, 20), (20, 40), (30, 60), (40, 80)]
    out = run_parallel(tasks, max_workers=3, merge_fn=list, order_key=lambda k: -k)
    assert out == [(40, 80), (30, 60), (20, 40), (10, 20)]
    # duplicate order values: ties broken by submit index
    out = run_parallel(tasks, max_workers=3, merge_fn=list, order_key=lambda k: k % 20)
    assert out == [(40, 80), (20, 40), (30, 60), (10, 20)]


def test_merge_fn_receives_pairs_with_original_keys() -> None:
    tasks = [
        ((agent, phase), functools.partial(str.upper, agent))
        for agent, phase in [("b", 2), ("a", 1), ("b", 1)]
    ]
    out = run_parallel(tasks, max_workers=2, merge_fn=list, order_key=lambda k: (k[1], k[0]))
    assert out == [(("a", 1), "A"), (("b", 1), "B"), (("b", 2), "B")]


def test_order_key_is_required() -> None:
    parameter = inspect.signature(run_parallel).parameters["order_key"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default is inspect.Parameter.empty
    with pytest.raises(TypeError, match="order_key"):
        cast(Any, run_parallel)([(0, lambda: 0)], max_workers=1, merge_fn=list)


def test_max_workers_1_and_8_give_identical_aggregates() -> None:
    rng = random.Random(1234)
    delays = [rng.uniform(0, 0.004) for _ in range(16)]

    def make(i: int) -> Callable[[], tuple[int, int]]:
        def task() -> tuple[int, int]:
            time.sleep(delays[i])
            return i, i * i

        return task

    tasks = [(i, make(i)) for i in range(16)]
    for key in (_by_key, lambda k: -k, lambda k: k % 3):
        one = run_parallel(tasks, max_workers=1, merge_fn=list, order_key=key)
        eight = run_parallel(tasks, max_workers=8, merge_fn=list, order_key=key)
        assert one == eight
        assert one == sorted(((i, (i, i * i)) for i in range(16)), key=lambda p: key(p[0]))


def _failing_tasks(
    n: int, failing: dict[int, type[Exception]], raised: dict[int, Exception], rng: random.Random
) -> list[tuple[str, Callable[[], int]]]:
    def make(i: int) -> Callable[[], int]:
        delay = rng.uniform(0, 0.003)

        def task() -> int:
            time.sleep(delay)
            if i in failing:
                exc = failing[i](f"bad {i}")
                raised[i] = exc
                raise exc
            return i

        return task

    return [(f"t{i}", make(i)) for i in range(n)]


def _index_of(key: str) -> int:
    return int(key[1:])


def test_multiple_failures_are_sorted_and_deterministic() -> None:
    n = 10
    failing = {1: ValueError, 4: RuntimeError, 7: ValueError, 8: ZeroDivisionError}
    rng = random.Random(42)
    first: list[TaskError] | None = None
    merge_calls = 0

    def merge(pairs: list[tuple[str, int]]) -> int:
        nonlocal merge_calls
        merge_calls += 1
        return sum(result for _, result in pairs)

    for _ in range(20):
        raised: dict[int, Exception] = {}
        tasks = _failing_tasks(n, failing, raised, rng)
        with pytest.raises(ParallelError) as info:
            run_parallel(tasks, max_workers=4, merge_fn=merge, order_key=lambda k: -_index_of(k))
        errors = info.value.errors
        if first is None:
            first = errors
        assert errors == first
        # sorted by order key (-index): highest index first; key is the task's key
        assert errors == [
            TaskError(key=f"t{i}", exc_type=failing[i].__name__, message=f"bad {i}")
            for i in (8, 7, 4, 1)
        ]
        assert info.value.__cause__ is raised[8]
        assert set(raised) == set(failing)  # every task ran to completion
    assert merge_calls == 0


def test_failures_with_duplicate_order_values_tie_break_by_submit_index() -> None:
    n = 6
    failing: dict[int, type[Exception]] = {i: ValueError for i in range(n)}
    for _ in range(5):
        raised: dict[int, Exception] = {}
        tasks = _failing_tasks(n, failing, raised, random.Random())
        with pytest.raises(ParallelError) as info:
            run_parallel(tasks, max_workers=6, merge_fn=list, order_key=lambda k: _index_of(k) % 2)
        assert [(e.key, e.message) for e in info.value.errors] == [
            ("t0", "bad 0"),
            ("t2", "bad 2"),
            ("t4", "bad 4"),
            ("t1", "bad 1"),
            ("t3", "bad 3"),
            ("t5", "bad 5"),
        ]
        assert info.value.__cause__ is raised[0]


@pytest.mark.parametrize("max_workers", [1, 0, -5])
def test_sequential_path_collects_every_failure(max_workers: int) -> None:
    raised: dict[int, Exception] = {}
    merged: list[list[tuple[str, int]]] = []
    tasks = _failing_tasks(5, {0: ValueError, 3: KeyError}, raised, random.Random(0))
    with pytest.raises(ParallelError) as info:
        run_parallel(tasks, max_workers=max_workers, merge_fn=merged.append, order_key=_by_key)
    assert [(e.key, e.exc_type) for e in info.value.errors] == [
        ("t0", "ValueError"),
        ("t3", "KeyError"),
    ]
    assert set(raised) == {0, 3}
    assert info.value.__cause__ is raised[0]
    assert merged == []


def test_parallel_error_and_task_error_derive_from_lift_graph_error() -> None:
    assert issubclass(ParallelError, LiftGraphError)
    assert issubclass(TaskError, LiftGraphError)
    tasks = [("only", functools.partial(int, "x"))]
    with pytest.raises(LiftGraphError) as info:
        run_parallel(tasks, max_workers=1, merge_fn=list, order_key=_by_key)
    assert isinstance(info.value, ParallelError)
    assert all(isinstance(e, LiftGraphError) for e in info.value.errors)


@pytest.mark.parametrize("max_workers", [0, -1, -100, 1])
def test_non_positive_max_workers_is_sequential_in_calling_thread(
    max_workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pool(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a thread pool must not be created")

    monkeypatch.setattr(helpers, "ThreadPoolExecutor", no_pool)
    calls: list[tuple[int, int]] = []

    def make(i: int) -> Callable[[], int]:
        def task() -> int:
            calls.append((i, threading.get_ident()))
            return i

        return task

    tasks = [(-i, make(i)) for i in range(6)]
    out = run_parallel(tasks, max_workers=max_workers, merge_fn=list, order_key=_by_key)
    assert out == [(-i, i) for i in reversed(range(6))]
    assert [i for i, _ in calls] == list(range(6))  # run in submit order
    assert {ident for _, ident in calls} == {threading.get_ident()}


@pytest.mark.parametrize(("max_workers", "n_tasks", "expected"), [(3, 9, 3), (8, 2, 2)])
def test_pool_uses_min_of_max_workers_and_task_count(
    max_workers: int, n_tasks: int, expected: int
) -> None:
    idents: list[int] = []
    lock = threading.Lock()

    def task() -> None:
        time.sleep(0.05)  # long enough that every worker thread gets started
        with lock:
            idents.append(threading.get_ident())

    tasks = [(i, task) for i in range(n_tasks)]
    run_parallel(tasks, max_workers=max_workers, merge_fn=list, order_key=_by_key)
    assert len(idents) == n_tasks
    assert len(set(idents)) == expected
    assert threading.get_ident() not in idents


@pytest.mark.parametrize("max_workers", [-1, 0, 1, 4])
def test_empty_input_calls_merge_once(max_workers: int) -> None:
    calls: list[list[object]] = []

    def merge(pairs: list[object]) -> str:
        calls.append(pairs)
        return "merged"

    out = run_parallel([], max_workers=max_workers, merge_fn=merge, order_key=_by_key)
    assert out == "merged"
    assert calls == [[]]


@pytest.mark.parametrize("max_workers", [0, 4])
def test_thunk_needing_arguments_raises_type_error_naming_key(max_workers: int) -> None:
    ran: list[int] = []

    def ok() -> int:
        ran.append(0)
        return 0

    def needs_arg(x: int) -> int:
        ran.append(x)
        return x

    def needs_kwarg(*, x: int) -> int:
        ran.append(x)
        return x

    bad_thunks: list[Callable[..., Any]] = [needs_arg, needs_kwarg, lambda y: y]
    for bad in bad_thunks:
        tasks = [("a", ok), ("shard-7", bad), ("c", ok)]
        with pytest.raises(TypeError, match=r"key 'shard-7'\) must take no arguments") as info:
            run_parallel(tasks, max_workers=max_workers, merge_fn=list, order_key=_by_key)
        assert not isinstance(info.value, ParallelError)
    with pytest.raises(TypeError, match="task 2 \\(key 'z'\\) is not callable"):
        tasks_any: Any = [("a", ok), ("b", ok), ("z", 42)]
        run_parallel(tasks_any, max_workers=max_workers, merge_fn=list, order_key=_by_key)
    assert ran == []

    # defaults and bound partials are fine
    def with_default(z: int = 3) -> int:
        return z

    good: list[tuple[int, Callable[[], int]]] = [
        (0, functools.partial(needs_arg, 5)),
        (1, with_default),
    ]
    out = run_parallel(good, max_workers=max_workers, merge_fn=list, order_key=_by_key)
    assert out == [(0, 5), (1, 3)]


@pytest.mark.parametrize(
    "bad_task",
    [lambda: 1, ("only-key",), ("k", lambda: 1, "extra"), "ab", None],
    ids=["bare-thunk", "1-tuple", "3-tuple", "string", "none"],
)
def test_task_that_is_not_a_pair_raises_type_error_naming_index(bad_task: Any) -> None:
    ran: list[str] = []
    tasks: Any = [("a", functools.partial(ran.append, "a")), bad_task]
    with pytest.raises(TypeError, match="task 1 must be a \\(key, thunk\\) pair"):
        run_parallel(tasks, max_workers=2, merge_fn=list, order_key=_by_key)
    assert ran == []


def test_list_pairs_are_accepted() -> None:
    tasks: Any = [["a", lambda: 1], ["b", lambda: 2]]
    out = run_parallel(tasks, max_workers=2, merge_fn=list, order_key=_by_key)
    assert out == [("a", 1), ("b", 2)]


def test_incomparable_order_keys_fail_before_running() -> None:
    ran: list[int] = []
    keys: list[object] = [1, "a", None]
    tasks = [(key, functools.partial(ran.append, i)) for i, key in enumerate(keys)]
    with pytest.raises(TypeError, match="mutually comparable"):
        run_parallel(tasks, max_workers=2, merge_fn=list, order_key=_by_key)
    assert ran == []


@pytest.mark.parametrize("max_workers", [0, 3])
def test_keyboard_interrupt_is_not_swallowed(max_workers: int) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    merged: list[list[tuple[int, None]]] = []
    tasks = [(0, interrupt), (1, lambda: None)]
    with pytest.raises(KeyboardInterrupt):
        run_parallel(tasks, max_workers=max_workers, merge_fn=merged.append, order_key=_by_key)
    assert merged == []


# --------------------------------------------------------------------------- gather_limited


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [None, 1, 3, 100])
async def test_gather_limited_returns_input_order_under_skew(limit: int | None) -> None:
    n = 6
    done: list[int] = []

    def make(i: int) -> Callable[[], Any]:
        async def work() -> int:
            await asyncio.sleep((n - i) * 0.005)
            done.append(i)
            return i * 10

        return work

    assert await gather_limited([make(i) for i in range(n)], limit=limit) == [
        i * 10 for i in range(n)
    ]
    if limit is None or limit >= n:
        assert done == list(reversed(range(n)))  # completion order was reversed


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [1, 3, 5])
async def test_gather_limited_peak_in_flight_reaches_but_never_exceeds_limit(limit: int) -> None:
    in_flight = 0
    peak = 0

    async def work(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.005)
            return i
        finally:
            in_flight -= 1

    factories = [functools.partial(work, i) for i in range(12)]
    assert await gather_limited(factories, limit=limit) == list(range(12))
    assert peak == limit
    assert in_flight == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [None, 2])
async def test_gather_limited_failure_cancels_the_rest(limit: int | None) -> None:
    started: list[int] = []
    cancelled: list[int] = []
    finished: list[int] = []

    async def work(i: int) -> int:
        started.append(i)
        try:
            if i == 1:
                await asyncio.sleep(0.01)
                raise ValueError("boom")
            await asyncio.sleep(10)
            finished.append(i)
            return i
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    before = asyncio.all_tasks()
    t0 = time.monotonic()
    with pytest.raises(ExceptionGroup) as info:
        await gather_limited([functools.partial(work, i) for i in range(6)], limit=limit)
    assert time.monotonic() - t0 < 1.0
    assert info.value.subgroup(ValueError) is not None
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert asyncio.all_tasks() == before  # nothing left running
    assert finished == []
    assert sorted(cancelled) == sorted(i for i in started if i != 1)
    if limit is None:
        assert sorted(started) == list(range(6))
    else:
        assert sorted(started) == [0, 1]  # factories without a slot were never called


@pytest.mark.asyncio
async def test_gather_limited_closes_unstarted_coroutines_on_failure() -> None:
    async def fail() -> int:
        raise ValueError("boom")

    async def slow() -> int:
        await asyncio.sleep(10)
        return 0

    coros = [fail(), slow(), slow()]
    with pytest.raises(ExceptionGroup):
        await gather_limited(coros, limit=1)
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [0, -1])
async def test_gather_limited_rejects_limit_below_one(limit: int) -> None:
    called: list[int] = []

    async def work() -> int:
        called.append(1)
        return 1

    with pytest.raises(ConfigurationError):
        await gather_limited([work], limit=limit)
    coro = work()
    with pytest.raises(ConfigurationError):
        await gather_limited([coro], limit=limit)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert called == []


@pytest.mark.asyncio
async def test_gather_limited_propagates_cancellation() -> None:
    cancelled: list[int] = []

    async def work(i: int) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    before = asyncio.all_tasks()
    outer = asyncio.create_task(gather_limited([functools.partial(work, i) for i in range(4)]))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert sorted(cancelled) == [0, 1, 2, 3]
    assert asyncio.all_tasks() == before


@pytest.mark.asyncio
async def test_par_all_accepts_awaitables_and_factories_in_order() -> None:
    async def value(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    out = await par_all(value(1, 0.01), functools.partial(value, 2, 0.0), value(3, 0.005))
    assert out == [1, 2, 3]
    assert await par_all() == []
    assert await gather_limited([], limit=2) == []


@pytest.mark.asyncio
async def test_par_all_limit_keeps_order_and_the_limit() -> None:
    in_flight = peak = 0

    async def work(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002 * (6 - i))
        in_flight -= 1
        return i

    assert await par_all_limit(2, *(work(i) for i in range(6))) == list(range(6))
    assert peak == 2
