"""Static planning (pure): node edges, graph validation, pipeline dependencies."""

from __future__ import annotations

import heapq
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from .blocks import Fork, Pipeline
from .errors import (
    GraphDefinitionError,
    InvalidNodeError,
    MissingInputError,
    PipelineCycleError,
    UnknownFieldError,
    UnknownNodeError,
    WriteConflictError,
)
from .node import BaseNode, End, check_async_run, validate_node_attributes

__all__ = [
    "NodeEdges",
    "PipelinePlan",
    "declared_io",
    "infer_order",
    "node_edges",
    "plan_pipeline",
    "state_type_of",
]


@dataclass(frozen=True, slots=True)
class NodeEdges:
    """What a node class's ``run`` annotation says it may return."""

    targets: tuple[type, ...]
    ends: bool
    forks: bool
    pipelines: bool
    known: bool


def _flatten(tp: Any) -> Iterable[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(tp):
            yield from _flatten(arg)
    else:
        yield tp


def node_edges(cls: type) -> NodeEdges:
    """Edges from ``run``'s return annotation, as pydantic-graph reads them.

    An annotation that cannot be resolved yields ``known=False`` (no static edges).
    """
    run = getattr(cls, "run", None)
    try:
        hints = typing.get_type_hints(run) if run is not None else {}
    except Exception:  # noqa: BLE001 - unresolvable forward references
        return NodeEdges((), False, False, False, False)
    ret = hints.get("return")
    if ret is None:
        return NodeEdges((), False, False, False, False)
    targets: list[type] = []
    ends = forks = pipelines = False
    for tp in _flatten(ret):
        origin = typing.get_origin(tp) or tp
        if origin is End:
            ends = True
        elif origin is Fork or origin in (list, tuple, Sequence):
            forks = True
        elif origin is Pipeline:
            pipelines = True
        elif isinstance(origin, type) and issubclass(origin, BaseNode) and origin not in targets:
            targets.append(origin)
    return NodeEdges(tuple(targets), ends, forks, pipelines, True)


def state_type_of(cls: type) -> type | None:
    """The ``StateT`` of ``class X(BaseNode[StateT])``, if concrete.

    Type variables are resolved through generic intermediates, so
    ``class Ask(DSPyNode[State])`` (where ``DSPyNode(BaseNode[StateT])``) gives State.
    """
    return _resolve_state(cls, {}, set())


def _resolve_state(klass: type, env: dict[Any, Any], seen: set[type]) -> type | None:
    if klass in seen:
        return None
    seen.add(klass)
    # Only this class's own bases: ``getattr`` would return an inherited
    # ``__orig_bases__`` whose type variables mean something else here.
    for base in klass.__dict__.get("__orig_bases__", klass.__bases__):
        origin = typing.get_origin(base) or base
        if not (isinstance(origin, type) and issubclass(origin, BaseNode)):
            continue
        args = tuple(env.get(a, a) for a in typing.get_args(base))
        if origin is BaseNode:
            if args and isinstance(args[0], type) and args[0] is not Any:
                return args[0]
            continue
        params = getattr(origin, "__parameters__", ())
        found = _resolve_state(origin, dict(zip(params, args, strict=False)), seen)
        if found is not None:
            return found
    return None


def _state_fields(state_type: type) -> frozenset[str] | None:
    if issubclass(state_type, BaseModel):
        return frozenset(state_type.model_fields)
    import dataclasses

    if dataclasses.is_dataclass(state_type):
        return frozenset(f.name for f in dataclasses.fields(state_type))
    return None


def validate_node_classes(nodes: Sequence[Any]) -> dict[str, type]:
    """Check the classes a graph is built from; returns them by name.

    :raises InvalidNodeError: an entry is not a BaseNode subclass, its ``run`` is a
        plain ``def``, or two share a name.
    :raises ConfigurationError: a class attribute (``provider``, ``reads``, ``writes``,
        ``retry``, ``timeout``) is invalid.
    :raises UnknownNodeError: a return annotation names a class not in ``nodes``.
    :raises UnknownFieldError: ``reads`` / ``writes`` name a field the state lacks.
    """
    by_name: dict[str, type] = {}
    for obj in nodes:
        if not (isinstance(obj, type) and issubclass(obj, BaseNode)):
            hint = " (pass the class, not an instance)" if isinstance(obj, BaseNode) else ""
            raise InvalidNodeError(f"Graph(nodes=...) takes BaseNode subclasses; got {obj!r}{hint}")
        name = obj.__name__
        check_async_run(obj, "Graph(nodes=...)")
        validate_node_attributes(obj)
        if name in by_name and by_name[name] is not obj:
            raise InvalidNodeError(
                f"two node classes are named {name!r} ({by_name[name].__module__} and "
                f"{obj.__module__}): node names must be unique in a graph"
            )
        by_name[name] = obj
    registered = set(by_name.values())
    for cls in by_name.values():
        for target in node_edges(cls).targets:
            if target not in registered:
                raise UnknownNodeError(
                    f"node {cls.__name__} may return {target.__name__}, which is not in "
                    f"this graph: add {target.__name__} to Graph(nodes=[...])",
                    node=target.__name__,
                )
        state_type = state_type_of(cls)
        if state_type is None:
            continue
        fields = _state_fields(state_type)
        if fields is None:
            continue
        for attr in ("reads", "writes"):
            for fname in sorted(getattr(cls, attr, None) or ()):
                if fname not in fields:
                    error = MissingInputError if attr == "reads" else UnknownFieldError
                    raise error(
                        f"node {cls.__name__} declares {attr} {fname!r}, but state "
                        f"{state_type.__name__} has no such field (fields: {sorted(fields)})",
                        node=cls.__name__,
                        field=fname,
                    )
    return by_name


def _field_set(node: Any, attr: str) -> frozenset[str] | None:
    # A set of str or None: `validate_node_attributes` refused anything else when the
    # node was checked (Fork / Pipeline member, Graph class, run start).
    value = getattr(node, attr, None)
    if value is None or isinstance(value, frozenset):
        return value
    return frozenset(value)


def declared_io(node: Any) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """``(reads, writes)`` of a node *instance*; ``None`` means "everything".

    Read through the instance, as the runner reads ``writes``: a dataclass field
    may override the class default, and the pipeline's dependencies must follow
    what the node will actually touch. A set becomes a frozenset.
    """
    return _field_set(node, "reads"), _field_set(node, "writes")


@dataclass(frozen=True, slots=True)
class PipelinePlan:
    """Dependencies of a pipeline's members (indices into its node list)."""

    deps: tuple[tuple[int, ...], ...]
    dependents: tuple[tuple[int, ...], ...]
    ancestors: tuple[tuple[int, ...], ...]
    priority: tuple[int, ...]
    #: position of each member in ``priority`` (computed once, used per completion)
    rank: tuple[int, ...]

    def ready_order(self, ready: Iterable[int]) -> list[int]:
        return sorted(ready, key=self.rank.__getitem__)


def _depends(
    later_reads: frozenset[str] | None,
    later_writes: frozenset[str] | None,
    earlier_writes: frozenset[str] | None,
    reduced: frozenset[str],
) -> bool:
    # None means "everything": such a node is ordered against every other.
    if earlier_writes is None or later_reads is None or later_writes is None:
        return True
    if later_reads & earlier_writes:
        return True
    return bool((later_writes & earlier_writes) - reduced)


@lru_cache(maxsize=1024)
def plan_pipeline(
    members: tuple[tuple[frozenset[str] | None, frozenset[str] | None], ...],
    reduced: frozenset[str],
) -> PipelinePlan:
    """Infer dependencies from ``(reads, writes)`` per member, in list order.

    B (later) depends on A (earlier) when B reads what A writes, or both write a
    field without a reducer. Reading what a later node writes needs no edge: each
    node works on its own view, built from its ancestors' writes only.
    """
    n = len(members)
    deps: list[tuple[int, ...]] = []
    for j in range(n):
        reads_j, writes_j = members[j]
        deps.append(
            tuple(i for i in range(j) if _depends(reads_j, writes_j, members[i][1], reduced))
        )
    dependents: list[list[int]] = [[] for _ in range(n)]
    for j, ds in enumerate(deps):
        for i in ds:
            dependents[i].append(j)
    ancestors: list[tuple[int, ...]] = []
    for j in range(n):
        acc: set[int] = set()
        for i in deps[j]:
            acc.add(i)
            acc.update(ancestors[i])
        ancestors.append(tuple(sorted(acc)))
    # Critical path first: the longest chain of dependents below a node starts first.
    height = [1] * n
    for i in range(n - 1, -1, -1):
        if dependents[i]:
            height[i] = 1 + max(height[j] for j in dependents[i])
    priority = tuple(sorted(range(n), key=lambda i: (-height[i], i)))
    rank = [0] * n
    for position, member in enumerate(priority):
        rank[member] = position
    return PipelinePlan(
        tuple(deps), tuple(tuple(d) for d in dependents), tuple(ancestors), priority, tuple(rank)
    )


def infer_order(
    members: Sequence[tuple[str, frozenset[str] | None, frozenset[str] | None]],
    reduced: frozenset[str],
) -> list[int]:
    """Order ``(name, reads, writes)`` members so producers come before consumers.

    Ties keep list order. Every member must declare ``reads`` and ``writes``.

    :raises GraphDefinitionError: a member declares no reads / writes.
    :raises PipelineCycleError: the data dependencies form a cycle (names the nodes).
    :raises WriteConflictError: two writers of a field without a reducer are not
        ordered by any data dependency, so the result would depend on timing.
    """
    for name, reads, writes in members:
        if reads is None or writes is None:
            raise GraphDefinitionError(
                f"node {name} declares no reads / writes: an inferred-order pipeline "
                "needs both on every member (or use the given list order)"
            )
    n = len(members)
    succ: list[set[int]] = [set() for _ in range(n)]
    why: dict[tuple[int, int], str] = {}
    for a, (_, _, writes_a) in enumerate(members):
        for b, (_, reads_b, _) in enumerate(members):
            if a != b:
                shared = sorted((writes_a or frozenset()) & (reads_b or frozenset()))
                if shared:
                    succ[a].add(b)
                    why[(a, b)] = shared[0]
    indegree = [0] * n
    for a in range(n):
        for b in succ[a]:
            indegree[b] += 1
    ready = [i for i in range(n) if indegree[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        a = heapq.heappop(ready)
        order.append(a)
        for b in succ[a]:
            indegree[b] -= 1
            if indegree[b] == 0:
                heapq.heappush(ready, b)
    if len(order) < n:
        cycle = _find_cycle(succ, [i for i in range(n) if indegree[i] > 0])
        steps = [
            f"{members[a][0]} -({why[(a, b)]})-> {members[b][0]}"
            for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)
        ]
        raise PipelineCycleError(
            "pipeline dependencies form a cycle: " + ", ".join(steps) + "; break it by "
            "splitting a node or by giving the pipeline an explicit list order",
            cycle=[members[i][0] for i in cycle],
        )
    reach = [_reachable(succ, i) for i in range(n)]
    for a in range(n):
        for b in range(a + 1, n):
            common = sorted(
                ((members[a][2] or frozenset()) & (members[b][2] or frozenset())) - reduced
            )
            if common and b not in reach[a] and a not in reach[b]:
                raise WriteConflictError(
                    f"nodes {members[a][0]} and {members[b][0]} both write state field "
                    f"{common[0]!r}, which has no reducer, and no data dependency orders "
                    "them: declare a reducer with Annotated[...] or make one read the other's "
                    "output",
                    nodes=[members[a][0], members[b][0]],
                    field=common[0],
                )
    return order


def _reachable(succ: list[set[int]], start: int) -> set[int]:
    seen: set[int] = set()
    stack = list(succ[start])
    while stack:
        x = stack.pop()
        if x not in seen:
            seen.add(x)
            stack.extend(succ[x])
    return seen


def _find_cycle(succ: list[set[int]], stuck: list[int]) -> list[int]:
    """One cycle among the ``stuck`` nodes (each has a stuck predecessor)."""
    stuck_set = set(stuck)
    pred: dict[int, int] = {}
    for a in stuck:
        for b in succ[a]:
            if b in stuck_set:
                pred.setdefault(b, a)
    x = stuck[0]
    seen: list[int] = []
    while x not in seen:
        seen.append(x)
        x = pred[x]
    cycle = seen[seen.index(x) :]
    cycle.reverse()
    return cycle
