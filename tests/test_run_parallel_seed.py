"""``run_parallel`` against its seed contract (M9, deterministic parallel helper).

The three usage patterns of the seed are copied verbatim (only the import path is
this package's, and the names they reference are defined here); the last section
mirrors the seed's "Testing contract" list.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from lift_graph import LiftGraphError, ParallelError, TaskError

# --------------------------------------------------------------------------- referenced names

Result = tuple[int, int]
cfg = SimpleNamespace(perf=SimpleNamespace(parallel=SimpleNamespace(max_workers=4)))
log = logging.getLogger("tests.run_parallel_seed")
workers = 3


@dataclass(frozen=True)
class _Graph:
    graph_id: str


graphs = [_Graph("g-c"), _Graph("g-a"), _Graph("g-b")]


def do_t1_for_graph(gid: str) -> str:
    time.sleep(0.002 * (len(gid) + ord(gid[-1]) % 5))  # completion order != key order
    return f"t1({gid})"


# --------------------------------------------------------------------------- pattern 1


def test_seed_pattern_1_sharded_work_with_stable_keys() -> None:
    from lift_graph import run_parallel

    def _work_on_shard(shard_id: int) -> Result:
        # pure function over the shard; avoid global mutation
        time.sleep(0.004 * (3 - shard_id))  # later shards finish first
        return (shard_id, shard_id * shard_id)

    shards = [0, 1, 2, 3]
    tasks = [(sid, (lambda s=sid: _work_on_shard(s))) for sid in shards]  # freeze sid

    def _merge(pairs):
        # pairs is sorted by sid; build a single object
        out = []
        for sid, res in pairs:
            out.append((sid, res))
        return out

    # fmt: off
    results = run_parallel(
        tasks,
        max_workers=cfg.perf.parallel.max_workers,   # already normalized in PR63
        merge_fn=_merge,
        order_key=lambda sid: (sid,),                # total order
    )
    # fmt: on

    assert results == [(0, (0, 0)), (1, (1, 1)), (2, (2, 4)), (3, (3, 9))]


# --------------------------------------------------------------------------- pattern 2


def test_seed_pattern_2_graph_scoped_fanout() -> None:
    from lift_graph import run_parallel

    tasks = []
    for g in graphs:
        gid = g.graph_id
        tasks.append((gid, (lambda _gid=gid: do_t1_for_graph(_gid))))

    def merge_graphs(pairs):
        # deterministic append in gid order
        return [res for _, res in pairs]

    out = run_parallel(tasks, max_workers=workers, merge_fn=merge_graphs, order_key=lambda k: (k,))

    assert out == ["t1(g-a)", "t1(g-b)", "t1(g-c)"]


# --------------------------------------------------------------------------- pattern 3


def _failing_shard_tasks() -> list[tuple[int, Any]]:
    def work(sid: int) -> int:
        time.sleep(0.003 * (4 - sid))  # the failures finish in reverse key order
        if sid in (1, 3):
            raise ValueError(f"shard {sid} is corrupt")
        return sid

    return [(sid, (lambda s=sid: work(s))) for sid in [3, 0, 1, 2]]


def _merge(pairs: list[tuple[int, int]]) -> list[int]:
    raise AssertionError("merge_fn must not be called when a task failed")


def test_seed_pattern_3_deterministic_failure_surfaces(caplog: pytest.LogCaptureFixture) -> None:
    from lift_graph import run_parallel

    tasks = _failing_shard_tasks()
    caplog.set_level(logging.ERROR, logger=log.name)
    with pytest.raises(ParallelError) as info:
        try:
            run_parallel(tasks, max_workers=workers, merge_fn=_merge, order_key=lambda k: (k,))
        except ParallelError as e:
            # e.errors is stable; suitable for logs or test assertions
            for item in e.errors:
                log.error("shard=%s type=%s msg=%s", item.key, item.exc_type, item.message)
            raise

    assert info.value.errors == [
        TaskError(1, "ValueError", "shard 1 is corrupt"),
        TaskError(3, "ValueError", "shard 3 is corrupt"),
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "shard=1 type=ValueError msg=shard 1 is corrupt",
        "shard=3 type=ValueError msg=shard 3 is corrupt",
    ]


# --------------------------------------------------------------------------- testing contract


def _skewed_tasks(n: int, done: list[str], step: float = 0.008) -> list[tuple[str, Any]]:
    def work(key: str, delay: float) -> str:
        time.sleep(delay)
        done.append(key)
        return key.upper()

    # keys in reverse submit order, and the first submitted task is the slowest
    return [
        (f"k{n - i:02d}", (lambda k=f"k{n - i:02d}", d=(n - i) * step: work(k, d)))
        for i in range(n)
    ]


def _pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(pairs)


def test_contract_ordering_is_independent_of_completion_under_skew() -> None:
    from lift_graph import run_parallel

    done: list[str] = []
    tasks = _skewed_tasks(6, done)
    out = run_parallel(tasks, max_workers=6, merge_fn=_pairs, order_key=lambda k: (k,))
    assert out == [(f"k{i:02d}", f"K{i:02d}") for i in range(1, 7)]
    assert done != sorted(done, reverse=True)  # the skew really changed completion order


@pytest.mark.parametrize("parallel_workers", [2, 4, 16])
def test_contract_sequential_equivalence(parallel_workers: int) -> None:
    from lift_graph import run_parallel

    tasks = _skewed_tasks(8, [], step=0.002)
    sequential = run_parallel(tasks, max_workers=1, merge_fn=_pairs, order_key=lambda k: (k,))
    threaded = run_parallel(
        tasks, max_workers=parallel_workers, merge_fn=_pairs, order_key=lambda k: (k,)
    )
    # the identity path is a plain loop plus a stable sort by order_key, byte for byte
    loop = sorted(((key, thunk()) for key, thunk in tasks), key=lambda pair: (pair[0],))
    assert pickle.dumps(sequential) == pickle.dumps(threaded) == pickle.dumps(loop)


def test_contract_exceptions_are_deterministic() -> None:
    from lift_graph import run_parallel

    seen: list[list[TaskError]] = []
    for max_workers in (1, 2, 4, 4, 4):
        with pytest.raises(ParallelError) as info:
            run_parallel(
                _failing_shard_tasks(),
                max_workers=max_workers,
                merge_fn=_merge,
                order_key=lambda k: (-k,),
            )
        seen.append(info.value.errors)
        assert isinstance(info.value, LiftGraphError)
        assert isinstance(info.value.__cause__, ValueError)
        assert str(info.value.__cause__) == "shard 3 is corrupt"  # first in order
    assert (
        seen
        == [
            [
                TaskError(3, "ValueError", "shard 3 is corrupt"),
                TaskError(1, "ValueError", "shard 1 is corrupt"),
            ]
        ]
        * 5
    )


@pytest.mark.parametrize("max_workers", [0, -1, -8])
def test_contract_zero_and_negative_workers_are_sequential(max_workers: int) -> None:
    from lift_graph import run_parallel

    threads: list[int] = []

    def work(key: int) -> int:
        threads.append(threading.get_ident())
        return key

    tasks = [(key, (lambda k=key: work(k))) for key in (2, 0, 1)]
    out = run_parallel(tasks, max_workers=max_workers, merge_fn=_pairs, order_key=lambda k: (k,))
    assert out == [(0, 0), (1, 1), (2, 2)]
    assert set(threads) == {threading.get_ident()}


@pytest.mark.parametrize("max_workers", [-3, 0, 1, 8])
def test_contract_empty_input_calls_merge_fn_exactly_once(max_workers: int) -> None:
    from lift_graph import run_parallel

    calls: list[list[Any]] = []

    def merge(pairs: list[Any]) -> dict[str, int]:
        calls.append(pairs)
        return {"count": len(pairs)}

    out = run_parallel([], max_workers=max_workers, merge_fn=merge, order_key=lambda k: (k,))
    assert out == {"count": 0}
    assert calls == [[]]


def test_contract_non_zero_arg_callable_raises_type_error() -> None:
    from lift_graph import run_parallel

    def fn(shard_id: int) -> int:
        return shard_id

    with pytest.raises(TypeError, match="key 5"):
        run_parallel([(5, fn)], max_workers=2, merge_fn=_pairs, order_key=lambda k: (k,))


def test_concepts_doc_example_runs() -> None:
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "concepts.md").read_text()
    section = text.split("## Thread fan-out outside a graph", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {"work_on_shard": lambda s: s * 10}
    exec(compile(code.group(1), "concepts.md", "exec"), namespace)
    assert namespace["results"] == [0, 10, 20, 30]
