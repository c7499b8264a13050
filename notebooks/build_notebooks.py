"""Build notebooks/*.ipynb from their jupytext sources in notebooks/src/, executed.

    python notebooks/build_notebooks.py               # execute every source, write *.ipynb
    python notebooks/build_notebooks.py quickstart    # only the named notebooks
    python notebooks/build_notebooks.py --check       # the committed notebooks are current

A source is a Python file in jupytext's "percent" format (``# %%`` code cells,
``# %% [markdown]`` cells), linted and formatted like the rest of the code. The
build runs it top to bottom in a fresh ``python3`` kernel whose working directory
is the repository root (so ``lift_graph`` and ``nodes`` are this checkout's), on
the offline fake LM, and writes the notebook with its outputs, so it reads well
on GitHub. Volatile metadata (execution timestamps, the interpreter's version) is
dropped and cell ids are derived from the cell's position, so rebuilding an
unchanged source only changes outputs that really vary (timings).

``--check`` does not execute anything: it fails when a committed notebook's cells
differ from its source's, when a code cell was never executed or shows an error,
or when a source has no notebook (or a notebook no source).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCES = HERE / "src"
#: Seconds one cell may run before the build (or test) fails.
CELL_TIMEOUT = 120
KERNEL = "python3"


def _metadata() -> NotebookNode:
    """Notebook metadata without the interpreter's version or jupytext's settings."""
    kernelspec = {"display_name": "Python 3", "language": "python", "name": KERNEL}
    return nbformat.from_dict({"kernelspec": kernelspec, "language_info": {"name": "python"}})


def source_paths(src: Path = SOURCES) -> list[Path]:
    """The notebook sources, by name."""
    return sorted(src.glob("*.py"))


def read_source(path: Path) -> NotebookNode:
    """The unexecuted notebook of jupytext source ``path``, with stable metadata."""
    notebook = jupytext.read(path, fmt="py:percent")
    notebook.metadata = _metadata()
    for index, cell in enumerate(notebook.cells):
        # Position-derived ids: a rebuild does not reshuffle random ones.
        cell.id = hashlib.sha256(f"{path.stem}:{index}".encode()).hexdigest()[:8]
        cell.metadata = nbformat.from_dict(
            {"tags": cell.metadata["tags"]} if "tags" in cell.metadata else {}
        )
    return notebook


def execute(notebook: NotebookNode, *, timeout: int = CELL_TIMEOUT) -> NotebookNode:
    """Run every cell of ``notebook`` in place, in a fresh kernel at the repository root.

    :raises nbclient.exceptions.CellExecutionError: a cell raised; the message shows
        the cell and the traceback.
    """
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(ROOT)}},
    )
    # No network at import: litellm (under dspy) reads its bundled cost map.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    client.execute(env=env)
    return notebook


def strip_volatile(notebook: NotebookNode) -> NotebookNode:
    """Drop what changes on every run without saying anything about the notebook."""
    notebook.metadata = _metadata()  # the kernel filled in its version
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    return notebook


def build(path: Path) -> NotebookNode:
    """Source ``path`` converted, executed and stripped: what gets committed."""
    return strip_volatile(execute(read_source(path)))


def write(notebook: NotebookNode, path: Path) -> None:
    nbformat.validate(notebook)
    path.write_text(nbformat.writes(notebook) + "\n", encoding="utf-8")


def _cells(notebook: NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def problems(src: Path = SOURCES, out: Path = HERE) -> list[str]:
    """What is wrong with the committed notebooks in ``out``; empty when current."""
    found = []
    sources = {p.stem: p for p in source_paths(src)}
    for orphan in sorted({p.stem for p in out.glob("*.ipynb")} - set(sources)):
        found.append(f"{orphan}.ipynb has no source {orphan}.py in {src}")
    for stem, source in sources.items():
        path = out / f"{stem}.ipynb"
        if not path.exists():
            found.append(f"{path.name} is missing")
            continue
        committed = nbformat.read(path, as_version=4)
        if _cells(committed) != _cells(read_source(source)):
            found.append(f"{path.name}: its cells differ from {source.name}")
            continue
        for index, cell in enumerate(committed.cells):
            if cell.cell_type != "code":
                continue
            if cell.get("execution_count") is None:
                found.append(f"{path.name}: cell {index} was never executed")
            elif any(o.output_type == "error" for o in cell.outputs):
                found.append(f"{path.name}: cell {index} shows an error")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="notebooks to build (default: all)")
    parser.add_argument("--check", action="store_true", help="fail if a notebook is stale")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        for problem in found:
            print(problem)
        if found:
            print("rebuild them: python notebooks/build_notebooks.py")
        return 1 if found else 0
    paths = [p for p in source_paths() if not args.names or p.stem in args.names]
    unknown = set(args.names) - {p.stem for p in paths}
    if unknown:
        parser.error(f"no source for {sorted(unknown)} in {SOURCES}")
    for path in paths:
        began = time.perf_counter()
        notebook = build(path)
        write(notebook, HERE / f"{path.stem}.ipynb")
        print(f"wrote notebooks/{path.stem}.ipynb ({time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
