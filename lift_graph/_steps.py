"""Per-path bookkeeping: the step limit, loop turns, records of cancelled nodes.

A *path* (the run's main path, one fork branch, one pipeline member) counts its
own node executions; ``max_steps`` bounds that count so a loop without an exit
fails with ``StepLimitError`` instead of running (and growing) forever.
"""

from __future__ import annotations

import time
import typing
from typing import Any

from ._config import check_count
from ._records import CANCELLED, NodeRecord
from .errors import StepLimitError

__all__ = [
    "DEFAULT_MAX_STEPS",
    "TURN_INTERVAL",
    "cancelled_record",
    "check_max_steps",
    "step_limit_error",
]

#: Node executions one path may run (``Graph.run(max_steps=...)``).
DEFAULT_MAX_STEPS = 10_000

#: Seconds a path may run nodes without giving the event loop a turn. A node that
#: never awaits would otherwise starve timers (run timeouts), cancellation and
#: sibling branches. A turn costs a few µs, so at 1 ms it is lost in the noise of
#: a ~4 µs/node chain, and a run timeout fires within about a millisecond (plus
#: the duration of the node that is running).
TURN_INTERVAL = 0.001


def check_max_steps(max_steps: object) -> int | None:
    """:raises ConfigurationError: ``max_steps`` is not a positive int or None."""
    check_count("max_steps (node executions per path; None disables the limit)", max_steps)
    return typing.cast("int | None", max_steps)


def step_limit_error(
    prefix: str, last_key: str, next_node: Any, max_steps: int, execution_id: str
) -> StepLimitError:
    """The error of a path (key prefix ``prefix``) about to exceed ``max_steps``."""
    last = last_key.rsplit(".", 1)[-1]
    where = "the run's main path" if not prefix else f"path {prefix!r}"
    return StepLimitError(
        f"{where} ran {max_steps} nodes without ending (last node {last} at key "
        f"{last_key!r}, next would be {type(next_node).__name__}): give the loop an exit, "
        f"or raise the limit with graph.run(..., max_steps=N) (None disables it)",
        path=prefix,
        node=last,
        node_key=last_key,
        max_steps=max_steps,
        execution_id=execution_id,
    )


def cancelled_record(node: Any, key: str, started: float) -> tuple[Any, ...]:
    """The record of execution ``key``, cut short by a cancellation.

    The runner records a node only when it returns or fails; one cancelled while
    it ran (a race's loser, a timeout) gets this record from the scheduler, with
    ``error`` set to ``CANCELLED``. ``execution_time_ms`` runs from when the node
    was handed to the runner (slot waits included); ``attempts`` is 1, as the
    scheduler cannot see retries.
    """
    record = NodeRecord(
        key,
        type(node).__name__,
        started,
        (time.perf_counter() - started) * 1000.0,
        1,
        CANCELLED,
        getattr(node, "provider", None),
        started,
    )
    return tuple(record)
