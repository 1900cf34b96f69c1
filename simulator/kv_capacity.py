"""How many token x layer KV entries each placed node of a simulated plan holds."""

from __future__ import annotations

from collections.abc import Mapping

from planner.cluster import Cluster
from planner.plan import Plan
from planner.profile import ProfileSet


def kv_capacities(
    cluster: Cluster, profiles: ProfileSet, plan: Plan, overrides: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Token x layer KV entries per placed node: the profile's for its layer count (clamped to the GPU's
    maximum, as the paper's forced layouts do) unless given explicitly (the separate-pipeline files)."""
    caps: dict[str, int] = {}
    for name, rng in plan.placement.ranges.items():
        if overrides and name in overrides:
            caps[name] = int(overrides[name])
            continue
        prof = profiles.get(cluster.node(name).gpu_type)
        caps[name] = prof.kv_capacity_for(min(rng.size, prof.max_layers))
    return caps
