"""GPU profiles on disk → ProfileSet: per-layer latency CSVs plus a settings JSON per model.

Layout of a profile folder (`planner/data/profiles/<model>/`):
    settings.json                 model-level entry of the paper's model_on_machine_settings.json, with
                                  "gpus": {GPU type: {max_num_layers, kv_cache_capacity_token_layers,
                                  prompt_max_requests, decode_max_tokens, profile_dir, [vram_bytes]}}
    <profile_dir>/prompt_bs2time.csv   rows "batch prompt tokens, ms for ONE layer", no header
    <profile_dir>/decode_bs2time.csv   rows "sequences decoding one token each, ms for ONE layer"
Per-k tables are keyed by the layer count k as a string ("1".."K").
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import InvalidInput
from planner.formats import read_text, with_source
from planner.formats.helix_ini import MachineProfile
from planner.profile import GpuProfile, LatencyTable, ProfileSet
from planner.throughput import THROUGHPUT_SETTING_KEYS

SETTINGS_FILE = "settings.json"
PROMPT_CSV = "prompt_bs2time.csv"
DECODE_CSV = "decode_bs2time.csv"
# The paper's prompt token budget per request in a prompt batch.
PROMPT_TOKENS_PER_REQUEST = 2048


def validation_error(exc: ValidationError, source: str) -> InvalidInput:
    """The first pydantic complaint as InvalidInput naming the file and the dotted field path."""
    errors = exc.errors()

    def where(err: Any) -> str:
        return ".".join(str(p) for p in err["loc"])

    def text(err: Any) -> str:
        got = "" if err["type"] == "missing" else f", got {err.get('input')!r}"[:120]
        return f"{err['msg']}{got}"

    message = text(errors[0])
    if len(errors) > 1:
        # A typo in a key shows up twice (the unknown key and the missing one): say both.
        more = "; ".join(f"{where(e) or 'top level'}: {text(e)}" for e in errors[1:3])
        message += f" (also {more}{'; …' if len(errors) > 3 else ''})"
    return InvalidInput(message, source=source, field=where(errors[0]) or None)


def load_latency_csv(path: str | Path) -> LatencyTable:
    """Rows `batch, ms per layer` (no header); blank lines are skipped."""
    source = str(path)
    text = read_text(path)
    points: list[tuple[float, float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 2:
            raise InvalidInput(
                f"expected 2 comma-separated numbers (batch, ms per layer), got {len(cells)} cells: {line.strip()!r}",
                source=source,
                field=f"line {lineno}",
            )
        try:
            x, ms = float(cells[0]), float(cells[1])
        except ValueError:
            raise InvalidInput(
                f"expected numbers, got {line.strip()!r}", source=source, field=f"line {lineno}"
            ) from None
        if not (math.isfinite(x) and math.isfinite(ms)) or x < 0 or ms < 0:
            raise InvalidInput(
                f"expected finite non-negative numbers, got {line.strip()!r}",
                source=source,
                field=f"line {lineno}",
            )
        if points and x <= points[-1][0]:
            raise InvalidInput(
                f"batch sizes must increase, {x:g} follows {points[-1][0]:g}",
                source=source,
                field=f"line {lineno}",
            )
        points.append((x, ms))
    if not points:
        raise InvalidInput("file is empty; expected rows 'batch, ms per layer'", source=source)
    if len(points) < 2:
        raise InvalidInput("expected at least 2 rows to interpolate between", source=source)
    return LatencyTable(tuple(points))


def save_latency_csv(table: LatencyTable, path: str | Path) -> None:
    lines = [f"{_num(x)},{_num(ms)}" for x, ms in table.points]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


PerK = dict[str, int]


class GpuSettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    max_num_layers: int = Field(ge=1)
    kv_cache_capacity_token_layers: dict[str, int]
    prompt_max_requests: dict[str, int] | int = 1
    prompt_max_tokens: int | None = Field(default=None, ge=1)
    decode_max_tokens: dict[str, int] | None = None
    profile_dir: str | None = None
    vram_bytes: int | None = Field(default=None, gt=0)
    nic_in_bytes_per_s: float | None = Field(default=None, gt=0)
    nic_out_bytes_per_s: float | None = Field(default=None, gt=0)
    # [[sampled sequences, ms], ...]: the LM head of the node holding the last layer (`brl profile`).
    lm_head_ms: list[tuple[float, float]] | None = None


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    num_layers: int = Field(ge=1)
    token_size_bytes: int = Field(default=2, ge=1)
    activation_size_bytes_per_token: int | None = Field(default=None, ge=1)
    param_bytes_per_layer: float | None = Field(default=None, gt=0)
    gpus: dict[str, GpuSettings] = Field(min_length=1)


def load_settings(path: str | Path) -> dict[str, Any]:
    """Read and validate a profile settings JSON; returns the plain mapping (extra keys kept)."""
    source = str(path)
    text = read_text(path)
    if not text.strip():
        raise InvalidInput("file is empty; expected a JSON object", source=source)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg}", source=source, field=f"line {exc.lineno}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"expected a JSON object, got {type(raw).__name__}", source=source)
    try:
        ModelSettings.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, source) from None
    return raw


def _per_k(
    table: Mapping[str, int] | int | None, k_max: int, *, source: str, field: str, required: bool
) -> tuple[int, ...]:
    if table is None:
        if required:
            raise InvalidInput(f"missing table for k = 1..{k_max}", source=source, field=field)
        return ()
    if isinstance(table, int):
        return (table,) * k_max
    out = []
    for k in range(1, k_max + 1):
        if str(k) not in table:
            raise InvalidInput(
                f"missing entry for k={k} (expected keys '1'..'{k_max}')", source=source, field=field
            )
        v = table[str(k)]
        if v < 0:
            raise InvalidInput(
                f"expected a non-negative value for k={k}, got {v}", source=source, field=field
            )
        out.append(int(v))
    return tuple(out)


def profiles_from_settings(
    settings: Mapping[str, Any],
    base_dir: str | Path,
    *,
    model_name: str,
    machine_profiles: Mapping[str, MachineProfile] | None = None,
    source: str = SETTINGS_FILE,
) -> ProfileSet:
    """Build every GpuProfile a settings mapping describes; CSVs are read from base_dir/profile_dir."""
    try:
        parsed = ModelSettings.model_validate(settings)
    except ValidationError as exc:
        raise validation_error(exc, source) from None
    base = Path(base_dir)
    machines = machine_profiles or {}
    by_gpu: dict[str, GpuProfile] = {}
    for gpu, gs in parsed.gpus.items():
        where = f"gpus.{gpu}"
        k_max = gs.max_num_layers
        kv = _per_k(
            gs.kv_cache_capacity_token_layers,
            k_max,
            source=source,
            field=f"{where}.kv_cache_capacity_token_layers",
            required=True,
        )
        decode_max = _per_k(
            gs.decode_max_tokens, k_max, source=source, field=f"{where}.decode_max_tokens", required=False
        )
        prompt_req = _per_k(
            gs.prompt_max_requests, k_max, source=source, field=f"{where}.prompt_max_requests", required=True
        )
        machine = machines.get(gpu)
        vram = gs.vram_bytes or (machine.vram_bytes if machine else None)
        if vram is None:
            raise InvalidInput(
                f"no VRAM size for GPU type {gpu!r}: add vram_bytes here or a [{gpu}] section to the machine profile",
                source=source,
                field=f"{where}.vram_bytes",
            )
        folder = base / (gs.profile_dir or gpu.lower())
        prompt = load_latency_csv(folder / PROMPT_CSV)
        decode = load_latency_csv(folder / DECODE_CSV)
        nic_in = gs.nic_in_bytes_per_s or (machine.nic_in_bytes_per_s if machine else None) or 10e9
        nic_out = gs.nic_out_bytes_per_s or (machine.nic_out_bytes_per_s if machine else None) or 10e9
        # The paper's per-k prompt_max_requests is constant per GPU; the profile keeps one number (k=1).
        max_req = prompt_req[0]
        try:
            head = _head_table(gs.lm_head_ms, field=f"{where}.lm_head_ms")
            by_gpu[gpu] = GpuProfile(
                gpu_type=gpu,
                model_name=model_name,
                vram_bytes=int(vram),
                max_layers=k_max,
                prompt=prompt,
                decode=decode,
                kv_capacity=kv,
                prompt_max_requests=max_req,
                prompt_max_tokens=gs.prompt_max_tokens or PROMPT_TOKENS_PER_REQUEST * max_req,
                decode_max_tokens=decode_max,
                nic_in_bytes_per_s=float(nic_in),
                nic_out_bytes_per_s=float(nic_out),
                extra={"prompt_max_requests_by_k": prompt_req, "profile_dir": str(folder)},
                lm_head=head,
            )
        except InvalidInput as exc:
            raise with_source(exc, source, where) from None
    model_level = {k: copy.deepcopy(settings[k]) for k in THROUGHPUT_SETTING_KEYS if k in settings}
    return ProfileSet(model_name, by_gpu, throughput_settings=model_level)


def _head_table(rows: list[tuple[float, float]] | None, *, field: str) -> LatencyTable | None:
    """`lm_head_ms` rows as a table from (0, 0): no sequence sampled costs nothing."""
    if not rows:
        return None
    points = sorted((float(b), float(ms)) for b, ms in rows)
    if points[0][0] <= 0:
        raise InvalidInput(f"sampled sequences must be >= 1, got {points[0][0]:g}", field=field)
    try:
        return LatencyTable(((0.0, 0.0), *points))
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, field=field) from None


def load_profile_dir(
    model_dir: str | Path,
    *,
    model_name: str | None = None,
    machine_profiles: Mapping[str, MachineProfile] | None = None,
) -> ProfileSet:
    """A profile folder (settings.json + one CSV folder per GPU type) → ProfileSet."""
    folder = Path(model_dir)
    settings_path = folder / SETTINGS_FILE
    settings = load_settings(settings_path)
    name = model_name or str(settings.get("model") or folder.name)
    return profiles_from_settings(
        settings, folder, model_name=name, machine_profiles=machine_profiles, source=str(settings_path)
    )


def load_helix_settings_json(path: str | Path, model_key: str) -> dict[str, Any]:
    """One model's entry of the paper's combined model_on_machine_settings.json (e.g. "llama2_70b"),
    validated; its `profile_dir`s are relative to the folder above the json's folder."""
    source = str(path)
    text = read_text(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg}", source=source, field=f"line {exc.lineno}") from None
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict):
        raise InvalidInput("expected an object with a 'models' mapping", source=source, field="models")
    if model_key not in models:
        from planner.errors import UnknownName

        raise UnknownName("model", model_key, list(models), source=source, field="models")
    entry = models[model_key]
    try:
        ModelSettings.model_validate(entry)
    except ValidationError as exc:
        raise validation_error(exc, source) from None
    return dict(entry)
