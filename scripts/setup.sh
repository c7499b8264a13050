#!/usr/bin/env bash
# Create .venv and install lift_graph with every extra the tests, demo and benchmarks use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,dspy,pydantic-ai,bench,otel,docs,web]"
# Ray is optional: where it has no wheel for this platform, its tests skip and say so.
if ! .venv/bin/python -m pip install -q -e ".[ray]"; then
  echo "setup: Ray could not be installed here; the Ray tests will be skipped" >&2
fi
