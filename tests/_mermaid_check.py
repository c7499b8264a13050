"""A strict checker of the mermaid flowchart subset ``Graph.mermaid()`` emits.

CI has neither network nor node.js, so the real mermaid parser cannot run. This
accepts only what the subset allows, and more strictly than mermaid does: every
node is declared (with a shape and a quoted label) before an edge, a ``class`` or
``linkStyle`` uses it, which catches typos mermaid would turn into stray nodes.
"""

from __future__ import annotations

import re

__all__ = ["check"]

_ID = r"[A-Za-z_][A-Za-z0-9_]*"
# No raw quote inside; '#' only as an entity code (#quot; #35;), as mermaid decodes them.
_LABEL = r'"(?:[^"#\n]|#(?:[a-z]+|[0-9]+);)*"'
_SHAPES = [("[", "]"), ("{{", "}}"), ("((", "))"), ("([", "])"), ("[[", "]]"), ("(", ")")]
_SHAPE = "|".join(re.escape(o) + _LABEL + re.escape(c) for o, c in _SHAPES)
_STYLE = r"[a-z-]+:[^,;\s][^,;]*(?:,[a-z-]+:[^,;\s][^,;]*)*"

_HEADER = re.compile(r"flowchart (?:TD|TB|LR|RL|BT)")
_COMMENT = re.compile(r"%%.*")
_NODE = re.compile(rf"(?P<id>{_ID})(?:{_SHAPE})")
_EDGE = re.compile(rf"(?P<src>{_ID}) (?:-->|==>|-\.->)(?:\|(?P<label>{_LABEL})\|)? (?P<dst>{_ID})")
_SUBGRAPH = re.compile(rf"subgraph (?P<id>{_ID})(?: \[{_LABEL}\])?")
_CLASSDEF = re.compile(rf"classDef (?P<name>{_ID}) {_STYLE}")
_CLASS = re.compile(rf"class (?P<ids>{_ID}(?:,{_ID})*) (?P<name>{_ID})")
_LINKSTYLE = re.compile(rf"linkStyle (?P<indices>\d+(?:,\d+)*) {_STYLE}")
# Words mermaid's grammar takes as keywords wherever an id is expected.
_RESERVED = {"end", "graph", "flowchart", "subgraph", "style", "class", "classDef"}
_RESERVED |= {"click", "linkStyle", "direction", "default"}
_PAIRS = {"]": "[", ")": "(", "}": "{"}


class _State:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.class_defs: set[str] = set()
        self.edges = 0
        self.styled: set[int] = set()
        self.depth = 0

    def declare(self, name: str) -> None:
        if name in _RESERVED:
            raise ValueError(f"{name!r} is a mermaid keyword, not a usable id")
        if name in self.ids:
            raise ValueError(f"{name!r} declared twice")
        self.ids.add(name)

    def use(self, name: str) -> None:
        if name not in self.ids:
            raise ValueError(f"{name!r} used before it is declared")


def _balanced(line: str) -> bool:
    """Brackets balance outside quoted labels."""
    stack: list[str] = []
    for part in re.split(r'"[^"]*"', line):
        if part.count('"'):
            return False
        for char in part:
            if char in "[({":
                stack.append(char)
            elif char in _PAIRS and (not stack or stack.pop() != _PAIRS[char]):
                return False
    return not stack


def _statement(state: _State, line: str) -> None:
    if _COMMENT.fullmatch(line):
        return
    if line == "end":
        state.depth -= 1
        if state.depth < 0:
            raise ValueError("'end' without a subgraph")
    elif m := _SUBGRAPH.fullmatch(line):
        state.declare(m["id"])
        state.depth += 1
    elif m := _NODE.fullmatch(line):
        state.declare(m["id"])
    elif m := _EDGE.fullmatch(line):
        state.use(m["src"])
        state.use(m["dst"])
        state.edges += 1
    elif m := _CLASSDEF.fullmatch(line):
        state.class_defs.add(m["name"])
    elif m := _CLASS.fullmatch(line):
        if m["name"] not in state.class_defs:
            raise ValueError(f"class {m['name']!r} has no classDef above it")
        for name in m["ids"].split(","):
            state.use(name)
    elif m := _LINKSTYLE.fullmatch(line):
        for index in map(int, m["indices"].split(",")):
            if index >= state.edges or index in state.styled:
                raise ValueError(f"linkStyle index {index} is not a link (or styled twice)")
            state.styled.add(index)
    else:
        raise ValueError("not a statement of the flowchart subset")


def check(text: str) -> None:
    """:raises AssertionError: naming the first line that is not valid."""
    lines = text.split("\n")
    if not lines or not _HEADER.fullmatch(lines[0]):
        raise AssertionError(f"line 1: expected a 'flowchart TD' header, got {lines[0]!r}")
    state = _State()
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or raw != raw.rstrip():
            raise AssertionError(f"line {number}: empty or trailing blanks: {raw!r}")
        if not _balanced(line):
            raise AssertionError(f"line {number}: unbalanced brackets or quotes: {raw!r}")
        try:
            _statement(state, line)
        except ValueError as exc:
            raise AssertionError(f"line {number}: {exc}: {raw!r}") from None
    if state.depth:
        raise AssertionError(f"{state.depth} subgraph(s) not closed with 'end'")
