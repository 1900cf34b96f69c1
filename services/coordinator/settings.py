"""Coordinator settings: one pydantic model, filled from `BRL_*` environment variables and CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.errors import InvalidInput
from planner.routing.maxflow import DEFAULT_DEAD_END, DeadEndRule
from services.coordinator.chain_runner import ONE_PER_STAGE

ENV_PREFIX = "BRL_"


class CoordinatorSettings(BaseModel):
    """Every knob of the coordinator. Env var = `BRL_` + upper-case field name (e.g. BRL_API_KEY)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535, description="OpenAI HTTP API; 0 picks a free port")
    grpc_port: int = Field(50050, ge=0, le=65535, description="worker registration; 0 picks a free port")
    model: str = Field("smollm2-135m", description="model short name or path to a HF folder")
    served_model_name: str | None = Field(None, description="name clients pass as `model`; default: model")
    model_dir: Path | None = Field(None, description="folder with tokenizer + config; default: modelstore")
    plan: Path | None = Field(None, description="plan JSON; default: flows computed from the live workers")
    cluster: str | None = Field(None, description="cluster short name or file the plan was made for")
    planner_url: str | None = Field(None, description="planner service base URL, for plan ids")
    plan_id: str | None = Field(None, description="load this plan from the planner service at start-up")
    planner_api_key: str | None = Field(
        None, description="Bearer key for the planner service, if it wants one"
    )
    policy: str = Field("maxflow", description="routing policy (planner.routing registry key)")
    dead_end: DeadEndRule = Field(
        DEFAULT_DEAD_END,
        description="max-flow routing: what a request that finds no chain with KV room does with the IWRR "
        "charges its walk made (rollback: the paper's; keep-entry: the next request tries the next first stage)",
    )
    api_key: str | None = Field(None, description="when set, every /v1 route needs `Authorization: Bearer`")
    admin_api_key: str | None = Field(
        None,
        description="Bearer key of /v1/admin/*; unset: the admin routes do not exist (404, absent from OpenAPI)",
    )
    max_prompt_chars: int | None = Field(
        None,
        ge=1,
        description="longest prompt (characters, all chat messages together) tokenized; "
        "default: context length x 16",
    )
    heartbeat_interval_s: float = Field(0.5, gt=0)
    # A worker silent for interval x misses is declared lost (0.5 s x 4: within 2 s, and a busy machine does
    # not drop a worker that is merely slow to answer).
    heartbeat_misses: int = Field(4, ge=1)
    max_waiting: int = Field(256, ge=0, description="bounded admission queue; beyond it requests get 429")
    max_running: int = Field(256, ge=1, description="requests decoding at once across the fleet")
    max_batch_tokens: int = Field(2048, ge=1, description="prompt tokens per step on one chain")
    pipeline_depth: int = Field(
        ONE_PER_STAGE,
        ge=1,
        description=f"micro-batches in flight on one chain, at most one per stage (default {ONE_PER_STAGE}: "
        "one per stage on every chain)",
    )
    default_max_tokens: int = Field(256, ge=1)
    step_timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0, description="re-routes of one request after worker loss")
    log_dir: Path | None = Field(None, description="JSON-lines logs of iterations and request routes")
    max_body_bytes: int = Field(
        4_000_000, ge=1_000, description="largest request body, counted as received (chunked too); 413 beyond"
    )
    auto_replan: bool = Field(
        False, description="when a worker is lost, re-plan, dry-run and roll the new plan out live"
    )
    replica_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="name of this replica when several coordinators serve one fleet (the pod name in "
        "Kubernetes); it starts every request id it makes, so ids never collide; default: the host name",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _admin_key_is_its_own(self) -> CoordinatorSettings:
        # The inference key must never open admin: a shared key would make every client an operator.
        if self.admin_api_key and self.admin_api_key == self.api_key:
            raise ValueError("admin_api_key must differ from api_key (the inference key never opens admin)")
        return self

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model


def from_env(environ: Mapping[str, str] | None = None, **overrides: object) -> CoordinatorSettings:
    """Settings from `BRL_*` variables, then explicit overrides (CLI flags; None means 'not given')."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in CoordinatorSettings.model_fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return CoordinatorSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(first["msg"], source="coordinator settings (BRL_* / flags)", field=field) from None
