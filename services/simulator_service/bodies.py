"""Request bodies of the simulator service (pydantic, constrained). A simulation runs a plan — by id (from
the planner service) or inline (plan JSON, brl-plan/1) — on its fleet, with a workload and a policy."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.routing.maxflow import DeadEndRule
from services.planner_service.bodies import NAME_PATTERN, FleetFields

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_INLINE_ROWS = 200_000


class HostBody(BaseModel):
    """Processes sharing one machine's CPU cores (simulator.host)."""

    name: str = Field("host", max_length=100)
    cores: float = Field(gt=0, le=4096)
    nodes: list[str] = Field(default_factory=list, max_length=10_000)
    coordinator: bool = Field(False, description="the coordinator runs on this machine too")
    background: float = Field(0.0, ge=0, le=4096, description="other tenants' mean runnable threads")


class FailureBody(BaseModel):
    """A worker failure injected into the run: `node` dies `at_s` seconds after serving starts."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    node: str = Field(..., min_length=1, max_length=200)
    at_s: float = Field(..., ge=0, le=7 * 24 * 3600)


class SimulationRequest(FleetFields):
    plan_id: str | None = Field(None, pattern=JOB_ID_PATTERN, description="a plan job of the planner service")
    plan: dict[str, Any] | None = Field(None, description="inline plan JSON (format brl-plan/1)")
    layout: str | None = Field(
        None, pattern=NAME_PATTERN, description="a published paper layout, e.g. ilp (needs cluster and model)"
    )
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: keep the fleet full; online: trace"
    )
    policy: str = Field("maxflow", pattern=r"^[a-z][a-z0-9_-]{0,49}$", description="routing policy")
    lengths: str | None = Field(
        None, pattern=NAME_PATTERN, description="length distribution, e.g. azure-conv"
    )
    lengths_pairs: list[tuple[int, int]] | None = Field(
        None, min_length=1, max_length=MAX_INLINE_ROWS, description="inline [input_len, output_len] pairs"
    )
    arrivals: str | None = Field(
        None, pattern=NAME_PATTERN, description="arrival trace (online), e.g. azure-conv"
    )
    arrival_counts: list[int] | None = Field(
        None, min_length=1, max_length=MAX_INLINE_ROWS, description="inline requests per 3-s bin (online)"
    )
    duration_s: float | None = Field(None, gt=0, le=7 * 24 * 3600, description="simulated seconds")
    warmup_s: float | None = Field(None, ge=0, le=7 * 24 * 3600)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    target_tok_per_s: float | None = Field(
        None, gt=0, le=1e8, description="online: rescale the trace to this"
    )
    initial_queries: int | None = Field(None, ge=1, le=1_000_000)
    kv_high_water: float | None = Field(None, gt=0, le=1)
    kv_output_ratio: float | None = Field(None, gt=0, le=100)
    throttle: dict[str, float] | None = Field(
        None, description="node -> speed in (0, 1]: its worker sleeps so a step lasts compute / speed"
    )
    step_overhead_s: dict[str, float] | None = Field(
        None, description="node -> CPU seconds each step costs beyond the profile's compute"
    )
    hosts: list[HostBody] | None = Field(
        None, max_length=10_000, description="machines whose cores nodes share"
    )
    coordinator_cpu_s_per_iteration: float | None = Field(
        None, ge=0, le=10, description="coordinator CPU seconds per iteration (iterations take turns)"
    )
    pipeline_depth: int | None = Field(
        None,
        ge=1,
        le=64,
        description="model BRL's coordinator: each chain steps its ready requests together (decodes and "
        "prompts apart), at most this many steps of each in flight (one per stage at most; 64: one per stage, "
        "the coordinator's default); unset: the paper's, every request on its own",
    )
    dead_end: DeadEndRule | None = Field(
        None,
        description="max-flow routing: what a dead end does with the IWRR charges its walk made "
        "(rollback: the paper's, all given back; keep-entry: the source's stays, the default; keep-path: all stay)",
    )
    engine: Literal["auto", "python", "compiled"] = Field(
        "auto",
        description="which engine runs the events: compiled (the same figures bit for bit, many times "
        "faster), python, or auto (compiled where it is built and models the run)",
    )
    fail: list[FailureBody] | None = Field(
        None, max_length=1_000, description="worker failures to inject, e.g. [{node: n10, at_s: 120}]"
    )
    replan: bool = Field(
        False,
        description="with `fail`: re-plan after each failure (detection, planning, loading, routing switch) "
        "and compare with the same run without re-planning (figures under result.replan, plot `replan`)",
    )
    detect_s: float | None = Field(
        None, ge=0, le=3600, description="with replan: seconds until a dead worker is noticed (default 2)"
    )
    replan_time_limit_s: float = Field(
        10.0, gt=0, le=3600, description="with replan: the incremental re-planner's search time"
    )
    load_bandwidth_bytes_per_s: float | None = Field(
        None, gt=0, le=1e13, description="with replan: bytes/s a node reads new layers at (default 1e9)"
    )
    plots: bool = Field(True, description="render PNG plots (GET .../plots/{name}.png)")
    label: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_plan(self) -> Self:
        given = [n for n in ("plan_id", "plan", "layout") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of plan_id, plan, layout (got {given or 'none'})")
        if self.layout is not None and (self.cluster is None or self.model is None):
            raise ValueError("layout needs the bundled `cluster` and `model` it was published for")
        for group in (
            ("cluster", "cluster_text", "cluster_spec"),
            ("model", "hf_config"),
            ("lengths", "lengths_pairs"),
            ("arrivals", "arrival_counts"),
        ):
            both = [n for n in group if getattr(self, n) is not None]
            if len(both) > 1:
                raise ValueError(f"give at most one of {', '.join(group)} (got {both})")
        if self.hf_config is not None and self.profiles is None:
            raise ValueError(
                "an inline hf_config needs `profiles`: the bundled model whose GPU profiles apply"
            )
        if self.replan and not self.fail:
            raise ValueError("replan needs a failure to re-plan after: give `fail` [{node, at_s}]")
        for i, (inp, out) in enumerate(self.lengths_pairs or ()):
            if inp < 1 or out < 0:
                raise ValueError(
                    f"lengths_pairs[{i}]: need input_len >= 1 and output_len >= 0, got {[inp, out]}"
                )
        if any(c < 0 for c in self.arrival_counts or ()) or (
            self.arrival_counts and sum(self.arrival_counts) == 0
        ):
            raise ValueError("arrival_counts: counts must be >= 0 with at least one request")
        return self


class SimulationSubmitted(BaseModel):
    id: str
    status: str
    url: str
