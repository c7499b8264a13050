"""Parallel blocks a node can return: ``Fork`` and ``Pipeline``, and their policies.

``Fork`` runs branches concurrently, each on an isolated copy of the state, and
joins them by a ``JoinStrategy``; ``Pipeline`` runs nodes whose dependencies the
scheduler infers from their ``reads`` / ``writes``. Both continue at ``then``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

from ._config import check_callable, check_number
from .errors import ConfigurationError
from .node import check_node

__all__ = [
    "BranchStatus",
    "FailureMode",
    "Fork",
    "JoinResult",
    "JoinStrategy",
    "MergeStrategy",
    "Pipeline",
]

StateT = TypeVar("StateT")
T = TypeVar("T")


class MergeStrategy(Enum):
    """How the states of a parallel block's branches become one state."""

    #: The first successful branch by index wins; the others' writes are dropped.
    FIRST_SUCCESS = "first_success"
    #: Every branch must succeed; field-level merge of all branches, in index order.
    ALL_SUCCESS = "all_success"
    #: Most common canonical output wins (ties: lowest index); agreement is reported.
    #: ``Fork(vote_key=...)`` normalizes each output before it is hashed.
    MAJORITY = "majority"


class JoinStrategy(Enum):
    """When a fork's join continues."""

    ALL = "all"  #: every branch has finished
    ANY = "any"  #: the first branch to succeed
    FIRST = "first"  #: the first branch to finish, successful or not
    QUORUM = "quorum"  #: ``quorum`` branches have succeeded
    #: The lowest-index branch whose value passes ``Fork(accept=...)``, decided as soon
    #: as every lower-index branch has finished; deterministic, unlike ANY / FIRST.
    FIRST_ACCEPTED = "first_accepted"


class FailureMode(Enum):
    """What a failed branch does to a join with strategy ALL."""

    #: The first error cancels the running siblings and fails the join.
    FAIL_ALL = "fail_all"
    #: The failed branch is marked; siblings run to the end; then the join fails,
    #: with every finished branch's value kept in the ``JoinError``.
    FAIL_FIRST = "fail_first"
    #: Errors are collected beside results and the join continues.
    CONTINUE = "continue"


class BranchStatus(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _coerce(enum: type[Any], value: Any, what: str) -> Any:
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum[value.upper()]
        except KeyError:
            pass
    names = ", ".join(f"{enum.__name__}.{m.name}" for m in enum)
    raise ConfigurationError(f"unknown {what} {value!r}: use one of {names}")


@dataclass(init=False, eq=False)
class Fork(Generic[StateT]):
    """Run ``branches`` concurrently and continue at ``then`` once the join allows.

    ``branches`` is a list (keys 0..n-1) or a mapping name -> node. ``then=None`` ends
    the path with ``End(list of branch values)``. ``quorum`` (an int k, or a fraction
    of the branches) applies to ``JoinStrategy.QUORUM``. ``timeout`` (seconds)
    cancels unfinished branches, records ``TimeoutError`` for them, then ``on_error``
    applies. ``vote_on`` names the state fields MAJORITY votes on (default: the
    branches' ``End`` values); ``vote_key`` maps each vote (an ``End`` value, or the
    dict of ``vote_on`` fields) to what is compared, e.g. ``str.casefold``, as
    ``dspy.majority`` normalizes answers (``None``: the branch abstains).

    ``accept`` (a predicate on a branch's ``End`` value; it may be ``async``) picks the
    winner under ``JoinStrategy.FIRST_ACCEPTED`` (the lowest-index branch that passes)
    and ``JoinStrategy.ANY`` (the first completion that passes). Only the winner's
    state is merged; a branch whose value is rejected counts like a failed one.

    :raises InvalidNodeError: a branch or ``then`` is not a node.
    :raises ConfigurationError: a bad strategy, quorum or timeout; ``accept`` /
        ``vote_key`` that is not callable or does not fit ``join`` / ``merge``.
    """

    branches: list[Any]
    keys: list[Any]
    then: Any
    join: JoinStrategy
    on_error: FailureMode
    merge: MergeStrategy
    timeout: float | None
    quorum: int | float | None
    vote_on: tuple[str, ...] | None
    vote_key: Callable[[Any], Any] | None
    accept: Callable[[Any], Any] | None

    def __init__(
        self,
        branches: Sequence[Any] | Mapping[str, Any],
        then: Any = None,
        *,
        join: JoinStrategy = JoinStrategy.ALL,
        on_error: FailureMode = FailureMode.FAIL_ALL,
        merge: MergeStrategy = MergeStrategy.ALL_SUCCESS,
        timeout: float | None = None,
        quorum: int | float | None = None,
        vote_on: str | Sequence[str] | None = None,
        vote_key: Callable[[Any], Any] | None = None,
        accept: Callable[[Any], Any] | None = None,
    ) -> None:
        if isinstance(branches, Mapping):
            self.keys = list(branches.keys())
            self.branches = list(branches.values())
        elif isinstance(branches, (str, bytes)) or not isinstance(branches, Sequence):
            raise ConfigurationError(
                f"Fork branches must be a list of nodes or a mapping name -> node, got "
                f"{type(branches).__name__}"
            )
        else:
            self.branches = list(branches)
            self.keys = list(range(len(self.branches)))
        for key, node in zip(self.keys, self.branches, strict=True):
            check_node(node, f"Fork branch {key!r}")
        if then is not None:
            check_node(then, "Fork then=")
        self.then = then
        self.join = _coerce(JoinStrategy, join, "join strategy")
        self.on_error = _coerce(FailureMode, on_error, "failure mode")
        self.merge = _coerce(MergeStrategy, merge, "merge strategy")
        check_number("Fork timeout (seconds)", timeout, strictly_above=True, optional=True)
        self.timeout = timeout
        if quorum is not None and self.join is not JoinStrategy.QUORUM:
            raise ConfigurationError(
                f"quorum={quorum!r} given with join={self.join}: use join=JoinStrategy.QUORUM"
            )
        if self.join is JoinStrategy.QUORUM:
            _quorum_size(quorum, len(self.branches))
        self.quorum = quorum
        if isinstance(vote_on, str):
            vote_on = (vote_on,)  # one field name, not its letters
        self.vote_on = tuple(vote_on) if vote_on else None
        self.vote_key = checked_vote_key("Fork vote_key", vote_key, self.merge)
        self.accept = _checked_accept(accept, self.join, self.merge)

    def __len__(self) -> int:
        return len(self.branches)

    def required_successes(self) -> int:
        """How many successes let the join continue (ALL: every branch)."""
        n = len(self.branches)
        if self.join is JoinStrategy.QUORUM:
            return _quorum_size(self.quorum, n)
        if self.join in (JoinStrategy.ANY, JoinStrategy.FIRST, JoinStrategy.FIRST_ACCEPTED):
            return min(1, n)
        return n

    def __repr__(self) -> str:
        names = ", ".join(type(b).__name__ for b in self.branches[:4])
        more = ", ..." if len(self.branches) > 4 else ""
        return (
            f"Fork([{names}{more}] ({len(self.branches)}), join={self.join.name}, "
            f"on_error={self.on_error.name}, merge={self.merge.name})"
        )


def checked_vote_key(
    where: str, vote_key: Callable[[Any], Any] | None, merge: MergeStrategy
) -> Callable[[Any], Any] | None:
    """``vote_key`` if it fits ``merge`` (``Fork`` and ``merge_states`` both check).

    :raises ConfigurationError: not callable, or given without a MAJORITY merge.
    """
    if vote_key is None:
        return None
    check_callable(where, vote_key)
    if merge is not MergeStrategy.MAJORITY:
        raise ConfigurationError(
            f"vote_key given with merge={merge}: vote_key normalizes the values of a "
            "MAJORITY vote; pass merge=MergeStrategy.MAJORITY, or drop vote_key"
        )
    return vote_key


def _checked_accept(
    accept: Callable[[Any], Any] | None, join: JoinStrategy, merge: MergeStrategy
) -> Callable[[Any], Any] | None:
    """:raises ConfigurationError: FIRST_ACCEPTED without ``accept``; ``accept`` not
    callable, with another join than ANY / FIRST_ACCEPTED, or with a MAJORITY merge."""
    if accept is None:
        if join is JoinStrategy.FIRST_ACCEPTED:
            raise ConfigurationError(
                "JoinStrategy.FIRST_ACCEPTED needs accept=predicate: a callable that "
                "takes a branch's End value and returns True to accept it"
            )
        return None
    check_callable("Fork accept", accept)
    if join not in (JoinStrategy.ANY, JoinStrategy.FIRST_ACCEPTED):
        raise ConfigurationError(
            f"accept given with join={join}: accept applies to ANY and FIRST_ACCEPTED; "
            "use join=JoinStrategy.FIRST_ACCEPTED (the lowest-index branch that passes) "
            "or join=JoinStrategy.ANY (the first branch to finish that passes)"
        )
    if merge is MergeStrategy.MAJORITY:
        raise ConfigurationError(
            "merge=MergeStrategy.MAJORITY votes over the branches, but with accept= the "
            "winner's state alone is merged: leave merge at its default (or use "
            "FIRST_SUCCESS), or vote with join=JoinStrategy.ALL"
        )
    return accept


def _quorum_size(quorum: int | float | None, n: int) -> int:
    """Successes a QUORUM join needs among ``n`` branches.

    :raises ConfigurationError: no quorum, k outside 1..n, a fraction outside (0, 1].
    """
    if quorum is None:
        raise ConfigurationError(
            "JoinStrategy.QUORUM needs quorum=k (an int) or a fraction in (0, 1]"
        )
    if isinstance(quorum, bool):
        raise ConfigurationError(f"quorum must be an int or a fraction, got {quorum!r}")
    if isinstance(quorum, int):
        if not 1 <= quorum <= n:
            raise ConfigurationError(
                f"quorum={quorum} must be within 1..{n} (the fork's branch count)"
            )
        return quorum
    if isinstance(quorum, float) and 0.0 < quorum <= 1.0:
        return math.ceil(quorum * n - 1e-9)
    raise ConfigurationError(f"quorum={quorum!r} must be an int k >= 1 or a fraction in (0, 1]")


@dataclass(init=False, eq=False)
class Pipeline(Generic[StateT]):
    """Run ``nodes`` with dependencies inferred from their ``reads`` / ``writes``.

    Node B depends on an earlier node A when B reads a field A writes, or both
    write a field that has no reducer. A node that declares neither depends on
    everything before it. The result equals running ``nodes`` sequentially in list
    order. ``then=None`` ends the path with ``End(None)``.

    ``order="inferred"`` accepts the nodes in any order and sorts them so that
    producers come before consumers (ties keep list order), checked when built.

    :raises InvalidNodeError: a member or ``then`` is not a node.
    :raises PipelineCycleError: (inferred order) the data dependencies form a cycle.
    :raises WriteConflictError: (inferred order) two unordered writers of a field
        that has no reducer.
    """

    nodes: list[Any]
    then: Any
    order: str

    def __init__(self, nodes: Sequence[Any], then: Any = None, *, order: str = "given") -> None:
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence):
            raise ConfigurationError(f"Pipeline takes a list of nodes, got {type(nodes).__name__}")
        self.nodes = list(nodes)
        for i, node in enumerate(self.nodes):
            check_node(node, f"Pipeline member {i}")
        if then is not None:
            check_node(then, "Pipeline then=")
        self.then = then
        if order not in ("given", "inferred"):
            raise ConfigurationError(f"Pipeline order must be 'given' or 'inferred', got {order!r}")
        self.order = order
        if order == "inferred":
            self.nodes = _inferred(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        names = ", ".join(type(n).__name__ for n in self.nodes)
        return f"Pipeline([{names}], then={type(self.then).__name__ if self.then else None})"


@dataclass(eq=False)
class JoinResult(Generic[T]):
    """What the node after a fork sees as ``ctx.join``.

    ``results`` holds branch values in branch order, ``None`` where a branch failed
    or was cancelled; ``errors`` maps branch key to exception; ``statuses`` tells
    the three apart.

    ``winner`` is the *key* of the branch that decided the join: the accepted branch
    of ``FIRST_ACCEPTED`` (or of ``ANY`` with ``accept``), else the branch whose state
    a FIRST_SUCCESS / MAJORITY merge kept; ``None`` otherwise. ``accepted[i]`` says
    whether ``accept`` passed branch i's value: ``True``, ``False`` (rejected; its
    value stays in ``results``, status SUCCEEDED), or ``None`` where it was not asked
    (no ``accept``, or the branch failed or was cancelled).
    """

    keys: list[Any]
    results: list[T | None]
    errors: dict[Any, BaseException]
    statuses: list[BranchStatus]
    strategy: JoinStrategy = JoinStrategy.ALL
    deterministic: bool = True
    merge: MergeStrategy = MergeStrategy.ALL_SUCCESS
    #: Key of the winning branch (see above); MAJORITY: how many agreed, their share.
    winner: Any = None
    agreement: int | None = None
    agreement_ratio: float | None = None
    timed_out: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Per branch: did ``accept`` pass its value (None: not asked). Empty: all None.
    accepted: list[bool | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.accepted:
            self.accepted = [None] * len(self.keys)

    @property
    def total(self) -> int:
        return len(self.keys)

    @property
    def succeeded(self) -> int:
        return sum(1 for s in self.statuses if s is BranchStatus.SUCCEEDED)

    @property
    def failed(self) -> int:
        return sum(1 for s in self.statuses if s is BranchStatus.FAILED)

    @property
    def cancelled(self) -> int:
        return sum(1 for s in self.statuses if s is BranchStatus.CANCELLED)

    def __getitem__(self, key: Any) -> T | None:
        """The value of the branch with key ``key``."""
        return self.results[self.keys.index(key)]

    def items(self) -> Iterator[tuple[Any, T | None]]:
        return zip(self.keys, self.results, strict=True)

    def successes(self) -> list[T]:
        """Values of the branches that succeeded, in branch order."""
        out: list[T] = []
        for r, s in zip(self.results, self.statuses, strict=True):
            if s is BranchStatus.SUCCEEDED:
                out.append(r)  # type: ignore[arg-type]  # None only where not SUCCEEDED
        return out


def _inferred(nodes: list[Any]) -> list[Any]:
    from ._declared_reducers import reducers_of
    from ._plan import declared_io, infer_order, state_type_of

    state_type = state_type_of(type(nodes[0])) if nodes else None
    reduced = frozenset(reducers_of(state_type)) if state_type is not None else frozenset()
    order = infer_order([(type(n).__name__, *declared_io(n)) for n in nodes], reduced)
    return [nodes[i] for i in order]
