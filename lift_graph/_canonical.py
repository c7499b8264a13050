"""Canonical serialization: the same bytes for equal values in every process.

Sets are sorted by their canonical form and mapping keys are sorted, so the
result depends on neither insertion order nor ``PYTHONHASHSEED``. Only values
with a canonical form are accepted: JSON scalars, mappings, sequences, sets,
enums, dataclasses, pydantic models, ``dspy.Example`` / ``dspy.Prediction``,
exceptions (type and arguments), and what pydantic can serialize (bytes,
datetimes, ``Decimal``, ``UUID``, paths, ...).
Anything else raises ``CanonicalizationError``: its ``repr`` may hold a memory
address, which would make equal values hash differently.
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
import hashlib
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import CanonicalizationError

__all__ = ["canonical_hash", "canonical_json", "hash_canonical", "to_canonical"]

_FIX = (
    "make it a dataclass or a pydantic model, convert it to plain data (dict, list, "
    "str, numbers) before it is returned or stored, or, in a MAJORITY vote, vote on "
    "state fields that have one (Fork(vote_on=...), merge_states(vote_fields=...))"
)


def to_canonical(value: Any) -> Any:
    """A JSON-compatible structure with every unordered collection put in order.

    :raises CanonicalizationError: ``value`` holds an object with no canonical form.
    """
    try:
        return _canon(value)
    except _NoCanonicalForm as exc:
        raise exc.error() from None


class _NoCanonicalForm(Exception):
    """Raised deep inside the walk; containers add their segment of the path on the
    way out, so the path costs nothing unless there is an error."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.problem = problem
        self.segments: list[str] = []

    def error(self) -> CanonicalizationError:
        path = "value" + "".join(reversed(self.segments))
        return CanonicalizationError(f"{path} {self.problem}", type_name=self.kind, path=path)


def _canon(value: Any) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is dict:
        return _canon_mapping(value)
    if kind is list or kind is tuple:
        return _canon_items(value)
    if isinstance(value, Enum):
        return _canon(value.value)
    scalar = _scalar(value)
    if scalar is not _NOT_SCALAR:
        return scalar
    fields = _fields(value)
    if fields is not None:
        return _canon_mapping(fields, attribute=True)
    if isinstance(value, Mapping):
        return _canon_mapping(value)
    if isinstance(value, (set, frozenset)):
        return _canon_set(value)
    if isinstance(value, (list, tuple, collections.deque)):
        return _canon_items(value)
    if isinstance(value, BaseException):
        return _canon_exception(value)
    return _canon_other(value)


_NOT_SCALAR = object()


def _scalar(value: Any) -> Any:
    """Subclasses of the JSON scalars as plain values; ``_NOT_SCALAR`` otherwise."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, whatever the subclass's __str__ says
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(float(value))
        return float(value) + 0.0  # -0.0 == 0.0, so they must serialize alike
    if isinstance(value, decimal.Decimal):
        # Decimal("1.10") == Decimal("1.1"): normalize the exponent away
        return str(value.normalize()) if value.is_finite() else str(value)
    return _NOT_SCALAR


def _fields(value: Any) -> dict[str, Any] | None:
    """The fields of a record-like object (pydantic, dataclass, dspy), else ``None``."""
    if isinstance(value, BaseModel):
        # mode="python" keeps sets as sets, so they are sorted later; mode="json" would
        # turn them into lists in iteration order, which depends on PYTHONHASHSEED.
        return value.model_dump(mode="python")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return _dspy_fields(value)


def _dspy_fields(value: Any) -> dict[str, Any] | None:
    """A ``dspy.Example`` / ``dspy.Prediction``'s fields, as its ``==`` compares them.

    dspy is optional and heavy: when it was never imported, no value can be one of
    its objects, so it is not imported here.
    """
    dspy = sys.modules.get("dspy")
    example = getattr(dspy, "Example", None) if dspy is not None else None
    if example is None or not isinstance(value, example):
        return None
    store = getattr(value, "_store", None)
    return dict(store) if isinstance(store, dict) else dict(value.items(include_dspy=True))


def _canon_mapping(value: Mapping[Any, Any], *, attribute: bool = False) -> dict[str, Any]:
    # type name second: keys 1 and "1" order the same whatever the insertion order
    keyed = sorted(
        ((_key(k), type(k).__name__, k, v) for k, v in value.items()),
        key=lambda item: (item[0], item[1]),
    )
    out: dict[str, Any] = {}
    try:
        for key, _, _, item in keyed:
            out[key] = _canon(item)
    except _NoCanonicalForm as exc:
        raw = keyed[len(out)][2]  # the entry being converted when it failed
        exc.segments.append(f".{raw}" if attribute else f"[{raw!r}]")
        raise
    return out


def _key(key: Any) -> str:
    """A mapping key as JSON writes it: an enum by its value, ``1`` as ``"1"``."""
    if isinstance(key, Enum):
        key = key.value
    if isinstance(key, str):
        return str.__str__(key)
    try:
        canon = _canon(key)
    except _NoCanonicalForm as exc:
        exc.segments.append("<a key>")
        raise
    return canon if isinstance(canon, str) else json.dumps(canon, separators=(",", ":"))


def _canon_items(value: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    try:
        for item in value:
            out.append(_canon(item))
    except _NoCanonicalForm as exc:
        exc.segments.append(f"[{len(out)}]")
        raise
    return out


def _canon_set(value: Iterable[Any]) -> list[Any]:
    try:
        items = [_canon(item) for item in value]
    except _NoCanonicalForm as exc:
        exc.segments.append("<a set item>")
        raise
    return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))


def _canon_exception(value: BaseException) -> dict[str, Any]:
    """An exception by its type and arguments (``JoinResult.errors`` holds them).

    Its traceback, cause and notes are left out: they record where it happened,
    not what it says, and differ between runs that failed alike.
    """
    try:
        args = _canon_items(value.args)
    except _NoCanonicalForm as exc:
        exc.segments.append(".args")
        raise
    kind = type(value)
    return {"exception": f"{kind.__module__}.{kind.__qualname__}", "args": args}


def _canon_other(value: Any) -> Any:
    """What pydantic can serialize by value (bytes, dates, UUIDs...); else an error."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, Iterator):
        raise _NoCanonicalForm(
            kind,
            f"is an iterator ({kind}): hashing would consume it and it has no value to "
            "compare; pass a list or tuple instead",
        )
    try:
        plain = to_jsonable_python(value, bytes_mode="base64")
    except PydanticSerializationError:
        raise _NoCanonicalForm(
            kind,
            f"has no canonical form: a {kind} is only known by its repr, which can differ "
            f"between equal values (a memory address); {_FIX}",
        ) from None
    return _canon(plain)


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON of ``value`` (see ``to_canonical``).

    :raises CanonicalizationError: ``value`` holds an object with no canonical form.
    """
    return _dumps(to_canonical(value))


def _dumps(canonical: Any) -> str:
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_canonical(canonical: Any) -> str:
    """``canonical_hash`` of a value already in its ``to_canonical`` form."""
    return hashlib.sha256(_dumps(canonical).encode("utf-8")).hexdigest()


def canonical_hash(value: Any) -> str:
    """SHA-256 hex digest of ``canonical_json(value)``; stable across processes.

    :raises CanonicalizationError: ``value`` holds an object with no canonical form.
    """
    return hash_canonical(to_canonical(value))
