"""A missing input is caught when the graph is built, with the run-time error's type."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    DSPyNode,
    End,
    Graph,
    GraphDefinitionError,
    MissingInputError,
    RunContext,
    UnknownFieldError,
)


class State(BaseModel):
    topic: str = "sky"
    answer: str = ""


class Ask(DSPyNode[State]):
    signature = "question -> answer"


class WritesNowhere(BaseNode[State]):
    writes: ClassVar[frozenset[str]] = frozenset({"nowhere"})

    async def run(self, ctx: RunContext[State]) -> End[None]:
        return End(None)


def test_signature_input_missing_from_state_fails_at_build() -> None:
    with pytest.raises(MissingInputError) as info:
        Graph(nodes=[Ask])
    err = info.value
    assert (err.node, err.field) == ("Ask", "question")
    # One error, two readings: a definition error, and the run-time error's type.
    assert isinstance(err, UnknownFieldError)
    assert isinstance(err, GraphDefinitionError)
    assert isinstance(err, KeyError)
    assert "Ask" in str(err) and "'question'" in str(err)
    assert not str(err).startswith('"')  # readable, not a KeyError repr


def test_unknown_written_field_is_an_unknown_field_error() -> None:
    with pytest.raises(UnknownFieldError) as info:
        Graph(nodes=[WritesNowhere])
    assert not isinstance(info.value, MissingInputError)
    assert (info.value.node, info.value.field) == ("WritesNowhere", "nowhere")
