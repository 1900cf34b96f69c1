"""Model files for workers: bundled model names resolved to a local Hugging Face folder (safetensors)."""

from services.modelstore.store import cache_dir, ensure_model, ensure_smollm2, model_names

__all__ = ["cache_dir", "ensure_model", "ensure_smollm2", "model_names"]
