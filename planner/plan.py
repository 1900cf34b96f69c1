"""A plan: a placement plus the flow on every edge and how it was found. Read by every service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.cluster import Cluster
from planner.model import ModelSpec
from planner.placement import Placement

Edge = tuple[str, str]


@dataclass(frozen=True)
class Plan:
    """`edge_flows` holds tokens/s on each directed edge between nodes (source/sink included) of the
    max-flow solution; routing weights come from it. `objective_tok_per_s` is the max-flow value,
    `bound_tok_per_s` a proven upper bound; `solver_stats` and `provenance` record how and from what
    inputs (cluster, model, method, seed, solver settings, code version) the plan was made.

    `cluster` and `model` are the fleet and model the plan was made for, carried along so the plan can be
    simulated or served where neither is bundled (None only in plans written before they were embedded,
    which resolve `cluster_name` / `model_name` as bundled names). `profiles_name` names the bundled GPU
    profile set the plan was computed with (profiles travel by reference)."""

    cluster_name: str
    model_name: str
    method: str
    placement: Placement
    edge_flows: Mapping[Edge, float] = field(default_factory=dict)
    objective_tok_per_s: float = 0.0
    bound_tok_per_s: float | None = None
    solver_stats: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    cluster: Cluster | None = None
    model: ModelSpec | None = None
    profiles_name: str | None = None

    def flow(self, src: str, dst: str) -> float:
        return float(self.edge_flows.get((src, dst), 0.0))

    def out_flows(self, src: str) -> dict[str, float]:
        return {d: f for (s, d), f in self.edge_flows.items() if s == src}
