"""The trusted side's oracles for the hidden qlora tests (they run in the test process, never in
the worker).

* NF4: the public tests' ``nf4_oracle`` (assignments/qlora/tests/nf4_oracle.py), loaded from the
  instructor's copy so that public and hidden tests share one oracle: bitsandbytes' table and
  quantisation, and a dequantisation that does not depend on the machine's CPU (see that file).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PUBLIC_TESTS = Path(__file__).resolve().parents[2] / "assignments" / "qlora" / "tests"


def _load_nf4_oracle():
    if "nf4_oracle" in sys.modules:
        return sys.modules["nf4_oracle"]
    path = PUBLIC_TESTS / "nf4_oracle.py"
    if not path.is_file():
        raise ImportError(f"{path}: the NF4 oracle shared with the public tests is missing "
                          "(graders/qlora expects assignments/qlora/tests beside it, as in the course folder)")
    spec = importlib.util.spec_from_file_location("nf4_oracle", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nf4_oracle"] = module
    spec.loader.exec_module(module)
    return module


nf4 = _load_nf4_oracle()
