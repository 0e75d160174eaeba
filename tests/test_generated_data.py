"""Generated files stay what their seeded scripts produce (data sets, the student notebook, checksums)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_finetune_data_notebook_and_checksums_are_in_sync():
    result = subprocess.run([sys.executable, "scripts/make_finetune_data.py", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
