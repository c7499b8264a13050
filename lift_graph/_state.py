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
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from .errors import GraphDefinitionError, StateValidationError, UndeclaredMutationError
from .reducers import Reducer, as_reducer

__all__ = [
    "MISSING",
    "Branch",
    "FieldChange",
    "copy_value",
    "field_names",
    "fingerprint",
    "get_field",
    "put_field",
    "reducers_for",
    "reducers_of",
    "reducers_of_types",
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


def _fields_of_type(cls: Any) -> tuple[str, ...]:
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
        names = _FIELDS[cls] = _fields_of_type(cls)
    return names


_QUALIFIERS = (typing.Required, typing.NotRequired)


def _hint_reducer(hint: Any) -> Reducer | None:
    """The reducer in a hint's ``Annotated`` metadata, looking through a TypedDict's
    ``Required[...]`` / ``NotRequired[...]`` wrapper on either side of it."""
    found: Reducer | None = None
    while hint is not None:
        for meta in getattr(hint, "__metadata__", ()):
            r = as_reducer(meta)
            if r is not None:
                found = r
        origin = typing.get_origin(hint)
        if origin is typing.Annotated or origin in _QUALIFIERS:
            hint = typing.get_args(hint)[0]
        else:
            hint = None
    return found


@lru_cache(maxsize=512)
def _reducers_of_type(cls: Any) -> dict[str, Reducer]:
    out: dict[str, Reducer] = {}
    if issubclass(cls, BaseModel):
        for name, info in cls.model_fields.items():
            for meta in info.metadata:
                r = as_reducer(meta)
                if r is not None:
                    out[name] = r
        return out
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolved forward refs: no reducers then
        return out
    # A TypedDict's keys are its annotations; a dataclass's fields are listed.
    names = tuple(hints) if typing.is_typeddict(cls) else _fields_of_type(cls)
    for name in names:
        r = _hint_reducer(hints.get(name))
        if r is not None:
            out[name] = r
    return out


def reducers_of(state_or_type: Any) -> dict[str, Reducer]:
    """Reducers declared with ``Annotated`` on the state model, by field name.

    A plain ``dict`` state carries no annotations: its reducers come from the
    TypedDict its nodes declare (``reducers_of_types`` / ``reducers_for``).
    """
    cls = state_or_type if isinstance(state_or_type, type) else type(state_or_type)
    if cls is dict:
        return {}
    return _reducers_of_type(cls)


def _same_reducer(a: Reducer, b: Reducer) -> bool:
    # Each declaration wraps a plain callable (operator.add) in a Reducer of its own.
    return a is b or (type(a) is type(b) is Reducer and a._fn is b._fn)


def reducers_of_types(state_types: Iterable[Any]) -> dict[str, Reducer]:
    """Reducers the TypedDict state types among ``state_types`` declare.

    At run time a TypedDict state is a plain ``dict``, so a graph collects these from
    its node classes' ``BaseNode[State]`` parameters.

    :raises GraphDefinitionError: two state types declare different reducers for
        one key.
    """
    out: dict[str, Reducer] = {}
    owner: dict[str, type] = {}
    for tp in state_types:
        if not (isinstance(tp, type) and typing.is_typeddict(tp)):
            continue
        for name, reducer in _reducers_of_type(tp).items():
            if name in out and not _same_reducer(out[name], reducer):
                raise GraphDefinitionError(
                    f"state key {name!r} has reducer {out[name].name} in "
                    f"{owner[name].__name__} but {reducer.name} in {tp.__name__}: "
                    "declare one reducer per key across the graph's state types"
                )
            out[name] = reducer
            owner[name] = tp
    return out


def reducers_for(state: Any, dict_reducers: Mapping[str, Reducer]) -> Mapping[str, Reducer]:
    """The reducers of ``state``: declared on its model, or for a plain ``dict``
    state, ``dict_reducers`` (those of the TypedDict its nodes declare)."""
    if type(state) is dict:
        return dict_reducers
    return reducers_of(state)


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
    if isinstance(state, BaseModel):
        return _model_shallow_copy(state)
    if isinstance(state, dict):
        return dict(state)
    if dataclasses.is_dataclass(state):
        return copy.copy(state)
    return copy.deepcopy(state)


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

    @classmethod
    def fork(cls, base: Any) -> Branch:
        return cls(base=base, state=shallow_copy(base))

    def own(self, names: Iterable[str] | None) -> None:
        """Deep-copy the fields a node may write (``None``: every field)."""
        if self.all_owned:
            return
        if names is None:
            names = field_names(self.state)
            self.all_owned = True
        state, owned = self.state, self.owned
        for name in names:
            if name in owned:
                continue
            owned.add(name)
            value = get_field(state, name)
            if type(value) not in _ATOMS:
                set_field(state, name, copy_value(value))

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

    __slots__ = ("_before", "_fingerprints", "_branch", "_declared")

    def __init__(self, branch: Branch, declared: frozenset[str] | None, strict: bool) -> None:
        self._branch = branch
        self._declared = declared
        names = field_names(branch.state)
        self._before = _snapshot(branch.state, names)
        self._fingerprints: dict[str, bytes] | None = None
        if strict and declared is not None:
            self._fingerprints = {
                n: fingerprint(v) for n, v in self._before.items() if n not in declared
            }

    def check(self, node_name: str) -> None:
        """:raises StateValidationError: a reassigned field fails validation.
        :raises UndeclaredMutationError: strict mode saw an undeclared write."""
        state = self._branch.state
        # Read-only use: a model's live __dict__ is as good as a copy here.
        after = state.__dict__ if isinstance(state, BaseModel) else _snapshot(state, self._before)
        if self._fingerprints is not None:
            for name, fp in self._fingerprints.items():
                if after[name] is not self._before[name] or fingerprint(after[name]) != fp:
                    raise UndeclaredMutationError(
                        f"node {node_name} changed state field {name!r}, which is not in "
                        f"its writes {sorted(self._declared or ())}: declare it in "
                        "`writes` so the engine isolates it",
                        node=node_name,
                        field=name,
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
