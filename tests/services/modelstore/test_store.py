"""Model store: bundled names, folders, and a conversion that runs once even when raced."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from planner.errors import InvalidInput, UnknownName
from services.modelstore import store


def test_converted_smollm2_is_a_plain_fp32_llama_folder() -> None:
    folder = store.ensure_smollm2()
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert "quantization_config" not in config  # the GGUF origin must not follow the weights
    assert (folder / "tokenizer.json").exists() and (folder / "chat_template.jinja").exists()
    assert store.ensure_model("smollm2-135m") == folder


def test_two_racing_callers_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRL_CACHE_DIR", str(tmp_path))
    calls: list[Path] = []

    def slow_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)  # long enough for the second caller to arrive while the first converts
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).write_text("{}")

    monkeypatch.setattr(store, "_convert_gguf", slow_convert)
    monkeypatch.setattr(store, "_gguf_path", lambda: tmp_path / "x.gguf")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(store.ensure_smollm2())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / store.SMOLLM2_FOLDER] * 2
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [store.SMOLLM2_FOLDER]


def test_failed_conversion_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRL_CACHE_DIR", str(tmp_path))

    def broken(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_convert_gguf", broken)
    monkeypatch.setattr(store, "_gguf_path", lambda: tmp_path / "x.gguf")
    with pytest.raises(RuntimeError, match="disk full"):
        store.ensure_smollm2()
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


def test_names_and_folders(tmp_path: Path) -> None:
    with pytest.raises(UnknownName, match="smollm2-135m"):
        store.ensure_model("llama-9000")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidInput, match="safetensors"):
        store.ensure_model(str(tmp_path))
    (tmp_path / "model.safetensors").write_text("")
    assert store.ensure_model(str(tmp_path)) == tmp_path
