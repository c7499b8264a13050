"""How a ``DSPyNode`` binds to the state (pure: no dspy import, no I/O).

A node's signature says which inputs it needs and which outputs it makes. Inputs bind
first from the node's own dataclass fields, then from same-named state fields; so
``reads`` are the inputs no field of the node provides. ``outputs`` maps a signature
output to the state field it is written to; ``writes`` are those target fields.
Everything here is computed per class (for ``Graph`` validation and diagrams) and per
instance (what a run uses), and cached by the configuration that determines it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import ConfigurationError

__all__ = [
    "INSTANCE_MODULE",
    "OPTIONS",
    "Binding",
    "binding_of",
    "check_outputs",
    "module_key",
    "own_fields",
    "signature_fields",
]

#: Where a module whose configuration cannot be hashed is kept, on its node.
INSTANCE_MODULE = "_lift_module"

#: Per-instance settings every DSPyNode constructor accepts as keywords.
OPTIONS: tuple[str, ...] = ("signature", "lm", "outputs", "program", "module_type")

_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)")


def _parse_names(part: str) -> list[str]:
    """Field names of one side of ``"a, b: list[str] -> c"`` (types may hold commas)."""
    items: list[str] = []
    depth = 0
    current = ""
    for ch in part:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [m.group(1) for m in map(_NAME.match, items) if m]


def signature_fields(signature: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(inputs, outputs)`` of a DSPy signature class or a ``"a, b -> c"`` string.

    :raises ConfigurationError: neither form.
    """
    if isinstance(signature, str):
        if "->" not in signature:
            raise ConfigurationError(
                f"DSPy signature string {signature!r} has no '->': write 'inputs -> outputs'"
            )
        left, right = signature.split("->", 1)
        return tuple(_parse_names(left)), tuple(_parse_names(right))
    inputs = getattr(signature, "input_fields", None)
    outputs = getattr(signature, "output_fields", None)
    if isinstance(inputs, dict) and isinstance(outputs, dict):
        return tuple(inputs), tuple(outputs)
    raise ConfigurationError(
        f"signature {signature!r} is neither a dspy.Signature class nor an "
        "'inputs -> outputs' string"
    )


def _is_signature(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, type) and isinstance(getattr(value, "input_fields", None), dict)
    )


def signature_of(target: Any) -> Any:
    """The signature of a node class or instance: its own ``signature``, else its
    ``program``'s (a ``dspy.Predict`` has one), else None (not known here)."""
    sig = getattr(target, "signature", None)
    if _is_signature(sig):
        return sig
    inner = getattr(getattr(target, "program", None), "signature", None)
    return inner if _is_signature(inner) else None


_OWN_FIELDS: dict[type, frozenset[str]] = {}


def own_fields(cls: type) -> frozenset[str]:
    """The dataclass fields of a node class that can bind signature inputs."""
    names = _OWN_FIELDS.get(cls)
    if names is None:
        found = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        names = _OWN_FIELDS[cls] = frozenset(found) - frozenset(OPTIONS)
    return names


def check_outputs(node: str, outputs: Any, signature_outputs: tuple[str, ...]) -> None:
    """:raises ConfigurationError: ``outputs`` is not a mapping of signature outputs
    to state field names."""
    if not isinstance(outputs, Mapping):
        raise ConfigurationError(
            f"node {node}: `outputs` must map signature outputs to state fields, e.g. "
            f'{{"summary": "summaries"}}, got {outputs!r} ({type(outputs).__name__})'
        )
    for source, target in outputs.items():
        if source not in signature_outputs:
            raise ConfigurationError(
                f"node {node}: `outputs` maps {source!r}, which is not an output of its "
                f"signature (outputs: {list(signature_outputs)!r})"
            )
        if not isinstance(target, str) or not target:
            raise ConfigurationError(
                f"node {node}: `outputs[{source!r}]` must be a state field name, got {target!r}"
            )
    seen: dict[str, str] = {}
    for source in signature_outputs:
        target = outputs.get(source, source)
        if target in seen:
            raise ConfigurationError(
                f"node {node}: outputs {seen[target]!r} and {source!r} would both write state "
                f"field {target!r}: map them to different fields"
            )
        seen[target] = source


def _per_instance_only(cls: type) -> bool:
    """A dataclass field ``signature`` / ``outputs`` without a class default (a
    ``default_factory``, or required): its value exists only on instances."""
    fields = getattr(cls, "__dataclass_fields__", None)
    if not fields:
        return False
    for name in ("signature", "outputs"):
        f = fields.get(name)
        if f is not None and f.default is dataclasses.MISSING:
            return True
    return False


class Binding(NamedTuple):
    """Where a node's signature fields come from and go to."""

    #: Signature inputs, in signature order.
    inputs: tuple[str, ...]
    #: Inputs bound from the node's own fields (the rest come from the state).
    bound: frozenset[str]
    #: ``(output, state field, through the field's reducer?)`` per signature output.
    targets: tuple[tuple[str, str, bool], ...]
    reads: frozenset[str]
    writes: frozenset[str]


_BINDINGS: dict[tuple[Any, ...], Binding | None] = {}


def binding_of(target: Any) -> Binding | None:
    """The binding of a node class or instance; None when no signature is known.

    :raises ConfigurationError: a malformed signature or ``outputs``.
    """
    cls: type = target if isinstance(target, type) else type(target)
    if cls is target and _per_instance_only(cls):
        return None
    sig = signature_of(target)
    if sig is None:
        return None
    outputs = getattr(target, "outputs", None)
    if outputs is not None and not isinstance(outputs, Mapping):
        # A dataclass field without a class default leaves its descriptor on the
        # class: unknown until an instance exists.
        outputs = None if isinstance(target, type) else outputs
    out_key = tuple(outputs.items()) if isinstance(outputs, Mapping) else outputs
    key = (cls, sig, out_key)
    try:
        return _BINDINGS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable mapping value: computed, just not cached
        return _bind(cls, sig, outputs)
    if len(_BINDINGS) > 4096:  # signatures made in a loop: do not keep them all
        _BINDINGS.clear()
    binding = _BINDINGS[key] = _bind(cls, sig, outputs)
    return binding


def _bind(cls: type, sig: Any, outputs: Any) -> Binding:
    inputs, outs = signature_fields(sig)
    mapped: Mapping[str, str] = {}
    if outputs is not None:
        check_outputs(cls.__name__, outputs, outs)
        mapped = outputs
    bound = own_fields(cls) & frozenset(inputs)
    targets = tuple((o, mapped.get(o, o), o in mapped) for o in outs)
    return Binding(
        inputs=inputs,
        bound=bound,
        targets=targets,
        reads=frozenset(i for i in inputs if i not in bound),
        writes=frozenset(t for _, t, _ in targets),
    )


def module_key(node: Any, binding: Binding | None) -> tuple[Any, ...] | None:
    """What a node's built module depends on, or None when that cannot be hashed.

    The class (its ``build_module``), the signature, ``module_type``, and every own
    attribute (dataclass fields and whatever ``__init__`` stored) except bound inputs,
    which change per call, and the LM, which is passed per call: two instances with
    equal keys can share one module.
    """
    cls = type(node)
    skip = set(binding.bound) if binding is not None else set()
    skip.update(OPTIONS)
    names = set(own_fields(cls)) | {
        n for n in getattr(node, "__dict__", ()) if n != INSTANCE_MODULE
    }
    config: list[Any] = [cls, signature_of(node), getattr(node, "module_type", None)]
    for name in sorted(names - skip):
        config.append((name, getattr(node, name, None)))
    key = tuple(config)
    try:
        hash(key)
    except TypeError:  # an unhashable value: the module is cached on the instance
        return None
    return key
