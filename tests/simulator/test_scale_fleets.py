"""Big fleets in the simulator: a stage of many equal replicas (what tiles repeated over a 1,000-GPU fleet
give) still routes. The paper's Fail-Flow rule skips successors under 5% of a node's planned outflow;
with 20 or more equal replicas every share is at or under 5%, and the rule must not skip them all."""

from __future__ import annotations

import random

import pytest

from planner import bundled
from planner.flow import plan_from_placement
from planner.generate import single_region
from planner.placement import LayerRange, Placement
from simulator.config import SimConfig
from simulator.run import simulate


@pytest.mark.parametrize("replicas", [20, 24])
def test_a_stage_of_many_equal_replicas_serves(replicas: int) -> None:
    model = bundled.model("llama1-30b")
    profiles = bundled.profiles(model)
    cluster = single_region({"A100": 4 * replicas}, random.Random(0))
    names = [n.name for n in cluster.nodes]
    # Four stages of 15 layers, `replicas` A100s each: every node has `replicas` equal successors.
    ranges = {n: LayerRange(15 * (i // replicas), 15 * (i // replicas) + 15) for i, n in enumerate(names)}
    plan = plan_from_placement(
        cluster, model, profiles, Placement(60, ranges), method="test", partial=False, split="balanced"
    )
    first = names[0]
    out = [f for (u, _), f in plan.edge_flows.items() if u == first and f > 0]
    assert len(out) == replicas
    assert max(out) <= 0.05 * sum(out) * (1 + 1e-9)
    result = simulate(
        cluster, model, profiles, plan, SimConfig(duration_s=30.0, warmup_s=10.0, seed=0, watch_interval_s=0)
    )
    assert result.rejected == 0
    assert result.admitted > 0 and result.decode_tok_per_s > 0
