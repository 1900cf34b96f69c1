"""Fast scoring of a candidate plan for the planner's search: the same workload (length distribution,
feeding rule, routing policy, KV parameters) on a shorter horizon, starting from a warm fleet instead of
the two-minute offline ramp-up, so one score costs about half a second. bench/simulator.py measures its
rank agreement with the full run over the paper's stored layouts and the planner's candidates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from planner.cluster import Cluster
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from simulator.run import SimConfig, SimResult, simulate

# Offline: a warm start (the fleet filled as in steady state, see OfflineFeeder), 20 s to settle, a 40-s
# window. The full run starts with 20 queries and needs ~2 simulated minutes to fill the KV. Online: 300 s.
SCORE_OFFLINE = SimConfig(mode="offline", duration_s=60.0, warmup_s=20.0, warm_start=True, watch_interval_s=0)
SCORE_ONLINE_S = 300.0


# A fixed window holds few tokens of a slow plan, and its score gets noisy (cluster10's 287 tok/s plans:
# 5% off their full runs over 80 s, within 3% over 240 s): the window grows until it holds this many
# tokens at the plan's max-flow, by at most SCORE_MAX_WINDOW_STRETCH (the cost grows with tokens, not time).
SCORE_MIN_WINDOW_TOKENS = 56_000.0
SCORE_MAX_WINDOW_STRETCH = 3.0


def score_window_s(base_window_s: float, max_flow_tok_per_s: float) -> float:
    """The measured window of a score: `base_window_s`, longer for plans of little max-flow."""
    if max_flow_tok_per_s <= 0:
        return base_window_s
    wanted = SCORE_MIN_WINDOW_TOKENS / max_flow_tok_per_s
    return min(base_window_s * SCORE_MAX_WINDOW_STRETCH, max(base_window_s, wanted))


def score_config(base: SimConfig | None = None) -> SimConfig:
    """The shortened version of `base` (default: offline max-flow on Azure conversation lengths)."""
    cfg = base or SimConfig()
    if cfg.mode == "online":
        return replace(
            cfg,
            duration_s=min(cfg.duration_s or SCORE_ONLINE_S, SCORE_ONLINE_S),
            watch_interval_s=0,
            max_drain_s=60.0,
        )
    return replace(
        cfg,
        duration_s=SCORE_OFFLINE.duration_s,
        warmup_s=SCORE_OFFLINE.warmup_s,
        warm_start=True,
        watch_interval_s=0,
        drain=False,
    )


def score_plan(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    plan: Plan,
    *,
    seed: int = 0,
    policy: str = "maxflow",
    lengths: str = "azure-conv",
    base: SimConfig | None = None,
    kv_capacity: Mapping[str, int] | None = None,
) -> SimResult:
    """Shortened simulation of `plan`; rank candidates by `.decode_tok_per_s` (what the fleet serves)."""
    cfg = base or SimConfig(policy=policy, lengths=lengths)
    cfg = replace(score_config(cfg), seed=seed, kv_capacity=kv_capacity or cfg.kv_capacity)
    if cfg.policy == "maxflow" and not plan.edge_flows:
        # A candidate with no flow serves nothing: score it zero rather than fail the planner's search.
        return SimResult.empty(plan, cfg)
    return simulate(cluster, model, profiles, plan, cfg)
