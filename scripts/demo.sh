#!/usr/bin/env bash
# Set up (idempotent) and run the offline demo pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LITELLM_LOCAL_MODEL_COST_MAP=True
.venv/bin/lift-graph demo "$@"
