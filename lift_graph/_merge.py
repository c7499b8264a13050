"""Merging branch states (pure).

Branch changes are always taken against the common base and applied in branch
index order, never completion order, so a merge is a function of the branches'
final states alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ._canonical import canonical_hash
from ._state import MISSING, FieldChange, field_names, get_field, put_field, shallow_copy
from ._text import short_repr
from .blocks import Fork, MergeStrategy, checked_vote_key
from .errors import CanonicalizationError, ConfigurationError, MergeError
from .reducers import Reducer

__all__ = [
    "BranchOutcome",
    "MergeOutcome",
    "apply_sequential",
    "merge_changes",
    "merge_fork",
    "merge_outcomes",
    "reduce_changes",
]


@dataclass(slots=True)
class BranchOutcome:
    """What one finished branch left behind."""

    key: Any
    index: int
    succeeded: bool
    value: Any = None
    state: Any = None
    changes: dict[str, FieldChange] = field(default_factory=dict)
    has_value: bool = False


@dataclass(slots=True)
class MergeOutcome:
    state: Any
    changed: set[str]
    used: list[int]
    winner: int | None = None
    agreement: int | None = None
    agreement_ratio: float | None = None
    vote_hash: str | None = None


def _list_appends(before: Any, afters: Sequence[Any]) -> list[Any] | None:
    if not isinstance(before, list):
        return None
    n = len(before)
    out = list(before)
    for after in afters:
        if not isinstance(after, list) or len(after) < n or after[:n] != before:
            return None
        out.extend(after[n:])
    return out


def _dict_union(name: str, before: Any, afters: Sequence[tuple[Any, Any]]) -> dict[Any, Any] | None:
    """Union of the keys each branch added or changed; None: not all only did that.

    :raises MergeError: two branches wrote one key, even with equal values (as for
        a scalar field: two writers of one value are a conflict, not a merge).
    """
    if not isinstance(before, dict):
        return None
    merged = dict(before)
    setter: dict[Any, Any] = {}
    for key, after in afters:
        if not isinstance(after, dict) or any(k not in after for k in before):
            return None
        for k, v in after.items():
            if k in before and before[k] == v:
                continue
            if k in setter:
                raise MergeError(
                    f"branches {setter[k]!r} and {key!r} both wrote key {k!r} of state "
                    f"field {name!r}: declare a reducer with Annotated[..., merge_dict] "
                    "(the later branch wins) or Annotated[..., same_value] (equal values "
                    "expected), or write distinct keys",
                    field=name,
                    branches=[setter[k], key],
                )
            setter[k] = key
            merged[k] = v
    return merged


def _show_keys(keys: Sequence[Any], limit: int = 6) -> str:
    if len(keys) <= limit:
        return repr(list(keys))
    return f"{list(keys[:limit])!r} and {len(keys) - limit} more"


def _conflict(name: str, writes: Sequence[tuple[Any, Any]]) -> MergeError:
    keys = [k for k, _ in writes]
    shown = ", ".join(f"branch {k!r}: {short_repr(a)}" for k, a in writes[:3])
    return MergeError(
        f"branches {_show_keys(keys)} all wrote state field {name!r} ({shown}"
        f"{', ...' if len(writes) > 3 else ''}); without a reducer only one branch of a "
        "fork may write a field, even when the values agree (three `count += 1` must "
        "not give 1): declare a reducer on the field, e.g. Annotated[int, add] to sum "
        "increments or Annotated[..., same_value] when equal values are expected, or "
        "let one branch write it",
        field=name,
        branches=keys,
    )


def _deleted(name: str, keys: Sequence[Any], afters: Sequence[Any]) -> Any:
    """MISSING when every writer deleted ``name``.

    :raises MergeError: some branches deleted it and others wrote it.
    """
    gone = [k for k, a in zip(keys, afters, strict=True) if a is MISSING]
    if len(gone) == len(keys):
        return MISSING
    wrote = [k for k, a in zip(keys, afters, strict=True) if a is not MISSING]
    raise MergeError(
        f"branches {_show_keys(gone)} deleted state key {name!r} while branches "
        f"{_show_keys(wrote)} wrote it: let one branch decide, or write a value instead "
        "of deleting",
        field=name,
        branches=list(keys),
    )


def _no_missing(changes: Sequence[tuple[Any, Any]]) -> Sequence[tuple[Any, Any]]:
    """A key the state lacked reaches a reducer as None: no value yet."""
    if any(before is MISSING for before, _ in changes):
        return [(None if b is MISSING else b, a) for b, a in changes]
    return changes


def reduce_changes(
    name: str,
    reducer: Reducer,
    start: Any,
    keys: Sequence[Any],
    changes: Sequence[tuple[Any, Any]],
) -> Any:
    """``reducer.combine_many(start, changes)``; ``keys`` name the writers in errors.

    :raises MergeError: the reducer raised (the original is ``__cause__``).
    """
    try:
        return reducer.combine_many(None if start is MISSING else start, _no_missing(changes))
    except MergeError as exc:
        # A reducer that refuses (same_value) names the writers by position.
        culprits = [keys[p] for p in exc.branches if isinstance(p, int) and 0 <= p < len(keys)]
        raise MergeError(
            f"branches {_show_keys(culprits or keys)} conflict on state field {name!r} "
            f"(reducer {reducer.name}): {exc}",
            field=name,
            branches=culprits or list(keys),
        ) from exc
    except Exception as exc:  # a reducer is user code: whatever it raises is a merge failure
        raise MergeError(
            f"reducer {reducer.name} failed on state field {name!r} merging branches "
            f"{_show_keys(keys)}: {type(exc).__name__}: {exc}",
            field=name,
            branches=list(keys),
        ) from exc


def _merge_field(
    name: str, keys: Sequence[Any], changes: Sequence[FieldChange], reducer: Reducer | None
) -> Any:
    """Combine several branches' changes to one field (they share ``before``)."""
    afters = [c.after for c in changes]
    if any(a is MISSING for a in afters):
        return _deleted(name, keys, afters)
    before = changes[0].before
    if reducer is not None:
        return reduce_changes(name, reducer, before, keys, changes)
    if len(afters) == 1:
        return afters[0]
    appended = _list_appends(before, afters)
    if appended is not None:
        return appended
    writes = list(zip(keys, afters, strict=True))
    united = _dict_union(name, before, writes)
    if united is not None:
        return united
    raise _conflict(name, writes)


def merge_changes(
    base: Any,
    changes: Sequence[tuple[Any, Mapping[str, FieldChange]]],
    reducers: Mapping[str, Reducer],
) -> tuple[Any, set[str]]:
    """Fork semantics: every branch changed the common ``base``; merge by index order.

    :raises MergeError: several branches wrote a field without a reducer (and the
        writes are not list appends or disjoint dict keys), one deleted a key another
        wrote, or a reducer raised.
    """
    # Per field: the writers' keys and their changes, in branch order.
    by_field: dict[str, tuple[list[Any], list[FieldChange]]] = {}
    for key, branch_changes in changes:
        for name, change in branch_changes.items():
            entry = by_field.get(name)
            if entry is None:
                entry = by_field[name] = ([], [])
            entry[0].append(key)
            entry[1].append(change)
    merged = shallow_copy(base)
    values = {
        name: _merge_field(name, keys, field_changes, reducers.get(name))
        for name, (keys, field_changes) in by_field.items()
    }
    _put_all(merged, values)
    return merged, set(by_field)


def _put_all(state: Any, values: Mapping[str, Any]) -> None:
    """Write merged values (``MISSING``: delete); a merged write counts as set, so
    ``model_dump(exclude_unset=True)`` keeps it."""
    for name, value in values.items():
        put_field(state, name, value)
    if isinstance(state, BaseModel):
        state.__pydantic_fields_set__.update(n for n, v in values.items() if v is not MISSING)


def apply_sequential(
    base: Any,
    changes: Sequence[Mapping[str, FieldChange]],
    reducers: Mapping[str, Reducer],
    *,
    keys: Sequence[Any] | None = None,
) -> tuple[Any, set[str]]:
    """Pipeline semantics: apply each member's change in list order.

    Without a reducer a later writer depended on the earlier one (it saw its write),
    so its value replaces, a deletion included; with one, its change is folded in,
    all of a field's changes in one ``combine_many`` call. Errors name members by
    ``keys`` (default: their position in ``changes``).

    :raises MergeError: a reducer raised.
    """
    merged = shallow_copy(base)
    current: dict[str, Any] = {}
    # Reduced fields: the value the pending changes fold into, their members' keys
    # and the changes.
    folds: dict[str, tuple[Any, list[Any], list[FieldChange]]] = {}
    for position, member in enumerate(changes):
        member_key = position if keys is None else keys[position]
        for name, change in member.items():
            if reducers.get(name) is None or change.after is MISSING:
                folds.pop(name, None)
                current[name] = change.after
                continue
            fold = folds.get(name)
            if fold is None:
                start = current.get(name, change.before)
                fold = folds[name] = (start, [], [])
                current[name] = start  # keeps the field's first-write position
            fold[1].append(member_key)
            fold[2].append(change)
    for name, (start, keys_of, field_changes) in folds.items():
        current[name] = reduce_changes(name, reducers[name], start, keys_of, field_changes)
    _put_all(merged, current)
    return merged, set(current)


def _vote_payload(outcome: BranchOutcome, vote_fields: Sequence[str] | None) -> Any:
    if vote_fields:
        return {f: get_field(outcome.state, f) for f in vote_fields}
    if outcome.has_value:
        return outcome.value
    return {name: change.after for name, change in sorted(outcome.changes.items())}


def _check_vote_fields(base: Any, vote_fields: Sequence[str] | None) -> Sequence[str] | None:
    """:raises ConfigurationError: a vote field the state does not have."""
    if not vote_fields:
        return None
    if isinstance(vote_fields, str):
        vote_fields = (vote_fields,)
    names = field_names(base)
    if names and not isinstance(base, dict):
        unknown = [f for f in vote_fields if f not in names]
        if unknown:
            raise ConfigurationError(
                f"vote fields {unknown!r} are not fields of state {type(base).__name__}; "
                f"its fields are {sorted(names)!r}"
            )
    return vote_fields


def merge_outcomes(
    base: Any,
    outcomes: Sequence[BranchOutcome],
    strategy: MergeStrategy,
    reducers: Mapping[str, Reducer],
    *,
    require_all: bool = True,
    vote_fields: Sequence[str] | None = None,
    vote_key: Callable[[Any], Any] | None = None,
) -> MergeOutcome:
    """Merge finished branches by ``strategy`` (outcomes in branch index order).

    ``vote_key`` (MAJORITY only) maps each branch's vote before it is hashed.

    :raises MergeError: no branch succeeded, ALL_SUCCESS with a failed branch while
        ``require_all``, conflicting writes, or ``vote_key`` raised.
    :raises ConfigurationError: ``strategy`` is not a ``MergeStrategy``, a vote
        field is not a field of the state, or ``vote_key`` is not callable or given
        without MAJORITY.
    """
    strategy = coerce_strategy(strategy)
    vote_fields = _check_vote_fields(base, vote_fields)
    checked_vote_key("vote_key", vote_key, strategy)
    ok = [o for o in outcomes if o.succeeded]
    if strategy is MergeStrategy.ALL_SUCCESS:
        failed = [o.key for o in outcomes if not o.succeeded]
        if failed and require_all:
            raise MergeError(
                f"ALL_SUCCESS needs every branch to succeed; failed: {failed!r}. Use "
                "FIRST_SUCCESS or MAJORITY, or on_error=CONTINUE to merge the successes",
                branches=failed,
            )
        state, changed = merge_changes(base, [(o.key, o.changes) for o in ok], reducers)
        return MergeOutcome(state, changed, [o.index for o in ok])
    if not ok:
        raise MergeError(
            f"{strategy.name} found no successful branch among {len(outcomes)}",
            branches=[o.key for o in outcomes],
        )
    if strategy is MergeStrategy.FIRST_SUCCESS:
        winner = ok[0]
        state, changed = merge_changes(base, [(winner.key, winner.changes)], reducers)
        return MergeOutcome(state, changed, [winner.index], winner=winner.index)
    # MAJORITY: the most common canonical hash; ties go to the group seen first,
    # i.e. the one holding the lowest branch index.
    groups = _vote_groups(ok, vote_fields, vote_key)
    best_hash, group = max(groups.items(), key=lambda kv: len(kv[1]))
    winner = group[0]
    state, changed = merge_changes(base, [(winner.key, winner.changes)], reducers)
    return MergeOutcome(
        state,
        changed,
        [o.index for o in group],
        winner=winner.index,
        agreement=len(group),
        agreement_ratio=len(group) / len(ok),
        vote_hash=best_hash,
    )


def merge_fork(
    base: Any,
    fork: Fork[Any],
    ok: Sequence[int],
    values: Sequence[Any],
    changes: Sequence[dict[str, FieldChange] | None],
    states: Sequence[Any],
    reducers: Mapping[str, Reducer],
    winner: int | None = None,
) -> MergeOutcome:
    """The state after ``fork``'s join; ``ok`` are the successful branches' indices.

    An accept-join (``winner`` given) merges its winner alone, whatever ``fork.merge``
    says (ALL_SUCCESS and FIRST_SUCCESS agree on one branch; MAJORITY is refused when
    the fork is built). ``MergeOutcome.winner`` is an index: the caller maps it to a key.

    :raises MergeError: conflicting writes, a failed vote.
    """
    keys = fork.keys
    if winner is not None:
        state, changed = merge_changes(base, [(keys[winner], changes[winner] or {})], reducers)
        return MergeOutcome(state, changed, [winner], winner=winner)
    if fork.merge is MergeStrategy.ALL_SUCCESS:
        # The common case, kept lean for huge forks: only branches that wrote
        # something take part, and no per-branch object is built.
        writers = [(keys[i], c) for i in ok if (c := changes[i])]
        state, changed = merge_changes(base, writers, reducers)
        return MergeOutcome(state, changed, list(ok))
    outcomes = [
        BranchOutcome(
            key=keys[i],
            index=i,
            succeeded=True,
            value=values[i],
            state=states[i],
            changes=changes[i] or {},
            has_value=True,
        )
        for i in ok
    ]
    return merge_outcomes(
        base,
        outcomes,
        fork.merge,
        reducers,
        require_all=False,
        vote_fields=fork.vote_on,
        vote_key=fork.vote_key,
    )


def _vote_groups(
    ok: Sequence[BranchOutcome],
    vote_fields: Sequence[str] | None,
    vote_key: Callable[[Any], Any] | None,
) -> dict[str, list[BranchOutcome]]:
    """Successful branches grouped by the canonical hash of their (normalized) vote,
    groups in order of their lowest branch index.

    A branch whose ``vote_key`` gives ``None`` abstains, as ``dspy.majority`` ignores a
    completion its ``normalize`` maps to None; if every branch abstains, None is the
    one vote they all cast (dspy does the same).

    :raises MergeError: a vote has no canonical form, or ``vote_key`` raised.
    """
    groups: dict[str, list[BranchOutcome]] = {}
    abstained: list[BranchOutcome] = []
    for o in ok:
        vote = _vote_payload(o, vote_fields)
        if vote_key is not None:
            vote = _normalized_vote(o, vote, vote_key)
            if vote is None:
                abstained.append(o)
                continue
        groups.setdefault(_vote_hash(o, vote), []).append(o)
    if not groups and abstained:
        groups[_vote_hash(abstained[0], None)] = abstained
    return groups


def _normalized_vote(o: BranchOutcome, vote: Any, vote_key: Callable[[Any], Any]) -> Any:
    """:raises MergeError: ``vote_key`` raised (the original is ``__cause__``)."""
    try:
        return vote_key(vote)
    except Exception as exc:  # vote_key is user code: whatever it raises fails the vote
        raise MergeError(
            f"MAJORITY vote_key raised on branch {o.key!r} (vote {short_repr(vote)}): "
            f"{type(exc).__name__}: {exc}",
            branches=[o.key],
        ) from exc


def _vote_hash(o: BranchOutcome, vote: Any) -> str:
    """:raises MergeError: the vote has no canonical form."""
    try:
        return canonical_hash(vote)
    except CanonicalizationError as exc:
        raise MergeError(
            f"MAJORITY cannot vote on branch {o.key!r}: {exc}", branches=[o.key]
        ) from exc


def coerce_strategy(strategy: Any) -> MergeStrategy:
    """:raises ConfigurationError: not a MergeStrategy (or the name of one)."""
    if isinstance(strategy, MergeStrategy):
        return strategy
    if isinstance(strategy, str):
        try:
            return MergeStrategy[strategy.upper()]
        except KeyError:
            pass
    raise ConfigurationError(
        f"unknown merge strategy {strategy!r}: use one of "
        f"{', '.join('MergeStrategy.' + s.name for s in MergeStrategy)}"
    )
