"""What every ``lift-graph`` command shares: one-line errors with an exit status,
and the options that name a start node and a state."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click

from ._cli_load import CliUsageError
from .errors import ConfigurationError, IncompatibleRunError, RunNotFoundError

__all__ = ["USAGE_ERRORS", "CliExit", "fail", "guard", "start_options"]

#: Errors that mean an argument was wrong (exit status 2), not that a run failed.
USAGE_ERRORS = (CliUsageError, ConfigurationError, RunNotFoundError, IncompatibleRunError)


class CliExit(click.ClickException):
    """A one-line error with its exit status (1: the run failed, 2: a wrong argument)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = code  # type: ignore[misc]  # click reads it per instance


def fail(exc: BaseException, message: str, code: int) -> NoReturn:
    """Exit with ``message`` on one line; with ``lift-graph --traceback``, print
    ``exc``'s traceback first."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("traceback"):
        traceback.print_exception(exc, file=sys.stderr)
    raise CliExit(message, code) from exc


def guard(action: Callable[[], Any]) -> Any:
    """Run ``action``; a wrong argument becomes a one-line error with status 2."""
    try:
        return action()
    except USAGE_ERRORS as exc:
        fail(exc, str(exc), 2)


def start_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--start NODE``, ``--start-args JSON`` and ``--state FILE``."""
    options = [
        click.option(
            "--start", "start_name", required=True, metavar="NODE", help="Start node class."
        ),
        click.option(
            "--start-args", metavar="JSON", help='Its keyword arguments: {"doc_id": "a"}.'
        ),
        click.option(
            "--state",
            "state_path",
            metavar="FILE",
            help="The state as JSON ('-': stdin), validated into the graph's state type.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
