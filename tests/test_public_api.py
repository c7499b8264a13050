"""The public surface of ``lift_graph``: ``__all__``, the DESIGN.md names and fields."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import types
from pathlib import Path

import pytest

import lift_graph

DESIGN_NAMES = [
    "BaseNode",
    "RunContext",
    "End",
    "NodeResult",
    "ParallelExecutor",
    "MergeStrategy",
    "ParallelExecutionError",
    "MergeError",
    "run_parallel",
    "ParallelError",
    "TaskError",
    "JoinStrategy",
    "FailureMode",
    "Graph",
    "Fork",
    "Pipeline",
    "JoinResult",
    "JoinError",
    "Retry",
    "DSPyNode",
    "Limits",
    "ProviderLimit",
    "check_determinism",
]


def _init_bound_names() -> set[str]:
    """Names bound at module level by lift_graph/__init__.py (imports and assignments)."""
    init = Path(lift_graph.__file__)
    tree = ast.parse(init.read_text(encoding="utf-8"))
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
    return names


def test_all_has_no_duplicates() -> None:
    assert len(lift_graph.__all__) == len(set(lift_graph.__all__))


@pytest.mark.parametrize("name", lift_graph.__all__)
def test_every_name_in_all_is_importable(name: str) -> None:
    module = importlib.import_module("lift_graph")
    assert hasattr(module, name), name
    namespace: dict[str, object] = {}
    exec(f"from lift_graph import {name}", namespace)
    assert namespace[name] is getattr(module, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from lift_graph import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(lift_graph.__all__)


def test_every_public_reexport_of_init_is_in_all() -> None:
    public = {n for n in _init_bound_names() if not n.startswith("_") and n != "annotations"}
    missing = sorted(public - set(lift_graph.__all__))
    assert not missing, f"re-exported by lift_graph/__init__.py but not in __all__: {missing}"


def test_every_public_runtime_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(lift_graph).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    missing = sorted(public - set(lift_graph.__all__))
    assert not missing, f"public names of lift_graph missing from __all__: {missing}"


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_names_are_public(name: str) -> None:
    assert name in lift_graph.__all__
    assert getattr(lift_graph, name) is not None


def test_run_context_fields() -> None:
    from lift_graph import RunContext

    assert dataclasses.is_dataclass(RunContext)
    names = [f.name for f in dataclasses.fields(RunContext)]
    for name in ("state", "execution_id", "user_id", "metadata", "provenance", "deps"):
        assert name in names
    assert names[:2] == ["state", "execution_id"]
    ctx = RunContext(state={"x": 1}, execution_id="e1")
    assert ctx.state == {"x": 1}
    assert ctx.execution_id == "e1"
    assert ctx.user_id is None
    assert ctx.metadata == {}
    assert ctx.provenance == []
    assert ctx.deps is None
    # mutable defaults are not shared between contexts
    other = RunContext(state=None, execution_id="e2")
    ctx.metadata["k"] = 1
    ctx.provenance.append({"node": "A"})
    assert other.metadata == {} and other.provenance == []


def test_node_result_fields() -> None:
    from lift_graph import End, NodeResult, RunContext

    assert dataclasses.is_dataclass(NodeResult)
    names = [f.name for f in dataclasses.fields(NodeResult)]
    assert names[:5] == ["node", "next_node", "context", "execution_time_ms", "error"]
    ctx = RunContext(state=None, execution_id="e")
    result = NodeResult(node="n", next_node=End(3), context=ctx, execution_time_ms=1.5)
    assert result.error is None
    assert result.context is ctx
    assert result.execution_time_ms == 1.5


def test_end_value_defaults_to_none() -> None:
    from lift_graph import End

    assert End().value is None
    assert End("out").value == "out"


def test_enums_have_the_design_members() -> None:
    from lift_graph import FailureMode, JoinStrategy, MergeStrategy

    assert {m.name for m in MergeStrategy} == {"FIRST_SUCCESS", "ALL_SUCCESS", "MAJORITY"}
    assert {m.name for m in JoinStrategy} == {"ALL", "ANY", "FIRST", "QUORUM", "FIRST_ACCEPTED"}
    assert {m.name for m in FailureMode} == {"FAIL_ALL", "FAIL_FIRST", "CONTINUE"}


def test_error_fields_and_hierarchy() -> None:
    from lift_graph import (
        ConfigurationError,
        InvalidNodeError,
        LiftGraphError,
        MergeError,
        NodeTimeoutError,
        ParallelError,
        ParallelExecutionError,
        StateValidationError,
        TaskError,
    )

    pe = ParallelExecutionError("x", failed_nodes=["a"], partial_results=[])
    assert pe.failed_nodes == ["a"] and pe.partial_results == []
    me = MergeError("m", field="f", branches=[0, 1])
    assert me.field == "f" and me.branches == [0, 1]
    te = TaskError(key=1, exc_type="ValueError", message="bad")
    assert ParallelError([te]).errors == [te]
    for cls in (ParallelExecutionError, MergeError, ParallelError, ConfigurationError):
        assert issubclass(cls, LiftGraphError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidNodeError, TypeError)
    assert issubclass(NodeTimeoutError, TimeoutError)
    assert issubclass(StateValidationError, ValueError)


def test_retry_fields() -> None:
    from lift_graph import ConfigurationError, Retry

    r = Retry(attempts=3, backoff=0.01)
    assert (r.attempts, r.backoff) == (3, 0.01)
    assert hasattr(r, "jitter") and hasattr(r, "retry_on")
    with pytest.raises(ConfigurationError, match="attempts"):
        Retry(attempts=0)


def test_package_is_typed() -> None:
    assert (Path(lift_graph.__file__).parent / "py.typed").is_file()


def test_every_public_name_is_documented_in_the_api_page() -> None:
    import pathlib

    import lift_graph

    api = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    missing = [name for name in lift_graph.__all__ if f"`{name}" not in api]
    assert missing == [], f"add these to docs/api.md: {missing}"
