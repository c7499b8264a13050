"""Text for error messages: values shown briefly, whatever their size."""

from __future__ import annotations

from typing import Any

__all__ = ["short_repr"]


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters with a trailing ``...``."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
