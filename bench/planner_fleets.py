"""The planner bench's fleets: the paper's bundled ones and generated ones ("fleet42-s<seed>": the paper's
42-node, 7-type "high heterogeneity" fleet, node order drawn from the seed), the initial feed scaled to the
fleet, and the baseline every fleet is judged against (the best paper-method layout)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from planner import bundled
from planner.cluster import Cluster
from planner.generate import single_region
from planner.model import ModelSpec
from planner.profile import ProfileSet
from planner.throughput import ThroughputTable, typical_throughput
from simulator.score import (
    MAX_WARMUP_S,
    PAPER_INITIAL_QUERIES,
    PAPER_NODES,
    PAPER_WARMUP_S,
    PAPER_WINDOW_S,
    full_run_window,
    initial_queries,
)

# A100 x4, V100 x6, L4 x8, L4x2 x4, T4 x10, T4x2 x6, T4x4 x4; full mesh, 1 Gbps / 1 ms (the paper's LAN).
GENERATED: Mapping[str, Mapping[str, int]] = {
    "fleet42": {"A100": 4, "V100": 6, "L4": 8, "L4x2": 4, "T4": 10, "T4x2": 6, "T4x4": 4},
}
FLEET42_SEEDS = (0, 1, 2)
# The full run's feed and window (the paper's, scaled to the fleet) live with the scorer that must predict
# them: simulator.score.
# The paper's methods: their layouts, best of them by simulated decode, are the baseline `serve` must beat.
PAPER_METHODS = ("petals", "swarm", "separate", "milp")


def load_cluster(name: str) -> Cluster:
    """A bundled cluster, or a generated one named "<generator>-s<seed>" (e.g. fleet42-s1)."""
    found = re.fullmatch(r"([a-z0-9]+)-s(\d+)", name)
    if found and found.group(1) in GENERATED:
        return single_region(GENERATED[found.group(1)], random.Random(int(found.group(2))), name=name)
    return bundled.cluster(name)


@dataclass(frozen=True)
class Fleet:
    """What a bench needs of "cluster/model": the fleet, the model, its GPU profiles, the paper's settings for
    it and the typical-throughput table the planners take."""

    cluster: Cluster
    model: ModelSpec
    profiles: ProfileSet
    settings: Mapping[str, Any]
    table: ThroughputTable


def load_fleet(spec: str) -> Fleet:
    """ "cluster/model", e.g. cluster10/llama1-30b."""
    cluster_name, model_name = spec.split("/", 1)
    cluster = load_cluster(cluster_name)
    model = bundled.model(model_name)
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    return Fleet(cluster, model, profiles, settings, typical_throughput(cluster, model, profiles, settings))


def best_baseline(
    decode_by_method: Mapping[str, float | None], extra: Iterable[str] = ()
) -> tuple[str, float]:
    """The best paper-method layout: ("", 0.0) when none was simulated. `extra` names stored layouts."""
    wanted = set(PAPER_METHODS) | set(extra)
    found = [(v, m) for m, v in decode_by_method.items() if m in wanted and v is not None]
    if not found:
        return "", 0.0
    value, method = max(found)
    return method, value


__all__ = [
    "FLEET42_SEEDS",
    "GENERATED",
    "MAX_WARMUP_S",
    "PAPER_INITIAL_QUERIES",
    "PAPER_METHODS",
    "PAPER_NODES",
    "PAPER_WARMUP_S",
    "PAPER_WINDOW_S",
    "best_baseline",
    "full_run_window",
    "initial_queries",
    "load_cluster",
]
