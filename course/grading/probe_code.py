"""What a worker is sent to run a probe: never a pickle, only source code and a function's name."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable


def probe_spec(probe: Callable[..., Any]) -> dict[str, str]:
    """What the worker needs to run a probe: its module's source and its name (never a pickle)."""
    module = sys.modules.get(getattr(probe, "__module__", ""), None)
    name = getattr(probe, "__name__", "")
    if module is None or getattr(module, name, None) is not probe:
        raise TypeError(f"{probe!r} is not a module-level function of a probes module")
    source = _PROBE_SOURCES.get(module.__name__)
    if source is None:
        source = Path(module.__file__).read_text(encoding="utf-8")
        _PROBE_SOURCES[module.__name__] = source
    return {"module": module.__name__.rsplit(".", 1)[-1], "source": source, "function": name}


_PROBE_SOURCES: dict[str, str] = {}
