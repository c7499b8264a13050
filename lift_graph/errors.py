"""The one exception tree of lift_graph.

Every error the engine raises on purpose is defined here::

    LiftGraphError
    ├── ConfigurationError (ValueError)      bad limits, sizes, strategies, quorum
    ├── GraphDefinitionError                 the graph or a block is malformed
    │   ├── InvalidNodeError (TypeError)     something that is not a node was given
    │   ├── UnknownNodeError                 a node class that is not in the graph
    │   ├── UnknownFieldError                reads / writes name a missing state field
    │   ├── PipelineCycleError               data dependencies that form a cycle
    │   └── WriteConflictError               unordered writers of a field without a reducer
    ├── NodeExecutionError                   raised while running one node; carries
    │   │                                    execution_id, node_key and attempt
    │   ├── InvalidReturnError (TypeError)   `run` returned something unusable
    │   ├── NodeTimeoutError (TimeoutError)  the node's own timeout expired
    │   ├── MissingInputError (KeyError)     a declared input is not in the state
    │   │                                    (also an UnknownFieldError)
    │   ├── StateValidationError (ValueError) a write fails the state model's validation
    │   ├── UndeclaredMutationError          strict mode: a write the node did not declare
    │   ├── InvalidStateError (TypeError)    the state is not what the node works on
    │   │   └── UncopyableFieldError         a field the node writes cannot be copied
    │   ├── MissingFieldError                a declared write is not a field of the state
    │   │                                    (also an UnknownFieldError)
    │   └── LMNotConfiguredError (ValueError) a DSPyNode ran with no LM (also a
    │                                        ConfigurationError)
    ├── MergeError                           branch states cannot be merged
    ├── JoinError                            a fork's join failed (keeps finished results)
    ├── ParallelExecutionError               every node of `execute_parallel` failed
    ├── ParallelError                        `run_parallel` tasks failed (sorted TaskErrors)
    ├── TaskError                            one failed `run_parallel` task (key, type, message)
    ├── StepLimitError (RecursionError)      a path ran more than `max_steps` nodes
    ├── RateLimited                          a provider said "too many requests" (429):
    │                                        pauses the node's whole provider
    ├── DeterminismError (AssertionError)    runs of one graph on one input disagreed
    ├── CanonicalizationError (TypeError)    a value to hash (vote, determinism) has no
    │                                        canonical form
    ├── RunTimeoutError (TimeoutError)       a whole run exceeded its timeout
    ├── ShippingError (TypeError)            a node, state or deps cannot be sent to a
    │                                        Ray worker (names the node or field)
    └── WorkerLostError                      a Ray worker died more often than it may
                                             restart: its inputs fail with this

Warnings (``UserWarning`` subclasses, not errors)::

    UnknownProviderWarning                   a node's provider is not in Limits.providers

Cancellation is never an error here: ``asyncio.CancelledError`` propagates untouched,
and ``KeyboardInterrupt`` / ``SystemExit`` are never wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .blocks import JoinResult
    from .determinism import DeterminismReport
    from .node import NodeResult

__all__ = [
    "CanonicalizationError",
    "CheckpointError",
    "ConfigurationError",
    "DeterminismError",
    "GraphDefinitionError",
    "InvalidNodeError",
    "InvalidReturnError",
    "InvalidStateError",
    "JoinError",
    "LMNotConfiguredError",
    "LiftGraphError",
    "MergeError",
    "MissingFieldError",
    "MissingInputError",
    "NodeExecutionError",
    "NodeTimeoutError",
    "ParallelError",
    "ParallelExecutionError",
    "RateLimited",
    "IncompatibleRunError",
    "ReplayedError",
    "RunNotFoundError",
    "PipelineCycleError",
    "RunTimeoutError",
    "ShippingError",
    "StateValidationError",
    "StepLimitError",
    "TaskError",
    "UncopyableFieldError",
    "UndeclaredMutationError",
    "UnknownFieldError",
    "UnknownNodeError",
    "UnknownProviderWarning",
    "WorkerLostError",
    "WriteConflictError",
]


class LiftGraphError(Exception):
    """Base class of every error lift_graph raises on purpose."""


class ConfigurationError(LiftGraphError, ValueError):
    """A setting is out of range or unknown (limits, sizes, strategies, quorum)."""


class GraphDefinitionError(LiftGraphError):
    """The graph, a fork or a pipeline is malformed; raised before anything runs."""


class InvalidNodeError(GraphDefinitionError, TypeError):
    """Something that is not a node (class) was given where one is required."""


class UnknownNodeError(GraphDefinitionError):
    """A node class is used that the graph was not built with."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class UnknownFieldError(GraphDefinitionError):
    """A node declares it reads or writes a field the state model does not have."""

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.field = field


class PipelineCycleError(GraphDefinitionError):
    """The data dependencies of a pipeline form a cycle."""

    def __init__(self, message: str, *, cycle: Sequence[str]) -> None:
        super().__init__(message)
        self.cycle = list(cycle)


class WriteConflictError(GraphDefinitionError):
    """Two nodes that may run concurrently write one field that has no reducer."""

    def __init__(self, message: str, *, nodes: Sequence[str], field: str) -> None:
        super().__init__(message)
        self.nodes = list(nodes)
        self.field = field


class NodeExecutionError(LiftGraphError):
    """An error raised while running one node.

    The engine attaches where it happened at one boundary, so every subclass
    carries ``execution_id``, ``node_key`` (the node's position in the graph) and
    ``attempt`` (1-based) once it leaves the node.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        field: str | None = None,
        execution_id: str | None = None,
        node_key: str | None = None,
        attempt: int | None = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.field = field
        self.execution_id = execution_id
        self.node_key = node_key
        self.attempt = attempt

    def __str__(self) -> str:
        # The message itself: KeyError (a base of MissingInputError) would repr() it.
        base = str(self.args[0]) if self.args else ""
        where = [
            f"{name}={value}"
            for name, value in (
                ("execution_id", self.execution_id),
                ("node_key", self.node_key),
                ("attempt", self.attempt),
            )
            if value is not None
        ]
        return f"{base} [{', '.join(where)}]" if where else base


class InvalidReturnError(NodeExecutionError, TypeError):
    """A node's ``run`` returned something the engine cannot route."""


class NodeTimeoutError(NodeExecutionError, TimeoutError):
    """A node did not finish within its class ``timeout``."""


class MissingInputError(NodeExecutionError, UnknownFieldError, KeyError):
    """A declared input (a DSPy signature input, a ``reads`` field) is not in the state.

    Raised by ``Graph(...)`` when the node's state model is known (then it is also
    an ``UnknownFieldError``, a definition error), else when the node runs.
    """

    __str__ = NodeExecutionError.__str__  # not KeyError's, which would repr() it


class StateValidationError(NodeExecutionError, ValueError):
    """A node wrote a value that the state model's validation rejects."""


class UndeclaredMutationError(NodeExecutionError):
    """Strict mode: a node changed a state field it did not declare in ``writes``."""


class InvalidStateError(NodeExecutionError, TypeError):
    """The state given to a run is not what the node works on.

    Another model than the node's ``BaseNode[State]``, a class instead of an
    instance, or ``None`` / a number where the node reads or writes fields.
    """


class UncopyableFieldError(InvalidStateError):
    """A state field the node declares in ``writes`` cannot be deep-copied.

    The engine isolates what a node writes by copying it; locks, HTTP clients and
    agents cannot be copied. Such objects belong in ``deps`` (``graph.run(deps=...)``,
    ``ctx.deps``), not in the state. ``field`` names the field.
    """


class MissingFieldError(NodeExecutionError, UnknownFieldError):
    """A node declares it writes a field the state does not have (found at run time).

    ``Graph(...)`` raises ``UnknownFieldError`` for this when the node's state model
    is known; an untyped node finds out when it runs.
    """


class LMNotConfiguredError(NodeExecutionError, ConfigurationError):
    """A ``DSPyNode`` ran with no LM: none pinned on the node and none configured.

    Wraps dspy's own ``ValueError`` (its ``__cause__``) so the message names the node
    and its key and says where an LM can be given.
    """


class MergeError(LiftGraphError):
    """Branch states cannot be merged.

    ``field`` names the state field and ``branches`` the keys of the branches whose
    writes conflict. ``join`` holds the join's results when raised by a fork, so the
    values of finished branches are not lost.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        branches: Sequence[Any] = (),
        join: JoinResult[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.branches = list(branches)
        self.join = join


class JoinError(LiftGraphError):
    """A fork's join failed.

    ``errors`` maps branch key to exception; ``join`` is the full ``JoinResult`` with
    the values of branches that did finish. ``__cause__`` is the error of the
    lowest-index failed branch.
    """

    def __init__(
        self, message: str, *, errors: Mapping[Any, BaseException], join: JoinResult[Any]
    ) -> None:
        super().__init__(message)
        self.errors = dict(errors)
        self.join = join


class ParallelExecutionError(LiftGraphError):
    """Every node given to ``ParallelExecutor.execute_parallel`` failed."""

    def __init__(
        self,
        message: str,
        *,
        failed_nodes: Sequence[Any],
        partial_results: Sequence[NodeResult[Any]],
    ) -> None:
        super().__init__(message)
        self.failed_nodes = list(failed_nodes)
        self.partial_results = list(partial_results)


class TaskError(LiftGraphError):
    """One failed task of ``run_parallel``: its ``key``, exception type name and message.

    A record of the failure, not the exception itself (that is kept as the
    ``ParallelError``'s ``__cause__`` for the first one): it compares by value, so a
    test can assert the exact ``ParallelError.errors`` list.
    """

    def __init__(self, key: Any, exc_type: str, message: str) -> None:
        super().__init__(key, exc_type, message)
        self.key = key
        self.exc_type = exc_type
        self.message = message

    def __str__(self) -> str:
        return f"task {self.key!r} failed: {self.exc_type}: {self.message}"

    def __repr__(self) -> str:
        return f"TaskError(key={self.key!r}, exc_type={self.exc_type!r}, message={self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskError):
            return NotImplemented
        return (self.key, self.exc_type, self.message) == (other.key, other.exc_type, other.message)

    def __hash__(self) -> int:
        return hash((TaskError, repr(self.key), self.exc_type, self.message))


class ParallelError(LiftGraphError):
    """One or more ``run_parallel`` tasks failed.

    ``errors`` is sorted by the task's order key, then by submit index, so it is the
    same on every run whatever order the tasks finished in.
    """

    def __init__(self, errors: Sequence[TaskError]) -> None:
        self.errors = list(errors)
        shown = "; ".join(f"{e.key!r}: {e.exc_type}: {e.message}" for e in self.errors[:5])
        more = f" (+{len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} task(s) failed: {shown}{more}")


class RunTimeoutError(LiftGraphError, TimeoutError):
    """A whole graph run exceeded the ``timeout`` given to ``Graph.run``."""


class StepLimitError(LiftGraphError, RecursionError):
    """A path ran more than ``max_steps`` node executions without ending.

    ``path`` is the path's key prefix (``""`` for the run's main path, else the fork
    branch it belongs to), ``node`` the class name and ``node_key`` the key of the last
    node it ran, ``max_steps`` the limit. Raise the limit with ``graph.run(...,
    max_steps=N)`` (``None`` disables it) or give the loop an exit.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        node: str,
        node_key: str,
        max_steps: int,
        execution_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.node = node
        self.node_key = node_key
        self.max_steps = max_steps
        self.execution_id = execution_id


class RateLimited(LiftGraphError):
    """A provider refused a call for now: raise it from a node to pause its provider.

    The engine treats it (and any error with HTTP status 429 it recognizes: httpx,
    openai, litellm / DSPy, pydantic-ai) as back-pressure, not as the node's failure:
    nothing on the node's provider starts until ``retry_after`` seconds have passed
    (a per-provider exponential backoff with jitter when ``None``), in every run
    sharing the ``Limits``, and the node then runs again. These retries count against
    ``ProviderLimit.max_rate_limit_retries``, not the node's ``Retry``. ``provider``
    overrides the node's own ``provider`` attribute when given.
    """

    def __init__(
        self,
        retry_after: float | None = None,
        provider: str | None = None,
        *,
        message: str | None = None,
    ) -> None:
        if retry_after is not None and not (
            isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool)
        ):
            raise TypeError(f"RateLimited.retry_after must be seconds or None, got {retry_after!r}")
        if message is None:
            who = f"provider {provider!r}" if provider else "the provider"
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
            message = f"rate limited by {who}{wait}"
        super().__init__(message)
        self.retry_after = None if retry_after is None else max(0.0, float(retry_after))
        self.provider = provider


class DeterminismError(LiftGraphError, AssertionError):
    """Runs of one graph on one input disagreed; ``report`` says how."""

    def __init__(self, message: str, *, report: DeterminismReport) -> None:
        super().__init__(message)
        self.report = report


class CanonicalizationError(LiftGraphError, TypeError):
    """A value has no canonical form, so it cannot be hashed for a vote or a comparison.

    ``type_name`` is the offending object's qualified type name and ``path`` where it
    sits inside the hashed value (``value.answer[2]``). The fix: make the type a
    dataclass or a pydantic model, convert it to plain data, or vote on fields that
    have a canonical form.
    """

    def __init__(self, message: str, *, type_name: str, path: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.path = path


class CheckpointError(LiftGraphError):
    """What a store cannot write or load: a value with no JSON form, a corrupted,
    edited or pickled row, a database that is not one.

    ``execution_id``, ``node`` (class name), ``node_key`` and ``field`` say where,
    when known. Nothing is half-loaded: the error is raised before any row of the
    run is used.
    """

    def __init__(
        self,
        message: str,
        *,
        execution_id: str | None = None,
        node: str | None = None,
        node_key: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.node = node
        self.node_key = node_key
        self.field = field


class RunNotFoundError(CheckpointError, LookupError):
    """``Graph.resume`` was given an execution id the store has no run for."""


class IncompatibleRunError(CheckpointError):
    """A stored run cannot be resumed by this graph: a journaled node class is gone,
    or the state model changed since the run was written."""


class ReplayedError(LiftGraphError):
    """A fork branch's error as a resumed run's journal recorded it (the exception
    object itself does not survive a restart): ``type_name`` is its class name."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


class ShippingError(LiftGraphError, TypeError):
    """Something a batch needs on its workers (a node, a state field, ``deps``, a
    store, a result) cannot be serialized for them; ``what`` names it."""

    def __init__(self, message: str, *, what: str | None = None) -> None:
        super().__init__(message)
        self.what = what


class WorkerLostError(LiftGraphError):
    """A worker process of a distributed batch died and could not be restarted: the
    inputs it was running fail with this (``index`` is the input's index)."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class UnknownProviderWarning(UserWarning):
    """A node's ``provider`` is not in ``Limits.providers``: it runs without provider limits.

    Issued once per ``Limits`` object and provider name; ``Limits(strict=True)``
    raises ``ConfigurationError`` instead.
    """
