"""Checks of settings, shared by ``Retry``, ``ProviderLimit``, ``Limits``, ``Fork`` and nodes.

A setting that is wrong should fail where it is written, not minutes later inside a
run (``nan`` backoff sleeps forever, ``rpm=1.5`` breaks deep in the limiter, a
fractional concurrency silently rounds up). Each check raises ``ConfigurationError``
naming the setting (``where``) and the value.
"""

from __future__ import annotations

import math
from typing import Any

from ._text import short_repr
from .errors import ConfigurationError

__all__ = ["check_callable", "check_count", "check_number"]


def check_callable(where: str, value: Any) -> None:
    """:raises ConfigurationError: ``value`` is not callable (naming ``where``)."""
    if not callable(value):
        raise ConfigurationError(
            f"{where} must be callable, got {short_repr(value)} of type {type(value).__name__}"
        )


def check_count(where: str, value: Any, *, minimum: int = 1, optional: bool = True) -> None:
    """``value`` is an ``int`` (not a bool) ``>= minimum``, or None when ``optional``.

    :raises ConfigurationError: naming ``where`` and ``value``.
    """
    if value is None and optional:
        return
    # bool is an int subclass: `concurrency=True` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or None" if optional else ""
        raise ConfigurationError(f"{where} must be an int >= {minimum}{none}, got {value!r}")


def check_number(
    where: str,
    value: Any,
    *,
    minimum: float = 0.0,
    strictly_above: bool = False,
    maximum: float | None = None,
    optional: bool = False,
) -> None:
    """``value`` is a finite real number within the bounds, or None when ``optional``.

    ``nan`` and ``inf`` are refused: every comparison with ``nan`` is False, so it
    slips through range checks, and an infinite delay or window never ends.

    :raises ConfigurationError: naming ``where`` and ``value``.
    """
    if value is None and optional:
        return
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > minimum if strictly_above else value >= minimum)
        and (maximum is None or value <= maximum)
    )
    if not ok:
        bound = f"> {minimum:g}" if strictly_above else f">= {minimum:g}"
        if maximum is not None:
            bound += f" and <= {maximum:g}"
        none = " or None" if optional else ""
        raise ConfigurationError(f"{where} must be a finite number {bound}{none}, got {value!r}")
