"""``lift-graph check``: run a graph many times and say whether it is deterministic.

It is ``check_determinism`` on the command line: exit status 0 when every run gave
the same output and final state (canonical form) and the engine flagged no race;
1 otherwise, printing where the first divergent run differed from run 0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import click

from ._cli_common import USAGE_ERRORS, fail, guard, start_options
from ._cli_load import CliUsageError, build_start, load_graph, load_object, load_state
from ._cli_report import dumps
from .determinism import DeterminismReport, check_determinism

__all__ = ["check", "concurrency_levels"]

_DEFAULT_LEVELS: tuple[int | None, ...] = (1, 2, 8, None)


def concurrency_levels(values: Sequence[str]) -> tuple[int | None, ...]:
    """``("1,2", "none")`` -> ``(1, 2, None)``; empty -> ``(1, 2, 8, None)``."""
    levels: list[int | None] = []
    for value in values:
        for part in value.split(","):
            word = part.strip().lower()
            if word in ("none", "unbounded"):
                levels.append(None)
            elif word.isdigit() and int(word) >= 1:
                levels.append(int(word))
            else:
                raise CliUsageError(
                    f"--max-concurrency takes numbers >= 1 or 'none' (unbounded), got {part!r}"
                )
    return tuple(levels) or _DEFAULT_LEVELS


def _level_names(levels: Sequence[int | None]) -> str:
    return ", ".join("unbounded" if n is None else str(n) for n in levels)


def _value(value: Any, width: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def _payload(report: DeterminismReport, levels: Sequence[int | None]) -> dict[str, Any]:
    difference = None
    if report.first_difference is not None:
        path, first, other = report.first_difference
        difference = {"path": path, "run_0": first, "other_run": other}
    return {
        "deterministic": report.deterministic,
        "runs": report.runs,
        "max_concurrency": list(levels),
        "distinct_outputs": len(report.output_hashes),
        "distinct_states": len(report.state_hashes),
        "engine_flagged_runs": report.engine_flagged_runs,
        "first_divergent_run": report.first_divergent_run,
        "first_difference": difference,
        "reason": report.reason,
    }


def _print(report: DeterminismReport, graph_name: str, levels: Sequence[int | None]) -> None:
    runs = f"{report.runs} runs of graph {graph_name!r} (max_concurrency {_level_names(levels)})"
    if report.deterministic:
        click.echo(f"deterministic: {runs} gave one output and one final state")
        click.echo(f"  output sha256 {next(iter(report.output_hashes))[:16]}...")
        click.echo(f"  state  sha256 {next(iter(report.state_hashes))[:16]}...")
        return
    click.echo(f"NOT deterministic: {runs}")
    if report.first_difference is not None:
        path, first, other = report.first_difference
        i = report.first_divergent_run
        click.echo(f"  run {i} differs from run 0 at {path}")
        click.echo(f"    run 0: {_value(first)}")
        click.echo(f"    run {i}: {_value(other)}")
    click.echo(
        f"  {len(report.output_hashes)} distinct outputs and {len(report.state_hashes)} "
        f"distinct final states; the engine flagged {report.engine_flagged_runs} runs as races"
    )
    if not report.results_agree:
        click.echo(
            "  usual causes: a race join (ANY / FIRST / QUORUM), a node that reads random "
            "numbers or the clock, or list-mode DummyLM"
        )
    else:
        click.echo(f"  why: {report.reason}")


@click.command()
@click.argument("target", metavar="GRAPH")
@start_options
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--max-concurrency",
    "levels_given",
    multiple=True,
    metavar="N[,N...]",
    help="Levels cycled through run by run; 'none' is unbounded. Default: 1,2,8,none.",
)
@click.option("--deps", metavar="MODULE:ATTR", help="The object to pass as deps (ctx.deps).")
@click.option("--json", "as_json_flag", is_flag=True, help="Print one JSON document.")
def check(
    target: str,
    start_name: str,
    start_args: str | None,
    state_path: str | None,
    runs: int,
    levels_given: tuple[str, ...],
    deps: str | None,
    as_json_flag: bool,
) -> None:
    """Run GRAPH --runs times; exit 1 with the first differing field unless every
    run gave the same output and final state and no race decided a join."""

    def prepare() -> tuple[Any, ...]:
        graph = load_graph(target)
        start = build_start(graph, start_name, start_args)
        state = load_state(graph, start, state_path)
        dep = load_object(deps, "--deps") if deps else None
        return graph, start, state, dep, concurrency_levels(levels_given)

    graph, start, state, dep, levels = guard(prepare)
    try:
        report = asyncio.run(
            check_determinism(
                graph,
                start,
                state=state,
                runs=runs,
                max_concurrency=levels,
                raise_on_failure=False,
                deps=dep,
            )
        )
    except USAGE_ERRORS as exc:
        fail(exc, str(exc), 2)
    except Exception as exc:  # noqa: BLE001 - a node's own error is any Exception
        fail(exc, f"a run failed during the check: {type(exc).__name__}: {exc}", 1)
    if as_json_flag:
        click.echo(dumps(_payload(report, levels)))
    else:
        _print(report, graph.name, levels)
    if not report.deterministic:
        click.get_current_context().exit(1)
