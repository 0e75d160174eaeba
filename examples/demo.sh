#!/usr/bin/env bash
# Set up (if needed), then run the demo class end to end: collect -> grade -> feedback -> export.
# Usage: examples/demo.sh [--assignments attention,lora] [--jobs 2]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/course ] || scripts/setup.sh
. .venv/bin/activate
export PATH="$PWD/.venv/bin:$PATH"
python examples/run_demo.py "$@"
