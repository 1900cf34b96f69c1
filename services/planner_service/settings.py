"""Planner-service settings (env prefix `BRL_PLANNER_`, key `BRL_API_KEY`): ports, store, limits."""

from __future__ import annotations

from pydantic import Field

from services.jobs.settings import JobServiceSettings

ENV_PREFIX = "BRL_PLANNER_"


class PlannerSettings(JobServiceSettings):
    port: int = Field(8001, ge=0, le=65535)
    db_path: str = "brl-planner.db"
    max_nodes: int = Field(256, ge=1, le=100_000, description="largest fleet a request may name")
    max_time_limit_s: float = Field(3600.0, gt=0, le=7 * 24 * 3600, description="longest solver time limit")
    # A solver that ignores its limit is killed after limit * factor + slack seconds.
    hard_limit_factor: float = Field(1.5, ge=1.0, le=100.0)
    hard_limit_slack_s: float = Field(60.0, ge=0.0, le=3600.0)
