"""Node caching: ``CachePolicy`` and the canonical key of a node execution.

A node class opts in with ``cache = CachePolicy(version="1", ttl=None)``; a run
given ``cache=store`` then looks every execution of it up before running it. The
key hashes what the node's result may depend on: its class, the policy version,
its own fields, the values of the state fields it declares in ``reads`` (the
whole state when it declares none) and what its ``cache_fingerprint()`` adds (a
DSPyNode adds its LM model, signature and demos). Bump ``version`` when the
node's code changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ._codec import Codec, type_name
from ._config import check_number
from ._state import field_names
from .errors import ConfigurationError

__all__ = ["CachePolicy", "cache_key"]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Cache a node class's results. ``version`` is part of the key (change it when
    the node's behaviour changes); ``ttl`` is a lifetime in seconds (None: forever).
    """

    version: str = "1"
    ttl: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.version, str):
            raise ConfigurationError(
                f"CachePolicy version must be a str, got {type(self.version).__name__}"
            )
        check_number("CachePolicy ttl (seconds)", self.ttl, strictly_above=True, optional=True)


def cache_key(codec: Codec, policy: CachePolicy, node: Any, state: Any, where: str) -> str:
    """The hex key of ``node`` running on ``state``.

    :raises CheckpointError: a field or input of the node has no JSON form.
    """
    cls = type(node)
    reads = getattr(node, "reads", None)
    names = sorted(field_names(state)) if reads is None else sorted(reads)
    fingerprint = getattr(node, "cache_fingerprint", None)
    material = {
        "class": type_name(cls),
        "version": policy.version,
        "node": codec.dump_node(node, where),
        "reads": codec.dump_fields(state, names, cls.__name__, where),
        "extra": fingerprint() if callable(fingerprint) else None,
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
