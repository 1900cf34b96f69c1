"""Settings shared by the job services (planner, simulator): where the store lives, ports, key, limits.

Read from the environment with a per-service prefix (`BRL_PLANNER_PORT`, `BRL_SIMULATOR_DB_PATH`, …);
the API key is shared by every service (`BRL_API_KEY`). Command-line flags override the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import InvalidInput


class JobServiceSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # 0 picks a free port; None turns the gRPC server off.
    grpc_port: int | None = Field(None, ge=0, le=65535)
    db_path: str = "brl-jobs.db"
    # Bearer key required on every mutating call; None leaves the service open (local use only).
    api_key: str | None = None
    max_workers: int = Field(2, ge=1, le=64, description="jobs running at once (one process each)")
    max_queued: int = Field(8, ge=0, le=10_000, description="jobs waiting for a free worker")
    cancel_grace_s: float = Field(
        3.0, ge=0.0, le=600.0, description="wait for a co-operative stop before a kill"
    )
    max_body_bytes: int = Field(4_000_000, ge=1_000, le=1_000_000_000)
    list_limit: int = Field(100, ge=1, le=10_000, description="largest page of a list call")
    # Retention of finished jobs (queued and running ones are never removed); 0 turns a rule off.
    retention_days: float = Field(30.0, ge=0, le=36_500, description="delete finished jobs older than this")
    max_jobs: int = Field(10_000, ge=0, le=10_000_000, description="keep at most this many finished jobs")
    retention_interval_s: float = Field(3600.0, gt=0, le=7 * 24 * 3600, description="how often to prune")

    @classmethod
    def from_env(
        cls, prefix: str, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Self:
        """Fields from `<prefix><FIELD>` variables (upper case), then `overrides` (None values skipped)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(f"{prefix}{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        if "api_key" not in values and env.get("BRL_API_KEY"):
            values["api_key"] = env["BRL_API_KEY"]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(first["msg"], source=f"{prefix}* settings", field=field) from None
