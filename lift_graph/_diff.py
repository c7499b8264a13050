"""Where two canonical values first differ: a field path and the two values there.

``check_determinism`` and ``lift-graph check`` use it to say *what* changed between
two runs, not only that their hashes differ. Inputs are ``to_canonical`` forms
(JSON-compatible: dicts with string keys, lists, scalars), so the walk is short.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "first_difference"]

#: Stands for a key or list item one side has and the other lacks.
MISSING = "<missing>"


def _same_leaf(a: Any, b: Any) -> bool:
    # 1 == True and 1 == 1.0 in Python, but their canonical JSON differs.
    return type(a) is type(b) and a == b


def _key_path(path: str, key: str) -> str:
    if not key.isidentifier():
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first place, in sorted-key / index order, where ``a`` and ``b`` differ:
    ``(path, a's value, b's value)``; ``MISSING`` for an absent key or item. None when
    they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = _key_path(path, str(key))
            if key not in a or key not in b:
                return sub, a.get(key, MISSING), b.get(key, MISSING)
            found = first_difference(a[key], b[key], sub)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(a) or i >= len(b):
                return sub, a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING
            found = first_difference(a[i], b[i], sub)
            if found is not None:
                return found
        return None
    return None if _same_leaf(a, b) else (path, a, b)
