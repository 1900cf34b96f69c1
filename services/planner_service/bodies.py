"""Request and response bodies of the planner service (pydantic, constrained): what REST and gRPC accept.

A fleet and a model are given by reference (a bundled short name such as "cluster24", "llama2-70b") or
inline (the cluster as YAML / Helix INI text or as a JSON object; the model as a Hugging Face config.json
object). Exactly one form per input.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.jobs.safe_json import JsonBody

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_INLINE_CHARS = 2_000_000


class _Body(JsonBody):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True, allow_inf_nan=False)


class FleetFields(_Body):
    """The fields naming a fleet and a model; subclasses say which must be given."""

    cluster: str | None = Field(
        None, pattern=NAME_PATTERN, description="bundled cluster name, e.g. cluster24"
    )
    cluster_text: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_INLINE_CHARS,
        description="inline cluster file: BRL cluster YAML or a Helix .ini",
    )
    cluster_spec: dict[str, Any] | None = Field(
        None, description="inline cluster as a JSON object (YAML schema)"
    )
    model: str | None = Field(None, pattern=NAME_PATTERN, description="bundled model name, e.g. llama2-70b")
    hf_config: dict[str, Any] | None = Field(None, description="inline Hugging Face config.json of the model")
    model_name: str | None = Field(None, pattern=NAME_PATTERN, description="name for an inline model")
    profiles: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="bundled model whose GPU profiles to use (default: the model's)",
    )


class FleetAndModel(FleetFields):
    @model_validator(mode="after")
    def _one_of_each(self) -> Self:
        given = [n for n in ("cluster", "cluster_text", "cluster_spec") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of cluster, cluster_text, cluster_spec (got {given or 'none'})"
            )
        models = [n for n in ("model", "hf_config") if getattr(self, n) is not None]
        if len(models) != 1:
            raise ValueError(f"give exactly one of model, hf_config (got {models or 'none'})")
        if self.hf_config is not None and self.profiles is None:
            raise ValueError(
                "an inline hf_config needs `profiles`: the bundled model whose GPU profiles apply"
            )
        return self


class PlanRequest(FleetAndModel):
    method: str = Field(
        "milp", pattern=r"^[a-z][a-z0-9_-]{0,49}$", description="placement method (solver key)"
    )
    time_limit_s: float = Field(60.0, gt=0, le=7 * 24 * 3600, description="solver time limit, seconds")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    solver: Literal["cbc", "highs"] = Field("cbc", description="MILP back end (highs needs highsbox)")
    prune_k: int | None = Field(
        None, ge=1, le=10_000, description="MILP: keep only each node's K fastest links"
    )
    label: str | None = Field(None, max_length=200, description="free text shown in listings")


class PlanSubmitted(BaseModel):
    id: str
    status: str
    url: str


class EvaluationRequest(FleetAndModel):
    placement: dict[str, tuple[int, int]] = Field(
        ..., min_length=1, description="node name -> [start, end) layer range (half-open)"
    )
    partial: bool | None = Field(
        None,
        description="allow a hop to run only part of the next node's range (the paper's); default: only "
        "where that raises the max-flow (planner.flow.choose_partial, as brl simulate and brl plan do)",
    )
    save: bool = Field(False, description="also store it as a plan (method 'user') and return its id")
    label: str | None = Field(None, max_length=200)


class BottleneckView(BaseModel):
    kind: Literal["compute", "nic_in", "nic_out", "link", "coordinator"] | str
    name: str
    capacity_tok_per_s: float
    flow_tok_per_s: float


class EdgeFlow(BaseModel):
    src: str
    dst: str
    tok_per_s: float


class EvaluationResult(BaseModel):
    max_flow_tok_per_s: float
    bound_tok_per_s: float | None
    compute_bound_tok_per_s: float | None = None
    has_full_chain: bool
    uncovered_layers: list[tuple[int, int]]
    bottlenecks: list[BottleneckView]
    saturated_nodes: list[str]
    edge_flows: list[EdgeFlow]
    node_flows_tok_per_s: dict[str, float]
    plan_id: str | None = None
    plan: dict[str, Any] | None = None


class ReplanRequest(_Body):
    """Re-plan a plan after its fleet changed (planner.replan, as `brl replan`): the plan carries its fleet."""

    plan: dict[str, Any] = Field(
        ..., description="the plan in force, inline (brl-plan/1 JSON from a plan job or `brl plan`)"
    )
    lose: list[str] = Field(
        default_factory=list, max_length=10_000, description='names of nodes gone, e.g. ["n3"]'
    )
    join: list[str] = Field(
        default_factory=list,
        max_length=1_000,
        description='new nodes as "TYPE:COUNT", e.g. ["a100:2"]; links copied from a node of that type',
    )
    slow: dict[str, float] = Field(
        default_factory=dict, description="node -> speed factor in (0, 1] it now runs at"
    )
    budget_layers: int | None = Field(
        None, ge=0, le=10_000_000, description="most layers loaded on all nodes together (default: any)"
    )
    min_gain: float = Field(
        0.05, ge=0, le=100, description="adopt a new placement only if it serves this much more (relative)"
    )
    time_limit_s: float = Field(10.0, gt=0, le=7 * 24 * 3600, description="search time, seconds")
    simulate: bool = Field(
        False,
        description="judge candidates by a short simulator run and report simulated decode tok/s before "
        "and after (slower: about 1-2 s per candidate on 24 nodes)",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    label: str | None = Field(None, max_length=200, description="free text shown in listings")

    @model_validator(mode="after")
    def _something_changed(self) -> Self:
        if not (self.lose or self.join or self.slow):
            raise ValueError("nothing changed: give lose, join or slow")
        return self
