"""Reducers: how concurrent writes to one state field combine.

Declare one on the state model with ``Annotated``::

    class State(BaseModel):
        notes: Annotated[list[str], append] = []
        scores: Annotated[dict[str, float], merge_dict] = {}
        best: Annotated[float, max_value] = 0.0
        calls: Annotated[int, operator.add] = 0     # any (current, update) callable

A reducer combines changes in branch index order (or, in a pipeline, in list order),
starting from the common base: ``combine(current, before, after)`` folds the change
``before -> after`` of one branch into ``current``. A merge hands a reducer all the
changes to one field at once, through ``combine_many(current, changes)``; its
default folds ``combine`` over them, and the built-in collection reducers override it
to build the result once, so merging n branches costs O(total size), not O(n²).
A plain callable ``f(current, update)`` is folded with ``update`` being the change's
delta: the appended items of a list that only grew, the added or changed entries of
a dict that lost no key, ``after - before`` for numbers, and ``after`` otherwise.
A ``current`` of None means no value yet (a key the state did not have): the first
update becomes the value.

A node that writes *one value* through a field's reducer (a ``DSPyNode`` output
mapped with ``outputs``) calls ``update(current, value)``: ``append`` adds the value
as one item, ``extend`` adds the items of a list, ``merge_dict`` updates with a
mapping, ``add`` sums (on a list, a non-list value is appended as one item),
``max_value`` / ``min_value`` keep the extreme, and a plain callable is
``f(current, value)``.

Without a reducer, a field written by several branches is a ``MergeError`` even when
the values agree; ``same_value`` declares that equal values are expected and fine.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._text import short_repr
from .errors import MergeError

__all__ = [
    "Reducer",
    "add",
    "append",
    "delta",
    "extend",
    "last_value",
    "max_value",
    "merge_dict",
    "min_value",
    "same_value",
    "union",
]


def delta(before: Any, after: Any) -> Any:
    """What one change added: see the module docstring."""
    if isinstance(before, list) and isinstance(after, list):
        n = len(before)
        if len(after) >= n and after[:n] == before:
            return after[n:]
        return after
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        if all(k in after for k in before):
            return {k: v for k, v in after.items() if k not in before or before[k] != v}
        return after
    if (
        isinstance(before, (int, float))
        and isinstance(after, (int, float))
        and not isinstance(before, bool)
        and not isinstance(after, bool)
    ):
        return after - before
    return after


class Reducer:
    """A named reducer; subclass and override ``combine``, or wrap a callable."""

    def __init__(self, name: str, fn: Callable[[Any, Any], Any] | None = None) -> None:
        self.name = name
        self._fn = fn

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        """Fold the change ``before -> after`` of one writer into ``current``."""
        if self._fn is None:
            raise NotImplementedError(f"reducer {self.name} does not implement combine")
        if current is None:
            # No value yet (a key the state lacked): the first update is the value,
            # as a counter starts at its first increment.
            return delta(before, after)
        return self._fn(current, delta(before, after))

    def update(self, current: Any, value: Any) -> Any:
        """Fold one new ``value`` into ``current`` (None: no value yet, so ``value``)."""
        if self._fn is None:
            raise NotImplementedError(f"reducer {self.name} does not implement update")
        if current is None:
            return value
        return self._fn(current, value)

    def combine_many(self, current: Any, changes: Sequence[tuple[Any, Any]]) -> Any:
        """Fold every change ``(before, after)`` into ``current``, in order.

        The merge calls this once per field; override it when folding one change at
        a time would copy ``current`` again for every change.
        """
        for before, after in changes:
            current = self.combine(current, before, after)
        return current

    def __repr__(self) -> str:
        return f"<reducer {self.name}>"


class _Append(Reducer):
    def update(self, current: Any, value: Any) -> Any:
        return [*(current or []), value]

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        added = delta(before, after)
        return [*(current or []), *added]

    def combine_many(self, current: Any, changes: Sequence[tuple[Any, Any]]) -> Any:
        # One list grown in place: folding `combine` would copy it per change.
        out = list(current or [])
        for before, after in changes:
            if type(before) is list and type(after) is list and not before:
                out.extend(after)  # the common case, a fork of an empty list
            else:
                out.extend(delta(before, after))
        return out


class _Extend(_Append):
    """Merges as ``append``; a node's single write adds the items of a list."""

    def update(self, current: Any, value: Any) -> Any:
        return [*(current or []), *value]


class _MergeDict(Reducer):
    def update(self, current: Any, value: Any) -> Any:
        return {**(current or {}), **value}

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        return {**(current or {}), **delta(before, after)}

    def combine_many(self, current: Any, changes: Sequence[tuple[Any, Any]]) -> Any:
        out = dict(current or {})
        for before, after in changes:
            if type(before) is dict and type(after) is dict and not before:
                out.update(after)  # the common case, a fork of an empty dict
            else:
                out.update(delta(before, after))
        return out


class _Extreme(Reducer):
    def __init__(self, name: str, pick: Callable[[Any, Any], Any]) -> None:
        super().__init__(name)
        self._pick = pick

    def update(self, current: Any, value: Any) -> Any:
        return value if current is None else self._pick(current, value)

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        if current is None:
            return after
        return self._pick(current, after)


class _Add(Reducer):
    def update(self, current: Any, value: Any) -> Any:
        if current is None:
            return value
        if isinstance(current, list) and not isinstance(value, list):
            return [*current, value]  # one output into a list of them
        return current + value

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        if current is None:
            return delta(before, after)
        return current + delta(before, after)

    def combine_many(self, current: Any, changes: Sequence[tuple[Any, Any]]) -> Any:
        if type(current) is list:
            # `+` on lists concatenates: build the list once, as `append` does.
            return append.combine_many(current, changes)
        return super().combine_many(current, changes)


class _Union(Reducer):
    def update(self, current: Any, value: Any) -> Any:
        if current is None:
            return value
        return type(current)(set(current) | set(value))

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        return type(after)(set(current or ()) | set(after))

    def combine_many(self, current: Any, changes: Sequence[tuple[Any, Any]]) -> Any:
        if not changes:
            return current
        out = set(current or ())
        for _, after in changes:
            out.update(after)
        return type(changes[-1][1])(out)


class _Last(Reducer):
    def update(self, current: Any, value: Any) -> Any:
        return value

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        return after


class _Same(Reducer):
    """Every writer must write an equal value, which is kept."""

    def update(self, current: Any, value: Any) -> Any:
        # One node's own write: agreement is checked when branches merge.
        return value

    def combine(self, current: Any, before: Any, after: Any) -> Any:
        return self.combine_many(current, [(before, after)])

    def combine_many(self, current: Any, changes: Sequence[tuple[Any, Any]]) -> Any:
        if not changes:
            return current
        first = changes[0][1]
        for i, (_, after) in enumerate(changes[1:], 1):
            if after != first:
                # `branches` holds positions in `changes`: the merge names the branches.
                raise MergeError(
                    f"same_value requires equal values, got {short_repr(first)} and "
                    f"{short_repr(after)}: declare another reducer or let one branch write "
                    "the field",
                    branches=[0, i],
                )
        return first


append: Reducer = _Append("append")
"""Concatenate every writer's appended items, in branch / list order."""
extend: Reducer = _Extend("extend")
"""Merges as ``append``; a node's single write (``update``) adds a list's items."""
merge_dict: Reducer = _MergeDict("merge_dict")
"""Union of changed entries; on a shared key the later branch wins."""
max_value: Reducer = _Extreme("max_value", max)
min_value: Reducer = _Extreme("min_value", min)
add: Reducer = _Add("add")
"""Sum of every writer's increment: counters that branches bump concurrently."""
union: Reducer = _Union("union")
last_value: Reducer = _Last("last_value")
"""The highest-index writer wins (deterministic, never a conflict)."""
same_value: Reducer = _Same("same_value")
"""Every writer must write an equal value, which is kept (idempotent writes).

Without a reducer, several branches writing one field is a ``MergeError`` even when
they agree (three ``count += 1`` must not give 1). Declare ``same_value`` where
agreement is expected: equal writes merge to that value, and differing ones raise
``MergeError`` naming the field and the branches.
"""


def as_reducer(obj: Any) -> Reducer | None:
    """The reducer that ``Annotated`` metadata ``obj`` declares, or None."""
    if isinstance(obj, Reducer):
        return obj
    if obj is operator.add:
        # LangGraph's idiom, `Annotated[list[str], operator.add]`: the built-in
        # `add` folds list concatenations in one pass instead of copying per branch.
        return add
    if callable(obj) and not isinstance(obj, type):
        name = getattr(obj, "__name__", repr(obj))
        return Reducer(name, obj)
    return None
