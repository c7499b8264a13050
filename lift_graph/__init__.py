"""lift_graph: a dataflow graph engine for DSPy / LLM node pipelines."""

from ._canonical import canonical_hash as canonical_hash
from ._canonical import canonical_json as canonical_json
from ._records import NodeRecord as NodeRecord
from .agent_node import AgentNode as AgentNode
from .batch import BatchResult as BatchResult
from .blocks import BranchStatus as BranchStatus
from .blocks import FailureMode as FailureMode
from .blocks import Fork as Fork
from .blocks import JoinResult as JoinResult
from .blocks import JoinStrategy as JoinStrategy
from .blocks import MergeStrategy as MergeStrategy
from .blocks import Pipeline as Pipeline
from .cache import CachePolicy as CachePolicy
from .determinism import DeterminismReport as DeterminismReport
from .determinism import check_determinism as check_determinism
from .determinism import check_determinism_sync as check_determinism_sync
from .dspy_node import DSPyNode as DSPyNode
from .errors import CanonicalizationError as CanonicalizationError
from .errors import CheckpointError as CheckpointError
from .errors import ConfigurationError as ConfigurationError
from .errors import DeterminismError as DeterminismError
from .errors import GraphDefinitionError as GraphDefinitionError
from .errors import IncompatibleRunError as IncompatibleRunError
from .errors import InvalidNodeError as InvalidNodeError
from .errors import InvalidReturnError as InvalidReturnError
from .errors import InvalidStateError as InvalidStateError
from .errors import JoinError as JoinError
from .errors import LiftGraphError as LiftGraphError
from .errors import LMNotConfiguredError as LMNotConfiguredError
from .errors import MergeError as MergeError
from .errors import MissingFieldError as MissingFieldError
from .errors import MissingInputError as MissingInputError
from .errors import NodeExecutionError as NodeExecutionError
from .errors import NodeTimeoutError as NodeTimeoutError
from .errors import ParallelError as ParallelError
from .errors import ParallelExecutionError as ParallelExecutionError
from .errors import PipelineCycleError as PipelineCycleError
from .errors import RateLimited as RateLimited
from .errors import ReplayedError as ReplayedError
from .errors import RunNotFoundError as RunNotFoundError
from .errors import RunTimeoutError as RunTimeoutError
from .errors import ShippingError as ShippingError
from .errors import StateValidationError as StateValidationError
from .errors import StepLimitError as StepLimitError
from .errors import TaskError as TaskError
from .errors import UncopyableFieldError as UncopyableFieldError
from .errors import UndeclaredMutationError as UndeclaredMutationError
from .errors import UnknownFieldError as UnknownFieldError
from .errors import UnknownNodeError as UnknownNodeError
from .errors import UnknownProviderWarning as UnknownProviderWarning
from .errors import WorkerLostError as WorkerLostError
from .errors import WriteConflictError as WriteConflictError
from .events import CustomEvent as CustomEvent
from .events import ForkStarted as ForkStarted
from .events import GraphEvent as GraphEvent
from .events import JoinFinished as JoinFinished
from .events import NodeFailed as NodeFailed
from .events import NodeFinished as NodeFinished
from .events import NodeRetry as NodeRetry
from .events import NodeStarted as NodeStarted
from .events import RateLimitedEvent as RateLimitedEvent
from .events import RateLimitResumed as RateLimitResumed
from .events import RunFinished as RunFinished
from .events import RunStarted as RunStarted
from .events import TokenEvent as TokenEvent
from .executor import ParallelExecutor as ParallelExecutor
from .graph import Graph as Graph
from .graph import RunResult as RunResult
from .helpers import gather_limited as gather_limited
from .helpers import par_all as par_all
from .helpers import par_all_limit as par_all_limit
from .helpers import run_parallel as run_parallel
from .limits import Clock as Clock
from .limits import FakeClock as FakeClock
from .limits import Limiter as Limiter
from .limits import Limits as Limits
from .limits import MonotonicClock as MonotonicClock
from .limits import ProviderLimit as ProviderLimit
from .limits import ProviderStatus as ProviderStatus
from .node import BaseNode as BaseNode
from .node import End as End
from .node import Interrupt as Interrupt
from .node import Node as Node
from .node import NodeResult as NodeResult
from .node import Retry as Retry
from .node import RunContext as RunContext
from .reducers import Reducer as Reducer
from .reducers import add as add
from .reducers import append as append
from .reducers import extend as extend
from .reducers import last_value as last_value
from .reducers import max_value as max_value
from .reducers import merge_dict as merge_dict
from .reducers import min_value as min_value
from .reducers import same_value as same_value
from .reducers import union as union

__version__ = "0.1.0"

from .sqlite_store import SQLiteStore as SQLiteStore
from .store import GraphState as GraphState
from .store import MemoryStore as MemoryStore
from .store import Store as Store
from .timeline import Timeline as Timeline

__all__ = [
    "CustomEvent",
    "ForkStarted",
    "GraphEvent",
    "JoinFinished",
    "NodeFailed",
    "NodeFinished",
    "NodeRetry",
    "NodeStarted",
    "RateLimitResumed",
    "RateLimitedEvent",
    "RunFinished",
    "RunStarted",
    "TokenEvent",
    "SQLiteStore",
    "Store",
    "MemoryStore",
    "GraphState",
    "Interrupt",
    "RunNotFoundError",
    "RateLimited",
    "ReplayedError",
    "IncompatibleRunError",
    "CheckpointError",
    "CachePolicy",
    "AgentNode",
    "BaseNode",
    "BatchResult",
    "BranchStatus",
    "CanonicalizationError",
    "Clock",
    "ConfigurationError",
    "DSPyNode",
    "DeterminismError",
    "DeterminismReport",
    "End",
    "FailureMode",
    "FakeClock",
    "Fork",
    "Graph",
    "GraphDefinitionError",
    "InvalidNodeError",
    "InvalidReturnError",
    "InvalidStateError",
    "JoinError",
    "LMNotConfiguredError",
    "JoinResult",
    "JoinStrategy",
    "LiftGraphError",
    "Limiter",
    "Limits",
    "MergeError",
    "MergeStrategy",
    "MissingFieldError",
    "MissingInputError",
    "MonotonicClock",
    "Node",
    "NodeExecutionError",
    "NodeRecord",
    "NodeResult",
    "NodeTimeoutError",
    "ParallelError",
    "ParallelExecutionError",
    "ParallelExecutor",
    "Pipeline",
    "PipelineCycleError",
    "ProviderLimit",
    "ProviderStatus",
    "Reducer",
    "Retry",
    "RunContext",
    "RunResult",
    "RunTimeoutError",
    "ShippingError",
    "StateValidationError",
    "StepLimitError",
    "TaskError",
    "Timeline",
    "UncopyableFieldError",
    "UndeclaredMutationError",
    "UnknownFieldError",
    "UnknownNodeError",
    "UnknownProviderWarning",
    "WorkerLostError",
    "WriteConflictError",
    "add",
    "append",
    "canonical_hash",
    "canonical_json",
    "check_determinism",
    "check_determinism_sync",
    "extend",
    "gather_limited",
    "last_value",
    "max_value",
    "merge_dict",
    "min_value",
    "par_all",
    "par_all_limit",
    "run_parallel",
    "same_value",
    "union",
]
