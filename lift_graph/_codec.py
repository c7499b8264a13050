"""JSON forms of what a journal holds: node instances, returns, state fields (pure).

Every value is dumped through the pydantic type it is declared with (a node's
dataclass fields, the state model's field annotations, ``End[T]`` in a node's
``run`` annotation) and validated back through the same type, so a resumed run
gets the objects an uninterrupted run had. A value whose type is not declared
must be plain JSON (str, numbers, bools, None, lists, dicts with str keys);
anything else is refused when it is written, naming the node and the field,
never discovered at resume. Nothing here is pickled or imported from a row:
classes come from the graph, callables only from modules already imported.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from ._plan import _flatten
from ._state import field_names, get_field
from .blocks import FailureMode, Fork, JoinStrategy, MergeStrategy, Pipeline
from .errors import CheckpointError, IncompatibleRunError
from .node import End

__all__ = ["Codec", "dump_plain", "end_type", "is_plain", "type_name"]

_PLAIN_ATOMS = (str, int, float, bool, type(None))
_ADAPTERS: dict[Any, TypeAdapter[Any] | None] = {}
_CONFIG = ConfigDict(arbitrary_types_allowed=True)
#: Per-instance attributes that hold live objects (an LM, a compiled program).
_LIVE_OPTIONS = frozenset({"lm", "program"})


def type_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def is_plain(value: Any) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged (and so needs no type)."""
    cls = type(value)
    if cls in _PLAIN_ATOMS:
        return cls is not float or (value == value and value not in (float("inf"), -float("inf")))
    if cls is list:
        return all(is_plain(v) for v in value)
    if cls is dict:
        return all(type(k) is str and is_plain(v) for k, v in value.items())
    return False


def _adapter(tp: Any) -> TypeAdapter[Any] | None:
    """A cached ``TypeAdapter`` for ``tp``; None when ``tp`` says nothing (Any)."""
    if tp is Any or tp is object:
        return None
    try:
        return _ADAPTERS[tp]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation: build one each time
        return TypeAdapter(tp, config=_config_for(tp))
    adapter = TypeAdapter(tp, config=_config_for(tp))
    if len(_ADAPTERS) > 4096:
        _ADAPTERS.clear()
    _ADAPTERS[tp] = adapter
    return adapter


def _config_for(tp: Any) -> ConfigDict | None:
    # A model or dataclass carries its own config; pydantic refuses a second one.
    if isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp)):
        return None
    return _CONFIG


def _dump(value: Any, tp: Any, what: str) -> Any:
    """``value`` as JSON data, through ``tp`` when known, else only if plain."""
    adapter = None
    if tp is not None:
        try:
            adapter = _adapter(tp)
        except Exception as exc:
            raise CheckpointError(
                f"{what} has type {tp!r}, which has no JSON form ({exc}); use a pydantic "
                "model, a dataclass or plain data"
            ) from exc
    if adapter is None:
        if is_plain(value):
            return value
        raise CheckpointError(
            f"{what} holds a {type(value).__name__} ({_short(value)}) but its type is not "
            "declared, so it could not be loaded back as it is; annotate it (a state "
            "field's type, End[T] in run's return annotation) or use plain JSON data"
        )
    try:
        return adapter.dump_python(value, mode="json", warnings="error")
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{what} holds a {type(value).__name__} ({_short(value)}) that has no JSON "
            f"form: {exc}; use a pydantic model, a dataclass or plain data"
        ) from exc


def dump_plain(value: Any, what: str) -> Any:
    """``value`` if it is plain JSON data; else ``CheckpointError`` naming ``what``."""
    return _dump(value, None, what)


def _load(data: Any, tp: Any, what: str) -> Any:
    adapter = _adapter(tp) if tp is not None else None
    if adapter is None:
        return data
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise IncompatibleRunError(
            f"{what} in the journal no longer validates as {tp!r}: {exc}; the type "
            "changed since the run was written"
        ) from exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_PLANS: dict[type, tuple[tuple[str, Any], ...]] = {}
_END_TYPES: dict[type, Any] = {}
_FIELD_TYPES: dict[Any, dict[str, Any]] = {}
_FINGERPRINTS: dict[Any, str] = {}


def _memo(cache: dict[Any, Any], key: Any, make: Callable[[Any], Any]) -> Any:
    """``make(key)``, computed once per key: type resolution is slow, and every
    run of a graph asks again for the same classes."""
    try:
        return cache[key]
    except KeyError:
        pass
    value = make(key)
    if len(cache) > 4096:  # classes made in a loop: do not keep them all alive
        cache.clear()
    cache[key] = value
    return value


def _node_plan(cls: type) -> tuple[tuple[str, Any], ...]:
    """A dataclass node's ``(field, annotation)`` pairs, resolved once per class."""
    plan: tuple[tuple[str, Any], ...] = _memo(_PLANS, cls, _make_plan)
    return plan


def _make_plan(cls: type) -> tuple[tuple[str, Any], ...]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable: dump values untyped
        hints = {}
    fields = dataclasses.fields(cls)
    return tuple((f.name, hints.get(f.name)) for f in fields if f.init)


def end_type(cls: type) -> Any:
    """``T`` of ``End[T]`` in ``cls.run``'s return annotation; None when not declared."""
    run = getattr(cls, "run", None)
    try:
        hints = typing.get_type_hints(run) if run is not None else {}
    except Exception:  # noqa: BLE001 - unresolvable forward references: undeclared
        return None
    found = [
        typing.get_args(tp)[0]
        for tp in _flatten(hints.get("return"))
        if typing.get_origin(tp) is End and typing.get_args(tp)
    ]
    if len(found) != 1 or found[0] is Any:
        return None
    return found[0]


def _callable_ref(fn: Callable[..., Any] | None, what: str) -> str | None:
    if fn is None:
        return None
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if (
        module is None
        or qualname is None
        or "<" in qualname
        or _resolve(module, qualname) is not fn
    ):
        raise CheckpointError(
            f"{what} is {fn!r}, which cannot be found again by name after a restart; "
            "use a function defined at module level"
        )
    return f"{module}:{qualname}"


def _resolve(module: str, qualname: str) -> Any:
    """An object by name, only from a module already imported (a row never imports)."""
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


class Codec:
    """Dumps and loads the values of one graph's runs."""

    def __init__(self, by_name: Mapping[str, type], state_type: type) -> None:
        self.by_name = by_name
        self.state_type = state_type
        self._field_types: dict[str, Any] = _memo(_FIELD_TYPES, state_type, _field_types)

    # -- nodes ------------------------------------------------------------------
    def dump_node(self, node: Any, where: str) -> dict[str, Any]:
        cls = type(node)
        name = cls.__name__
        data: dict[str, Any] = {}
        fields: tuple[str, ...] = ()
        if dataclasses.is_dataclass(node):
            plan = _node_plan(cls)
            fields = tuple(f for f, _ in plan)
            for f, tp in plan:
                value = getattr(node, f)
                if type(value) in _PLAIN_ATOMS and type(value) is not float:
                    data[f] = value  # the JSON form of str / int / bool / None is itself
                else:
                    data[f] = _dump(value, tp, f"field {f!r} of node {name} ({where})")
        elif isinstance(node, BaseModel):
            fields = tuple(type(node).model_fields)
            data = node.model_dump(mode="json")
        extra: dict[str, Any] = {}
        for attr, value in getattr(node, "__dict__", {}).items():
            if attr in fields or attr.startswith("_"):
                continue  # private: caches (a built DSPy module), not configuration
            if attr in _LIVE_OPTIONS and value is not None:
                raise CheckpointError(
                    f"node {name} ({where}) carries {attr}={_short(value)} per instance; a "
                    "live object (and the credentials it may hold) is never written to a "
                    f"store: set {attr} on the class or configure it globally when running "
                    "with a store",
                    node=name,
                    field=attr,
                )
            if isinstance(value, type) or inspect.isfunction(value):
                # A per-instance class or function (DSPyNode's module_type): by name.
                where_ref = f"attribute {attr!r} of node {name} ({where})"
                extra[attr] = {"$ref": _callable_ref(value, where_ref)}
            else:
                extra[attr] = _dump(value, None, f"attribute {attr!r} of node {name}")
        out: dict[str, Any] = {"cls": name, "data": data}
        if extra:
            out["extra"] = extra
        return out

    def load_node(self, d: Mapping[str, Any]) -> Any:
        name = d["cls"]
        cls = self.node_class(name)
        data = d.get("data", {})
        if dataclasses.is_dataclass(cls) or issubclass(cls, BaseModel):
            node = _load(data, cls, f"node {name}")
        else:
            node = cls.__new__(cls)
        for attr, value in d.get("extra", {}).items():
            if isinstance(value, dict) and set(value) == {"$ref"}:
                value = _load_ref(value["$ref"])
            object.__setattr__(node, attr, value)
        return node

    def node_class(self, name: str) -> type:
        cls = self.by_name.get(name)
        if cls is None:
            raise IncompatibleRunError(
                f"the journal names node class {name}, which this graph does not have: "
                f"resume with the graph the run was started with (or add {name} back)",
                node=name,
            )
        return cls

    # -- returns ----------------------------------------------------------------
    def dump_return(self, node: Any, out: Any, where: str) -> dict[str, Any]:
        if isinstance(out, (list, tuple)):
            out = Fork(list(out))  # as routing turns it into one
        if out is None:
            return {"t": "none"}
        if isinstance(out, End):
            cls = type(node)
            return {"t": "end", "value": self.dump_end(cls, out.value, where)}
        if isinstance(out, Fork):
            return self._dump_fork(out, where)
        if isinstance(out, Pipeline):
            return {
                "t": "pipeline",
                "nodes": [self.dump_node(n, where) for n in out.nodes],
                "then": self._dump_opt(out.then, where),
            }
        return {"t": "node", "node": self.dump_node(out, where)}

    def load_return(self, d: Mapping[str, Any]) -> Any:
        t = d["t"]
        if t == "none":
            return None
        if t == "node":
            return self.load_node(d["node"])
        if t == "end":
            raise CheckpointError("an End return is loaded with load_end")  # pragma: no cover
        if t == "pipeline":
            return Pipeline(
                [self.load_node(n) for n in d["nodes"]],
                self._load_opt(d.get("then")),
                order="given",
            )
        if t == "fork":
            return self._load_fork(d)
        raise CheckpointError(f"unknown return kind {t!r} in the journal")

    def dump_end(self, cls: type, value: Any, where: str) -> Any:
        # A node class may give its End values their own JSON form (DSPyNode does,
        # for dspy.Prediction).
        custom = getattr(cls, "end_to_json", None)
        if callable(custom):
            return custom(value)
        return _dump(value, self._end_type(cls), f"End value of node {cls.__name__} ({where})")

    def load_end(self, cls: type, data: Any) -> Any:
        custom = getattr(cls, "end_from_json", None)
        if callable(custom):
            return custom(data)
        return _load(data, self._end_type(cls), f"End value of node {cls.__name__}")

    def _end_type(self, cls: type) -> Any:
        return _memo(_END_TYPES, cls, end_type)

    def _dump_opt(self, node: Any, where: str) -> dict[str, Any] | None:
        return None if node is None else self.dump_node(node, where)

    def _load_opt(self, d: Mapping[str, Any] | None) -> Any:
        return None if d is None else self.load_node(d)

    def _dump_fork(self, fork: Fork[Any], where: str) -> dict[str, Any]:
        mapping = fork.keys != list(range(len(fork.branches)))
        if mapping and not all(type(k) is str for k in fork.keys):
            raise CheckpointError(
                f"the Fork returned at {where} has branch keys {fork.keys!r}; a journal "
                "keeps str keys (or a list of branches)"
            )
        return {
            "t": "fork",
            "branches": [self.dump_node(b, where) for b in fork.branches],
            "keys": list(fork.keys) if mapping else None,
            "then": self._dump_opt(fork.then, where),
            "join": fork.join.value,
            "on_error": fork.on_error.value,
            "merge": fork.merge.value,
            "timeout": fork.timeout,
            "quorum": fork.quorum,
            "vote_on": list(fork.vote_on) if fork.vote_on else None,
            "vote_key": _callable_ref(fork.vote_key, f"Fork vote_key at {where}"),
            "accept": _callable_ref(fork.accept, f"Fork accept at {where}"),
        }

    def _load_fork(self, d: Mapping[str, Any]) -> Fork[Any]:
        nodes = [self.load_node(b) for b in d["branches"]]
        keys = d.get("keys")
        branches: Any = dict(zip(keys, nodes, strict=True)) if keys is not None else nodes
        return Fork(
            branches,
            self._load_opt(d.get("then")),
            join=JoinStrategy(d["join"]),
            on_error=FailureMode(d["on_error"]),
            merge=MergeStrategy(d["merge"]),
            timeout=d.get("timeout"),
            quorum=d.get("quorum"),
            vote_on=d.get("vote_on"),
            vote_key=_load_ref(d.get("vote_key")),
            accept=_load_ref(d.get("accept")),
        )

    # -- state ------------------------------------------------------------------
    def dump_fields(self, state: Any, names: Any, node: str, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        types = self._field_types
        for name in names:
            out[name] = _dump(
                get_field(state, name),
                types.get(name),
                f"state field {name!r} written by node {node} ({where})",
            )
        return out

    def load_fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        types = self._field_types
        return {
            name: _load(value, types.get(name), f"state field {name!r}")
            for name, value in data.items()
        }

    def dump_state(self, state: Any) -> dict[str, Any]:
        return self.dump_fields(state, field_names(state), "(input)", "the run's state")

    def load_state(self, data: Mapping[str, Any]) -> Any:
        tp = self.state_type
        if tp is dict or not isinstance(tp, type):
            return dict(self.load_fields(data))
        if issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp):
            return _load(dict(data), tp, f"state {tp.__name__}")
        return dict(self.load_fields(data))

    def state_fingerprint(self) -> str:
        """What must not change between writing a run and resuming it."""
        fingerprint: str = _memo(_FINGERPRINTS, self.state_type, _fingerprint)
        return fingerprint


def _fingerprint(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return json.dumps(tp.model_json_schema(), sort_keys=True)
    fields = _memo(_FIELD_TYPES, tp, _field_types)
    return repr(sorted((k, repr(v)) for k, v in fields.items()))


def _load_ref(ref: str | None) -> Any:
    if ref is None:
        return None
    module, _, qualname = ref.partition(":")
    obj = _resolve(module, qualname)
    if not callable(obj):
        raise IncompatibleRunError(
            f"the journal refers to {ref}, which is not an imported callable: import "
            f"{module} before resuming"
        )
    return obj


def _field_types(tp: Any) -> dict[str, Any]:
    if not isinstance(tp, type):
        return {}
    if issubclass(tp, BaseModel):
        return {n: f.annotation for n, f in tp.model_fields.items()}
    try:
        hints = typing.get_type_hints(tp, include_extras=False)
    except Exception:  # noqa: BLE001 - unresolvable: fields are dumped untyped
        return {}
    if dataclasses.is_dataclass(tp):
        return {f.name: hints.get(f.name) for f in dataclasses.fields(tp)}
    if typing.is_typeddict(tp):
        return dict(hints)
    return {}
