"""What the job pages show, computed from a stored job: a plan's bars, flow graph and min cut; a dry run's
metrics, latency percentiles and series. Plain values for the templates; no HTTP here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from planner.cluster import SINK, SOURCE
from planner.errors import BrlError, InvalidInput
from planner.flow import link_tok_per_s
from planner.formats.plan_json import plan_from_dict
from planner.mincut import MinCut, plan_min_cut
from planner.throughput import typical_throughput
from services.jobs.pages_svg import Bar, GraphEdge, flow_graph_svg, lines_svg, placement_svg, uncovered
from services.jobs.store import Job

# Latency percentiles a dry run's page and the compare page list, in this order.
PERCENTILES = ("p50", "p95", "p99")
# Seconds the throughput series is averaged over (the per-second counts are spiky).
SMOOTH_S = 10
LATENCIES = (
    ("prompt_latency_s", "prompt"),
    ("decode_latency_s", "decode"),
    ("ttft_s", "time to first token"),
)


@dataclass(frozen=True)
class PlanPicture:
    method: str
    cluster_name: str
    model_name: str
    num_layers: int
    objective_tok_per_s: float
    bound_tok_per_s: float | None
    bars: tuple[Bar, ...]
    uncovered: tuple[tuple[int, int], ...]
    edges: tuple[GraphEdge, ...]
    cut: MinCut | None
    cut_note: str | None
    placement_svg: Markup
    graph_svg: Markup
    metrics: Mapping[str, Any]


def _fleet(plan_json: Mapping[str, Any], fleet: Mapping[str, Any]) -> Any:
    """The plan with the cluster and model it was made for (embedded, else loaded from the job's fields),
    the profile set name and the throughput table it was planned with."""
    from planner import bundled
    from services.planner_service.inputs import load_inputs
    from services.planner_service.jobs import helix_settings

    plan = plan_from_dict(plan_json, source="plan")
    if plan.cluster is None or plan.model is None:
        inputs = load_inputs(fleet)
        plan = dataclasses.replace(plan, cluster=inputs.cluster, model=inputs.model)
    if plan.cluster is None or plan.model is None:  # for mypy: set just above
        raise InvalidInput("the plan has no fleet", field="plan")
    profiles_name = str(plan.profiles_name or fleet.get("profiles") or fleet.get("model") or plan.model.name)
    profiles = bundled.profiles(profiles_name)
    table = typical_throughput(plan.cluster, plan.model, profiles, helix_settings(plan.model, profiles_name))
    return plan, table


def plan_picture(
    plan_json: Mapping[str, Any], fleet: Mapping[str, Any], *, graph: bool = True, row_px: int = 16
) -> PlanPicture:
    """Bars, planned flow per edge (with the edge's capacity) and the min cut of a plan. A plan whose
    throughput table cannot be rebuilt here (e.g. profiles this install lacks) still shows its placement."""
    plan = plan_from_dict(plan_json, source="plan")
    cut: MinCut | None = None
    note: str | None = None
    cluster, model, table = plan.cluster, plan.model, None
    try:
        full, table = _fleet(plan_json, fleet)
        cluster, model = full.cluster, full.model
        cut = plan_min_cut(full, table)
    except BrlError as exc:
        note = f"min cut not available: {exc}"
    bars = tuple(
        Bar(
            node,
            cluster.node(node).gpu_type if cluster is not None and cluster.has_node(node) else "?",
            cluster.node(node).region if cluster is not None and cluster.has_node(node) else "?",
            rng.start,
            rng.end,
        )
        for node, rng in plan.placement.ranges.items()
    )
    cut_links = set(cut.links()) if cut is not None else set()
    edges = []
    for (src, dst), flow in sorted(plan.edge_flows.items()):
        link = cluster.link(src, dst) if cluster is not None else None
        capacity = link_tok_per_s(link, model) if (link is not None and model is not None) else None
        edges.append(GraphEdge(src, dst, float(flow), capacity, (src, dst) in cut_links))
    node_flow: dict[str, float] = {}
    for e in edges:
        if e.dst not in (SOURCE, SINK):
            node_flow[e.dst] = node_flow.get(e.dst, 0.0) + e.flow_tok_per_s
    node_capacity = {}
    if table is not None:
        node_capacity = {b.node: table.tp(b.gpu_type, b.end - b.start) for b in bars if b.gpu_type != "?"}
    cut_nodes = set(cut.nodes("compute")) if cut is not None else set()
    num_layers = plan.placement.num_layers
    return PlanPicture(
        method=plan.method,
        cluster_name=plan.cluster_name,
        model_name=plan.model_name,
        num_layers=num_layers,
        objective_tok_per_s=plan.objective_tok_per_s,
        bound_tok_per_s=plan.bound_tok_per_s,
        bars=bars,
        uncovered=tuple(uncovered(bars, num_layers)),
        edges=tuple(edges),
        cut=cut,
        cut_note=note,
        placement_svg=placement_svg(bars, num_layers, row_px=row_px),
        graph_svg=flow_graph_svg(bars, edges, node_flow, node_capacity, cut_nodes) if graph else Markup(""),
        metrics=dict(plan.metrics),
    )


def plan_of_job(job: Job, *, graph: bool = True, row_px: int = 16) -> PlanPicture | None:
    """A plan job's picture, or a dry run's plan's; None while there is no plan yet."""
    if job.kind == "plan":
        if job.result is None or "plan" not in job.result:
            return None
        return plan_picture(job.result["plan"], job.request, graph=graph, row_px=row_px)
    if "plan" not in job.request:
        return None
    return plan_picture(job.request["plan"], job.request, graph=graph, row_px=row_px)


@dataclass(frozen=True)
class RunFigures:
    """A finished dry run's headline numbers and series."""

    throughput: dict[str, float]
    counts: dict[str, int]
    latency: dict[str, dict[str, float]]
    throughput_series: tuple[tuple[int, float], ...]
    decode_cdf: tuple[tuple[float, float], ...]
    plots: tuple[str, ...]


def moving_average(values: Sequence[float], window: int = SMOOTH_S) -> list[float]:
    """Trailing mean over `window` samples (fewer at the start), as the simulator's own throughput plot."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def run_figures(job: Job) -> RunFigures | None:
    if job.result is None or "summary" not in job.result:
        return None
    summary: Mapping[str, Any] = job.result["summary"]
    full: Mapping[str, Any] = job.result.get("result") or {}
    throughput = {
        k: float(summary.get(k) or 0.0)
        for k in ("decode_tok_per_s", "all_tok_per_s", "max_flow_tok_per_s", "flow_efficiency")
    }
    counts = {k: int(summary.get(k) or 0) for k in ("admitted", "finished", "rejected", "unserved")}
    latency = {
        label: {p: float((summary.get(key) or {}).get(p) or 0.0) for p in PERCENTILES}
        for key, label in LATENCIES
        if summary.get(key) is not None
    }
    series = tuple(enumerate(moving_average([float(v) for v in full.get("throughput_series") or ()])))
    cdf = tuple((float(p[0]), float(p[1])) for p in full.get("decode_cdf") or () if len(p) == 2)
    return RunFigures(throughput, counts, latency, series, cdf, tuple(job.result.get("plots") or ()))


def compare_charts(a: RunFigures, b: RunFigures, names: Sequence[str]) -> dict[str, Markup]:
    """Overlaid series of two runs: tokens per interval over time, and the decode-latency CDF."""
    return {
        "throughput": lines_svg(
            [(names[0], a.throughput_series), (names[1], b.throughput_series)],
            x_label="time (s)",
            y_label="tokens/s",
        ),
        "decode_cdf": lines_svg(
            [(names[0], a.decode_cdf), (names[1], b.decode_cdf)],
            x_label="decode latency (s)",
            y_label="fraction of requests",
        ),
    }
