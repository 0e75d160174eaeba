#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu).
# Written by `course gradescope build`: it installs the `course` engine shipped in this zip
# (engine/), the torch version the assignment was built with, and bubblewrap for the sandbox.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3 python3-venv python3-pip bubblewrap git
python3 -m venv /opt/course-venv
/opt/course-venv/bin/pip install --upgrade pip
/opt/course-venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu "torch==@@TORCH@@"
/opt/course-venv/bin/pip install "$here/engine[libs]"
