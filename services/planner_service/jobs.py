"""The planner's work: a solve (run in a job worker process) and an evaluation of a given placement.

Both go through the same core calls as `brl plan`: planner.solvers.solve and planner.flow. A cancelled
solve is asked to stop through `should_stop`, so it ends at its next check with no half-written state.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from planner.errors import InvalidInput, UnknownName
from planner.flow import compute_bound, coverage_bound, solve_max_flow
from planner.formats.plan_json import plan_to_dict
from planner.model import ModelSpec
from planner.throughput import typical_throughput
from services.jobs.context import JobCancelled, JobContext
from services.planner_service.inputs import Inputs, load_inputs, load_placement

SOLVE_TARGET = "services.planner_service.jobs:solve_job"
WARM_MODULES = (
    "planner.solvers",
    "planner.replan",
    "planner.bundled",
    "services.planner_service.jobs",
    "services.planner_service.replans",
)


def helix_settings(model: ModelSpec, profiles_name: str) -> Mapping[str, Any] | None:
    """The model-level throughput settings when bundled (the paper's models), else None (derived)."""
    import planner.bundled as bundled

    fn = getattr(bundled, "helix_settings", None)
    if fn is None:
        return None
    for name in (profiles_name, model.name):
        try:
            return fn(name)  # type: ignore[no-any-return]
        except InvalidInput:
            continue
    return None


def _scorer(method: str, inputs: Inputs, settings: Mapping[str, Any] | None, seed: int) -> Any:
    """The simulator as judge for the serving-aware method, exactly as `brl plan --method serve` wires it."""
    if method != "serve":
        return None
    try:
        from services.cli.plan import simulator_scorer

        return simulator_scorer(inputs.cluster, inputs.model, inputs.profiles, settings=settings, seed=seed)
    except ImportError:  # a planner-only install ranks by the analytic proxy alone, as the CLI does
        return None


def _region_scorers(inputs: Inputs, settings: Mapping[str, Any] | None, seed: int) -> Any:
    """`scale`'s judge, exactly as `brl plan --method scale` wires it (the proxy on a planner-only install)."""
    try:
        from services.cli.judge import region_scorers
    except ImportError:
        return None
    return region_scorers(inputs.model, inputs.profiles, settings=settings, seed=seed)


def code_version() -> str:
    try:
        from importlib.metadata import version

        return version("brl")
    except Exception:  # an uninstalled checkout still plans
        return "unknown"


def solve_job(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    from planner.solvers import Progress, solve

    inputs = load_inputs(request)
    ctx.report(note="solving", force=True)

    def on_progress(p: Progress) -> None:
        ctx.report(
            incumbent_tok_per_s=p.incumbent_tok_per_s,
            bound_tok_per_s=p.bound_tok_per_s,
            gap=p.gap,
            elapsed_s=round(p.elapsed_s, 3),
            note=p.note,
            check_cancel=False,
        )

    seed = int(request.get("seed", 0))
    method = str(request["method"])
    settings = helix_settings(inputs.model, inputs.profiles_name)
    options: dict[str, Any] = {"solver": request.get("solver", "cbc")}
    if request.get("prune_k"):
        options["prune_k"] = int(request["prune_k"])
    if method == "scale":
        # Judged by the simulator on each tile and region sample, as `brl plan --method scale` is.
        options["scorer_for"] = _region_scorers(inputs, settings, seed)
    plan = solve(
        method,
        inputs.cluster,
        inputs.model,
        inputs.profiles,
        settings=settings,
        seed=seed,
        time_limit_s=float(request["time_limit_s"]),
        clock=time.monotonic,
        progress=on_progress,
        should_stop=ctx.cancelled,
        options=options,
        scorer=_scorer(method, inputs, settings, seed),
    )
    provenance = {
        **plan.provenance,
        "cluster": request.get("cluster", "inline"),
        "model": request.get("model", inputs.model.name),
        "profiles": inputs.profiles_name,
        "code_version": code_version(),
        "service": "planner-service",
        "job_id": ctx.job_id,
    }
    plan = dataclasses.replace(plan, provenance=provenance)
    if ctx.cancelled():
        raise JobCancelled(ctx.job_id)
    bound = plan.bound_tok_per_s
    gap = (
        None
        if bound is None or plan.objective_tok_per_s <= 0
        else max(0.0, bound / plan.objective_tok_per_s - 1)
    )
    ctx.report(
        incumbent_tok_per_s=plan.objective_tok_per_s,
        bound_tok_per_s=bound,
        gap=gap,
        note="done",
        force=True,
        check_cancel=False,
    )
    return {
        "plan": plan_to_dict(plan),
        "profiles": inputs.profiles_name,
        "nodes": len(inputs.cluster.nodes),
        "num_layers": inputs.model.num_layers,
    }


def method_names() -> tuple[str, ...]:
    from planner.solvers import method_names as names

    return names()


def check_method(method: str) -> None:
    names = method_names()
    if method not in names:
        raise UnknownName("placement method", method, names, field="method")


def evaluate(request: Mapping[str, Any], inputs: Inputs | None = None) -> dict[str, Any]:
    """Max-flow, bounds and bottlenecks of a user-given placement (fast: no solver)."""
    from planner.flow import plan_from_placement

    inputs = inputs or load_inputs(request)
    placement = load_placement(request["placement"], inputs.cluster, inputs.model.num_layers)
    asked = request.get("partial")
    partial = None if asked is None else bool(asked)
    tp = typical_throughput(
        inputs.cluster, inputs.model, inputs.profiles, helix_settings(inputs.model, inputs.profiles_name)
    )
    for name, rng in placement.ranges.items():
        gpu = inputs.cluster.node(name).gpu_type
        if rng.size > tp.max_layers(gpu):
            raise InvalidInput(
                f"node {name} ({gpu}) holds {rng.size} layers; at most {tp.max_layers(gpu)} fit",
                field=f"placement.{name}",
            )
    plan = plan_from_placement(
        inputs.cluster,
        inputs.model,
        inputs.profiles,
        placement,
        method="user",
        throughput=tp,
        partial=partial,
        provenance={"source": "evaluation"},
    )
    # The same arcs as the plan's (one layout, one answer), for the bottlenecks below.
    flow = solve_max_flow(
        inputs.cluster,
        inputs.model,
        inputs.profiles,
        placement,
        throughput=tp,
        partial=bool(plan.provenance["partial_inference"]),
    )
    compute = compute_bound(inputs.cluster, tp)
    bound = min(compute, coverage_bound(inputs.cluster, tp))
    return {
        "max_flow_tok_per_s": flow.value_tok_per_s,
        "bound_tok_per_s": bound,
        "compute_bound_tok_per_s": compute,
        "has_full_chain": placement.has_full_chain(),
        "uncovered_layers": [list(r) for r in placement.uncovered()],
        "bottlenecks": [
            {
                "kind": b.kind,
                "name": b.name,
                "capacity_tok_per_s": b.capacity_tok_per_s,
                "flow_tok_per_s": b.flow_tok_per_s,
            }
            for b in flow.bottlenecks
        ],
        "saturated_nodes": list(flow.saturated_nodes()),
        "edge_flows": [{"src": u, "dst": v, "tok_per_s": f} for (u, v), f in flow.edge_flows.items()],
        "node_flows_tok_per_s": dict(flow.node_flows),
        "plan": plan_to_dict(plan),
    }
