"""The `serve` method's judge for a latency SLO (`brl plan --objective slo`): a candidate placement becomes
its SLO plan (planner.slo_routing: exact joins, balanced split, the fewest region crossings) and scores the
highest online rate that plan sustains under the targets (simulator.capacity).

Screening: once some candidate has a capacity C, the next one is first run at C raised by SCREEN_MARGIN
(a lead within a judgement's noise is not taken). If it fails there it does not win (latency grows with
load), so one run settles it and its score is an estimate below C (the rate scaled by the worst target's
slack, kept under C, marked `screened`); only a candidate that meets the raised rate is searched upward,
in small steps. The winner therefore always carries a full search, and a screened
candidate costs one run instead of the ~8 of a search."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from planner.cluster import Cluster
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.slo_routing import slo_plan
from planner.throughput import typical_throughput
from simulator.capacity import Capacity, SloTargets, plan_capacity
from simulator.config import SimConfig
from simulator.workload import load_lengths

# Each candidate is judged by 600-s online runs, as long as those of `brl simulate --find-capacity`, so a
# plan is chosen by the capacity that command reports for it on the same seed (a full search costs ~8 runs).
# Half as long costs half as much but misjudges: on 3cluster24 a candidate judged 299.5 tokens/s in 300-s
# runs (15% over the best so far) sustains 241.9 in 600-s runs of the same seed, below the 252.1 of the one
# it displaced, and less on two held-out seeds too (281.5 / 258.1 against 290.2 / 284.0).
SLO_SEARCH_DURATION_S = 600.0
SLO_SEARCH_TOLERANCE = 0.03
# Above a capacity already found, the search steps up by this factor (not doubling): a later candidate
# that meets the best rate rarely sustains much more, so a small step brackets its capacity in ~3 runs.
SCREENED_GROWTH = 1.2
# A later candidate is screened at the best capacity so far raised by this share: one seed's capacity is
# weak evidence for a small lead (3cluster24: one plan sustains 252.1 / 290.2 / 284.0 tokens/s on seeds
# 0 / 1 / 2), so a lead under it does not displace a plan judged earlier, i.e. one the proxy ranked higher.
SCREEN_MARGIN = 0.05

Scorer = Callable[[Placement], tuple[float, dict[str, Any]]]


def slo_candidate_plan(
    cluster: Cluster, model: ModelSpec, profiles: ProfileSet, placement: Placement, table: Any
) -> Plan:
    """A placement as the SLO judge simulates it and `brl plan --objective slo` writes it."""
    return slo_plan(cluster, model, profiles, placement, method="serve-candidate", throughput=table)


def screened_estimate(cap: Capacity, targets: SloTargets) -> float:
    """What a candidate that failed at the incumbent's rate scores: that rate scaled by the slack of the
    target it missed most (below the rate, so it never displaces the incumbent)."""
    probe = cap.first_failing
    if probe is None:
        return 0.0
    slack = min(
        targets.ttft_p95_s / probe.ttft_p95_s if probe.ttft_p95_s > 0 else 1.0,
        targets.tpot_p95_s / probe.tpot_p95_s if probe.tpot_p95_s > 0 else 1.0,
        1 / (1 + cap.tolerance),
    )
    return probe.rate_tok_per_s * (slack if probe.unserved == 0 else 0.5 * slack)


def slo_scorer(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    targets: SloTargets,
    *,
    settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    duration_s: float = SLO_SEARCH_DURATION_S,
) -> Scorer:
    """placement -> (online tokens/s sustained at the SLO targets, details): the `serve` method's judge for
    --objective slo, screening each candidate at the best capacity found so far. `should_stop` (the caller's
    time is up) ends a search after its current run with the capacity found so far (a lower bound), so a
    judgement overruns the time limit by one run at most. `duration_s`: simulated seconds of each run."""
    table = typical_throughput(cluster, model, profiles, settings)
    tokens_per_request = load_lengths(SimConfig().lengths).mean_total
    best = [0.0]

    def score(placement: Placement) -> tuple[float, dict[str, Any]]:
        candidate = slo_candidate_plan(cluster, model, profiles, placement, table)
        if not candidate.edge_flows:
            return 0.0, {"capacity_tok_per_s": 0.0}
        incumbent = best[0]
        cap = plan_capacity(
            cluster,
            model,
            profiles,
            candidate,
            targets,
            base=SimConfig(seed=seed),
            duration_s=duration_s,
            tolerance=SLO_SEARCH_TOLERANCE,
            start_tok_per_s=incumbent * (1 + SCREEN_MARGIN) or None,
            stop_if_start_fails=incumbent > 0,
            growth=SCREENED_GROWTH if incumbent > 0 else 2.0,
            should_stop=should_stop,
        )
        screened = incumbent > 0 and cap.at is None
        # A screened candidate scores below the best so far even where it failed above it (the margin).
        value = (
            min(screened_estimate(cap, targets), incumbent / (1 + SLO_SEARCH_TOLERANCE))
            if screened
            else cap.rate_tok_per_s
        )
        best[0] = max(best[0], cap.rate_tok_per_s)
        at = cap.at
        return value, {
            "capacity_tok_per_s": value,
            "capacity_req_per_s": value / tokens_per_request,
            "screened": screened,
            "simulations": cap.simulations,
            "decode_tok_per_s": at.decode_tok_per_s if at else 0.0,
            "prompt_latency_s": at.ttft_p95_s if at else 0.0,
            "decode_latency_s": at.tpot_p95_s if at else 0.0,
            "max_flow_tok_per_s": candidate.objective_tok_per_s,
            "flow_region_pairs": candidate.provenance.get("flow_region_pairs"),
        }

    return score
