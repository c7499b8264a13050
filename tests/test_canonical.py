"""canonical_hash / to_canonical: equal values hash equal, and nothing hashes its repr."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from lift_graph import (
    BaseNode,
    CanonicalizationError,
    End,
    Fork,
    Graph,
    LiftGraphError,
    MergeError,
    MergeStrategy,
    RunContext,
    canonical_hash,
    canonical_json,
)
from lift_graph._canonical import to_canonical


class Opaque:
    """No fields, no serializer: only a repr with a memory address."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


@dataclass
class Point:
    x: int
    tags: set[str] = field(default_factory=set)


class Doc(BaseModel):
    title: str
    point: Point
    labels: frozenset[str] = frozenset()


class Holder(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    item: Opaque


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


# --------------------------------------------------------------------------- dspy


def _dspy() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return pytest.importorskip("dspy")


def test_equal_predictions_with_fields_in_another_order_hash_equal() -> None:
    dspy = _dspy()
    one = dspy.Prediction(answer="42", reasoning="because")
    other = dspy.Prediction(reasoning="because", answer="42")
    assert one == other
    assert canonical_hash(one) == canonical_hash(other)
    assert to_canonical(one) == {"answer": "42", "reasoning": "because"}
    assert canonical_hash(one) != canonical_hash(dspy.Prediction(answer="43", reasoning="because"))


def test_equal_examples_hash_equal_and_nest() -> None:
    dspy = _dspy()
    one = dspy.Example(question="q", answer="a").with_inputs("question")
    other = dspy.Example(answer="a", question="q")
    assert one == other
    assert canonical_hash(one) == canonical_hash(other)
    nested = {"preds": [dspy.Prediction(a=1, b={"y", "x"})]}
    assert canonical_json(nested) == '{"preds":[{"a":1,"b":["x","y"]}]}'


# --------------------------------------------------------------------------- records, sets


def test_equal_dataclasses_and_models_hash_equal() -> None:
    a = Doc(title="t", point=Point(1, {"b", "a", "c"}), labels=frozenset({"z", "y"}))
    b = Doc(title="t", point=Point(1, {"c", "a", "b"}), labels=frozenset({"y", "z"}))
    assert a == b
    assert canonical_hash(a) == canonical_hash(b)
    assert canonical_hash(Point(1)) == canonical_hash(Point(1))
    assert canonical_hash(Point(1)) != canonical_hash(Point(2))


def test_sets_with_any_insertion_order_hash_equal() -> None:
    words = [f"w{i}" for i in range(50)]
    forward, backward = set(), set()
    for w in words:
        forward.add(w)
    for w in reversed(words):
        backward.add(w)
    assert canonical_hash(forward) == canonical_hash(backward)
    assert canonical_hash({frozenset({1, 2}), frozenset({3})}) == canonical_hash(
        {frozenset({3}), frozenset({2, 1})}
    )


def test_scalars_by_value() -> None:
    assert to_canonical(Color.RED) == "red"
    assert to_canonical(Level.HIGH) == 3
    assert type(to_canonical(Level.HIGH)) is int
    assert to_canonical((1, [2, (3,)])) == [1, [2, [3]]]
    assert canonical_hash(decimal.Decimal("1.10")) == canonical_hash(decimal.Decimal("1.1"))
    assert canonical_hash(-0.0) == canonical_hash(0.0)
    assert to_canonical(uuid.UUID(int=5)) == "00000000-0000-0000-0000-000000000005"
    assert to_canonical(datetime.date(2024, 1, 2)) == "2024-01-02"
    assert to_canonical(b"\xff\x00") == to_canonical(b"\xff\x00")
    assert isinstance(to_canonical(b"\xff\x00"), str)


# --------------------------------------------------------------------------- no canonical form


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        (Opaque(1), "value", "Opaque"),
        ({"a": [1, Opaque(1)]}, "value['a'][1]", "Opaque"),
        (Point(1, tags=set()), None, None),  # fine: control case
        (Holder(item=Opaque(1)), "value.item", "Opaque"),
        ({Opaque: 1}, "value<a key>", "type"),
        (iter([1, 2]), "value", "list_iterator"),
        (object(), "value", "object"),
    ],
)
def test_object_without_canonical_form_raises_clear_error(
    value: Any, path: str | None, type_name: str | None
) -> None:
    if path is None:
        canonical_hash(value)
        return
    with pytest.raises(CanonicalizationError) as info:
        canonical_hash(value)
    error = info.value
    assert isinstance(error, TypeError)
    assert isinstance(error, LiftGraphError)
    assert error.path == path
    assert type_name is not None and error.type_name.endswith(type_name)
    message = str(error)
    assert path in message and type_name in message
    assert "0x" not in message  # never a memory address
    if type_name != "list_iterator":
        assert "dataclass or a pydantic model" in message


def test_equal_plain_objects_never_hash_their_repr() -> None:
    # they compare equal but their reprs differ (addresses): refusing is the only
    # answer that cannot disagree with ==
    assert Opaque(1) == Opaque(1)
    with pytest.raises(CanonicalizationError):
        canonical_json([Opaque(1)])


# --------------------------------------------------------------------------- MAJORITY vote


@dataclass
class Voter(BaseNode[Any]):
    index: int

    async def run(self, ctx: RunContext[Any]) -> End[Any]:
        await asyncio.sleep(0)
        return End(Opaque(1) if self.index == 1 else "same")


@dataclass
class Ballot(BaseNode[Any]):
    async def run(self, ctx: RunContext[Any]) -> Fork[Any]:
        return Fork([Voter(i) for i in range(3)], merge=MergeStrategy.MAJORITY)


class VoteState(BaseModel):
    note: str = ""


@pytest.mark.asyncio
async def test_majority_vote_on_a_value_without_canonical_form_names_the_branch() -> None:
    graph = Graph(nodes=[Ballot, Voter])
    with pytest.raises(MergeError) as info:
        await graph.run(Ballot(), state=VoteState())
    error = info.value
    assert error.branches == [1]
    assert "branch 1" in str(error)
    assert "Opaque" in str(error) and "0x" not in str(error)
    assert isinstance(error.__cause__, CanonicalizationError)
    assert error.join is not None  # the finished branches' values are kept
    assert error.join.results[0] == "same"


# --------------------------------------------------------------------------- processes


_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import dspy
from dataclasses import dataclass, field
from pydantic import BaseModel
from lift_graph import canonical_hash

@dataclass
class Point:
    x: int
    tags: set = field(default_factory=set)

class Doc(BaseModel):
    labels: frozenset[str]
    by_key: dict

words = [f"w{i}" for i in range(40)]
value = {
    "set": set(words),
    "point": Point(1, set(words)),
    "doc": Doc(labels=frozenset(words), by_key={w: i for i, w in enumerate(words)}),
    "pred": dspy.Prediction(b=set(words), a=1),
    "mixed": {1: "int", "1": "str"},
}
print(json.dumps({"hash": canonical_hash(value), "order": list(set(words))}))
"""


def _children(*seeds: str) -> list[dict[str, Any]]:
    """Run the child under each hash seed, concurrently (each imports dspy)."""
    root = str(Path(__file__).resolve().parents[1])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, root],
            env={**os.environ, "PYTHONHASHSEED": seed, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def test_hash_is_independent_of_pythonhashseed() -> None:
    _dspy()
    one, other = _children("1", "4242")
    assert one["order"] != other["order"]  # the seeds really change set order
    assert one["hash"] == other["hash"]


def test_canonical_module_imports_and_works_without_dspy() -> None:
    code = (
        "import sys; sys.modules['dspy'] = None\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from lift_graph._canonical import canonical_hash\n"
        "print(canonical_hash({'a': {1, 2}}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == canonical_hash({"a": [1, 2]})


def test_exceptions_by_type_and_arguments() -> None:
    # a join's errors (JoinResult.errors) can end up in an output or a state
    assert canonical_hash(ValueError("bad", 1)) == canonical_hash(ValueError("bad", 1))
    assert canonical_hash(ValueError("bad")) != canonical_hash(KeyError("bad"))
    assert to_canonical({"b0": TimeoutError()}) == {
        "b0": {"exception": "builtins.TimeoutError", "args": []}
    }
    with pytest.raises(CanonicalizationError) as info:
        canonical_hash(ValueError(Opaque(1)))
    assert info.value.path == "value.args[0]"
