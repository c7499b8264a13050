"""Batches on a Ray cluster, with limits every worker shares (extra ``[ray]``).

``RayBackend`` runs the inputs of ``graph.map(..., backend=RayBackend(...))`` on a
pool of async actors; ``RayLimits`` takes ``Limits``' arguments and keeps its
counters in one named actor. Ray places the work; scheduling, limits and
checkpoints stay lift_graph's.
"""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401 - only to fail early with the install hint
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("lift_graph.ray needs Ray: pip install 'lift-graph[ray]'") from exc

from .backend import RayBackend
from .limits import RayLimits

__all__ = ["RayBackend", "RayLimits"]
