#!/usr/bin/env bash
# Unit tests plus every notebook under nbmake (small mock parameters), offline. Prints the total wall time.
# Usage: bash scripts/test.sh [pytest args]   e.g. -k report, -x, or paths (relative to the repo root),
# which then replace the default "tests notebooks".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$SECONDS
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

paths=(tests)
[ -d notebooks ] && paths+=(notebooks)
for arg in "$@"; do
    if [[ $arg != -* && -e $arg ]]; then
        paths=()
        break
    fi
done
status=0
# TEST_WORKERS=2 runs two pytest-xdist workers with one torch thread each (the chapters grouped on one). It is
# opt-in: kernels started at the same moment by two workers have hung once here (a jupyter port race), so CI stays
# on one process.
workers=${TEST_WORKERS:-1}
parallel=()
if [ "$workers" -gt 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    parallel=(-n "$workers" --dist loadgroup)
fi
.venv/bin/python -m pytest "${paths[@]}" --nbmake --nbmake-timeout=900 -q --durations=15 ${parallel[@]+"${parallel[@]}"} "$@" \
    || status=$?
echo "test: total wall time $((SECONDS - start)) s (exit $status)"
exit "$status"
