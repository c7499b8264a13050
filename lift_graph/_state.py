"""State isolation and change tracking (pure: no I/O, no clocks).

A branch works on a *shallow* copy of the state at its fork. Before a node runs,
the branch takes ownership of the fields the node may write: those fields (and only
those) are deep-copied from the fork's state, each at most once per branch. Every
other field is shared with the fork's state, so isolating a node costs O(fields it
writes), not O(state). A node that declares no ``writes`` may write anything, so its
branch owns every field (one deep copy per branch, not per node).

What a shared field protects against: reassignment is always caught (identity
check); in-place mutation of a shared object is caught by strict mode, which
fingerprints the fields a node did not declare before and after it runs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from .errors import (
    InvalidStateError,
    MissingFieldError,
    StateValidationError,
    UncopyableFieldError,
    UndeclaredMutationError,
)

__all__ = [
    "MISSING",
    "Branch",
    "FieldChange",
    "copy_value",
    "field_names",
    "fields_of_type",
    "fingerprint",
    "get_field",
    "put_field",
    "set_field",
    "shallow_copy",
]

_ATOMS = (str, int, float, bool, bytes, type(None), complex, frozenset)


class _Missing:
    """The value of a key a dict state (or a model's extras) does not have."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""``FieldChange.before`` of a key a branch added; ``after`` of one it deleted."""


class FieldChange(NamedTuple):
    """One field's change in one branch; ``MISSING`` marks an absent key.

    A tuple ``(before, after)``, so a merge hands a field's changes to
    ``Reducer.combine_many`` as they are, without building a pair per branch.
    """

    before: Any
    after: Any


def _change(before: Any, after: Any) -> FieldChange:
    # tuple.__new__ is a C call; a NamedTuple's own __new__ runs Python code, and
    # this runs once per changed field of every branch.
    return tuple.__new__(FieldChange, (before, after))


def copy_value(value: Any) -> Any:
    """A deep copy, fast for the JSON-like data states are made of."""
    cls = type(value)
    if cls in _ATOMS:
        return value
    if cls is list:
        return [v if type(v) in _ATOMS else copy_value(v) for v in value]
    if cls is dict:
        return {k: v if type(v) in _ATOMS else copy_value(v) for k, v in value.items()}
    if cls is tuple:
        return tuple(copy_value(v) for v in value)
    if cls is set:
        return set(value)
    if isinstance(value, BaseModel):
        clone = _model_shallow_copy(value)
        d = clone.__dict__
        for k, v in d.items():
            if type(v) not in _ATOMS:
                d[k] = copy_value(v)
        return clone
    return copy.deepcopy(value)


def fields_of_type(cls: Any) -> tuple[str, ...]:
    if issubclass(cls, BaseModel):
        return tuple(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    # Anything else (None, a plain object) is opaque: no fields to own, diff or
    # merge; `shallow_copy` isolates it with a deep copy instead.
    return ()


_FIELDS: dict[type, tuple[str, ...]] = {}


def field_names(state: Any) -> tuple[str, ...]:
    cls = type(state)
    names = _FIELDS.get(cls)
    if names is None:
        if cls is dict:
            return tuple(state)
        names = _FIELDS[cls] = fields_of_type(cls)
    return names


def get_field(state: Any, name: str) -> Any:
    if isinstance(state, dict):
        return state.get(name)
    return state.__dict__[name] if isinstance(state, BaseModel) else getattr(state, name)


def set_field(state: Any, name: str, value: Any) -> None:
    """Set without validation (the value came from a validated state)."""
    if isinstance(state, dict):
        state[name] = value
    elif isinstance(state, BaseModel):
        state.__dict__[name] = value
    else:
        object.__setattr__(state, name, value)


def put_field(state: Any, name: str, value: Any) -> None:
    """``set_field`` that also deletes (``value`` is ``MISSING``) a dict state's key
    or a model's extra, and writes a pydantic model's extras (``extra="allow"``)."""
    if isinstance(state, BaseModel) and name not in type(state).model_fields:
        extra = state.__pydantic_extra__
        if extra is None:
            extra = {}
            _setattr(state, "__pydantic_extra__", extra)
        if value is MISSING:
            extra.pop(name, None)
            state.__pydantic_fields_set__.discard(name)
        else:
            extra[name] = value
    elif value is MISSING:
        if isinstance(state, dict):
            state.pop(name, None)
    else:
        set_field(state, name, value)


def _extra_changes(base: BaseModel, state: BaseModel, out: dict[str, FieldChange]) -> None:
    """Changes to a model's extras (``extra="allow"``): set, replaced or deleted."""
    before_extra = base.__pydantic_extra__ or {}
    after_extra = state.__pydantic_extra__ or {}
    if not before_extra and not after_extra:
        return
    for name, after in after_extra.items():
        before = before_extra.get(name, MISSING)
        # Extras are never owned (deep-copied): a new object is a write.
        if after is not before:
            out[name] = _change(before, after)
    for name, before in before_extra.items():
        if name not in after_extra:
            out[name] = _change(before, MISSING)


_setattr = object.__setattr__


def _model_shallow_copy(model: BaseModel) -> BaseModel:
    # What `model_copy()` does, without its generic copy.copy round trips: this is
    # the per-branch cost of a fork.
    cls = type(model)
    new = cls.__new__(cls)
    _setattr(new, "__dict__", model.__dict__.copy())
    extra = model.__pydantic_extra__
    _setattr(new, "__pydantic_extra__", None if extra is None else dict(extra))
    _setattr(new, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    private = model.__pydantic_private__
    _setattr(new, "__pydantic_private__", None if private is None else dict(private))
    return new


def shallow_copy(state: Any) -> Any:
    """A copy whose fields are the same objects (opaque states: a deep copy).

    :raises InvalidStateError: an opaque state (not a model, dataclass or dict) that
        cannot be deep-copied.
    """
    if isinstance(state, BaseModel):
        return _model_shallow_copy(state)
    if isinstance(state, dict):
        return dict(state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return copy.copy(state)
    if type(state) in _ATOMS or isinstance(state, type):
        return state  # immutable (a class is refused where a node gets it)
    try:
        return copy.deepcopy(state)
    except Exception as exc:  # any copy failure means: cannot isolate it
        raise InvalidStateError(
            f"the state, a {type(state).__name__}, cannot be copied to isolate branches "
            f"({type(exc).__name__}: {exc}): use a pydantic model, a dataclass or a dict "
            "as the state, and put locks, clients and agents in deps "
            "(graph.run(deps=...), ctx.deps)"
        ) from exc


def _has_fields(state: Any) -> bool:
    """Whether ``state`` can hold named fields: a model, a dict, an object with attributes."""
    if isinstance(state, (BaseModel, dict)):
        return True
    if isinstance(state, type):
        return False
    return hasattr(state, "__dict__") or hasattr(type(state), "__slots__")


def _missing_field(node: str, name: str, state: Any) -> InvalidStateError | MissingFieldError:
    if not _has_fields(state):
        shown = f"the class {state.__name__}" if isinstance(state, type) else repr(state)
        return InvalidStateError(
            f"node {node} writes field {name!r}, but the state is {shown}: pass an "
            "instance of the state model (a pydantic model, a dataclass or a dict) as "
            "graph.run(state=...) / ctx.state",
            node=node,
            field=name,
        )
    return MissingFieldError(
        f"node {node} declares writes {name!r}, but the state {type(state).__name__} has no "
        f"such field (fields: {sorted(field_names(state))}): pass the state model the node "
        "is written for, or fix its `writes`",
        node=node,
        field=name,
    )


def _uncopyable(node: str, name: str, value: Any, exc: Exception | None) -> UncopyableFieldError:
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return UncopyableFieldError(
        f"node {node} declares it writes state field {name!r}, which holds a "
        f"{type(value).__name__} that cannot be copied{why}; the engine copies what a node "
        "writes to isolate it: put locks, HTTP clients and agents in deps "
        "(graph.run(deps=...), ctx.deps), not in the state, or leave the field out of "
        "`writes` if the node only uses it",
        node=node,
        field=name,
    )


def fingerprint(value: Any) -> bytes:
    """Bytes that change when ``value`` changes in place (strict mode only)."""
    try:
        return to_json(value, fallback=repr)
    except Exception:  # noqa: BLE001 - unserializable: fall back to repr
        return repr(value).encode()


def _snapshot(state: Any, names: Iterable[str]) -> dict[str, Any]:
    if isinstance(state, BaseModel):
        # A pydantic model's __dict__ holds exactly its fields: one C-level copy.
        return dict(state.__dict__)
    return {n: get_field(state, n) for n in names}


@dataclass(slots=True)
class Branch:
    """One path's state: a shallow copy of ``base`` that owns some fields.

    ``base`` is never modified. ``owned`` fields hold private deep copies;
    other fields share ``base``'s objects. ``all_owned`` short-cuts nodes that
    declare no writes once the branch owns everything.
    """

    base: Any
    state: Any
    owned: set[str] = field(default_factory=set)
    all_owned: bool = False
    # Fields that could not be copied (a lock, a client) and so stay shared with
    # ``base``, like ``deps``: only a node that declares it writes one is refused.
    shared: set[str] = field(default_factory=set)

    @classmethod
    def fork(cls, base: Any) -> Branch:
        return cls(base=base, state=shallow_copy(base))

    def own(self, names: Iterable[str] | None, node: str = "?") -> None:
        """Deep-copy the fields a node may write (``None``: every field that can be copied).

        :raises MissingFieldError: a name in ``names`` is not a field of the state.
        :raises InvalidStateError: the state has no fields at all (None, a number).
        :raises UncopyableFieldError: a field in ``names`` cannot be deep-copied.
        """
        if self.all_owned:
            if names is not None and self.shared:
                for name in names:
                    if name in self.shared:
                        raise _uncopyable(node, name, get_field(self.state, name), None)
            return
        declared = names is not None
        if names is None:
            names = field_names(self.state)
            self.all_owned = True
        state, owned = self.state, self.owned
        if declared and not _has_fields(state):
            for name in names:  # ("abc".count is a method, not a field)
                raise _missing_field(node, name, state)
        for name in names:
            if name in owned:
                continue
            try:
                value = get_field(state, name)
            except (KeyError, AttributeError):
                raise _missing_field(node, name, state) from None
            if type(value) not in _ATOMS:
                try:
                    value = copy_value(value)
                except Exception as exc:  # any copy failure means: cannot isolate
                    if declared:
                        raise _uncopyable(node, name, value, exc) from exc
                    # Undeclared writes: share it (as deps are shared); a reassignment is
                    # still seen by the identity checks.
                    self.shared.add(name)
                    continue
                set_field(state, name, value)
            owned.add(name)

    def changes(self) -> dict[str, FieldChange]:
        """The fields whose value differs from ``base``, with before / after.

        A key of a dict state that the branch added has ``before`` ``MISSING``, one
        it deleted ``after`` ``MISSING``; a pydantic model's extras count as fields.
        """
        out: dict[str, FieldChange] = {}
        base, state = self.base, self.state
        if isinstance(state, dict) and isinstance(base, dict):
            return self._dict_changes(base, state)
        if isinstance(state, BaseModel) and isinstance(base, BaseModel):
            return self._model_changes(base, state)
        for name in field_names(state):
            after = get_field(state, name)
            before = get_field(base, name)
            if after is before:
                continue
            if name not in self.owned or after != before:
                out[name] = _change(before, after)
        return out

    def _model_changes(self, base: BaseModel, state: BaseModel) -> dict[str, FieldChange]:
        # A model's __dict__ holds exactly its fields: read it directly, this runs
        # once per branch of every fork.
        out: dict[str, FieldChange] = {}
        owned, before_of = self.owned, base.__dict__
        for name, after in state.__dict__.items():
            before = before_of[name]
            if after is not before and (name not in owned or after != before):
                out[name] = _change(before, after)
        if state.__pydantic_extra__ or base.__pydantic_extra__:
            _extra_changes(base, state, out)
        return out

    def _dict_changes(self, base: dict[Any, Any], state: dict[Any, Any]) -> dict[str, FieldChange]:
        out: dict[str, FieldChange] = {}
        owned = self.owned
        for name, after in state.items():
            before = base.get(name, MISSING)
            if after is before:
                continue
            if name not in owned or after != before:
                out[name] = _change(before, after)
        # In base order, not a set difference: merged key order must not depend on
        # the hash seed.
        for name, before in base.items():
            if name not in state:
                out[name] = _change(before, MISSING)
        return out


class NodeGuard:
    """Checks one node's writes: validation of reassigned and declared fields, strict mode."""

    __slots__ = ("_before", "_fingerprints", "_branch", "_declared", "_strict")

    def __init__(self, branch: Branch, declared: frozenset[str] | None, strict: bool) -> None:
        self._branch = branch
        self._declared = declared
        names = field_names(branch.state)
        self._before = _snapshot(branch.state, names)
        self._strict = strict
        self._fingerprints: dict[str, bytes] | None = None
        if strict:
            before = self._before
            # Declared writes: every other field is shared. No declared writes: the
            # branch owns every field it could copy; the uncopyable rest is shared.
            watched = (
                [n for n in before if n not in declared]
                if declared is not None
                else [n for n in branch.shared if n in before]
            )
            if watched:
                self._fingerprints = {n: fingerprint(before[n]) for n in watched}

    def check(self, node_name: str) -> None:
        """:raises StateValidationError: a reassigned field fails validation.
        :raises UndeclaredMutationError: strict mode saw an undeclared write."""
        state = self._branch.state
        # Read-only use: a model's live __dict__ is as good as a copy here.
        after = state.__dict__ if isinstance(state, BaseModel) else _snapshot(state, self._before)
        if self._fingerprints is not None:
            self._check_fingerprints(node_name, after)
        if self._strict and self._declared is not None and isinstance(state, dict):
            added = sorted(n for n in state if n not in self._before and n not in self._declared)
            if added:
                raise UndeclaredMutationError(
                    f"node {node_name} added state key {added[0]!r}, which is not in its "
                    f"writes {sorted(self._declared)}: declare it in `writes`",
                    node=node_name,
                    field=added[0],
                )
        reassigned = [n for n, v in after.items() if v is not self._before[n]]
        if isinstance(state, BaseModel):
            # Reassigned fields, plus the declared writes: those may have changed in
            # place (`state.log.append(5)`), which no identity check sees.
            to_check = reassigned
            if self._declared:
                to_check = sorted(set(reassigned) | (self._declared & after.keys()))
            validator = state.__pydantic_validator__
            for name in to_check:
                try:
                    validator.validate_assignment(state, name, after[name])
                except ValidationError as exc:
                    raise StateValidationError(
                        f"node {node_name} wrote an invalid value to state field {name!r} "
                        f"of {type(state).__name__}: {_first_error(exc)}",
                        node=node_name,
                        field=name,
                    ) from exc
        if reassigned:
            self._branch.owned.update(reassigned)
            # A reassigned field holds the node's own new object: nothing shared left.
            self._branch.shared.difference_update(reassigned)

    def _check_fingerprints(self, node_name: str, after: dict[str, Any]) -> None:
        assert self._fingerprints is not None
        declared, before = self._declared, self._before
        for name, fp in self._fingerprints.items():
            same = after[name] is before[name]
            if declared is None:
                # An uncopyable shared field: reassigning it is fine, changing it not.
                if same and fingerprint(after[name]) != fp:
                    raise UndeclaredMutationError(
                        f"node {node_name} changed state field {name!r} in place; its "
                        f"{type(after[name]).__name__} cannot be copied, so it is shared "
                        "with the fork's state and every branch: put such objects in deps "
                        "(graph.run(deps=...), ctx.deps), not in the state",
                        node=node_name,
                        field=name,
                    )
            elif not same or fingerprint(after[name]) != fp:
                raise UndeclaredMutationError(
                    f"node {node_name} changed state field {name!r}, which is not in "
                    f"its writes {sorted(declared)}: declare it in "
                    "`writes` so the engine isolates it",
                    node=node_name,
                    field=name,
                )

    def rollback(self) -> None:
        """Put back every field the node reassigned, added or deleted (a failed attempt).

        Only identities: in-place changes to declared writes are undone by the caller
        from its copies; in-place changes to shared objects are what strict mode
        reports.
        """
        state, before = self._branch.state, self._before
        if isinstance(state, dict):
            for name in [n for n in state if n not in before]:
                del state[name]
            for name, value in before.items():
                if name not in state or state[name] is not value:
                    state[name] = value
            return
        current = state.__dict__ if isinstance(state, BaseModel) else None
        for name, value in before.items():
            now = current.get(name) if current is not None else getattr(state, name, None)
            if now is not value:
                set_field(state, name, value)


def _first_error(exc: ValidationError) -> str:
    errs = exc.errors()
    return str(errs[0]["msg"]) if errs else str(exc)


def validation_error_field(exc: ValidationError, state: Any) -> str | None:
    """The state field a pydantic ``ValidationError`` raised on assignment names."""
    if exc.title != type(state).__name__:
        return None
    for err in exc.errors():
        loc = err.get("loc") or ()
        if loc:
            return str(loc[0])
    return None
