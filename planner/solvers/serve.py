"""Serving-aware placement: plans that serve the most decode tokens/s, not the most max-flow.

Max-flow ignores what caps serving (docs/placement-and-routing.md §8.7): queries in flight are limited by
the KV cache of the fullest layer, and every hop adds a batch iteration (decodes share it with prompts) to
each token's latency; decode tokens/s ~ queries in flight / per-token latency. Candidates are "stage
layouts": nodes grouped by (region, GPU type); each group is cut into stages of `width` nodes that hold the
same layers side by side, so width trades hops for parallel KV; stage sizes balance rate against KV per
layer (`kv_weight`), and the order of the groups along the pipeline is varied too. On multi-region fleets
"branch layouts" (planner.solvers.branches: a trunk region, the others parallel branches) cross one slow
region boundary per request, and where links are slow they are ranked first. A Little's-law proxy
ranks the candidates (and the paper's heuristics) in milliseconds; the injected `ctx.scorer` (the simulator,
from outside the pure core) judges the most promising ones, and the plan that serves the most wins. Its plan
carries the "balanced" flow split (planner.flow_split.balanced_split): replicas of a stage share its flow by
capacity, where preflow-push piles it on one of them and the router's weights would follow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from planner.cluster import Cluster
from planner.errors import BrlError, InfeasiblePlan
from planner.flow import build_flow_graph, max_flow
from planner.placement import Placement
from planner.profile import ProfileSet
from planner.solvers.base import SolveContext, SolveResult, register
from planner.solvers.branches import branch_candidates, slow_links
from planner.solvers.confirm import CONFIRM_REPLICAS, confirm, confirmed_winner, contenders
from planner.solvers.dense import dense_candidates
from planner.solvers.search import Layout, heuristic_starts, to_placement
from planner.solvers.slo_candidates import slo_ranked
from planner.solvers.stages import (
    Recipe,
    groups_of,
    recipe_layout,
    recipe_neighbours,
    reorderings,
    shift_neighbours,
    stage_candidates,
    stage_layout,
    structure,
)
from planner.throughput import TYPICAL_INPUT_TOKENS, TYPICAL_OUTPUT_TOKENS

# Offline admission stops feeding when the fullest layer's expected KV reaches this share (paper: 0.8).
FEED_HIGH_WATER = 0.8


@dataclass(frozen=True)
class ServingEstimate:
    decode_tok_per_s: float
    in_flight: float
    token_latency_s: float
    hops: float
    max_flow_tok_per_s: float
    # Flow-weighted region crossings per token (node-to-node links between regions on the way).
    crossings: float = 0.0


# Calibrated against full offline runs of our simulator on cluster24/LLaMA-2 70B (ILP layout, the deep
# chain, ten stage layouts): realised in-flight queries ~ 0.87 x the KV-gated cap, about 0.088 s of
# per-token latency per node visited (batches mix decodes with prompts), and decode tokens are ~24% of
# the tokens a saturated plan carries (Azure conversation: 232 output per 763 input tokens).
IN_FLIGHT_SHARE = 0.87
HOP_LATENCY_S = 0.088
DECODE_SHARE_OF_FLOW = 0.24


def serving_proxy(
    cluster: Cluster,
    profiles: ProfileSet,
    layout: Mapping[str, tuple[int, int]],
    num_layers: int,
    max_flow: float,
    node_flows: Mapping[str, float],
) -> ServingEstimate:
    """Little's-law proxy: decode tokens/s ~ queries in flight / per-token latency, capped by max-flow.
    In flight: the offline feeder stops at FEED_HIGH_WATER of the fullest layer's KV (summed over the
    nodes holding it that carry flow), each query expecting I+O tokens per layer. Latency: HOP_LATENCY_S
    per node a token visits, the flow-weighted mean path length being sum of node flows / max-flow."""
    if not layout or max_flow <= 0:
        return ServingEstimate(0.0, 0.0, math.inf, 0.0, max_flow)
    per_layer = [0.0] * num_layers
    for name, (s, k) in layout.items():
        if node_flows.get(name, 0.0) <= 1e-9:
            continue
        prof = profiles.get(cluster.node(name).gpu_type)
        for layer in range(s, s + k):
            per_layer[layer] += prof.kv_capacity_for(k) / k
    query_tokens = TYPICAL_INPUT_TOKENS + TYPICAL_OUTPUT_TOKENS
    in_flight = IN_FLIGHT_SHARE * FEED_HIGH_WATER * min(per_layer) / query_tokens
    hops = sum(node_flows.values()) / max_flow
    latency = HOP_LATENCY_S * hops
    decode = min(in_flight / latency, DECODE_SHARE_OF_FLOW * max_flow)
    return ServingEstimate(decode, in_flight, latency, hops, max_flow)


class ProxyOracle:
    """Serving proxy of a layout (exact joins), memoised."""

    def __init__(self, ctx: SolveContext) -> None:
        self.ctx = ctx
        self._cache: dict[tuple[tuple[str, int, int], ...], ServingEstimate] = {}

    def estimate(self, layout: Mapping[str, tuple[int, int]]) -> ServingEstimate:
        key = tuple(sorted((n, s, k) for n, (s, k) in layout.items()))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        ctx = self.ctx
        num_layers = ctx.model.num_layers
        g, _ = build_flow_graph(
            ctx.cluster, ctx.model, to_placement(layout, num_layers), ctx.throughput, partial=False
        )
        value, flow = max_flow(g)
        node_flows = {n: float(flow.get((n, "start"), {}).get((n, "end"), 0.0)) for n in layout}
        est = serving_proxy(ctx.cluster, ctx.profiles, layout, num_layers, float(value), node_flows)
        region = {n: ctx.cluster.node(n).region for n in layout}
        crossing = sum(
            float(f)
            for u in layout
            for (v, _), f in flow.get((u, "out"), {}).items()
            if v in region and region[v] != region[u]
        )
        if value > 0:
            est = replace(est, crossings=crossing / float(value))
        self._cache[key] = est
        return est

    def value(self, layout: Mapping[str, tuple[int, int]]) -> float:
        return self.estimate(layout).decode_tok_per_s


@dataclass
class _Best:
    name: str = ""
    score: float = -math.inf


# Shares of the time limit, which is wall-clock seconds end to end: building and ranking candidates, then
# scoring one per structure, the group orders of the best three (or more structures), and boundary shifts
# to the end. The plan
# (max-flow, bounds) is built after the solve returns, so a last slice is kept for that.
CANDIDATE_SHARE = 0.2
STRUCTURE_SHARE = 0.55
ORDER_SHARE = 0.85
FINAL_RESERVE_SHARE = 0.03
SLOW_SCORE_MARGIN = 1.5
# options["objective"] == "slo": candidates are reordered for a latency SLO until this share.
SLO_RANK_SHARE = 0.35


def _key(lay: Mapping[str, tuple[int, int]]) -> tuple[tuple[str, int, int], ...]:
    return tuple(sorted((n, s, k) for n, (s, k) in lay.items()))


def ranked_candidates(
    ctx: SolveContext, proxy: ProxyOracle, recipes: dict[str, Recipe], deadline: float
) -> list[tuple[str, Layout]]:
    """The paper's heuristics, lane layouts and stage layouts, built until `deadline`, best proxy first.
    When a fleet has too many GPU types for every width combination, a coordinate ascent on the proxy
    (one group's width or the KV weight at a time) refines the best sampled recipe while time remains."""
    pool: list[tuple[str, Layout]] = list(heuristic_starts(ctx, stages=False))
    # Multi-region fleets: one trunk region, the others parallel branches (one region crossing per request);
    # a few hundred at most, built and ranked before the many stage layouts.
    now = ctx.now()
    pool += branch_candidates(ctx, deadline=now + 0.2 * max(deadline - now, 0.0))
    # The proxy cannot tell stage orders apart in one region: orders are tried later, for the best only.
    # Building a layout costs about half of ranking it: leave ~60% of the remaining time for the proxy.
    now = ctx.now()
    pool += stage_candidates(ctx, recipes=recipes, deadline=now + 0.4 * max(deadline - now, 0.0))
    pool += dense_candidates(ctx)  # one KV-balanced pipeline, on fleets with room for about one copy
    distinct: dict[tuple[tuple[str, int, int], ...], tuple[str, Layout]] = {}
    for name, lay in pool:
        if distinct and ctx.now() >= deadline:
            break
        # Plans are routed over exact joins: a candidate without an exact chain (petals) carries nothing.
        if lay and proxy.estimate(lay).max_flow_tok_per_s > 0:
            distinct.setdefault(_key(lay), (name, lay))
    layout_of = {name: lay for name, lay in distinct.values() if name in recipes}
    if layout_of:
        current = max(layout_of, key=lambda n: (proxy.value(layout_of[n]), n))
        value = proxy.value(layout_of[current])
        improved = True
        while improved and ctx.now() < deadline:
            improved = False
            for recipe in recipe_neighbours(ctx, recipes[current]):
                if ctx.now() >= deadline:
                    break
                name, lay = recipe_layout(ctx, recipe)
                if not lay or name in recipes:
                    continue
                recipes[name] = recipe
                distinct.setdefault(_key(lay), (name, lay))
                if proxy.value(lay) > value * (1 + 1e-6):
                    current, value, improved = name, proxy.value(lay), True
                    break
    if slow_links(ctx.cluster, ctx.model):
        # The proxy knows nothing of slow links: on fleets that have them (planner.solvers.branches), fewer
        # region crossings per token (to 0.1) come first, as prompts jam on each one while the fleet fills.
        return sorted(
            distinct.values(),
            key=lambda nl: (round(proxy.estimate(nl[1]).crossings, 1), -proxy.value(nl[1]), nl[0]),
        )
    return sorted(distinct.values(), key=lambda nl: (-proxy.value(nl[1]), nl[0]))


@register("serve")
def solve_serve(ctx: SolveContext) -> SolveResult:
    """Candidates: the paper's heuristics, lane layouts, and stage layouts over group widths and KV
    weights. Without a scorer the proxy's best is returned. With one (the simulator, injected from
    outside the pure core): score one candidate per structure in proxy order, then every group order of
    the three best structures and the structures not scored yet, then boundary shifts of the winner
    while time remains (shares above).
    The plan that serves the most wins. Every phase stops on ctx's clock, so with a wall clock the time
    limit is wall-clock seconds; only the first score always runs, so a plan comes back however short."""
    started = ctx.now()
    limit_s = ctx.time_limit_s
    deadline = started + (1 - FINAL_RESERVE_SHARE) * limit_s
    num_layers = ctx.model.num_layers
    proxy = ProxyOracle(ctx)
    recipes: dict[str, Recipe] = {}
    ranked = ranked_candidates(ctx, proxy, recipes, started + CANDIDATE_SHARE * limit_s)
    if ctx.options.get("objective") == "slo":
        ranked = slo_ranked(ctx, ranked, started + SLO_RANK_SHARE * limit_s)
    if not ranked:
        raise InfeasiblePlan(
            f"serve built no candidate placement in {CANDIDATE_SHARE * limit_s:.1f} s (its share of "
            f"--time-limit {limit_s:g} s) for {len(ctx.cluster.nodes)} nodes: give it more time"
        )
    stats: dict[str, Any] = {
        "candidates": len(ranked),
        "scorer": ctx.scorer is not None,
        "proxy": {name: round(proxy.value(lay), 1) for name, lay in ranked[:12]},
        "candidates_s": ctx.now() - started,
    }
    if ctx.scorer is None or not ranked:
        name, lay = ranked[0]
        est = proxy.estimate(lay)
        stats.update(
            {
                "chosen": name,
                "proxy_decode_tok_per_s": est.decode_tok_per_s,
                "max_flow_tok_per_s": est.max_flow_tok_per_s,
            }
        )
        return SolveResult(to_placement(lay, num_layers), partial=False, stats=stats, split="balanced")
    scorer = ctx.scorer
    scores: dict[str, float] = {}
    details_of: dict[str, Mapping[str, Any]] = {}
    layouts: dict[str, Layout] = {}
    max_scored = int(ctx.options.get("max_scored", 1 << 30))
    best = _Best()
    spent: list[float] = [0.0]
    # Full-run scores (fleets with slow links) vary more in cost on busy cores: keep a wider margin.
    margin = SLOW_SCORE_MARGIN if slow_links(ctx.cluster, ctx.model) else 1.0
    # An SLO judge settles most candidates with one run and ends its rare longer searches when the caller's
    # time is up (simulator.slo_score): the next judgement is predicted as one run of the last one.
    runs: list[int] = [1]
    slo = ctx.options.get("objective") == "slo"

    def judge(name: str, lay: Layout, until: float) -> bool:
        # The first candidate is always scored, so a plan comes back however short the time limit; later
        # ones only when a score (as long as the slowest so far) still ends before `until`.
        if scores and (
            ctx.stopped()
            or ctx.now() + margin * (spent[-1] / runs[-1] if slo else max(spent)) >= until
            or len(scores) >= max_scored
        ):
            return False
        began = ctx.now()
        try:
            value, details = scorer(to_placement(lay, num_layers))
        except BrlError as exc:  # a candidate the judge cannot run counts as serving nothing
            value, details = 0.0, {"error": str(exc)}
        spent.append(ctx.now() - began)
        runs.append(max(1, int(details.get("simulations", 1))))
        scores[name], details_of[name], layouts[name] = value, details, lay
        if value > best.score:
            best.name, best.score = name, value
            ctx.report(value, None, started, note=f"serve {name}")
        return True

    def confirm_reserve() -> float:
        # The order phase and the boundary shifts leave time for the contenders' confirming runs when the
        # scorer can make them (at the slowest score so far); where they would not end by the deadline
        # anyway, the shifts get the time.
        runs = CONFIRM_REPLICAS * len(contenders(scores)) if hasattr(scorer, "replica") else 0
        return margin * runs * max(spent)

    by_structure: dict[tuple[tuple[str, int, int], ...], list[tuple[str, Layout]]] = {}
    for name, lay in ranked:
        by_structure.setdefault(structure(ctx.cluster, lay), []).append((name, lay))
    for variants in by_structure.values():
        if not judge(*variants[0], until=started + STRUCTURE_SHARE * limit_s):
            break
    top = sorted(
        (k for k, v in by_structure.items() if v[0][0] in scores),
        key=lambda k: -scores[by_structure[k][0][0]],
    )
    # Then the other group orders of the three best structures and, where there are none (more than three
    # groups), the structures the first phase had no time for, still in proxy order.
    second: list[tuple[str, Layout]] = []
    for key in top[:3]:
        first = by_structure[key][0][0]
        second += by_structure[key][1:] + (reorderings(ctx, recipes[first]) if first in recipes else [])
    second += [variants[0] for variants in by_structure.values()]
    for name, lay in second:
        if name in scores:
            continue
        if not judge(name, lay, until=min(started + ORDER_SHARE * limit_s, deadline - confirm_reserve())):
            break
    improved = True
    reserve = confirm_reserve()
    climb_until = deadline - reserve if ctx.now() + reserve < deadline else deadline
    while improved:
        improved = False
        winner = best.name
        for i, cand in enumerate(shift_neighbours(layouts[winner], ctx)):
            before = best.score
            if not judge(f"{winner}+shift{i}", cand, until=climb_until):
                break
            if best.score > before * 1.002:
                improved = True
                break
    confirmed = _confirm(ctx, scorer, scores, layouts, spent, margin, until=deadline)
    winner, winner_score = confirmed_winner(scores, confirmed)
    stats.update(
        {
            "scored": len(scores),
            "chosen": winner,
            "decode_tok_per_s": winner_score,
            "confirmed": {name: [round(v, 2) for v in values] for name, values in confirmed.items()},
            "scores": {k: round(v, 2) for k, v in sorted(scores.items(), key=lambda kv: -kv[1])},
            "chosen_details": dict(details_of[winner]),
            "max_flow_tok_per_s": proxy.estimate(layouts[winner]).max_flow_tok_per_s,
            "score_s": [round(s, 3) for s in spent[1:]],
        }
    )
    return SolveResult(
        to_placement(layouts[winner], num_layers), partial=False, stats=stats, split="balanced"
    )


def _confirm(
    ctx: SolveContext,
    scorer: Any,
    scores: Mapping[str, float],
    layouts: Mapping[str, Layout],
    spent: list[float],
    margin: float,
    *,
    until: float,
) -> dict[str, list[float]]:
    """planner.solvers.confirm with a scorer that can score a placement on another seed (`replica`)."""
    replica = getattr(scorer, "replica", None)
    if not callable(replica):
        return {}

    def rescore(name: str, r: int) -> float:
        began = ctx.now()
        try:
            value = float(replica(to_placement(layouts[name], ctx.model.num_layers), r)[0])
        except BrlError:
            value = 0.0
        spent.append(ctx.now() - began)
        return value

    def affordable(runs: int) -> bool:
        return not ctx.stopped() and ctx.now() + margin * runs * max(spent) < until

    return confirm(scores, rescore, affordable)


__all__ = [
    "Placement",
    "groups_of",
    "serving_proxy",
    "solve_serve",
    "stage_candidates",
    "stage_layout",
]
