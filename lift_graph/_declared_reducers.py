"""Which reducers a state type declares (pure).

Reducers are declared with ``Annotated`` on the state's fields: on a pydantic model,
a dataclass or a ``TypedDict``. A TypedDict state is a plain ``dict`` at run time, so
its reducers come from the node classes' ``BaseNode[State]`` parameter instead.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from ._state import fields_of_type
from .errors import GraphDefinitionError
from .reducers import Reducer, as_reducer

__all__ = ["reducers_for", "reducers_of", "reducers_of_types"]

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
    hints = _type_hints(cls)
    # A TypedDict's keys are its annotations; a dataclass's fields are listed.
    names = tuple(hints) if typing.is_typeddict(cls) else fields_of_type(cls)
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


def _type_hints(cls: type) -> dict[str, Any]:
    """``cls``'s annotations, resolved, with their ``Annotated`` metadata.

    When some cannot be resolved (``from __future__ import annotations`` with a name
    that only exists under ``TYPE_CHECKING``, say), the others still count; but an
    unresolvable annotation that mentions ``Annotated`` may declare a reducer, and
    ignoring it would turn a sum into a merge conflict far from the cause.

    :raises GraphDefinitionError: naming the type, the field and the annotation.
    """
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:  # noqa: BLE001 - resolved field by field below
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = dict(vars(module)) if module is not None else {}
        for name, hint in vars(klass).get("__annotations__", {}).items():
            if isinstance(hint, typing.ForwardRef):  # how a TypedDict keeps a string
                hint = hint.__forward_arg__
            # A quoted annotation under `from __future__ import annotations` is a
            # string of a string: evaluate until it is not one.
            for _ in range(3):
                if not isinstance(hint, str):
                    break
                try:
                    hint = eval(hint, namespace, dict(vars(klass)))
                except Exception as exc:
                    if "Annotated" in hint:
                        raise GraphDefinitionError(
                            f"state {cls.__name__}: the annotation of field {name!r} "
                            f"({hint!r}) cannot be resolved ({type(exc).__name__}: {exc}), "
                            "so its reducer cannot be read: import the names it uses at "
                            f"module level in {klass.__module__}"
                        ) from exc
                    break
            if not isinstance(hint, str):
                hints[name] = hint
    return hints
