"""The ``lift-graph`` command line: ``run``, ``resume``, ``mermaid``, ``check``, ``demo``.

A graph is named by ``module:attribute`` (``myapp.graphs:graph``), imported with the
current directory on ``sys.path``. Exit status: 0 done (a run paused by an
``Interrupt`` included), 1 the run (or a determinism check) failed, 2 a wrong
argument. Errors print one line; ``lift-graph --traceback ...`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ._cli_check import check
from ._cli_common import USAGE_ERRORS, fail, guard, start_options
from ._cli_load import CliUsageError, build_start, load_graph, load_object, load_state, parse_json
from ._cli_progress import NodeProgress
from ._cli_report import as_json, dumps, interrupt_help, record_row, timing_table
from ._records import record_order
from .errors import CheckpointError, ConfigurationError
from .graph import RunResult
from .sqlite_store import SQLiteStore
from .store import GraphState
from .timeline import Timeline

__all__ = ["TARGET_KEY", "cli", "main"]

#: The run-metadata key under which ``run --store`` remembers its ``module:graph``,
#: so ``resume`` finds the graph by itself.
TARGET_KEY = "lift_graph.cli.target"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--traceback", is_flag=True, help="Print the full traceback of an error.")
def cli(traceback: bool) -> None:
    """Run, resume, draw and check lift_graph graphs (GRAPH is module:attribute)."""


# -- shared options -----------------------------------------------------------------


def _timeline_suffix(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Refuse a wrong ``--timeline`` suffix before the run, not after it."""
    if value is not None and Path(value).suffix.lower() not in (".svg", ".html", ".htm"):
        raise click.BadParameter(f"{value} must end in .svg or .html")
    return value


def _run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--max-concurrency", type=click.IntRange(min=1), help="Nodes at once."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            help="Seconds for the whole run.",
        ),
        click.option(
            "--deps", metavar="MODULE:ATTR", help="The object to pass as deps (ctx.deps)."
        ),
        click.option("--json", "as_json_flag", is_flag=True, help="Print one JSON document."),
        click.option("-q", "--quiet", is_flag=True, help="No progress display."),
        click.option(
            "--timeline",
            "timeline_path",
            metavar="PATH",
            help="Save the run's timeline (.svg or .html).",
            callback=_timeline_suffix,
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _open_store(path: str, *, existing: bool) -> SQLiteStore:
    if existing and not Path(path).is_file():
        raise CliUsageError(f"--store {path} does not exist: give the file the run was stored in")
    try:
        return SQLiteStore(path)
    except CheckpointError as exc:
        raise CliUsageError(f"--store {path}: {exc}") from exc


def _load_row(store: SQLiteStore, path: str, execution_id: str) -> GraphState:
    try:
        row = store.load_run(execution_id)
    except CheckpointError as exc:
        store.close()
        raise CliUsageError(f"--store {path}: {exc}") from exc
    if row is None:
        store.close()
        raise CliUsageError(f"{path} has no run {execution_id!r}: check the id")
    return row


# -- run / resume ----------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    execution_id: str
    result: RunResult[Any] | None
    error: BaseException | None
    progress: NodeProgress


def _drive(
    go: Callable[[NodeProgress], Coroutine[Any, Any, RunResult[Any]]],
    execution_id: str,
    quiet: bool,
) -> _Outcome:
    progress = NodeProgress(sys.stderr, show=not quiet)
    try:
        result: RunResult[Any] = asyncio.run(go(progress))
    except USAGE_ERRORS as exc:
        progress.close()
        fail(exc, str(exc), 2)
    except Exception as exc:  # noqa: BLE001 - a node's own error is any Exception; reported below
        progress.close()
        return _Outcome(execution_id, None, exc, progress)
    progress.close()
    return _Outcome(result.execution_id, result, None, progress)


def _status(outcome: _Outcome) -> str:
    if outcome.result is None:
        return "failed"
    return "interrupted" if outcome.result.interrupts else "finished"


def _failed_at(outcome: _Outcome) -> str | None:
    return getattr(outcome.error, "node_key", None) or outcome.progress.failed_key


def _report(
    outcome: _Outcome, *, store: str | None, json_out: bool, timeline: str | None = None
) -> None:
    """Print the outcome; a failed run exits with status 1."""
    result, error = outcome.result, outcome.error
    records = (
        result.records
        if result is not None
        else sorted(outcome.progress.all_records(), key=record_order)
    )
    if timeline is not None:
        _save_timeline(outcome, records, timeline)
    if json_out:
        click.echo(dumps(_payload(outcome, records)))
    else:
        _print_human(outcome, records, store)
    if error is not None:
        where = _failed_at(outcome)
        at = f" at node {where}" if where else ""
        fail(error, f"run {outcome.execution_id} failed{at}: {type(error).__name__}: {error}", 1)


def _save_timeline(outcome: _Outcome, records: Sequence[Any], path: str) -> None:
    """Write the timeline; a failed run's is drawn from the records seen so far."""
    result = outcome.result
    if result is not None:
        picture = result.timeline()
    else:
        picture = Timeline(records, execution_id=outcome.execution_id)
    try:
        picture.save(path)
    except (ConfigurationError, OSError) as exc:
        fail(exc, f"--timeline {path}: {exc}", 2)
    click.echo(f"timeline: {path}", err=True)


def _payload(outcome: _Outcome, records: Sequence[Any]) -> dict[str, Any]:
    result, error = outcome.result, outcome.error
    return {
        "execution_id": outcome.execution_id,
        "status": _status(outcome),
        "output": as_json(result.output) if result else None,
        "state": as_json(result.state) if result else None,
        "deterministic": result.deterministic if result else None,
        "elapsed_ms": round(result.elapsed_ms, 3) if result else None,
        "peak_concurrency": result.peak_concurrency if result else None,
        "interrupts": as_json(result.interrupts) if result else {},
        "records": [record_row(r) for r in records],
        "error": f"{type(error).__name__}: {error}" if error else None,
        "failed_node": _failed_at(outcome) if error else None,
    }


def _print_human(outcome: _Outcome, records: Sequence[Any], store: str | None) -> None:
    result = outcome.result
    click.echo(timing_table(records) if records else "(no node ran)")
    if result is not None:
        click.echo(f"\noutput: {dumps(result.output)}")
        click.echo(f"state: {dumps(result.state)}")
        peak = result.peak_concurrency
        click.echo(
            f"\n{_status(outcome)} in {result.elapsed_ms / 1000:.3f} s, "
            f"deterministic: {result.deterministic}"
            + (f", peak concurrency: {peak}" if peak else "")
        )
        if result.interrupts:
            click.echo(interrupt_help(result.interrupts, outcome.execution_id, store))
    click.echo(f"execution_id: {outcome.execution_id}")
    if store is not None and result is None:
        click.echo(
            f"resume it with: lift-graph resume {outcome.execution_id} --store {store}"
            " (finished nodes are not run again)"
        )
    elif store is not None:
        click.echo(f"stored in {store}")


@cli.command()
@click.argument("target", metavar="GRAPH")
@start_options
@click.option("--store", "store_path", metavar="DB", help="SQLite file: a durable, resumable run.")
@click.option("--execution-id", help="Id of the run (default: a new uuid).")
@_run_options
def run(
    target: str,
    start_name: str,
    start_args: str | None,
    state_path: str | None,
    store_path: str | None,
    execution_id: str | None,
    max_concurrency: int | None,
    timeout: float | None,
    deps: str | None,
    as_json_flag: bool,
    quiet: bool,
    timeline_path: str | None,
) -> None:
    """Run GRAPH from --start on --state; show progress and a per-node timing table."""

    def prepare() -> tuple[Any, ...]:
        graph = load_graph(target)
        start = build_start(graph, start_name, start_args)
        state = load_state(graph, start, state_path)
        dep = load_object(deps, "--deps") if deps else None
        store = _open_store(store_path, existing=False) if store_path else None
        return graph, start, state, dep, store

    graph, start, state, dep, store = guard(prepare)
    run_id = execution_id or uuid.uuid4().hex

    async def go(progress: NodeProgress) -> RunResult[Any]:
        result: RunResult[Any] = await graph.run(
            start,
            state=state,
            deps=dep,
            max_concurrency=max_concurrency,
            timeout=timeout,
            execution_id=run_id,
            store=store,
            metadata={TARGET_KEY: target} if store is not None else None,
            _events=progress,
        )
        return result

    try:
        outcome = _drive(go, run_id, quiet)
    finally:
        if store is not None:
            store.close()
    _report(outcome, store=store_path, json_out=as_json_flag, timeline=timeline_path)


def _answers(pairs: Sequence[str]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise CliUsageError(f"--answer must be KEY=JSON (0.Ask='\"yes\"'), got {pair!r}")
        answers[key] = parse_json(text, f"the answer to {key} (quote a string: {key}='\"yes\"')")
    return answers


@cli.command()
@click.argument("execution_id")
@click.option("--store", "store_path", required=True, metavar="DB", help="The run's SQLite file.")
@click.option(
    "--graph", "target", metavar="GRAPH", help="module:graph (default: as stored by run)."
)
@click.option(
    "--answer", "answer_pairs", multiple=True, metavar="KEY=JSON", help="Answer an Interrupt."
)
@_run_options
def resume(
    execution_id: str,
    store_path: str,
    target: str | None,
    answer_pairs: tuple[str, ...],
    max_concurrency: int | None,
    timeout: float | None,
    deps: str | None,
    as_json_flag: bool,
    quiet: bool,
    timeline_path: str | None,
) -> None:
    """Continue run EXECUTION_ID from --store: after a failure, a crash or an Interrupt."""

    def prepare() -> tuple[Any, ...]:
        answers = _answers(answer_pairs)
        store = _open_store(store_path, existing=True)
        row = _load_row(store, store_path, execution_id)
        graph_target = target or row.metadata.get(TARGET_KEY)
        if not graph_target:
            store.close()
            raise CliUsageError(
                f"run {execution_id} (graph {row.graph!r}) was not started by lift-graph run: "
                "name its graph with --graph module:graph"
            )
        dep = load_object(deps, "--deps") if deps else None
        return load_graph(str(graph_target)), store, answers, dep

    graph, store, answers, dep = guard(prepare)

    async def go(progress: NodeProgress) -> RunResult[Any]:
        result: RunResult[Any] = await graph.resume(
            execution_id,
            store=store,
            answers=answers or None,
            deps=dep,
            max_concurrency=max_concurrency,
            timeout=timeout,
            _events=progress,
        )
        return result

    try:
        outcome = _drive(go, execution_id, quiet)
    finally:
        store.close()
    _report(outcome, store=store_path, json_out=as_json_flag, timeline=timeline_path)


# -- mermaid / check / demo ----------------------------------------------------------


@cli.command()
@click.argument("target", metavar="GRAPH")
@click.option("--markdown", is_flag=True, help="Wrap it in a ```mermaid fence.")
def mermaid(target: str, markdown: bool) -> None:
    """Print GRAPH's mermaid flowchart."""
    graph = guard(lambda: load_graph(target))
    text = graph.mermaid()
    click.echo(f"```mermaid\n{text}\n```" if markdown else text)


cli.add_command(check)


@cli.command()
@click.argument("examples", nargs=-1, metavar="[EXAMPLE]...")
@click.option("--no-mermaid", is_flag=True, help="Skip the diagram.")
@click.option("--no-batch", is_flag=True, help="Skip the batch step.")
@click.option("--no-speedup", is_flag=True, help="Skip the parallel vs sequential measurement.")
@click.option(
    "--timeline",
    "timeline_path",
    metavar="PATH",
    help="Save the parallel run's timeline (.svg or .html).",
    callback=_timeline_suffix,
)
def demo(
    examples: tuple[str, ...],
    no_mermaid: bool,
    no_batch: bool,
    no_speedup: bool,
    timeline_path: str | None,
) -> None:
    """Run the offline demo (fake LM): example pipelines, a measured speed-up, a race."""
    try:
        from nodes import demo as demo_module
    except ImportError as exc:
        fail(exc, "the demo needs the nodes package (installed with lift_graph)", 2)
    unknown = [name for name in examples if name not in demo_module.EXAMPLES]
    if unknown:
        choices = ", ".join(demo_module.EXAMPLES)
        fail(CliUsageError(), f"unknown example(s) {', '.join(unknown)}: choose from {choices}", 2)
    demo_module.show(
        list(examples) or None,
        mermaid=not no_mermaid,
        batch=not no_batch,
        speedup=not no_speedup,
        timeline=timeline_path,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The ``lift-graph`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="lift-graph")
