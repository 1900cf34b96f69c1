"""Worker settings: one pydantic model, filled from `BRL_*` environment variables, then CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from planner.errors import InvalidInput
from services.worker.coordinators import parse_coordinators

ENV_PREFIX = "BRL_"


class WorkerSettings(BaseModel):
    """Env var = `BRL_` + upper-case field name (e.g. BRL_LAYERS=0:7, BRL_BACKEND=vllm)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("smollm2-135m", description="bundled model name or a HF folder")
    layers: str = Field(
        "",
        description="START:END, half-open; empty (or 0:0): hold no layers, register, wait for a Load",
    )
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    advertise: str | None = Field(None, description="address others reach this worker at; default host:port")
    backend: str = "torch"
    name: str | None = Field(None, description="node name in the plan; default worker-<port>")
    gpu_type: str = "cpu"
    speed_factor: float = Field(
        1.0,
        gt=0,
        description="declared speed: steps are stretched to compute_time / speed_factor when below 1",
    )
    coordinator: str | None = Field(
        None,
        description="HOST:PORT of the coordinator to register with; replicas: a comma-separated list, or "
        "dns:NAME:PORT for every address NAME resolves to (a headless Service)",
    )
    dtype: str = "float32"
    kv_cache_gib: float = Field(0.5, gt=0)
    kv_capacity_tokens: int | None = Field(None, ge=1, description="overrides kv_cache_gib")
    max_batch_tokens: int = Field(4096, ge=1, description="tokens per step, prompt chunks included")
    max_loaded_layers: int | None = Field(
        None,
        ge=1,
        description="most layers held at once: a Load that would exceed it drains the old range first",
    )
    threads: int = Field(1, ge=1, description="torch intra-op threads (1 is fastest on small CPUs)")

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: str) -> str:
        parse_layers(value)
        return value

    @field_validator("coordinator")
    @classmethod
    def _coordinator(cls, value: str | None) -> str | None:
        if value:
            parse_coordinators(value)  # HOST:PORT[,HOST:PORT...] or dns:NAME:PORT
        return value

    @property
    def layer_range(self) -> tuple[int, int]:
        return parse_layers(self.layers)


def parse_layers(text: str) -> tuple[int, int]:
    """START:END -> (START, END); "" and "0:0" -> (0, 0), the empty range of a worker holding nothing."""
    if not text.strip():
        return (0, 0)
    try:
        start_s, end_s = text.split(":")
        start, end = int(start_s), int(end_s)
    except ValueError as exc:
        raise ValueError(f"layers must be START:END, got {text!r}") from exc
    if (start, end) != (0, 0) and not 0 <= start < end:
        raise ValueError(f"layers must satisfy 0 <= START < END (or be 0:0 for none), got {text!r}")
    return start, end


def from_env(environ: Mapping[str, str] | None = None, **overrides: object) -> WorkerSettings:
    """Settings from `BRL_*` variables, then explicit overrides (CLI flags; None means 'not given')."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in WorkerSettings.model_fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw:
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return WorkerSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidInput(first["msg"], source="worker settings", field=field) from exc
