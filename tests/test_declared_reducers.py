"""Reducers read from state annotations that cannot all be resolved."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any

import pytest

from lift_graph import BaseNode, End, Graph, GraphDefinitionError, RunContext, add
from lift_graph._declared_reducers import reducers_of, reducers_of_types


def _typeddict(source: str) -> Any:
    # A module that is not importable: string annotations cannot be resolved there.
    namespace: dict[str, Any] = {"__name__": "not_an_importable_module"}
    exec(f"from typing import TypedDict\nclass S(TypedDict):\n{source}", namespace)
    return namespace["S"]


def test_an_unresolvable_reducer_annotation_is_an_error_not_ignored() -> None:
    state = _typeddict("    count: 'Annotated[int, operator.add]'\n")
    with pytest.raises(GraphDefinitionError, match=r"S.*'count'.*cannot be resolved"):
        reducers_of_types([state])


def test_the_graph_refuses_a_typeddict_whose_reducer_cannot_be_read() -> None:
    state = _typeddict("    count: 'Annotated[int, operator.add]'\n")

    class Bump(BaseNode[state]):  # type: ignore[valid-type]
        async def run(self, ctx: RunContext[Any]) -> End[None]:
            return End(None)

    with pytest.raises(GraphDefinitionError, match="count"):
        Graph(nodes=[Bump])


def test_other_unresolvable_annotations_do_not_hide_resolvable_reducers() -> None:
    @dataclass
    class State:
        total: Annotated[int, add] = 0
        client: NotImportedAnywhere | None = None  # type: ignore[name-defined]  # noqa: F821

    assert reducers_of(State) == {"total": add}


def test_resolvable_annotations_under_future_import_are_read() -> None:
    @dataclass
    class State:
        total: Annotated[int, operator.add] = 0

    reducer = reducers_of(State)["total"]
    assert reducer is add or reducer.combine(1, 0, 2) == 3
