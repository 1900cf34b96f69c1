"""Fast scoring of a candidate plan for the planner's search: the same workload (length distribution,
feeding rule, routing policy, KV parameters) on a shorter horizon, starting from a warm fleet instead of
the two-minute offline ramp-up, so one score costs about half a second. Fleets with slow links between
nodes are scored cold, as the full offline run (`full_run_config`) they are judged by: see
planner.solvers.branches.slow_links."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from planner.cluster import Cluster
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.solvers.branches import slow_links
from simulator.run import SimConfig, SimResult, simulate

# Offline: a warm start (the fleet filled as in steady state, see OfflineFeeder), 20 s to settle, a 40-s
# window. The full run starts with 20 queries and needs ~2 simulated minutes to fill the KV. Online: 300 s.
SCORE_SETTLE_S, SCORE_DURATION_S = 20.0, 60.0
SCORE_OFFLINE = SimConfig(
    mode="offline", duration_s=SCORE_DURATION_S, warmup_s=SCORE_SETTLE_S, warm_start=True, watch_interval_s=0
)
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


# The paper's offline experiment: an empty fleet fed 20 queries (for its 24 nodes), a 60-s warm-up, then a
# 600-s window. Bigger fleets get a proportionally bigger feed and a warm-up growing with the fleet (capped),
# or the ramp-up eats the window and flatters nobody fairly.
PAPER_INITIAL_QUERIES = 20
PAPER_NODES = 24
PAPER_WARMUP_S = 60.0
PAPER_WINDOW_S = 600.0
MAX_WARMUP_S = 180.0


def initial_queries(cluster: Cluster) -> int:
    """Initial offline feed in proportion to the fleet (20 for the paper's 24 nodes)."""
    return max(PAPER_INITIAL_QUERIES, math.ceil(PAPER_INITIAL_QUERIES * len(cluster.nodes) / PAPER_NODES))


def full_run_window(cluster: Cluster) -> tuple[float, float]:
    """(warm-up, duration) in simulated seconds of a full offline run: (60, 660) up to 24 nodes."""
    warmup_s = min(MAX_WARMUP_S, max(PAPER_WARMUP_S, PAPER_WARMUP_S * len(cluster.nodes) / PAPER_NODES))
    return warmup_s, warmup_s + PAPER_WINDOW_S


def full_run_ages(cluster: Cluster, settle_s: float, window_s: float) -> tuple[float, float]:
    """The ages (seconds since the fleet started) a warm-started score's fill gets (simulator.warm_fill):
    the full offline run's window spans fleet ages [warm-up, duration], and the score's window sees the
    fill's queries `settle_s` to `settle_s + window_s` later, so the fill is that much younger (its
    middle); never below zero."""
    warmup_s, duration_s = full_run_window(cluster)
    shift = settle_s + window_s / 2
    return max(0.0, warmup_s - shift), max(0.0, duration_s - shift)


def full_run_config(cluster: Cluster, *, seed: int = 0, base: SimConfig | None = None) -> SimConfig:
    """The full offline run a plan is judged by (bench.planner --full-sim): cold, fed and windowed as above."""
    warmup_s, duration_s = full_run_window(cluster)
    return replace(
        base or SimConfig(),
        mode="offline",
        seed=seed,
        initial_queries=initial_queries(cluster),
        warmup_s=warmup_s,
        duration_s=duration_s,
        warm_start=False,
        watch_interval_s=0,
    )


def score_config(base: SimConfig | None = None, cluster: Cluster | None = None) -> SimConfig:
    """The shortened version of `base` (default: offline max-flow on Azure conversation lengths); with
    `cluster`, an offline score's warm fill holds the queries of the full run it predicts (by age)."""
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
        warm_ages_s=(
            full_run_ages(cluster, SCORE_SETTLE_S, SCORE_DURATION_S - SCORE_SETTLE_S)
            if cluster is not None
            else cfg.warm_ages_s
        ),
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
    cfg = replace(score_config(cfg, cluster), seed=seed, kv_capacity=kv_capacity or cfg.kv_capacity)
    if cfg.policy == "maxflow" and not plan.edge_flows:
        # A candidate with no flow serves nothing: score it zero rather than fail the planner's search.
        return SimResult.empty(plan, cfg)
    return simulate(cluster, model, profiles, plan, cfg)


__all__ = [
    "full_run_ages",
    "full_run_config",
    "full_run_window",
    "initial_queries",
    "score_plan",
    "slow_links",
]
