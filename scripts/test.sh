#!/usr/bin/env bash
# Unit tests plus every notebook under nbmake (small mock parameters), offline. Prints the total wall time.
# Usage: bash scripts/test.sh [pytest args]   e.g. -k report, -x, or paths (relative to the repo root),
# which then replace the default "tests notebooks".
#
# With no arguments, two pytest processes run side by side, one torch thread each (this machine class has 2 cores):
# one runs the chapters that build on each other in order (00-08, 11: each reuses what its predecessors built);
# the other runs the unit tests, then 09 and 10 (SmolLM2 only, nothing shared). When one finishes, the other's
# next test gets both threads (conftest.py). TEST_JOBS=1 runs everything in one process. (Two processes hung twice
# under ipykernel 7, a kernel idle while nbclient waited; requirements.txt pins 6.31.)
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
    solo=(notebooks/09_okv.ipynb notebooks/10_speculative.ipynb)
    chain=()
    for nb in notebooks/*.ipynb; do
        [[ " ${solo[*]} " == *" $nb "* ]] || chain+=("$nb")
    done
    flags="$(mktemp -d -t andes-test-XXXXXX)"
    log="$flags/chapters.log"
    echo "test: chapters ${chain[*]##*/} in the background (log: $log); unit tests and ${solo[*]##*/} here"
    ANDES_TEST_DONE="$flags/chain" ANDES_TEST_PEER_DONE="$flags/unit" "${pytest[@]}" "${chain[@]}" >"$log" 2>&1 &
    chain_pid=$!
    ANDES_TEST_DONE="$flags/unit" ANDES_TEST_PEER_DONE="$flags/chain" "${pytest[@]}" tests "${solo[@]}" || status=$?
    echo "test: unit tests done at $((SECONDS - start)) s; waiting for the chapters"
    chain_status=0
    wait "$chain_pid" || chain_status=$?
    echo "----- chapters (exit $chain_status) -----"
    cat "$log"
    rm -rf "$flags"
    [ "$status" -ne 0 ] || status=$chain_status
else
    "${pytest[@]}" "${paths[@]}" "$@" || status=$?
fi
echo "test: total wall time $((SECONDS - start)) s (exit $status)"
exit "$status"
