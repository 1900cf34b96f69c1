"""Branch layouts, candidates of the serving-aware planner on multi-region fleets: one region's nodes hold
a trunk of layers, every other region a parallel branch holding the rest, so each request crosses one slow
inter-region link instead of one per region on the way (a typical prompt needs ~1 s of a 12.5 MB/s link)."""

from __future__ import annotations

from planner.cluster import Cluster
from planner.model import ModelSpec
from planner.solvers.base import SolveContext
from planner.solvers.search import Layout
from planner.solvers.stages import groups_of, stage_layout
from planner.throughput import TYPICAL_INPUT_TOKENS

# A typical prompt (750 Azure-conversation tokens of LLaMA-2 70B's 16 KB activations: 12.3 MB) takes ~1 s
# of a 12.5 MB/s link between regions. Links are FIFO: while an empty fleet fills, prompts queue on them
# and decodes wait behind the prompts, so the paper's offline run (empty start) spends minutes in a jam
# (3cluster24: decode 3-30 tok/s for 200 s, then 160-280) that a warm-started score never enters and whose
# end no short window predicts (-80%..+36% off when cut anywhere in 200..340 s). Such fleets are scored by
# the full run (simulator.score.full_run_config), and layouts with fewer region crossings come first.
SLOW_PROMPT_TRANSFER_S = 0.25

# Widths tried for the trunk's and the branches' stages (wider stages: more parallel links at the crossing,
# more KV per layer, fewer hops; EDGE: two nodes side by side at the crossing, one elsewhere, as a
# region rarely holds its share of the layers two wide), trunk sizes per trunk region and position, and
# the KV weights of sizing.
EDGE = 0
TRUNK_WIDTHS = (1, 2, EDGE)
BRANCH_WIDTHS = (1, 2, EDGE)
TRUNK_SIZES = 6
BRANCH_KV_WEIGHTS = (0.0, 0.35)


def slow_links(cluster: Cluster, model: ModelSpec) -> bool:
    """Whether some node-to-node link needs more than SLOW_PROMPT_TRANSFER_S for a typical prompt's
    activations (links from and to the coordinator carry token ids only)."""
    names = set(cluster.node_names)
    prompt_bytes = TYPICAL_INPUT_TOKENS * (model.activation_bytes_per_token + model.token_bytes)
    return any(
        prompt_bytes / link.bandwidth_bytes_per_s > SLOW_PROMPT_TRANSFER_S
        for link in cluster.links
        if link.src in names and link.dst in names
    )


def _offset(layout: Layout, start: int) -> Layout:
    return {n: (s + start, k) for n, (s, k) in layout.items()}


def _max_layers(ctx: SolveContext, groups: list[list[str]]) -> int:
    return sum(ctx.throughput.max_layers(ctx.cluster.node(n).gpu_type) for g in groups for n in g)


def _sizes(low: int, high: int, count: int) -> list[int]:
    """Up to `count` trunk sizes spread over [low, high], both ends included."""
    if high < low:
        return []
    if high - low + 1 <= count:
        return list(range(low, high + 1))
    step = (high - low) / (count - 1)
    return sorted({round(low + i * step) for i in range(count)})


def branch_candidates(ctx: SolveContext, deadline: float | None = None) -> list[tuple[str, Layout]]:
    """For each region as the trunk, at the back (branches hold [0, L - t)) or the front (the trunk holds
    [0, t)), trunk sizes t from the least the branches leave to the most the trunk holds, stage widths and
    KV weights: the trunk's groups as stages over t layers, each other region's groups as stages over the
    rest. [] on a one-region fleet. With `deadline` (ctx's clock) generation stops there."""
    groups = groups_of(ctx.cluster, ctx.throughput)
    by_region: dict[str, list[list[str]]] = {}
    for g in groups:
        by_region.setdefault(ctx.cluster.node(g[0]).region, []).append(g)
    if len(by_region) < 2:
        return []
    num_layers = ctx.model.num_layers
    out: list[tuple[str, Layout]] = []
    seen: set[tuple[tuple[str, int, int], ...]] = set()
    for trunk_region, trunk_groups in by_region.items():
        branches = [gs for r, gs in by_region.items() if r != trunk_region]
        least = num_layers - min(_max_layers(ctx, gs) for gs in branches)
        most = min(_max_layers(ctx, trunk_groups), num_layers - 1)
        for t in _sizes(max(1, least), most, TRUNK_SIZES):
            for back in (True, False):
                for wt in TRUNK_WIDTHS:
                    for wb in BRANCH_WIDTHS:
                        for kv in BRANCH_KV_WEIGHTS:
                            if deadline is not None and out and ctx.now() >= deadline:
                                return out
                            lay = _branch_layout(ctx, trunk_groups, branches, t, back, wt, wb, kv)
                            key = tuple(sorted((n, s, k) for n, (s, k) in lay.items()))
                            if lay and key not in seen:
                                seen.add(key)
                                pos = "b" if back else "f"
                                widths = ".".join("e" if w == EDGE else str(w) for w in (wt, wb))
                                out.append((f"branch{pos}-{trunk_region}-t{t}-w{widths}/kv{kv:g}", lay))
    return out


def _branch_layout(
    ctx: SolveContext,
    trunk_groups: list[list[str]],
    branches: list[list[list[str]]],
    t: int,
    back: bool,
    trunk_width: int,
    branch_width: int,
    kv_weight: float,
) -> Layout:
    """One branch layout, or {} when the trunk or a branch cannot hold its layers at these widths."""
    rest = ctx.model.num_layers - t

    def stages(gs: list[list[str]], width: int, layers: int, edge_at_end: bool) -> Layout:
        if width == EDGE:
            gs, widths = _edge_split(gs, edge_at_end)
        else:
            widths = [min(width, len(g)) for g in gs]
        return stage_layout(
            ctx.cluster,
            ctx.throughput,
            layers,
            gs,
            widths,
            profiles=ctx.profiles,
            kv_weight=kv_weight,
        )

    trunk = stages(trunk_groups, trunk_width, t, edge_at_end=not back)
    if not trunk:
        return {}
    out: Layout = _offset(trunk, rest if back else 0)
    for gs in branches:
        part = stages(gs, branch_width, rest, edge_at_end=back)
        if not part:
            return {}
        out.update(_offset(part, 0 if back else t))
    return out


def _edge_split(groups: list[list[str]], at_end: bool) -> tuple[list[list[str]], list[int]]:
    """Groups and widths for EDGE: the two nodes of the group next to the crossing that meet it form a
    stage of width 2, every other stage has width 1."""
    gs = [list(g) for g in groups]
    i = len(gs) - 1 if at_end else 0
    g = gs[i]
    if len(g) <= 2:
        return gs, [min(2, len(x)) if j == i else 1 for j, x in enumerate(gs)]
    head, tail = (g[:-2], g[-2:]) if at_end else (g[:2], g[2:])
    split = gs[:i] + [head, tail] + gs[i + 1 :]
    wide = i + 1 if at_end else i
    return split, [2 if j == wide else 1 for j in range(len(split))]
