"""The placement MILP (paper §3) in python-mip: CBC by default, HiGHS when `highsbox` is installed.

Per node a start layer s_i and a one-hot size b_ik; per arc a flow f_a and an on/off d_a; flow conservation,
node capacity sum_k cap_i(k) b_ik, arc capacity, and chaining (an arc carries flow only if the next node
starts where this one ends; source arcs need s=0, sink arcs e=L). Beyond the paper: big-M of each arc
tightened to min(link, both nodes' best capacity); objective capped by the chaining-relaxed coverage bound
(a valid cut that makes the reported gap honest); s_i ordered across interchangeable nodes (same GPU type,
same links) to break symmetry; a warm start from the local search. CBC cannot be interrupted mid-solve
(SIGINT is held until it returns, and its progress callback crashes this build), so the solve runs in
slices, each warm-started from the incumbent: between slices it reports progress and honours a stop flag.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from planner.cluster import SINK, SOURCE, Cluster, Link
from planner.errors import InfeasiblePlan, InvalidInput, Unavailable
from planner.flow import coverage_bound, link_tok_per_s, solve_max_flow
from planner.placement import LayerRange
from planner.solvers.base import SolveContext, SolveResult, register
from planner.solvers.search import (
    FlowOracle,
    from_placement,
    heuristic_starts,
    improve,
    summarize_starts,
    to_placement,
)

# python-mip loads the CBC library on import: keep it out of `import planner.solvers`.
if TYPE_CHECKING:
    import mip

DEFAULT_SLICE_S = 10.0
# Shorter slices are not worth CBC's restart; the last share of the limit is left for building the plan.
MIN_SLICE_S = 0.5
FINISH_RESERVE_SHARE = 0.03


def prune_links(links: tuple[Link, ...], keep: int | None) -> tuple[Link, ...]:
    """Keep, per node, its `keep` fastest outgoing and incoming links (ties by name); a link survives if
    either end keeps it. Coordinator links are pruned the same way on the coordinator's side."""
    if keep is None:
        return links
    kept: set[tuple[str, str]] = set()
    by_out: dict[str, list[Link]] = {}
    by_in: dict[str, list[Link]] = {}
    for lk in links:
        by_out.setdefault(lk.src, []).append(lk)
        by_in.setdefault(lk.dst, []).append(lk)
    for group in list(by_out.values()) + list(by_in.values()):
        group.sort(key=lambda lk: (-lk.bandwidth_bytes_per_s, lk.src, lk.dst))
        kept.update((lk.src, lk.dst) for lk in group[:keep])
    return tuple(lk for lk in links if (lk.src, lk.dst) in kept)


def interchangeable_groups(ctx: SolveContext, links: tuple[Link, ...]) -> list[list[str]]:
    """Nodes with the same GPU type and the same bandwidth to every other party: swapping two of them maps
    a solution to an equally good one, so ordering their start layers loses nothing."""
    bw = {(lk.src, lk.dst): lk.bandwidth_bytes_per_s for lk in links}
    names = [n.name for n in ctx.cluster.nodes]
    others = [SOURCE, SINK, *names]

    def signature(a: str, b: str) -> bool:
        for x in others:
            if x in (a, b):
                continue
            if bw.get((a, x)) != bw.get((b, x)) or bw.get((x, a)) != bw.get((x, b)):
                return False
        return bw.get((a, b)) == bw.get((b, a))

    groups: list[list[str]] = []
    for node in ctx.cluster.nodes:
        for group in groups:
            head = ctx.cluster.node(group[0])
            if head.gpu_type == node.gpu_type and signature(group[0], node.name):
                group.append(node.name)
                break
        else:
            groups.append([node.name])
    return [g for g in groups if len(g) > 1]


@dataclasses.dataclass
class _Model:
    m: mip.Model
    start: dict[str, mip.Var]
    size: dict[str, dict[int, mip.Var]]
    flow: dict[tuple[str, str], mip.Var]
    on: dict[tuple[str, str], mip.Var]
    links: tuple[Link, ...]


def build_model(
    ctx: SolveContext,
    *,
    solver_name: str,
    prune_k: int | None,
    symmetry: bool,
    bound_cut: float | None,
    tight_big_m: bool = True,
) -> _Model:
    import mip

    L = ctx.model.num_layers
    tp = ctx.throughput
    m = mip.Model(sense=mip.MAXIMIZE, solver_name=solver_name)
    m.verbose = 0
    nodes = ctx.cluster.nodes
    kmax = {n.name: min(tp.max_layers(n.gpu_type), L) for n in nodes}
    cap = {n.name: {k: tp.capacity(n.gpu_type, k) for k in range(1, kmax[n.name] + 1)} for n in nodes}
    best_cap = {n: max(c.values()) for n, c in cap.items()}
    start = {n.name: m.add_var(f"start_{n.name}", var_type=mip.INTEGER, lb=0, ub=L - 1) for n in nodes}
    size = {
        n.name: {k: m.add_var(f"hold_{n.name}_{k}", var_type=mip.BINARY) for k in cap[n.name]} for n in nodes
    }
    end = {n: start[n] + mip.xsum(k * v for k, v in size[n].items()) for n in start}
    for n in start:
        m += mip.xsum(size[n].values()) == 1
        m += end[n] <= L
    links = prune_links(tuple(lk for lk in ctx.cluster.links), prune_k)
    flow: dict[tuple[str, str], mip.Var] = {}
    on: dict[tuple[str, str], mip.Var] = {}
    for lk in links:
        a = (lk.src, lk.dst)
        # Tightened big-M: an arc never carries more than its link or either endpoint can process.
        upper = link_tok_per_s(lk, ctx.model, with_token=False)
        for end_name in a if tight_big_m else ():
            if end_name not in (SOURCE, SINK):
                upper = min(upper, best_cap[end_name])
        if bound_cut is not None:
            upper = min(upper, bound_cut)
        flow[a] = m.add_var(f"flow_{lk.src}_{lk.dst}", lb=0.0)
        on[a] = m.add_var(f"switch_{lk.src}_{lk.dst}", var_type=mip.BINARY)
        m += flow[a] <= upper * on[a]
        if lk.src == SOURCE:
            m += start[lk.dst] <= L * (1 - on[a])
        elif lk.dst == SINK:
            m += end[lk.src] >= L * on[a]
        else:
            m += start[lk.dst] - end[lk.src] <= L * (1 - on[a])
            m += end[lk.src] - start[lk.dst] <= L * (1 - on[a])
    for n in start:
        inflow = mip.xsum(f for (u, v), f in flow.items() if v == n)
        outflow = mip.xsum(f for (u, v), f in flow.items() if u == n)
        m += inflow == outflow
        m += inflow <= mip.xsum(cap[n][k] * v for k, v in size[n].items())
    objective = mip.xsum(f for (u, _), f in flow.items() if u == SOURCE)
    m.objective = objective
    if bound_cut is not None:
        m += objective <= bound_cut
    if symmetry:
        for group in interchangeable_groups(ctx, links):
            for first, second in itertools.pairwise(group):
                m += start[first] <= start[second]
    return _Model(m, start, size, flow, on, links)


def _exact_layout(
    layout: Mapping[str, tuple[int, int]], names: list[str], num_layers: int
) -> dict[str, tuple[int, int]]:
    """Every node must hold >= 1 layer in the MILP; idle nodes get the last layer and carry no flow."""
    full = dict(layout)
    for n in names:
        full.setdefault(n, (num_layers - 1, 1))
    return full


def set_start(ctx: SolveContext, model: _Model, layout: Mapping[str, tuple[int, int]]) -> None:
    names = list(model.start)
    full = _exact_layout(layout, names, ctx.model.num_layers)
    placement = to_placement(layout, ctx.model.num_layers)
    result = solve_max_flow(
        Cluster(
            nodes=ctx.cluster.nodes,
            links=model.links,
            name=ctx.cluster.name,
            coordinator_nic_bytes_per_s=ctx.cluster.coordinator_nic_bytes_per_s,
        ),
        ctx.model,
        ctx.profiles,
        placement,
        throughput=ctx.throughput,
        partial=False,
    )
    values: list[tuple[mip.Var, float]] = []
    for n in names:
        s, k = full[n]
        values.append((model.start[n], float(s)))
        values += [(v, 1.0 if kk == k else 0.0) for kk, v in model.size[n].items()]
    # Scale flows a hair under their values: the MILP drops the token id from arc sizes (~1e-4 relative).
    for a, var in model.flow.items():
        f = result.edge_flows.get(a, 0.0) * (1 - 1e-4)
        values.append((var, f))
        values.append((model.on[a], 1.0 if f > 0 else 0.0))
    model.m.start = values


def read_layout(model: _Model) -> dict[str, tuple[int, int]]:
    layout: dict[str, tuple[int, int]] = {}
    for n, sv in model.start.items():
        inflow = sum((f.x or 0.0) for (u, v), f in model.flow.items() if v == n)
        if inflow <= 1e-6:
            continue  # held layers but carried nothing: leave it idle (the paper's "unused T4")
        k = max(model.size[n], key=lambda kk: model.size[n][kk].x or 0.0)
        layout[n] = (int(round(sv.x or 0.0)), k)
    return layout


def solver_name_for(option: str | None) -> str:
    import mip

    wanted = (option or "cbc").lower()
    if wanted == "cbc":
        return mip.CBC
    if wanted == "highs":
        try:
            import highsbox  # noqa: F401
        except ImportError:
            raise Unavailable(
                "the HiGHS solver needs the `highsbox` package (pip install highsbox)"
            ) from None
        return "HiGHS"
    raise InvalidInput(f"unknown MILP solver {option!r}; expected cbc or highs", field="solver")


@register("milp")
def solve_milp(ctx: SolveContext) -> SolveResult:
    """Warm start from the best heuristic (polished by a short local search), then CBC/HiGHS in slices
    until the time limit, the coverage bound, proven optimality, or a stop request."""
    import mip

    opts = ctx.options
    L = ctx.model.num_layers
    started = ctx.now()
    # The time limit is wall-clock seconds end to end: the plan is built after this returns.
    deadline = started + (1 - FINISH_RESERVE_SHARE) * ctx.time_limit_s
    bound = coverage_bound(ctx.cluster, ctx.throughput)
    oracle = FlowOracle(ctx.cluster, ctx.model, ctx.throughput, partial=False)
    start_from = str(opts.get("start_from", "best"))
    warm_share = float(opts.get("warm_start_share", 0.25 if start_from == "best" else 0.0))
    starts = heuristic_starts(ctx, deadline=started + warm_share * ctx.time_limit_s / 2)
    start_values = summarize_starts({name: oracle.value(lay) for name, lay in starts})
    # start_from: "best" (heuristics + lanes, polished by the local search), a heuristic's name (the
    # paper warm-starts from petals), or "none" (cold).
    if start_from != "best":
        starts = [(name, lay) for name, lay in starts if name == start_from]
    best, best_value, iters = improve(
        ctx,
        [lay for _, lay in starts],
        oracle.value,
        deadline=started + warm_share * ctx.time_limit_s,
        started=started,
        bound=bound,
        max_iters=int(opts["warm_start_iters"]) if "warm_start_iters" in opts else None,
    )
    warm_value = best_value
    ctx.report(best_value, bound, started, note="warm start")
    model = build_model(
        ctx,
        solver_name=solver_name_for(opts.get("solver")),
        prune_k=int(opts["prune_k"]) if opts.get("prune_k") else None,
        symmetry=bool(opts.get("symmetry", True)),
        bound_cut=bound if opts.get("bound_cut", True) else None,
        tight_big_m=bool(opts.get("tight_big_m", True)),
    )
    model.m.threads = int(opts.get("threads", 1))
    slice_s = float(opts.get("slice_s", DEFAULT_SLICE_S))
    slices = 0
    status = "not run"
    milp_bound: float | None = None
    raw_bound: float | None = None
    overshoot_s = 0.0
    while not ctx.stopped() and best_value < bound * (1 - 1e-9):
        # CBC overruns max_seconds (its presolve and the node in progress finish first): each slice asks
        # for less by the worst overrun seen, including the start and reading the layout back.
        began = ctx.now()
        asked = min(slice_s, deadline - began - overshoot_s)
        if asked < MIN_SLICE_S:
            break
        if best and best_value > 0:
            set_start(ctx, model, best)
        model.m.seed = ctx.seed + slices
        st = model.m.optimize(max_seconds=asked)
        slices += 1
        status = st.name
        if model.m.num_solutions:
            layout = read_layout(model)
            value = oracle.value(layout) if layout else 0.0
            if value > best_value * (1 + 1e-9):
                best, best_value = layout, value
        if math.isfinite(model.m.objective_bound):
            raw_bound = float(model.m.objective_bound)
            milp_bound = min(bound, float(model.m.objective_bound))
        ctx.report(
            best_value, milp_bound if milp_bound is not None else bound, started, note=f"milp slice {slices}"
        )
        overshoot_s = max(overshoot_s, ctx.now() - began - asked)
        if st == mip.OptimizationStatus.OPTIMAL:
            break
    stats: dict[str, Any] = {
        "solver": model.m.solver_name,
        "status": status,
        "slices": slices,
        "start_values": start_values,
        "warm_start_tok_per_s": warm_value,
        "warm_start_iterations": iters,
        "objective_tok_per_s": best_value,
        "milp_bound_tok_per_s": milp_bound,
        "solver_bound_tok_per_s": raw_bound,
        "coverage_bound_tok_per_s": bound,
        "rows": model.m.num_rows,
        "cols": model.m.num_cols,
        "links_kept": len(model.links),
        "stopped_early": ctx.stopped(),
    }
    if not best:
        raise InfeasiblePlan(
            f"the MILP found no feasible placement in {ctx.time_limit_s:g} s "
            f"(start_from={start_from!r}); warm-start it (start_from='best') or give it more time"
        )
    placement = to_placement(best, L)
    return SolveResult(placement, partial=False, stats=stats)


__all__ = ["LayerRange", "build_model", "from_placement", "prune_links", "solve_milp"]
