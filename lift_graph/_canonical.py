"""Canonical serialization: the same bytes for equal values in every process.

Sets are sorted by their canonical form and mapping keys are sorted, so the
result depends on neither insertion order nor ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

__all__ = ["canonical_hash", "canonical_json", "to_canonical"]


def to_canonical(value: Any) -> Any:
    """A JSON-compatible structure with every unordered collection put in order."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        return value
    if isinstance(value, BaseModel):
        # mode="python" keeps sets as sets, so they are sorted below; mode="json" would
        # turn them into lists in iteration order, which depends on PYTHONHASHSEED.
        return to_canonical(value.model_dump(mode="python"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_canonical({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        # type name second: keys 1 and "1" order the same whatever the insertion order
        keyed = sorted(((_key(k), type(k).__name__, v) for k, v in value.items()), key=_first2)
        return {k: to_canonical(v) for k, _, v in keyed}
    if isinstance(value, (set, frozenset)):
        items = [to_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [to_canonical(v) for v in value]
    return to_canonical(to_jsonable_python(value, fallback=repr))


def _key(key: Any) -> str:
    """A mapping key as JSON writes it: an enum by its value, ``1`` as ``"1"``."""
    if isinstance(key, Enum):
        key = key.value
    if isinstance(key, str):
        return str(key)
    canon = to_canonical(key)
    return canon if isinstance(canon, str) else json.dumps(canon, separators=(",", ":"))


def _first2(item: tuple[str, str, Any]) -> tuple[str, str]:
    return item[0], item[1]


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON of ``value`` (see ``to_canonical``)."""
    return json.dumps(
        to_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def canonical_hash(value: Any) -> str:
    """SHA-256 hex digest of ``canonical_json(value)``; stable across processes."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
