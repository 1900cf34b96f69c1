"""Write a profile folder (settings.json + <profile_dir>/{prompt,decode}_bs2time.csv) in the format of the
Helix profiles and planner/data/profiles. Profiling another GPU type into the same folder adds its entry
and keeps the others."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.errors import InvalidInput
from planner.formats.profiles import DECODE_CSV, PROMPT_CSV, SETTINGS_FILE, load_settings, save_latency_csv
from planner.profile import LatencyTable


def save_profile(
    out_dir: str | Path,
    gpu_type: str,
    model_keys: Mapping[str, Any],
    gpu: Mapping[str, Any],
    prompt: LatencyTable,
    decode: LatencyTable,
) -> Path:
    """Writes the CSVs of `gpu_type` and merges its entry into out_dir/settings.json; returns the folder."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    settings_path = folder / SETTINGS_FILE
    settings: dict[str, Any] = {}
    if settings_path.exists():
        settings = load_settings(settings_path)
        if settings.get("model") not in (None, model_keys.get("model")):
            raise InvalidInput(
                f"the folder holds profiles of {settings.get('model')!r}, not {model_keys.get('model')!r}",
                source=str(settings_path),
                field="model",
            )
    gpus = dict(settings.get("gpus") or {})
    gpus[gpu_type] = dict(gpu)
    merged = {**settings, **model_keys, "gpus": gpus}
    csv_dir = folder / str(gpu["profile_dir"])
    csv_dir.mkdir(parents=True, exist_ok=True)
    save_latency_csv(prompt, csv_dir / PROMPT_CSV)
    save_latency_csv(decode, csv_dir / DECODE_CSV)
    tmp = settings_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    tmp.replace(settings_path)
    return folder
