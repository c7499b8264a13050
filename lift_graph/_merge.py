"""Merging branch states (pure).

Branch changes are always taken against the common base and applied in branch
index order, never completion order, so a merge is a function of the branches'
final states alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ._canonical import canonical_hash
from ._state import FieldChange, field_names, get_field, set_field, shallow_copy
from .blocks import MergeStrategy
from .errors import CanonicalizationError, ConfigurationError, MergeError
from .reducers import Reducer

__all__ = ["BranchOutcome", "MergeOutcome", "apply_sequential", "merge_changes", "merge_outcomes"]


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
            if k in setter and merged[k] != v:
                raise MergeError(
                    f"branches {setter[k]!r} and {key!r} wrote different values to key "
                    f"{k!r} of state field {name!r}: declare a reducer with "
                    f"Annotated[..., merge_dict] or write distinct keys",
                    field=name,
                    branches=[setter[k], key],
                )
            setter[k] = key
            merged[k] = v
    return merged


def _merge_field(
    name: str, before: Any, writes: Sequence[tuple[Any, Any]], reducer: Reducer | None
) -> Any:
    """Combine the writes ``(branch key, after)`` of several branches to one field."""
    if reducer is not None:
        current = before
        for _, after in writes:
            current = reducer.combine(current, before, after)
        return current
    if len(writes) == 1:
        return writes[0][1]
    appended = _list_appends(before, [a for _, a in writes])
    if appended is not None:
        return appended
    united = _dict_union(name, before, writes)
    if united is not None:
        return united
    first_key, first = writes[0]
    for key, after in writes[1:]:
        if after != first:
            keys = [k for k, _ in writes]
            raise MergeError(
                f"branches {keys!r} wrote different values to state field {name!r} "
                f"(branch {first_key!r}: {_short(first)}, branch {key!r}: {_short(after)}): "
                "declare a reducer on the field with Annotated[...] or let one branch write it",
                field=name,
                branches=keys,
            )
    return first


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def merge_changes(
    base: Any,
    changes: Sequence[tuple[Any, Mapping[str, FieldChange]]],
    reducers: Mapping[str, Reducer],
) -> tuple[Any, set[str]]:
    """Fork semantics: every branch changed the common ``base``; merge by index order.

    :raises MergeError: two branches wrote different values to a field without a
        reducer (and the writes are not list appends or disjoint dict keys).
    """
    # Every branch's `before` of a field is the common base's value: keep the first.
    by_field: dict[str, tuple[Any, list[tuple[Any, Any]]]] = {}
    for key, branch_changes in changes:
        for name, change in branch_changes.items():
            if name not in by_field:
                by_field[name] = (change.before, [])
            by_field[name][1].append((key, change.after))
    merged = shallow_copy(base)
    for name, (before, writes) in by_field.items():
        set_field(merged, name, _merge_field(name, before, writes, reducers.get(name)))
    _mark_set(merged, by_field)
    return merged, set(by_field)


def _mark_set(state: Any, names: Iterable[str]) -> None:
    """A merged write counts as set: ``model_dump(exclude_unset=True)`` keeps it."""
    if isinstance(state, BaseModel):
        state.__pydantic_fields_set__.update(names)


def apply_sequential(
    base: Any,
    changes: Sequence[Mapping[str, FieldChange]],
    reducers: Mapping[str, Reducer],
) -> tuple[Any, set[str]]:
    """Pipeline semantics: apply each member's change in list order.

    Without a reducer a later writer depended on the earlier one (it saw its write),
    so its value replaces; with one, its change is folded in.
    """
    merged = shallow_copy(base)
    current: dict[str, Any] = {}
    for member in changes:
        for name, change in member.items():
            reducer = reducers.get(name)
            if reducer is None:
                current[name] = change.after
            else:
                start = current[name] if name in current else get_field(base, name)
                current[name] = reducer.combine(start, change.before, change.after)
    for name, value in current.items():
        set_field(merged, name, value)
    _mark_set(merged, current)
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
) -> MergeOutcome:
    """Merge finished branches by ``strategy`` (outcomes in branch index order).

    :raises MergeError: no branch succeeded, ALL_SUCCESS with a failed branch while
        ``require_all``, or conflicting writes.
    :raises ConfigurationError: ``strategy`` is not a ``MergeStrategy``, or a vote
        field is not a field of the state.
    """
    strategy = coerce_strategy(strategy)
    vote_fields = _check_vote_fields(base, vote_fields)
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
    counts: dict[str, list[BranchOutcome]] = {}
    for o in ok:
        try:
            vote = canonical_hash(_vote_payload(o, vote_fields))
        except CanonicalizationError as exc:
            raise MergeError(
                f"MAJORITY cannot vote on branch {o.key!r}: {exc}", branches=[o.key]
            ) from exc
        counts.setdefault(vote, []).append(o)
    best_hash, group = max(counts.items(), key=lambda kv: len(kv[1]))
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
