"""Simulator-service settings (env prefix `BRL_SIMULATOR_`, key `BRL_API_KEY`): ports, store, limits, and
where plans named by id come from (the planner service's URL or its SQLite file)."""

from __future__ import annotations

from pydantic import Field

from services.jobs.settings import JobServiceSettings

ENV_PREFIX = "BRL_SIMULATOR_"


class SimulatorSettings(JobServiceSettings):
    port: int = Field(8002, ge=0, le=65535)
    db_path: str = "brl-simulator.db"
    planner_url: str | None = Field(None, pattern=r"^https?://", description="planner service base URL")
    planner_db: str | None = Field(None, description="planner service SQLite file (same host or volume)")
    planner_api_key: str | None = None
    max_nodes: int = Field(256, ge=1, le=100_000, description="largest fleet a simulation may have")
    max_duration_s: float = Field(4 * 3600.0, gt=0, le=7 * 24 * 3600, description="longest simulated time")
    # Wall-clock guard: a simulation still running after this many seconds is stopped.
    max_wall_s: float = Field(1800.0, gt=0, le=7 * 24 * 3600)
