"""One run's link to its store and cache: replay what was journaled, commit what
finishes, look cached nodes up.

The runner asks ``before`` whether a node must really run (a journaled completion
is replayed, a pending interrupt re-asked, a cache hit applied); the scheduler
calls ``node_done`` / ``join_done`` / ``interrupted`` right after a node or join
finishes, in the same task step, so the commit lands before anything that
depends on it can start. Commits are synchronous: see ``store``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._codec import Codec, dump_plain
from ._state import field_names, set_field
from .cache import CachePolicy, cache_key
from .errors import CheckpointError, IncompatibleRunError
from .node import End, Interrupt
from .store import CacheEntry, JournalEntry, Store

__all__ = ["Durable", "Replay"]

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
#: Shorter strings are not checked: no key or token is this short.
_MIN_SECRET = 8
_SECRET_SHAPE = re.compile(
    r"sk-[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}"
)


@dataclass(slots=True)
class Replay:
    """A node execution answered without running ``run``."""

    out: Any
    attempts: int
    ms: float
    #: Where the answer came from: ``"journal"``, ``"cache"`` or ``"interrupt"`` (a
    #: pending interrupt asked again).
    source: str = "journal"


@dataclass(slots=True)
class _Pending:
    """A cache miss: where to store the result once the node has run."""

    key: str
    policy: CachePolicy
    before: dict[str, Any]


def _secret_pattern() -> re.Pattern[str]:
    """One pattern for key shapes and this process's secret environment values
    (read per run, so a key set later is still caught)."""
    values = sorted(
        (v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET),
        key=len,
        reverse=True,
    )
    alternatives = [_SECRET_SHAPE.pattern, *map(re.escape, values)]
    return re.compile("|".join(alternatives))


def _find_secret(data: Any, pattern: re.Pattern[str]) -> str | None:
    """The first string in ``data`` that holds a secret."""
    search = pattern.search
    stack = [data]
    while stack:
        item = stack.pop()
        cls = type(item)
        if cls is str:
            if len(item) >= _MIN_SECRET and search(item):
                return item  # type: ignore[no-any-return]
        elif cls is dict:
            stack.extend(item.values())
            stack.extend(k for k in item if len(k) >= _MIN_SECRET)
        elif cls is list:
            stack.extend(item)
    return None


class Durable:
    """The journal and cache of one run (either may be absent)."""

    def __init__(
        self,
        codec: Codec,
        execution_id: str,
        *,
        store: Store | None = None,
        cache: Store | None = None,
        entries: Iterable[JournalEntry] = (),
        finished: bool = False,
    ) -> None:
        self.codec = codec
        self.execution_id = execution_id
        self.store = store
        self.cache = cache
        #: The journal is complete: a key it lacks is an error, never a node run.
        self.finished = finished
        self.hits = 0
        self.misses = 0
        self._secrets = _secret_pattern()
        self._nodes: dict[str, JournalEntry] = {}
        self._joins: dict[str, JournalEntry] = {}
        self._asked: dict[str, JournalEntry] = {}  # latest interrupt per key
        self._answers: dict[tuple[str, int], Any] = {}
        for e in entries:
            if e.kind == "node":
                self._nodes[e.key] = e
            elif e.kind == "join":
                self._joins[e.key] = e
            elif e.kind == "interrupt":
                if e.key not in self._asked or self._asked[e.key].round < e.round:
                    self._asked[e.key] = e
            else:
                self._answers[(e.key, e.round)] = e.data.get("answer")
        # A class the graph lost is refused before anything runs, not mid-replay.
        for e in self._nodes.values():
            for name in _classes_named(e.data):
                codec.node_class(name)

    # -- interrupts ------------------------------------------------------------
    def pending(self) -> dict[str, Any]:
        """Unanswered interrupts of the stored run: node key -> value."""
        return {
            k: e.data.get("value")
            for k, e in self._asked.items()
            if k not in self._nodes and (k, e.round) not in self._answers
        }

    def answer_entries(self, answers: Mapping[str, Any]) -> list[JournalEntry]:
        pending = self.pending()
        unknown = sorted(set(answers) - set(pending))
        if unknown:
            raise CheckpointError(
                f"run {self.execution_id} has no pending interrupt at {unknown}; pending: "
                f"{sorted(pending)}",
                execution_id=self.execution_id,
            )
        out = []
        for key, answer in answers.items():
            asked = self._asked[key]
            data = {"answer": self.codec_plain(answer, key)}
            self._answers[(key, asked.round)] = data["answer"]
            out.append(self._entry(key, "answer", asked.node, data, asked.round))
        return out

    def codec_plain(self, value: Any, key: str) -> Any:
        return dump_plain(value, f"the value at interrupt {key}")

    # -- the runner's seam ------------------------------------------------------
    def before(self, node: Any, key: str, branch: Any, ctx: Any) -> Replay | _Pending | None:
        """A ``Replay`` when ``node`` at ``key`` must not run; a cache miss to complete
        with ``after``; None to just run it."""
        entry = self._nodes.get(key)
        if entry is not None:
            return self._replay(entry, node, key, branch)
        asked = self._asked.get(key)
        if asked is not None:
            if (key, asked.round) not in self._answers:
                return Replay(Interrupt(asked.data.get("value")), 0, 0.0, "interrupt")
            ctx.answer = self._answers[(key, asked.round)]
        if self.finished:
            raise CheckpointError(
                f"the journal of finished run {self.execution_id} has no entry for node "
                f"{type(node).__name__} at {key}; the graph changed since the run",
                execution_id=self.execution_id,
                node_key=key,
            )
        policy = getattr(node, "cache", None)
        if self.cache is None or not isinstance(policy, CachePolicy) or ctx.answer is not None:
            return None
        ckey = cache_key(self.codec, policy, node, branch.state, key)
        hit = self.cache.cache_get(ckey, now=time.time())
        if hit is not None:
            self.hits += 1
            self._apply(hit.data, branch)
            return Replay(self._load_out(node, hit.data["ret"]), 0, 0.0, "cache")
        self.misses += 1
        names = self._writable(node, branch.state)
        return _Pending(ckey, policy, self.codec.dump_fields(branch.state, names, "", key))

    def after(self, pending: _Pending, node: Any, key: str, out: Any, branch: Any) -> None:
        """Store a cache miss's result: the fields it changed, and its return."""
        if isinstance(out, Interrupt) or self.cache is None:
            return
        name = type(node).__name__
        names = self._writable(node, branch.state)
        after = self.codec.dump_fields(branch.state, names, name, key)
        changed = {k: v for k, v in after.items() if pending.before.get(k, _NONE) != v}
        data = {"writes": changed, "ret": self.codec.dump_return(node, out, key)}
        self.check_secrets(data, name, key)
        now = time.time()
        ttl = pending.policy.ttl
        self.cache.cache_put(
            CacheEntry(
                key=pending.key,
                node=name,
                data=data,
                created_at=now,
                expires_at=None if ttl is None else now + ttl,
            )
        )

    def _replay(self, entry: JournalEntry, node: Any, key: str, branch: Any) -> Replay:
        name = type(node).__name__
        if entry.node != name:
            raise IncompatibleRunError(
                f"the journal of run {self.execution_id} has node {entry.node} at {key}, "
                f"but the graph now runs {name} there: resume with the graph the run was "
                "started with",
                execution_id=self.execution_id,
                node=name,
                node_key=key,
            )
        data = entry.data
        self._apply(data, branch)
        return Replay(self._load_out(node, data["ret"]), data["attempts"], data["ms"])

    def _apply(self, data: Mapping[str, Any], branch: Any) -> None:
        values = self.codec.load_fields(data["writes"])
        state = branch.state
        if data.get("replace") and isinstance(state, dict):
            state.clear()
            state.update(values)
            return
        for name, value in values.items():
            set_field(state, name, value)

    def _load_out(self, node: Any, ret: Mapping[str, Any]) -> Any:
        if ret["t"] == "end":
            return End(self.codec.load_end(type(node), ret["value"]))
        return self.codec.load_return(ret)

    @staticmethod
    def _writable(node: Any, state: Any) -> Iterable[str]:
        writes = getattr(node, "writes", None)
        return field_names(state) if writes is None else sorted(writes)

    # -- the scheduler's seam ---------------------------------------------------
    def node_done(self, key: str, node: Any, out: Any, state: Any, record: Any) -> None:
        """Journal a completed node (not one replayed from the journal)."""
        if self.store is None or key in self._nodes:
            return
        name = type(node).__name__
        data: dict[str, Any] = {
            "node": self.codec.dump_node(node, key),
            "ret": self.codec.dump_return(node, out, key),
            "writes": self.codec.dump_fields(state, self._writable(node, state), name, key),
            "attempts": record.attempts,
            "ms": record.execution_time_ms,
        }
        if getattr(node, "writes", None) is None and isinstance(state, dict):
            data["replace"] = True
        self._commit(self._entry(key, "node", name, data))

    def interrupted(self, key: str, node: Any, value: Any) -> None:
        if self.store is None:
            return
        asked = self._asked.get(key)
        if asked is not None and (key, asked.round) not in self._answers:
            return  # re-asked from the journal: already stored
        rnd = 0 if asked is None else asked.round + 1  # a follow-up to an answer
        data = {"value": self.codec_plain(value, key)}
        entry = self._entry(key, "interrupt", type(node).__name__, data, rnd)
        self._asked[key] = entry
        self._commit(entry)

    def forced_join(self, key: str) -> Mapping[str, Any] | None:
        entry = self._joins.get(key)
        return None if entry is None else entry.data

    def join_done(self, key: str, data: dict[str, Any]) -> None:
        if self.store is None or key in self._joins:
            return
        self._commit(self._entry(key, "join", "", data))

    def _entry(
        self, key: str, kind: Any, node: str, data: dict[str, Any], rnd: int = 0
    ) -> JournalEntry:
        return JournalEntry.model_construct(
            execution_id=self.execution_id, key=key, kind=kind, node=node, data=data, round=rnd
        )

    def _commit(self, entry: JournalEntry) -> None:
        self.check_secrets(entry.data, entry.node, entry.key)
        assert self.store is not None
        self.store.append((entry,))

    def find_secret(self, data: Any) -> bool:
        return _find_secret(data, self._secrets) is not None

    def check_secrets(self, data: Any, node: str, key: str) -> None:
        found = _find_secret(data, self._secrets)
        if found is not None:
            raise CheckpointError(
                f"what node {node or 'the join'} at {key} would write to the store holds "
                "what looks like a secret (an API key, or the value of an environment "
                "variable named like a key or token); secrets are never written: pass "
                "them through deps, which are not journaled",
                execution_id=self.execution_id,
                node=node or None,
                node_key=key,
            )


_NONE = object()


def _classes_named(data: Mapping[str, Any]) -> Iterator[str]:
    """The node classes a journaled node entry names: its own and its return's."""
    stack: list[Any] = [data.get("node"), data.get("ret")]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = item.get("cls")
            if isinstance(name, str):
                yield name
            stack.extend(v for k, v in item.items() if k in ("node", "then", "branches", "nodes"))
        elif isinstance(item, list):
            stack.extend(item)
