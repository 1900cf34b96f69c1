"""The order in which `serve` judges its candidates for a latency SLO (`brl plan --objective slo`): least
prompt blocking per output token first, under the plan's SLO routing (planner.slo_routing).

Why another order: at an SLO a fleet runs far below its max-flow (3cluster24: ~0.25 requests/s, ~20% of
it), so the throughput proxy says little; what binds is the tail of the time per output token, which is
made of waits behind prompts. A decode token reaching a node that is running a prompt's step waits for it
(L4 and T4 take one prompt per step: 0.2-0.5 s for a few layers of a long prompt), and one sent over a slow
link between regions waits behind the prompt's activations being sent (~1 s per 750 tokens at 12.5 MB/s).
Per node or link x a token passes with probability s_x (its share of the flow), x is busy with prompts a
share lambda * s_x * tau_x(mean prompt) of the time, and a token caught there waits up to tau_x(long
prompt): the proxy is sum_x s_x^2 * tau_x(mean) * tau_x(long) (seconds^2 per request/s; the arrival rate
scales every term alike, so it drops out of the order). Over 88 branch layouts of 3cluster24 it ranks the
simulated p95 TPOT at 240 tokens/s with a Spearman correlation of 0.78. (The sum is computed in
planner.slo_split, which also uses it to share an SLO plan's flow between parallel regions.)
"""

from __future__ import annotations

from planner.flow import FlowResult
from planner.placement import Placement
from planner.slo_routing import slo_flow
from planner.slo_split import prompt_blocking as flow_blocking
from planner.solvers.base import SolveContext
from planner.solvers.search import Layout, to_placement


def prompt_blocking(ctx: SolveContext, placement: Placement, flow: FlowResult) -> float:
    """The proxy above for `placement` routed by `flow`; lower is better."""
    return flow_blocking(ctx.cluster, ctx.model, ctx.profiles, placement, flow.edge_flows)


def fewest_crossings(ctx: SolveContext, placement: Placement) -> int:
    """The fewest region changes along any exact chain of `placement` (a lower bound on the crossings per
    token of any routing; no flow solved); a large number where there is no chain."""
    region = {n.name: n.region for n in ctx.cluster.nodes}
    # best[layer][r]: fewest changes of a chain that ends at `layer` on a node of region r.
    best: dict[int, dict[str | None, int]] = {0: {None: 0}}
    for name, rng in sorted(placement.ranges.items(), key=lambda kv: (kv[1].start, kv[0])):
        here = best.get(rng.start)
        if not here:
            continue
        r = region[name]
        cost = min(c + (prev is not None and prev != r) for prev, c in here.items())
        ends = best.setdefault(rng.end, {})
        ends[r] = min(ends.get(r, cost), cost)
    return min(best.get(placement.num_layers, {}).values(), default=len(placement.ranges) + 1)


def slo_ranked(
    ctx: SolveContext, ranked: list[tuple[str, Layout]], deadline: float
) -> list[tuple[str, Layout]]:
    """`ranked` reordered by `prompt_blocking` under each layout's SLO routing, least first (ties in the old
    order). Layouts are keyed fewest possible crossings first (`fewest_crossings`: the SLO routing keeps a
    layout to them, so on shared cores the few seconds there are go to the layouts that can cross least);
    those not reached by `deadline` (ctx's clock) follow in that order."""
    num_layers = ctx.model.num_layers
    placements = [to_placement(lay, num_layers) for _, lay in ranked]
    order = sorted(range(len(ranked)), key=lambda i: (fewest_crossings(ctx, placements[i]), i))
    keyed: list[tuple[float, int, tuple[str, Layout]]] = []
    rest: list[tuple[str, Layout]] = []
    for k, i in enumerate(order):
        if ctx.now() >= deadline:
            rest = [ranked[j] for j in order[k:]]
            break
        placement = placements[i]
        _, flow = slo_flow(ctx.cluster, ctx.model, ctx.profiles, placement, ctx.throughput)
        keyed.append((prompt_blocking(ctx, placement, flow), i, ranked[i]))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [item for _, _, item in keyed] + rest
