"""``graph.mermaid()`` before any run: forks (branch classes, join node, strategy),
pipelines (member dependencies), loops; run-time transitions drawn apart."""

from __future__ import annotations

import importlib
import linecache
import os
import re
import textwrap
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel

from lift_graph import (
    BaseNode,
    DSPyNode,
    End,
    FailureMode,
    Fork,
    Graph,
    JoinStrategy,
    MergeStrategy,
    Pipeline,
    RunContext,
    append,
)
from tests._mermaid_check import check


class Doc(BaseModel):
    doc_ids: list[str] = []
    summaries: Annotated[list[str], append] = []
    text: str = ""
    keywords: list[str] = []
    topic: str = ""
    rounds: int = 0


class Plan(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Fork[Doc]:
        return Fork(
            [Summarize() for _ in ctx.state.doc_ids],
            then=Combine(),
            join=JoinStrategy.QUORUM,
            quorum=2,
        )


class Summarize(BaseNode[Doc]):
    reads: ClassVar[frozenset[str]] = frozenset({"doc_ids"})
    writes: ClassVar[frozenset[str]] = frozenset({"summaries"})

    async def run(self, ctx: RunContext[Doc]) -> End[str]:
        ctx.state.summaries.append(f"summary {len(ctx.state.summaries)}")
        return End("done")


class Combine(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Pipeline[Doc]:
        return Pipeline([Extract(), Keywords(), Topic()], then=Review())


class Extract(BaseNode[Doc]):
    reads: ClassVar[frozenset[str]] = frozenset({"summaries"})
    writes: ClassVar[frozenset[str]] = frozenset({"text"})

    async def run(self, ctx: RunContext[Doc]) -> None:
        ctx.state.text = "; ".join(ctx.state.summaries)


class Keywords(BaseNode[Doc]):
    reads: ClassVar[frozenset[str]] = frozenset({"text"})  # waits for Extract
    writes: ClassVar[frozenset[str]] = frozenset({"keywords"})

    async def run(self, ctx: RunContext[Doc]) -> None:
        ctx.state.keywords = ctx.state.text.split("; ")


class Topic(BaseNode[Doc]):
    reads: ClassVar[frozenset[str]] = frozenset({"doc_ids"})  # independent
    writes: ClassVar[frozenset[str]] = frozenset({"topic"})

    async def run(self, ctx: RunContext[Doc]) -> None:
        ctx.state.topic = ctx.state.doc_ids[0]


class Review(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Plan | Publish:
        if ctx.state.rounds < 1:
            ctx.state.rounds += 1
            return Plan()  # the loop: one more round
        return Publish()


class Publish(BaseNode[Doc]):
    # `Any` names no next node: Archive is known only once a run took this edge.
    async def run(self, ctx: RunContext[Doc]) -> Any:
        return Archive()


class Archive(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> End[str]:
        return End(ctx.state.topic)


NODES = [Plan, Summarize, Combine, Extract, Keywords, Topic, Review, Publish, Archive]

BEFORE_A_RUN = """\
flowchart TD
    %% solid: known before a run; dotted: seen only in runs
    Archive["Archive"]
    Combine["Combine"]
    subgraph Combine__pipeline0 ["pipeline"]
        Combine__pipeline0_m0["Extract"]
        Combine__pipeline0_m1["Keywords"]
        Combine__pipeline0_m2["Topic"]
    end
    Plan["Plan"]
    Plan__fork0{{"fork"}}
    Publish["Publish"]
    Review["Review"]
    Summarize["Summarize"]
    End(("End"))
    Archive --> End
    Combine --> Combine__pipeline0
    Combine__pipeline0_m0 --> Combine__pipeline0_m1
    Combine__pipeline0 ==> Review
    Plan --> Plan__fork0
    Plan__fork0 -->|"each"| Summarize
    Plan__fork0 ==>|"QUORUM 2"| Combine
    Review --> Plan
    Review --> Publish
    Summarize --> End
    classDef block fill:#eef3ff,stroke:#5b7bd5
    class Plan__fork0 block
    classDef member fill:#f6f6f6,stroke:#999999
    class Combine__pipeline0_m0,Combine__pipeline0_m1,Combine__pipeline0_m2 member"""


def test_fork_join_pipeline_and_loop_before_any_run() -> None:
    graph = Graph(NODES)
    text = graph.mermaid()
    assert text == BEFORE_A_RUN
    check(text)


def test_run_time_transitions_are_dotted_and_static_ones_unchanged() -> None:
    graph = Graph(NODES)
    result = graph.run_sync(Plan(), state=Doc(doc_ids=["a", "b", "c"]))
    assert result.output == "a" and result.state.rounds == 1
    after = graph.mermaid()
    check(after)
    lines = after.split("\n")
    # Everything drawn before the run is still there, in the same order...
    assert [line for line in lines if line in BEFORE_A_RUN.split("\n")] == BEFORE_A_RUN.split("\n")
    # ...and the one transition no annotation or Fork declared is added, dotted and
    # coloured by index (edges are counted from 0 in the order they are written).
    added = [line for line in lines if line not in BEFORE_A_RUN.split("\n")]
    assert added == [
        "    Publish -.-> Archive",
        "    linkStyle 10 stroke:#d9480f,stroke-width:2px",
    ]
    edges = [line for line in lines if "-->" in line or "==>" in line or "-.->" in line]
    assert edges[10] == "    Publish -.-> Archive"


# -- forms of a fork found in run's source ---------------------------------------------
class Pick(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> list[Fast | Slow]:
        return [Fast(), Slow()]  # a plain list is a fork joined by ALL, ending the path


class Race(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Fork[Doc]:
        branches = {"fast": Fast(), 'say "hi" <now>\n`|#': Slow()}
        return Fork(
            branches,
            then=Archive() if ctx.state.rounds else None,
            join=JoinStrategy.FIRST_ACCEPTED,
            accept=bool,
            merge=MergeStrategy.FIRST_SUCCESS,
            on_error=FailureMode.CONTINUE,
            timeout=2.5,
        )


class Fast(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> End[str]:
        return End("fast")


class Slow(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> End[str]:
        return End("slow")


def _lines(graph: Graph[Any]) -> list[str]:
    text = graph.mermaid()
    check(text)
    return text.split("\n")


def test_a_returned_list_is_a_fork_joined_by_all() -> None:
    assert _lines(Graph([Pick, Fast, Slow])) == [
        "flowchart TD",
        "    %% solid: known before a run; dotted: seen only in runs",
        '    Fast["Fast"]',
        '    Pick["Pick"]',
        '    Pick__fork0{{"fork"}}',
        '    Slow["Slow"]',
        '    End(("End"))',
        "    Fast --> End",
        "    Pick --> Pick__fork0",
        "    Pick__fork0 --> Fast",
        "    Pick__fork0 --> Slow",
        '    Pick__fork0 ==>|"ALL"| End',
        "    Slow --> End",
        "    classDef block fill:#eef3ff,stroke:#5b7bd5",
        "    class Pick__fork0 block",
    ]


def test_a_dict_fork_labels_branches_by_key_and_escapes_them() -> None:
    lines = _lines(Graph([Race, Fast, Slow, Archive]))
    fork_lines = [line for line in lines if "Race__fork0" in line]
    assert fork_lines == [
        '    Race__fork0{{"fork"}}',
        "    Race --> Race__fork0",
        '    Race__fork0 -->|"fast"| Fast',
        '    Race__fork0 -->|"say #quot;hi#quot; #lt;now#gt; #96;#124;#35;"| Slow',
        '    Race__fork0 ==>|"FIRST_ACCEPTED, merge FIRST_SUCCESS, on_error CONTINUE, '
        'timeout 2.5s"| Archive',
        '    Race__fork0 ==>|"FIRST_ACCEPTED, merge FIRST_SUCCESS, on_error CONTINUE, '
        'timeout 2.5s"| End',
        "    class Race__fork0 block",
    ]


# -- a class whose source cannot be read ----------------------------------------------
_NO_SOURCE = textwrap.dedent(
    """
    class Spread(BaseNode[Doc]):
        async def run(self, ctx: RunContext[Doc]) -> Fork[Doc]:
            return Fork([Fast(), Slow()], then=Archive())
    """
)


def test_a_fork_without_source_is_a_placeholder_until_a_run_shows_it() -> None:
    namespace: dict[str, Any] = dict(globals())
    exec(compile(_NO_SOURCE, "<no file>", "exec"), namespace)
    spread = namespace["Spread"]
    graph = Graph([spread, Fast, Slow, Archive])
    before = _lines(graph)
    assert '    Spread__fork{{"fork: branches known at run time"}}' in before
    assert "    Spread --> Spread__fork" in before
    assert "    class Spread__fork unknown" in before
    graph.run_sync(spread(), state=Doc(doc_ids=["x"]))
    after = _lines(graph)
    assert not any("known at run time" in line for line in after)
    assert [line for line in after if "-.->" in line] == [
        '    Spread -.->|"fork"| Fast',
        '    Spread -.->|"fork"| Slow',
        '    Spread -.->|"join"| Archive',
    ]
    assert after[-1] == "    linkStyle 3,4,5 stroke:#d9480f,stroke-width:2px"


# -- pipelines: the scheduler's dependency rule ----------------------------------------
class Fan(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Pipeline[Doc]:
        members = [Keywords(), Extract()]
        members.extend(Summarize() for _ in ctx.state.doc_ids)
        return Pipeline(members, order="inferred")


class Tally(BaseNode[Doc]):
    reads: ClassVar[frozenset[str]] = frozenset()
    writes: ClassVar[frozenset[str]] = frozenset({"topic"})  # no reducer

    async def run(self, ctx: RunContext[Doc]) -> None:
        ctx.state.topic += "+"


class Count(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Pipeline[Doc]:
        return Pipeline([Tally() for _ in ctx.state.doc_ids], then=Archive())


def test_inferred_order_and_comprehension_members() -> None:
    lines = _lines(Graph([Fan, Keywords, Extract, Summarize]))
    # Producers first: Summarize (each instance) writes the summaries Extract reads;
    # they write a field with a reducer, so they do not wait for one another.
    assert lines[2:] == [
        '    Fan["Fan"]',
        '    subgraph Fan__pipeline0 ["pipeline (inferred order)"]',
        '        Fan__pipeline0_m0["Summarize (each)"]',
        '        Fan__pipeline0_m1["Extract"]',
        '        Fan__pipeline0_m2["Keywords"]',
        "    end",
        '    End(("End"))',
        "    Fan --> Fan__pipeline0",
        "    Fan__pipeline0_m0 --> Fan__pipeline0_m1",
        "    Fan__pipeline0_m1 --> Fan__pipeline0_m2",
        "    Fan__pipeline0 ==> End",
        "    classDef member fill:#f6f6f6,stroke:#999999",
        "    class Fan__pipeline0_m0,Fan__pipeline0_m1,Fan__pipeline0_m2 member",
    ]


def test_instances_that_wait_for_one_another_loop_on_their_box() -> None:
    lines = _lines(Graph([Count, Tally, Archive]))
    assert "    Count__pipeline0_m0 --> Count__pipeline0_m0" in lines
    assert '        Count__pipeline0_m0["Tally (each)"]' in lines
    assert "    Count__pipeline0 ==> Archive" in lines
    assert not any(line.startswith('    Tally["') for line in lines)  # drawn in its pipeline


# -- Jupyter ------------------------------------------------------------------------------
def test_jupyter_gets_a_mermaid_fence_and_the_text() -> None:
    graph = Graph(NODES)
    bundle = graph._repr_mimebundle_()
    assert bundle == {
        "text/markdown": f"```mermaid\n{BEFORE_A_RUN}\n```",
        "text/plain": BEFORE_A_RUN,
    }
    assert graph._repr_markdown_() == bundle["text/markdown"]


# -- the checker can fail -----------------------------------------------------------------
GOOD = """\
flowchart TD
    %% a comment
    A["A"]
    subgraph S ["group"]
        B{{"say #quot;hi#quot;"}}
    end
    A -->|"x"| B
    A ==> S
    B -.-> A
    classDef c fill:#fff,stroke-dasharray:4 4
    class A,B c
    linkStyle 2 stroke:#d9480f"""


def test_the_checker_accepts_the_subset() -> None:
    check(GOOD)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("flowchart TD", "flowchart", "header"),
        ("    A -->|", "    A ->|", "not a statement"),
        ("    B -.-> A", "    B -.-> C", "'C' used before it is declared"),
        ("    end\n", "", "not closed"),
        ("    end\n", "    end\n    end\n", "'end' without a subgraph"),
        ('A["A"]', 'A["say "hi""]', "not a statement"),
        ('A["A"]', 'A["A"', "unbalanced"),
        ('A["A"]', 'A["#quot"]', "not a statement"),
        ('A["A"]', 'end["A"]', "keyword"),
        ('    A["A"]', '    A["A"]\n    A["again"]', "declared twice"),
        ("class A,B c", "class A,B d", "no classDef"),
        ("linkStyle 2", "linkStyle 3", "index 3"),
        ("    B -.-> A", "    B -.-> A ", "trailing blanks"),
    ],
)
def test_the_checker_rejects_malformed_text(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(AssertionError, match=message):
        check(GOOD.replace(old, new, 1))


# -- the docs example prints the diagram the docs show ------------------------------------
def test_docs_diagram_example_prints_the_diagram_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "concepts.md").read_text("utf-8")
    section = text.split("## Diagrams", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    shown = re.findall(r"```mermaid\n(.*?)```", section, flags=re.DOTALL)[0]
    # As IPython does for a cell, so that inspect.getsource finds the classes' source.
    filename = "<docs/concepts.md: Diagrams>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        namespace: dict[str, Any] = {"__name__": "docs_diagram_example"}
        exec(compile(code, filename, "exec", dont_inherit=True), namespace)
    finally:
        del linecache.cache[filename]
    printed = capsys.readouterr().out
    assert printed == shown
    check(printed.rstrip("\n"))
    assert 'Research__fork0 ==>|"QUORUM 2"| Write' in printed
    assert "Write__pipeline0_m0 --> Write__pipeline0_m1" in printed
    assert "Review --> Research" in printed


# -- DSPy nodes: reads / writes from the signature ----------------------------------------
class QA(BaseModel):
    question: str = ""
    draft: str = ""
    answer: str = ""
    category: str = ""


class Draft(DSPyNode[QA]):
    signature = "question -> draft"


class Polish(DSPyNode[QA]):
    signature = "draft -> answer"  # reads what Draft writes


class Classify(DSPyNode[QA]):
    signature = "question -> category"


class Answer(BaseNode[QA]):
    async def run(self, ctx: RunContext[QA]) -> Pipeline[QA]:
        return Pipeline([Draft(), Polish(), Classify()])


def test_dspy_members_depend_through_their_signatures() -> None:
    lines = _lines(Graph([Answer, Draft, Polish, Classify]))
    assert [line for line in lines if "_m" in line and "-->" in line] == [
        "    Answer__pipeline0_m0 --> Answer__pipeline0_m1"
    ]


# -- branches built by a helper: the fork is drawn, its branches come from runs ----------
def _racers() -> list[BaseNode[Doc]]:
    return [Fast(), Slow()]


class Delegate(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Fork[Doc]:
        return Fork(_racers(), then=Archive(), join="any")


def test_branches_from_a_helper_are_filled_in_by_runs() -> None:
    graph = Graph([Delegate, Fast, Slow, Archive])
    before = _lines(graph)
    assert '    Delegate__fork0{{"fork: branches known at run time"}}' in before
    assert '    Delegate__fork0 ==>|"ANY"| Archive' in before
    assert "    class Delegate__fork0 unknown" in before
    assert not any("Delegate__fork0 -->" in line for line in before)
    graph.run_sync(Delegate(), state=Doc())
    after = _lines(graph)
    assert [line for line in after if "-.->" in line] == [
        "    Delegate__fork0 -.-> Fast",
        "    Delegate__fork0 -.-> Slow",
    ]
    assert [line for line in after if line in before] == before


class Prompted(BaseNode[Doc]):
    async def run(self, ctx: RunContext[Doc]) -> Fork[Doc]:
        ctx.state.text = """a prompt
continued at column 0, which textwrap.dedent cannot remove"""
        return Fork({"fast": Fast()})


def test_a_run_with_a_string_at_column_0_is_still_read() -> None:
    lines = _lines(Graph([Prompted, Fast]))
    assert '    Prompted__fork0 -->|"fast"| Fast' in lines
    assert '    Prompted__fork0 ==>|"ALL"| End' in lines


def test_a_source_file_edited_since_import_is_not_misread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "edited_nodes.py"
    module.write_text(
        textwrap.dedent(
            """
            from typing import Any
            from lift_graph import BaseNode, End, Fork, RunContext

            class Split(BaseNode[Any]):
                async def run(self, ctx: RunContext[Any]) -> Fork[Any]:
                    return Fork([Leaf(), Leaf()])

            class Leaf(BaseNode[Any]):
                async def run(self, ctx: RunContext[Any]) -> End[str]:
                    return End("leaf")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    nodes = importlib.import_module("edited_nodes")
    graph = Graph([nodes.Split, nodes.Leaf])
    assert "    Split__fork0 --> Leaf" in _lines(graph)
    # Edited in place: Split.run's line now holds another method.
    module.write_text(
        module.read_text().replace(
            "def run(self, ctx: RunContext[Any]) -> Fork",
            "def old(self, ctx: RunContext[Any]) -> Fork",
        )
    )
    os.utime(module, (time.time() + 5, time.time() + 5))  # a new mtime for linecache
    lines = _lines(graph)
    assert '    Split__fork{{"fork: branches known at run time"}}' in lines
