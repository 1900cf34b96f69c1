"""Incremental re-planning: when the fleet changes (nodes lost, joined or slowed), find a new placement
warm-started from the current one that moves few layers, restores coverage first, and is only adopted when
it beats the current placement by a margin (hysteresis), so a fleet does not churn on small changes.

Interface (pure, like planner/solvers/*: no I/O, clock and scorer injected):

    apply_change(cluster, change, *, link_like=None) -> Cluster
    join_nodes(cluster, spec, *, gpu_types=None, region=None, taken=()) -> tuple[Node, ...]
    replan(current, cluster, model, profiles, change, *, scorer=None, budget_layers=None, min_gain=0.05,
           time_limit_s=10.0, clock=None, seed=0, settings=None, disk_bytes_per_s=None,
           move_cost=MOVE_COST_PER_LAYER, max_iters=None) -> Replan
    moved_against(fresh, current) -> int

How it works: the current placement restricted to the surviving nodes is the warm start; new nodes start
idle. Layers left uncovered are filled first (`repair`): each uncovered run is tiled by idle nodes, then by
"spare" holders (nodes whose every layer has another holder), then by stretching a neighbouring range, the
greediest cover first, so exactly the uncovered layers are loaded. Candidates then come from three places:
from-scratch layouts (the search method's starts) re-dealt among interchangeable nodes to reuse what they
hold (`relabel`), the best of them trimmed back toward the repaired placement node by node (`trim`), and
the repaired placement with one window of layers rebuilt from the nodes inside it plus the idle ones
(`rebuild_windows`). search.py's annealed walk and moves then run from the best of them on the changed
fleet with max-flow as the oracle (slowed nodes' compute capacity scaled), every candidate's value
discounted by `move_cost` per layer loaded and refused above `budget_layers`. The serve method's stage
layouts, their stages re-ordered to reuse what nodes hold (planner/replan_align.py), join the starts.
With a `scorer` (the simulator, injected from outside the pure core) the walk gets a fifth of the time
and the scorer judges, within the budget: the repaired placement, then the aligned stage layouts (best
serving proxy first), one walk candidate and one re-dealt from-scratch layout per round
(planner/replan_judge.py). The winner is the judged candidate that loads the fewest layers while serving
within `min_gain` of the best judged. The winner replaces the repaired placement only if it gains at
least `min_gain` (relative) over it; a repaired placement that carries nothing never stays.

Moves and load times: planner/replan_moves.py (a layer loads at min(disk, NIC-in) bytes/s; nodes load in
parallel, so the transition takes the slowest node's time). Candidates: planner/replan_candidates.py.

A slowed node (factor f in (0, 1]) keeps its GPU type; the search scales its compute capacity by f. The
returned Plan's edge flows use the nominal capacities (the throughput table is per GPU type).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.cluster import Cluster
from planner.errors import InfeasiblePlan, InvalidInput, UnknownName
from planner.flow import plan_from_placement
from planner.flow_split import lanes_of
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.replan_align import align
from planner.replan_candidates import rebuild_windows, relabel, repair, trim
from planner.replan_judge import Judged, Scorer, judge_all, pick, queue, safe_score
from planner.replan_moves import (
    DEFAULT_DISK_BYTES_PER_S,
    FleetChange,
    LayerMove,
    apply_change,
    check_change,
    join_nodes,
    layer_moves,
    layers_loaded,
    moved_against,
)
from planner.solvers.base import SolveContext, covers
from planner.solvers.search import FlowOracle, Layout, from_placement, heuristic_starts, improve, to_placement
from planner.solvers.serve import ProxyOracle, stage_candidates
from planner.throughput import typical_throughput

# Relative value lost per layer loaded: among equal candidates the one that moves fewer layers wins, and a
# move of 20 layers must buy more than 1% to be worth it.
MOVE_COST_PER_LAYER = 5e-4
# With a scorer, the walk gets this share of the time limit; the scorer judges candidates in the rest.
WALK_SHARE_WITH_SCORER = 0.2
# Judging order: this many aligned stage layouts, then one walk candidate and one re-dealt from-scratch
# layout, round after round (stage layouts are what serve best in the simulator; max-flow's walk favours
# deep pipelines that do not).
STAGED_PER_ROUND = 4
# Distinct walk candidates kept for the scorer (best flow-with-move-cost first).
SCORED_CANDIDATES = 8


@dataclass(frozen=True)
class Replan:
    """A re-plan: the new plan (embedding the changed fleet), the moves to get there, and its figures.
    `score_*` are the scorer's values (simulated decode tokens/s) or, without one, max-flow; `kept` is
    True when hysteresis kept the current placement (only repair moves, if any)."""

    plan: Plan
    moves: tuple[LayerMove, ...]
    layers_moved: int
    bytes_moved: int
    transition_s: float
    score_before: float
    score_after: float
    kept: bool
    uncovered_before: tuple[tuple[int, int], ...]
    # max-flow (tokens/s, slowed nodes scaled) of the current placement on the changed fleet, and of the new.
    max_flow_before: float = 0.0
    max_flow_after: float = 0.0
    stats: Mapping[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ replan


def _chain_ok(layout: Mapping[str, tuple[int, int]], num_layers: int, partial: bool) -> bool:
    return bool(layout) and covers(to_placement(layout, num_layers), partial=partial)


def replan(
    current: Plan,
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    change: FleetChange,
    *,
    scorer: Scorer | None = None,
    budget_layers: int | None = None,
    min_gain: float = 0.05,
    time_limit_s: float = 10.0,
    clock: Callable[[], float] | None = None,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    disk_bytes_per_s: Mapping[str, float] | None = None,
    move_cost: float = MOVE_COST_PER_LAYER,
    max_iters: int | None = None,
) -> Replan:
    """A new plan for `cluster` after `change`, warm-started from `current` (see the module docstring).
    `scorer` judges placements on the changed fleet (callers build it for apply_change(cluster, change));
    without one, max-flow is the score. `budget_layers` caps the layers loaded on all nodes together,
    repair included (a repair that needs more is still done, and then nothing else moves). Same inputs and
    seed, same result (with the default logical clock)."""
    if budget_layers is not None and budget_layers < 0:
        raise InvalidInput(f"budget_layers must be >= 0, got {budget_layers}", field="budget_layers")
    if min_gain < 0:
        raise InvalidInput(f"min_gain must be >= 0, got {min_gain}", field="min_gain")
    if not time_limit_s > 0:
        raise InvalidInput(f"time_limit_s must be > 0, got {time_limit_s}", field="time_limit_s")
    num_layers = model.num_layers
    if current.placement.num_layers != num_layers:
        raise InvalidInput(
            f"the plan is for {current.placement.num_layers} layers, the model has {num_layers}",
            field="model",
        )
    for name in current.placement.ranges:
        if not cluster.has_node(name):
            raise UnknownName("node", name, list(cluster.node_names), field="plan")
    new_cluster = apply_change(cluster, change)
    tp = typical_throughput(new_cluster, model, profiles, settings)
    # The walk scores with partial joins allowed (as the search method does: a smooth landscape, and the
    # most the router can carry); the plan then routes over exact joins unless partial ones carry more.
    partial = True
    split = str(current.provenance.get("flow_split", "preflow"))
    ctx = SolveContext(
        cluster=new_cluster,
        model=model,
        profiles=profiles,
        throughput=tp,
        rng=random.Random(seed),
        seed=seed,
        time_limit_s=time_limit_s,
        clock=clock,
    )
    started = ctx.now()
    flow = FlowOracle(new_cluster, model, tp, partial=partial, slowed=dict(change.slowed))
    names = list(new_cluster.node_names)
    kmax = {n.name: min(tp.max_layers(n.gpu_type), num_layers) for n in new_cluster.nodes}

    base: Layout = {n: sk for n, sk in from_placement(current.placement).items() if n not in change.lost}
    survivors = to_placement(base, num_layers)
    uncovered = survivors.uncovered()
    repaired = repair(base, names, kmax, num_layers, flow.value)
    repair_loads = layers_loaded(repaired, base)
    budget = None if budget_layers is None else max(budget_layers, repair_loads)

    def objective(layout: Layout) -> float:
        loads = layers_loaded(layout, base)
        if budget is not None and loads > budget:
            return -1.0
        value = flow.value(layout)
        pool.setdefault(_key(layout), (layout, value, loads))
        return value * (1.0 - move_cost * loads)

    pool: dict[tuple[tuple[str, int, int], ...], tuple[Layout, float, int]] = {}
    # From-scratch layouts (the search method's starts) re-dealt to reuse what nodes hold: a change that
    # breaks many stages at once (every tp shifts when the fleet's mix changes) needs a new shape, which
    # single moves from the current placement rarely reach.
    fresh = [relabel(lay, base, new_cluster) for _, lay in heuristic_starts(ctx)]

    def until(share: float) -> Callable[[], bool]:
        # Each phase gets a share of the time limit from when it starts (a phase before it may overrun).
        end = ctx.now() + share * time_limit_s
        return lambda: ctx.now() >= end

    # The serve method's stage layouts (best serving proxy first), their stages re-ordered to reuse what
    # nodes hold: the shapes that serve best, at a fraction of a from-scratch plan's loads.
    proxy = ProxyOracle(ctx)
    staged = aligned_stages(ctx, base, proxy, deadline=until(0.1))
    starts = [repaired, *fresh, *staged[:8]]

    if fresh:
        # The best fresh shape, trimmed back toward the repaired placement a node at a time: candidates
        # between "move little" and "move to the new shape", which a budget can then pick from.
        top = max(
            fresh, key=lambda lay: (flow.value(lay) * (1.0 - move_cost * layers_loaded(lay, base)), _key(lay))
        )
        starts += trim(top, repaired, base, flow.value, deadline=until(0.1))
    windows = rebuild_windows(repaired, new_cluster, tp, num_layers, deadline=until(0.25))
    starts += sorted(windows, key=lambda lay: (-objective(lay), _key(lay)))[:8]
    walk_share = WALK_SHARE_WITH_SCORER if scorer is not None else 1.0
    walk_until = ctx.now() + max(
        started + walk_share * time_limit_s - ctx.now(), 0.3 * walk_share * time_limit_s
    )
    best_walk, _, iters = improve(
        ctx,
        starts,
        objective,
        deadline=walk_until,
        started=started,
        max_iters=max_iters,
    )
    front = _pareto(pool.values())
    flow_before = flow.value(base) if _chain_ok(base, num_layers, partial) else 0.0
    flow_repaired = flow.value(repaired)
    stats: dict[str, Any] = {
        "iterations": iters,
        "oracle_calls": flow.calls,
        "repair_layers": repair_loads,
        "budget_layers": budget_layers,
        "min_gain": min_gain,
        "move_cost_per_layer": move_cost,
        "scorer": scorer is not None,
        "seed": seed,
        "front": [(round(v, 1), loads) for _, v, loads in front],
    }

    if scorer is None:
        chosen, chosen_score = best_walk, flow.value(best_walk)
        improves = flow_repaired <= 0 or chosen_score >= flow_repaired * (1.0 + min_gain)
        kept = not improves or _key(chosen) == _key(repaired)
        final, score_before, score_after = (
            (repaired if kept else chosen),
            flow_before,
            (flow_repaired if kept else chosen_score),
        )
        stats["gain"] = (chosen_score / flow_repaired - 1.0) if flow_repaired > 0 else None
    else:
        final, kept, score_before, score_after = _judge(
            scorer,
            ctx,
            base,
            repaired,
            staged=staged,
            fresh=fresh,
            walked=[
                e[0]
                for e in sorted(pool.values(), key=lambda e: (-e[1] * (1 - move_cost * e[2]), _key(e[0])))
            ],
            budget=budget,
            min_gain=min_gain,
            deadline=started + time_limit_s,
            stats=stats,
        )
    if not _chain_ok(final, num_layers, partial):
        raise InfeasiblePlan(
            f"no placement found that carries requests after the change; uncovered: {uncovered or 'none'}"
        )
    placement = to_placement(final, num_layers)
    moves = layer_moves(new_cluster, model, current.placement, placement, disk_bytes_per_s=disk_bytes_per_s)
    plan = plan_from_placement(
        new_cluster,
        model,
        profiles,
        placement,
        method="replan",
        throughput=tp,
        partial=None,
        split=split,
        lanes=lanes_of(current.provenance),
        solver_stats=stats,
        provenance={
            **dict(current.provenance),
            "replan_of": current.method,
            "lost": list(change.lost),
            "joined": [n.name for n in change.joined],
            "slowed": dict(change.slowed),
            "seed": seed,
        },
    )
    return Replan(
        plan=plan,
        moves=moves,
        layers_moved=sum(m.layers_to_load for m in moves),
        bytes_moved=sum(m.bytes_to_load for m in moves),
        transition_s=max((m.load_s for m in moves), default=0.0),
        score_before=score_before,
        score_after=score_after,
        kept=kept,
        uncovered_before=uncovered,
        max_flow_before=flow_before,
        max_flow_after=flow.value(final),
        stats=stats,
    )


def aligned_stages(
    ctx: SolveContext, base: Layout, proxy: ProxyOracle, *, deadline: Callable[[], bool]
) -> list[Layout]:
    """stage_candidates of the changed fleet aligned with `base` (replan_align), best proxy first."""
    num_layers = ctx.model.num_layers
    ranked = sorted(stage_candidates(ctx), key=lambda nl: (-proxy.value(nl[1]), nl[0]))
    out: list[Layout] = []
    for _, lay in ranked:
        if deadline():
            break
        aligned = align(lay, base, ctx.cluster, ctx.throughput, num_layers)
        out.append(aligned or relabel(lay, base, ctx.cluster))
    return out


def _judge(
    scorer: Scorer,
    ctx: SolveContext,
    base: Layout,
    repaired: Layout,
    *,
    staged: list[Layout],
    fresh: list[Layout],
    walked: list[Layout],
    budget: int | None,
    min_gain: float,
    deadline: float,
    stats: dict[str, Any],
) -> tuple[Layout, bool, float, float]:
    """(final layout, kept, score before, score after) with the scorer as the judge (replan_judge)."""
    num_layers = ctx.model.num_layers
    score = safe_score(scorer, lambda lay: to_placement(lay, num_layers))

    def ok(layout: Layout) -> bool:
        return _chain_ok(layout, num_layers, partial=False)

    # The survivors as they stand (before any repair): nothing if they no longer chain.
    before = (score(base) if ok(base) else 0.0) if _key(base) != _key(repaired) else None
    first = Judged(
        repaired, score(repaired) if ok(repaired) else 0.0, layers_loaded(repaired, base), "repaired"
    )
    order = queue(
        [("staged", STAGED_PER_ROUND, staged), ("walk", 1, walked[:SCORED_CANDIDATES]), ("fresh", 1, fresh)],
        base,
        budget,
        ok,
    )
    judged = judge_all(order, base, score, stop=lambda: ctx.now() >= deadline)
    winner, kept = pick(judged, first, min_gain)
    stats["scored"] = len(judged) + 1
    stats["judged"] = [(j.origin, round(j.score, 1), j.loads) for j in judged]
    stats["gain"] = (winner.score / first.score - 1.0) if first.score > 0 else None
    stats["score_repaired"] = first.score
    return winner.layout, kept, first.score if before is None else before, winner.score


def _pareto(
    entries: Iterable[tuple[Layout, float, int]],
) -> list[tuple[Layout, float, int]]:
    """The candidates no other beats on both value and layers loaded, fewest loads first."""
    best_at: dict[int, tuple[Layout, float, int]] = {}
    for e in entries:
        if e[1] > 0 and (e[2] not in best_at or e[1] > best_at[e[2]][1]):
            best_at[e[2]] = e
    front: list[tuple[Layout, float, int]] = []
    for loads in sorted(best_at):
        e = best_at[loads]
        if not front or e[1] > front[-1][1]:
            front.append(e)
    return front


def _key(layout: Mapping[str, tuple[int, int]]) -> tuple[tuple[str, int, int], ...]:
    return tuple(sorted((n, s, k) for n, (s, k) in layout.items()))


__all__ = [
    "DEFAULT_DISK_BYTES_PER_S",
    "FleetChange",
    "LayerMove",
    "Replan",
    "apply_change",
    "check_change",
    "join_nodes",
    "layer_moves",
    "layers_loaded",
    "moved_against",
    "rebuild_windows",
    "relabel",
    "replan",
    "repair",
    "trim",
]
