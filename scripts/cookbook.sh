#!/usr/bin/env bash
# Run the cookbook's notebooks as a batch into runs/<timestamp>/ and write the report, offline.
# Usage: bash scripts/cookbook.sh [--only 00 03] [-p STEPS=20] [--params my.yaml] [--smoke] [--run-dir DIR]
# (any `andes-cookbook run` option; relative paths are taken from the current directory)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
bash "$root/scripts/setup.sh"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

status=0
"$root/.venv/bin/andes-cookbook" run --notebooks-dir "$root/notebooks" "$@" || status=$?
echo "cookbook: total wall time $((SECONDS - start)) s (exit $status)"
exit "$status"
