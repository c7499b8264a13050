"""Forks and pipelines a node class declares, read statically from its ``run`` source.

Return annotations say *that* a node forks (``-> Fork[State]``), not into which
classes: the branches are built in ``run``'s body. This module parses that body
(``inspect.getsource`` + ``ast``) for ``Fork(...)`` / ``Pipeline(...)`` calls and
returned lists of node constructor calls, and resolves constructor names against
the graph's node classes. Nothing is executed. A ``run`` whose source is not
available (defined through ``exec``) yields ``None``: the caller draws a placeholder.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .blocks import FailureMode, Fork, JoinStrategy, MergeStrategy, Pipeline

__all__ = ["Block", "Member", "declared_blocks"]

#: ``then=`` / a branch that ends the path: ``End``'s node in the diagram.
END = "End"


@dataclass(frozen=True, slots=True)
class Member:
    """A branch of a fork or a member of a pipeline: a node class of the graph."""

    cls: str
    #: the branch's key in a dict fork (``Fork({"a": A()})``); None for a list
    key: str | None = None
    #: built by a comprehension: as many instances as the iterable has items
    many: bool = False


@dataclass(frozen=True, slots=True)
class Block:
    """A ``Fork`` / ``Pipeline`` (or a returned list: a fork) found in ``run``."""

    kind: str  # "fork" | "pipeline"
    #: None: the members are only known at run time (a variable, a helper call)
    members: tuple[Member, ...] | None
    #: class names ``then=`` may be (``End`` for ``then=None``); empty: unknown
    then: tuple[str, ...]
    #: the join strategy and non-default options, e.g. ``QUORUM 2, merge MAJORITY``
    label: str
    inferred_order: bool = False


_FORK_ARGS = ("branches", "then")
_PIPELINE_ARGS = ("nodes", "then")


def declared_blocks(cls: type, by_name: Mapping[str, type]) -> list[Block] | None:
    """The blocks ``cls.run`` builds, in source order; None when its source is
    unavailable or does not parse."""
    run = getattr(cls, "run", None)
    if run is None:
        return None
    func = inspect.unwrap(run)
    try:
        body = _parse(inspect.getsource(func))
    except (OSError, TypeError, SyntaxError):
        return None
    fn = body[0] if body else None
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name != func.__name__:
        return None  # the file changed since it was imported: its lines are not this run
    scope = _Scope(fn, getattr(func, "__globals__", {}), by_name, cls.__name__)
    return scope.blocks()


def _parse(source: str) -> list[ast.stmt]:
    """The statements of a method's source, which is indented as in its class."""
    try:
        return ast.parse(textwrap.dedent(source)).body
    except SyntaxError:
        # A string literal continued at column 0 leaves nothing to dedent.
        wrapped = ast.parse("if 1:\n" + source).body[0]
        return wrapped.body if isinstance(wrapped, ast.If) else []


class _Scope:
    """One ``run`` body: its local assignments, and names resolved through its module."""

    def __init__(
        self,
        fn: ast.FunctionDef | ast.AsyncFunctionDef,
        module: Mapping[str, Any],
        by_name: Mapping[str, type],
        owner: str,
    ) -> None:
        self.fn = fn
        self.module = module
        self.by_name = by_name
        self.classes = {id(c): name for name, c in by_name.items()}
        self.owner = owner
        self.bound = _bindings(fn)

    def blocks(self) -> list[Block]:
        found: list[tuple[int, int, Block]] = []
        for node in ast.walk(self.fn):
            block = None
            if isinstance(node, ast.Call):  # a Fork / Pipeline built anywhere in run
                callee = self._resolve(node.func)
                if callee is Fork:
                    block = self._fork(node)
                elif callee is Pipeline:
                    block = self._pipeline(node)
            elif isinstance(node, ast.Return) and node.value is not None:
                block = self._returned_list(node.value)
            if block is not None and isinstance(node, (ast.Call, ast.Return)):
                found.append((node.lineno, node.col_offset, block))
        return [b for _, _, b in sorted(found, key=lambda f: (f[0], f[1]))]

    # -- blocks -------------------------------------------------------------------
    def _fork(self, call: ast.Call) -> Block:
        args = _arguments(call, _FORK_ARGS)
        members = self._members(args["branches"]) if "branches" in args else None
        return Block("fork", members, self._then(args.get("then")), self._join_label(args))

    def _pipeline(self, call: ast.Call) -> Block:
        args = _arguments(call, _PIPELINE_ARGS)
        members = self._members(args["nodes"]) if "nodes" in args else None
        order = args.get("order")
        inferred = isinstance(order, ast.Constant) and order.value == "inferred"
        return Block("pipeline", members, self._then(args.get("then")), "", inferred)

    def _returned_list(self, expr: ast.expr) -> Block | None:
        """``return [A(), B()]`` (a list or tuple of nodes is a fork joined by ALL)."""
        kinds = (ast.List, ast.Tuple, ast.ListComp)
        shapes = [e for e in self._alternatives(expr) if isinstance(e, kinds)]
        if not shapes:
            return None
        members: list[Member] = []
        for shape in shapes:
            members.extend(self._members(shape) or ())
        if not members:
            return None  # a list of something else: the router refuses it at run time
        return Block("fork", tuple(members), (END,), JoinStrategy.ALL.name)

    def _alternatives(
        self, expr: ast.expr, seen: frozenset[str] = frozenset()
    ) -> Iterator[ast.expr]:
        """``expr``, through conditional expressions and local names."""
        if isinstance(expr, ast.IfExp):
            yield from self._alternatives(expr.body, seen)
            yield from self._alternatives(expr.orelse, seen)
        elif isinstance(expr, ast.Name) and expr.id in self.bound and expr.id not in seen:
            for value in self.bound[expr.id].values:
                yield from self._alternatives(value, seen | {expr.id})
        else:
            yield expr

    # -- members ------------------------------------------------------------------
    def _members(
        self, expr: ast.expr, seen: frozenset[str] = frozenset()
    ) -> tuple[Member, ...] | None:
        """The node classes a branches / nodes expression builds; None if unknown."""
        out: list[Member] = []
        unknown = False
        for part in self._parts(expr, seen):
            if part is None:
                unknown = True
            else:
                out.append(part)
        if unknown and not out:
            return None
        return tuple(out)

    def _parts(self, expr: ast.expr, seen: frozenset[str]) -> Iterator[Member | None]:
        if isinstance(expr, (ast.List, ast.Tuple, ast.Set)):
            for elt in expr.elts:
                if isinstance(elt, ast.Starred):
                    yield from self._parts(elt.value, seen)
                else:
                    yield from self._each(elt, None, False)
        elif isinstance(expr, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            yield from self._each(expr.elt, None, True)
        elif isinstance(expr, ast.Dict):
            for dict_key, value in zip(expr.keys, expr.values, strict=True):
                if dict_key is None:  # {**others}
                    yield from self._parts(value, seen)
                else:
                    yield from self._each(value, _key_text(dict_key), False)
        elif isinstance(expr, ast.DictComp):
            yield from self._each(expr.value, None, True)
        elif isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            yield from self._parts(expr.left, seen)
            yield from self._parts(expr.right, seen)
        elif isinstance(expr, ast.IfExp):
            yield from self._parts(expr.body, seen)
            yield from self._parts(expr.orelse, seen)
        elif isinstance(expr, ast.Name) and expr.id in self.bound and expr.id not in seen:
            binding = self.bound[expr.id]
            for value in binding.values:
                yield from self._parts(value, seen | {expr.id})
            for key, item in binding.items:
                yield from self._each(item, key, False)
            for more in binding.extended:
                yield from self._parts(more, seen | {expr.id})
        else:
            yield None

    def _each(self, expr: ast.expr, key: str | None, many: bool) -> Iterator[Member | None]:
        names = self._node_classes(expr)
        if not names:
            yield None
        for name in names:
            yield Member(name, key, many)

    def _then(self, expr: ast.expr | None) -> tuple[str, ...]:
        if expr is None or (isinstance(expr, ast.Constant) and expr.value is None):
            return (END,)
        out: list[str] = []
        for alt in self._alternatives(expr):
            if isinstance(alt, ast.Constant) and alt.value is None:
                out.append(END)
            else:
                out.extend(self._node_classes(alt))
        return tuple(dict.fromkeys(out))

    def _node_classes(self, expr: ast.expr) -> list[str]:
        """Graph class names ``expr`` may construct (``A(...)``, ``self``, ``type(self)()``)."""
        out: list[str] = []
        for alt in self._alternatives(expr):
            if isinstance(alt, ast.Name) and alt.id == "self":
                out.append(self.owner)
            elif isinstance(alt, ast.Call):
                if _is_type_of_self(alt.func):
                    out.append(self.owner)
                else:
                    name = self.classes.get(id(self._resolve(alt.func)))
                    if name is not None:
                        out.append(name)
        return out

    # -- names and options ----------------------------------------------------------
    def _resolve(self, expr: ast.expr) -> Any:
        """What a (dotted) name refers to in ``run``'s module; graph classes by name
        as a fallback (a class defined in a function, say)."""
        if isinstance(expr, ast.Name):
            if expr.id in self.module:
                return self.module[expr.id]
            return self.by_name.get(expr.id, _builtin(expr.id))
        if isinstance(expr, ast.Attribute):
            base = self._resolve(expr.value)
            if base is not None:
                found = getattr(base, expr.attr, None)
                if found is not None:
                    return found
            return self.by_name.get(expr.attr)
        return None

    def _join_label(self, args: Mapping[str, ast.expr]) -> str:
        join = self._enum(args.get("join"), JoinStrategy, JoinStrategy.ALL)
        parts = [join.name if join is not None else "join set at run time"]
        if join is JoinStrategy.QUORUM and "quorum" in args:
            parts[0] += f" {_literal(args['quorum'])}"
        if join is JoinStrategy.ANY and "accept" in args:
            parts[0] += " accepted"
        for option, enum, default in (
            ("merge", MergeStrategy, MergeStrategy.ALL_SUCCESS),
            ("on_error", FailureMode, FailureMode.FAIL_ALL),
        ):
            value = self._enum(args.get(option), enum, default)
            if value is not default:
                parts.append(f"{option} {value.name if value is not None else '?'}")
        if "timeout" in args and not _is_none(args["timeout"]):
            parts.append(f"timeout {_literal(args['timeout'])}s")
        return ", ".join(parts)

    def _enum(self, expr: ast.expr | None, enum: type[Enum], default: Enum) -> Enum | None:
        """The member ``expr`` names (``JoinStrategy.ANY``, ``"any"``); None if dynamic."""
        if expr is None:
            return default
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return enum.__members__.get(expr.value.upper())
        value = self._resolve(expr)
        if isinstance(value, enum):
            return value
        if isinstance(expr, ast.Attribute) and expr.attr in enum.__members__:
            return enum.__members__[expr.attr]
        return None


@dataclass(slots=True)
class _Binding:
    values: list[ast.expr]
    #: ``name[key] = node`` stores
    items: list[tuple[str | None, ast.expr]]
    #: ``name.append(x)`` (as ``[x]``), ``name.extend(xs)``, ``name += xs``
    extended: list[ast.expr]


def _bindings(fn: ast.AST) -> dict[str, _Binding]:
    """Local names of ``fn`` and what is assigned / appended to them."""
    out: dict[str, _Binding] = {}

    def get(name: str) -> _Binding:
        return out.setdefault(name, _Binding([], [], []))

    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    get(target.id).values.append(node.value)
                elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                    get(target.value.id).items.append((_key_text(target.slice), node.value))
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            if isinstance(node.target, ast.Name):
                get(node.target.id).values.append(node.value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            get(node.target.id).extended.append(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and node.args:
                if node.func.attr == "append":
                    get(owner.id).extended.append(ast.List(elts=[node.args[-1]], ctx=ast.Load()))
                elif node.func.attr == "extend":
                    get(owner.id).extended.append(node.args[0])
    return out


def _arguments(call: ast.Call, positional: tuple[str, ...]) -> dict[str, ast.expr]:
    args = {name: value for name, value in zip(positional, call.args, strict=False)}
    args.update((k.arg, k.value) for k in call.keywords if k.arg is not None)
    return args


def _key_text(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Constant):
        return str(expr.value)
    return None


def _literal(expr: ast.expr) -> str:
    if isinstance(expr, ast.Constant):
        return str(expr.value)
    return ast.unparse(expr)


def _is_none(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Constant) and expr.value is None


def _is_type_of_self(func: ast.expr) -> bool:
    """``type(self)`` or ``self.__class__``: a node building another of its class."""
    if isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "type":
        return (
            len(func.args) == 1 and isinstance(func.args[0], ast.Name) and func.args[0].id == "self"
        )
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "__class__"
        and isinstance(func.value, ast.Name)
        and func.value.id == "self"
    )


def _builtin(name: str) -> Any:
    import builtins

    return getattr(builtins, name, None)
