"""A picture of a plan: one row per node (coloured by GPU type) with its layer range as a bar, and the
max-flow on each edge as a line from where one node ends to where the next starts (width ~ tokens/s).
matplotlib is imported inside `save_placement_png` so that importing the planner stays light."""

from __future__ import annotations

from pathlib import Path

from planner.cluster import SINK, SOURCE, Cluster
from planner.plan import Plan

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def row_order(plan: Plan, cluster: Cluster) -> list[str]:
    """Holders sorted by start layer (then end, then name); idle nodes last."""
    held = sorted(
        plan.placement.ranges, key=lambda n: (plan.placement.ranges[n].start, plan.placement.ranges[n].end, n)
    )
    idle = [n.name for n in cluster.nodes if n.name not in plan.placement.ranges]
    return held + idle


def save_placement_png(plan: Plan, cluster: Cluster, path: str | Path, *, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = row_order(plan, cluster)
    y = {name: i for i, name in enumerate(rows)}
    types = sorted({n.gpu_type for n in cluster.nodes})
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(types)}
    num_layers = plan.placement.num_layers
    fig, ax = plt.subplots(figsize=(11, max(3.0, 0.32 * len(rows) + 1.5)))
    for name in rows:
        gpu = cluster.node(name).gpu_type
        rng = plan.placement.get(name)
        if rng is None:
            ax.barh(y[name], num_layers, left=0, height=0.6, color="none", edgecolor="#cccccc", hatch="//")
            continue
        ax.barh(y[name], rng.size, left=rng.start, height=0.6, color=colour[gpu], alpha=0.85)
        ax.text(
            rng.start + rng.size / 2,
            y[name],
            f"{rng.start}-{rng.end}",
            ha="center",
            va="center",
            fontsize=7,
            color="white",
        )
    top = max(plan.edge_flows.values(), default=1.0) or 1.0
    for (u, v), flow in plan.edge_flows.items():
        if flow <= 0:
            continue
        width = 0.4 + 3.0 * flow / top
        x0: float
        x1: float
        if u == SOURCE and v in y:
            x0, y0, x1, y1 = -1.5, y[v], plan.placement.ranges[v].start, y[v]
        elif v == SINK and u in y:
            x0, y0, x1, y1 = plan.placement.ranges[u].end, y[u], num_layers + 1.5, y[u]
        elif u in y and v in y:
            x0, y0 = plan.placement.ranges[u].end, y[u]
            x1, y1 = plan.placement.ranges[v].start, y[v]
            x1 = max(x1, min(x0, plan.placement.ranges[v].end))
        else:
            continue
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={"arrowstyle": "->", "lw": width, "color": "#444444", "alpha": 0.55},
        )
        if u not in (SOURCE,) and v not in (SINK,) and flow >= 0.05 * top:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{flow:.0f}", fontsize=6, color="#333333")
    ax.set_yticks(range(len(rows)), [f"{n} ({cluster.node(n).gpu_type})" for n in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-2.5, num_layers + 2.5)
    ax.set_xlabel("layer")
    bound = f", bound {plan.bound_tok_per_s:.1f}" if plan.bound_tok_per_s else ""
    ax.set_title(
        title
        or f"{plan.model_name} on {plan.cluster_name}: {plan.method}, "
        f"max-flow {plan.objective_tok_per_s:.1f} tokens/s{bound}",
        fontsize=10,
    )
    ax.legend(handles=[Patch(color=colour[t], label=t) for t in types], loc="upper right", fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
