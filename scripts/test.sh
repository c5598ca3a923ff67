#!/usr/bin/env bash
# Unit tests plus every notebook under nbmake (small mock parameters), offline. Prints the total wall time.
# Usage: bash scripts/test.sh [pytest args]   e.g. -k report, -x, or paths (relative to the repo root),
# which then replace the default "tests notebooks".
#
# With no arguments, the two halves run side by side, one torch thread each (this machine class has 2 cores):
# the chapters in order in one pytest process (a chapter reuses what its predecessors built), the unit tests in
# another. TEST_JOBS=1 runs everything in one process instead. Kernels talk over Unix sockets (conftest.py), so
# two processes starting kernels at once cannot collide on a TCP port.
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
pytest=(.venv/bin/python -m pytest --nbmake --nbmake-timeout=900 -q --durations=10)
status=0
if [ $# -eq 0 ] && [ "${TEST_JOBS:-2}" -gt 1 ] && [ -d notebooks ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    log="$(mktemp -t andes-notebooks-XXXXXX.log)"
    echo "test: the chapters run in the background (log: $log); the unit tests here"
    "${pytest[@]}" notebooks >"$log" 2>&1 &
    nb_pid=$!
    "${pytest[@]}" tests || status=$?
    echo "test: unit tests done at $((SECONDS - start)) s; waiting for the chapters"
    nb_status=0
    wait "$nb_pid" || nb_status=$?
    echo "----- notebooks (exit $nb_status) -----"
    cat "$log"
    rm -f "$log"
    [ "$status" -ne 0 ] || status=$nb_status
else
    "${pytest[@]}" "${paths[@]}" "$@" || status=$?
fi
echo "test: total wall time $((SECONDS - start)) s (exit $status)"
exit "$status"
