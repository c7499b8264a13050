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
        return to_canonical(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_canonical({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        return {
            str(k): to_canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(value, (set, frozenset)):
        items = [to_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [to_canonical(v) for v in value]
    return to_canonical(to_jsonable_python(value, fallback=repr))


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON of ``value`` (see ``to_canonical``)."""
    return json.dumps(
        to_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def canonical_hash(value: Any) -> str:
    """SHA-256 hex digest of ``canonical_json(value)``; stable across processes."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
