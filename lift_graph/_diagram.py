"""``Graph.mermaid()``: a mermaid flowchart drawn before any run (pure).

What is drawn, and from where:

- one node per class; ``-->`` for the next nodes its ``run`` annotation names;
- a fork (``Fork(...)`` or a returned list, found in ``run``'s source) as a hexagon
  with an edge to each branch class and a thick edge ``==>`` to the join node
  (``then``), labelled with the join strategy (``QUORUM 2``) and non-default options;
- a pipeline as a subgraph of its members, with an edge from each member to those
  that wait for it (the scheduler's own rule, ``plan_pipeline``), and a thick edge to
  its ``then``;
- transitions seen only in runs (``Graph._observed``) dotted and coloured.

A fork whose branches cannot be read statically is a placeholder until a run shows
them. Output is deterministic: classes by name, blocks in source order.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from ._declared_reducers import reducers_of
from ._diagram_source import END, Block, Member, declared_blocks
from ._plan import declared_io, infer_order, node_edges, plan_pipeline, state_type_of
from .errors import GraphDefinitionError

__all__ = ["markdown", "render"]

LEGEND = "%% solid: known before a run; dotted: seen only in runs"
_RUNTIME_STYLE = "stroke:#d9480f,stroke-width:2px"
_CLASS_DEFS = {
    "block": "fill:#eef3ff,stroke:#5b7bd5",
    "member": "fill:#f6f6f6,stroke:#999999",
    "unknown": "fill:#ffffff,stroke:#999999,stroke-dasharray:4 4",
}
# Words mermaid's flowchart grammar reserves (matched case-sensitively).
_RESERVED = frozenset(
    {"end", "graph", "flowchart", "subgraph", "style", "class", "classDef", "click"}
    | {"linkStyle", "direction", "default", "call", "href"}
)


@dataclass
class _Chart:
    nodes: list[str] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)
    runtime: list[int] = field(default_factory=list)  # indices of run-time-only edges
    classes: dict[str, list[str]] = field(default_factory=dict)
    uses_end: bool = False

    def edge(self, src: str, dst: str, arrow: str = "-->", label: str = "") -> None:
        text = f'|"{escape(label)}"|' if label else ""
        self.edges.append(f"    {src} {arrow}{text} {dst}")
        self.uses_end |= dst == _END_ID

    def tag(self, node_id: str, css: str) -> None:
        self.classes.setdefault(css, []).append(node_id)


_END_ID = "End"


def node_id(name: str) -> str:
    """A mermaid-safe id for a class name (``End`` and ``__`` are ours)."""
    safe = re.sub(r"[^A-Za-z0-9_]", lambda m: f"_{ord(m.group()):x}_", name)
    if safe in _RESERVED or safe == _END_ID or not safe[:1].isalpha():
        safe = f"n_{safe}"
    return safe


def escape(label: str) -> str:
    """Text safe inside a quoted mermaid label (entity codes for the specials)."""
    out = label.replace("#", "#35;").replace('"', "#quot;").replace("`", "#96;")
    out = out.replace("<", "#lt;").replace(">", "#gt;").replace("|", "#124;")
    return " ".join(out.splitlines())  # one statement per line


def render(
    by_name: Mapping[str, type],
    observed: Set[tuple[str, str, str]],
    dict_reducers: Mapping[str, object],
) -> str:
    """The flowchart text; ``observed`` holds ``(source, target, kind)`` seen in runs."""
    blocks = {name: declared_blocks(cls, by_name) for name, cls in sorted(by_name.items())}
    for name, cls in by_name.items():
        annotation = node_edges(cls)
        if annotation.known and not (annotation.forks or annotation.pipelines) and not blocks[name]:
            blocks[name] = []  # nothing to draw; a missing source does not matter here
    chart = _Chart()
    static = _static_edges(by_name, blocks)
    hidden = _member_only(by_name, blocks, static, observed)
    for name in sorted(by_name):
        if name not in hidden:
            chart.nodes.append(f'    {node_id(name)}["{escape(name)}"]')
            _class_edges(chart, name, by_name[name])
            _blocks(chart, name, by_name, blocks[name], observed, dict_reducers)
    _runtime_edges(chart, blocks, static, observed)
    return _assemble(chart)


def markdown(text: str) -> str:
    """A fenced block: JupyterLab (>= 4.1) and GitHub draw it as a picture."""
    return f"```mermaid\n{text}\n```"


# -- what is known statically -------------------------------------------------------
def _static_edges(
    by_name: Mapping[str, type], blocks: Mapping[str, list[Block] | None]
) -> set[tuple[str, str, str]]:
    """Static transitions, in the scheduler's ``(source, target, kind)`` terms."""
    out: set[tuple[str, str, str]] = set()
    for name, cls in by_name.items():
        static = node_edges(cls)
        out.update((name, t.__name__, "next") for t in static.targets)
        if static.ends:
            out.add((name, END, "end"))
        for block in blocks[name] or ():
            out.update((name, m.cls, block.kind) for m in block.members or ())
            out.update((name, t, "join") for t in block.then if t != END)
    return out


def _member_only(
    by_name: Mapping[str, type],
    blocks: Mapping[str, list[Block] | None],
    static: set[tuple[str, str, str]],
    observed: Set[tuple[str, str, str]],
) -> set[str]:
    """Classes drawn only inside their pipelines: nothing else leads to them."""
    members = {
        m.cls
        for found in blocks.values()
        for b in found or ()
        if b.kind == "pipeline"
        for m in b.members or ()
    }
    reached = {dst for _, dst, kind in static if kind != "pipeline"}
    # A class that ran as a path node (a run's start, say) needs its own box too.
    reached |= {end for src, dst, _ in observed - static for end in (src, dst)}
    return {m for m in members if m in by_name and m not in reached}


def _class_edges(chart: _Chart, name: str, cls: type) -> None:
    static = node_edges(cls)
    for target in sorted(t.__name__ for t in static.targets):
        chart.edge(node_id(name), node_id(target))
    if static.ends:
        chart.edge(node_id(name), _END_ID)


def _blocks(
    chart: _Chart,
    name: str,
    by_name: Mapping[str, type],
    found: list[Block] | None,
    observed: Set[tuple[str, str, str]],
    dict_reducers: Mapping[str, object],
) -> None:
    src = node_id(name)
    for i, block in enumerate(found or ()):
        block_id = f"{src}__{block.kind}{i}"
        chart.edge(src, block_id)
        if block.kind == "fork":
            _fork(chart, block_id, block)
        else:
            _pipeline(chart, block_id, block, by_name, state_type_of(by_name[name]), dict_reducers)
        for then in block.then:
            chart.edge(block_id, _END_ID if then == END else node_id(then), "==>", block.label)
    static = node_edges(by_name[name])
    drawn = {b.kind for b in found or ()}
    seen = {kind for src_name, _, kind in observed if src_name == name}
    for kind, flagged in (("fork", static.forks), ("pipeline", static.pipelines)):
        if flagged and kind not in drawn and kind not in seen:
            placeholder = f"{src}__{kind}"
            what = "branches" if kind == "fork" else "members"
            text = f"{kind}: {what} known at run time"
            chart.nodes.append(f'    {placeholder}{{{{"{text}"}}}}')
            chart.tag(placeholder, "unknown")
            chart.edge(src, placeholder)


def _fork(chart: _Chart, block_id: str, block: Block) -> None:
    text = "fork" if block.members is not None else "fork: branches known at run time"
    chart.nodes.append(f'    {block_id}{{{{"{text}"}}}}')
    chart.tag(block_id, "block" if block.members is not None else "unknown")
    for member in block.members or ():
        label = member.key if member.key is not None else ("each" if member.many else "")
        chart.edge(block_id, node_id(member.cls), label=label or "")


def _pipeline(
    chart: _Chart,
    block_id: str,
    block: Block,
    by_name: Mapping[str, type],
    state_type: type | None,
    dict_reducers: Mapping[str, object],
) -> None:
    members = list(block.members or ())
    title = "pipeline (inferred order)" if block.inferred_order else "pipeline"
    if block.members is None:
        title = "pipeline: members known at run time"
    chart.nodes.append(f'    subgraph {block_id} ["{title}"]')
    if block.inferred_order:
        members = _inferred(members, by_name, _reduced(state_type, dict_reducers))
    for j, member in enumerate(members):
        text = f"{member.cls} (each)" if member.many else member.cls
        chart.nodes.append(f'        {block_id}_m{j}["{escape(text)}"]')
        chart.tag(f"{block_id}_m{j}", "member")
    chart.nodes.append("    end")
    for before, after in _dependencies(members, by_name, _reduced(state_type, dict_reducers)):
        chart.edge(f"{block_id}_m{before}", f"{block_id}_m{after}")


def _reduced(state_type: type | None, dict_reducers: Mapping[str, object]) -> frozenset[str]:
    """The state fields that have a reducer, as ``reducers_for`` finds them at run time."""
    if state_type is None or typing.is_typeddict(state_type):
        return frozenset(dict_reducers)
    return frozenset(reducers_of(state_type))


def _dependencies(
    members: list[Member], by_name: Mapping[str, type], reduced: frozenset[str]
) -> list[tuple[int, int]]:
    """``(i, j)``: member j waits for member i, by the scheduler's ``plan_pipeline``.

    A comprehension member stands for several instances: it is planned twice, and
    one copy waiting for the other is drawn as a loop on its box.
    """
    slots: list[int] = []
    for j, member in enumerate(members):
        slots.extend([j, j] if member.many else [j])
    plan = plan_pipeline(
        tuple(declared_io(by_name[members[j].cls]) for j in slots), frozenset(reduced)
    )
    edges = {(slots[i], slots[k]) for k, deps in enumerate(plan.deps) for i in deps}
    return sorted(edges)


def _inferred(
    members: list[Member], by_name: Mapping[str, type], reduced: frozenset[str]
) -> list[Member]:
    try:
        order = infer_order(
            [(m.cls, *declared_io(by_name[m.cls])) for m in members], frozenset(reduced)
        )
    except GraphDefinitionError:
        return members  # the run will refuse it; the list order is the best picture
    return [members[i] for i in order]


# -- what runs added ----------------------------------------------------------------
def _runtime_edges(
    chart: _Chart,
    blocks: Mapping[str, list[Block] | None],
    static: set[tuple[str, str, str]],
    observed: Set[tuple[str, str, str]],
) -> None:
    """Transitions runs took that the static picture lacks, dotted."""
    rank = {"next": 0, "end": 1, "fork": 2, "pipeline": 3, "join": 4}
    for src, dst, kind in sorted(observed - static, key=lambda e: (e[0], rank[e[2]], e[1])):
        target = _END_ID if dst == END else node_id(dst)
        origin, label = _runtime_origin(src, kind, blocks.get(src) or [])
        chart.runtime.append(len(chart.edges))
        chart.edge(origin, target, "-.->", label)


def _runtime_origin(src: str, kind: str, found: list[Block]) -> tuple[str, str]:
    """Where a run-time edge starts: the block itself when ``src`` has exactly one
    that fits (a fork for a branch, either for a join), else ``src``, labelled."""
    if kind in ("next", "end"):
        return node_id(src), ""
    fitting = [i for i, b in enumerate(found) if kind in ("join", b.kind)]
    if len(fitting) == 1:
        return f"{node_id(src)}__{found[fitting[0]].kind}{fitting[0]}", ""
    return node_id(src), kind


def _assemble(chart: _Chart) -> str:
    lines = ["flowchart TD", f"    {LEGEND}"]
    lines.extend(chart.nodes)
    if chart.uses_end:
        lines.append(f'    {_END_ID}(("End"))')
    lines.extend(chart.edges)
    for css in sorted(chart.classes):
        lines.append(f"    classDef {css} {_CLASS_DEFS[css]}")
        lines.append(f"    class {','.join(chart.classes[css])} {css}")
    if chart.runtime:
        lines.append(f"    linkStyle {','.join(map(str, chart.runtime))} {_RUNTIME_STYLE}")
    return "\n".join(lines)
