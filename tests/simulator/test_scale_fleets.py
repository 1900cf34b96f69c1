"""Big fleets in the simulator: a stage of many equal replicas (what tiles repeated over a 1,000-GPU fleet
give) still routes. The paper's Fail-Flow rule skips successors under 5% of a node's planned outflow;
with 20 or more equal replicas every share is at or under 5%, and the rule must not skip them all."""

from __future__ import annotations

import random
from typing import Any

import pytest

from planner import bundled
from planner.flow import plan_from_placement
from planner.generate import single_region
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from simulator.config import SimConfig
from simulator.run import simulate


def four_stages(replicas: int) -> tuple[Any, Any, Any, list[str], Plan]:
    """Four stages of 15 layers, `replicas` A100s each: every node has `replicas` equal successors."""
    model = bundled.model("llama1-30b")
    profiles = bundled.profiles(model)
    cluster = single_region({"A100": 4 * replicas}, random.Random(0))
    names = [n.name for n in cluster.nodes]
    ranges = {n: LayerRange(15 * (i // replicas), 15 * (i // replicas) + 15) for i, n in enumerate(names)}
    plan = plan_from_placement(
        cluster, model, profiles, Placement(60, ranges), method="test", partial=False, split="balanced"
    )
    return cluster, model, profiles, names, plan


@pytest.mark.parametrize("replicas", [20, 24])
def test_a_stage_of_many_equal_replicas_serves(replicas: int) -> None:
    cluster, model, profiles, names, plan = four_stages(replicas)
    first = names[0]
    out = [f for (u, _), f in plan.edge_flows.items() if u == first and f > 0]
    assert len(out) == replicas
    assert max(out) <= 0.05 * sum(out) * (1 + 1e-9)
    result = simulate(
        cluster, model, profiles, plan, SimConfig(duration_s=30.0, warmup_s=10.0, seed=0, watch_interval_s=0)
    )
    assert result.rejected == 0
    assert result.admitted > 0 and result.decode_tok_per_s > 0


def test_a_source_of_many_unequal_replicas_keeps_them_all() -> None:
    """40 first-stage replicas, 10 planned at 1.5x the flow of the other 30: every share is under 5% of the
    source's outflow, so the floor falls to 5% of the largest flow and all 40 stay routable (a floor pinned at
    the largest flow kept only the 10, leaving three quarters of the stage idle: the 1,000-GPU case, where a
    source's A100s carried a little more flow than its L4s and T4s)."""
    from dataclasses import replace

    from planner.cluster import SOURCE
    from planner.routing import make_policy

    replicas = 40
    cluster, _, _, names, plan = four_stages(replicas)
    first_stage = names[:replicas]
    flows = dict(plan.edge_flows)
    for n in first_stage[:10]:
        flows[(SOURCE, n)] = 1.5 * flows[(SOURCE, n)]
    unequal = replace(plan, edge_flows=flows)
    out = [flows[(SOURCE, n)] for n in first_stage]
    assert max(out) < 0.05 * sum(out)
    policy = make_policy("maxflow", unequal, cluster)
    assert sorted(policy.iwrr[SOURCE].names) == sorted(first_stage)
