"""Task plumbing shared by forks and pipelines: the pause signal, cancelling
children, the last record."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from ._records import NodeRecord

__all__ = ["Paused", "cancel_and_wait", "last_record"]


class Paused(Exception):
    """A path stopped at a node that returned ``Interrupt``: it waits for a person.

    It travels up like an error, but a fork or pipeline lets its other branches
    finish first, then pauses too; ``Graph.run`` turns it into
    ``RunResult.interrupts``.
    """


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished.

    If we are cancelled ourselves while waiting (run cancelled during a join's
    clean-up), keep waiting, then re-raise: no child may outlive its fork.
    """
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    cancelled = False
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
            for t in pending:
                t.cancel()
        pending = [t for t in pending if not t.done()]
    if cancelled:
        raise asyncio.CancelledError


def last_record(records: list[tuple[Any, ...]]) -> NodeRecord | None:
    # The runner appends a failed node's record just before it raises.
    return NodeRecord._make(records[-1]) if records else None
