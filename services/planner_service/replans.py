"""Re-planning as a job: a plan (which carries its fleet) plus a fleet change in, the new plan, its moves
and its figures out — the same core call as `brl replan` (planner.replan.replan). The change is checked
at submit time (`check_request`), so an unknown node or a bad join spec is a 400 naming the field, and
rebuilt in the job's worker process from the same JSON (join names are deterministic)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput, UnknownName
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.replan_moves import FleetChange, LayerMove, check_change, join_nodes
from services.jobs.context import JobCancelled, JobContext

REPLAN_TARGET = "services.planner_service.replans:replan_job"


@dataclass(frozen=True)
class ReplanInputs:
    plan: Plan
    cluster: Cluster
    model: ModelSpec
    profiles: ProfileSet
    change: FleetChange


def _relabel(exc: InvalidInput, field: str) -> InvalidInput:
    return InvalidInput(exc.detail, source="request", field=field)


def _plan_inputs(raw: Mapping[str, Any]) -> tuple[Plan, Cluster, ModelSpec, ProfileSet]:
    """The plan and the fleet, model and profiles it was made for (embedded, else bundled by name)."""
    from planner import bundled
    from planner.formats.plan_json import plan_from_dict

    try:
        plan = plan_from_dict(raw, source="plan")
    except InvalidInput as exc:
        raise _relabel(exc, f"plan.{exc.field}" if exc.field else "plan") from None
    try:
        cluster = plan.cluster or bundled.cluster(plan.cluster_name)
    except InvalidInput as exc:
        raise InvalidInput(
            f"the plan embeds no fleet and names none bundled: {exc.detail}", field="plan.cluster"
        ) from None
    try:
        model = plan.model or bundled.model(plan.model_name)
        profiles = bundled.profiles(plan.profiles_name or model)
    except InvalidInput as exc:
        raise InvalidInput(f"the plan's model or profiles: {exc.detail}", field="plan.model") from None
    return plan, cluster, model, profiles


def _change(request: Mapping[str, Any], cluster: Cluster, profiles: ProfileSet) -> FleetChange:
    """The FleetChange the body's lose / join / slow describe; errors name the body field."""
    lose = [str(n) for n in request.get("lose") or ()]
    slow = {str(k): float(v) for k, v in (request.get("slow") or {}).items()}
    valid = list(cluster.node_names)
    for i, name in enumerate(lose):
        if not cluster.has_node(name):
            raise UnknownName("node", name, valid, source="request", field=f"lose.{i}")
    for name, factor in slow.items():
        if not cluster.has_node(name):
            raise UnknownName("node", name, valid, source="request", field=f"slow.{name}")
        if not 0 < factor <= 1:
            raise InvalidInput(f"speed factor must be in (0, 1], got {factor:g}", field=f"slow.{name}")
        if name in lose:
            raise InvalidInput(f"node {name!r} is lost and slowed at once", field=f"slow.{name}")
    types = sorted(set(cluster.gpu_counts()) | set(profiles.types()))
    joined: list[Any] = []
    for i, spec in enumerate(request.get("join") or ()):
        try:
            joined += join_nodes(cluster, str(spec), gpu_types=types, taken=[n.name for n in joined])
        except UnknownName as exc:
            raise UnknownName(exc.kind, exc.name, exc.valid, source="request", field=f"join.{i}") from None
        except InvalidInput as exc:
            raise _relabel(exc, f"join.{i}") from None
    change = FleetChange(lost=tuple(lose), joined=tuple(joined), slowed=slow)
    if change.is_empty():
        raise InvalidInput("nothing changed: give lose, join or slow", field="lose")
    try:
        check_change(cluster, change)  # duplicates, a fleet left empty
    except InvalidInput as exc:
        field = {"lost": "lose", "joined": "join", "slowed": "slow"}.get(exc.field or "", "lose")
        raise _relabel(exc, field) from None
    return change


def load_request(request: Mapping[str, Any]) -> ReplanInputs:
    """Everything a re-plan needs, checked: InvalidInput / UnknownName naming the body field."""
    plan, cluster, model, profiles = _plan_inputs(request["plan"])
    if plan.placement.num_layers != model.num_layers:
        raise InvalidInput(
            f"the plan has {plan.placement.num_layers} layers, model {model.name!r} has {model.num_layers}",
            field="plan.num_layers",
        )
    missing = sorted({n.gpu_type for n in cluster.nodes} - set(profiles.types()))
    if missing:
        raise InvalidInput(f"no GPU profile for {', '.join(missing)}", field="plan.cluster")
    for node in plan.placement.ranges:
        if not cluster.has_node(node):
            raise InvalidInput(
                f"the plan places node {node!r}, which its fleet lacks", field="plan.placement"
            )
    return ReplanInputs(plan, cluster, model, profiles, _change(request, cluster, profiles))


def _range(rng: Any) -> list[int] | None:
    return None if rng is None else [rng.start, rng.end]


def _move(m: LayerMove) -> dict[str, Any]:
    return {
        "node": m.node,
        "before": _range(m.before),
        "after": _range(m.after),
        "layers_to_load": m.layers_to_load,
        "bytes_to_load": m.bytes_to_load,
        "load_s": m.load_s,
    }


def replan_job(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    from planner import bundled
    from planner.formats.plan_json import plan_to_dict
    from planner.replan import apply_change, replan
    from services.planner_service.jobs import code_version, helix_settings

    inputs = load_request(request)
    ctx.report(note="re-planning", force=True)
    seed = int(request.get("seed", 0))
    settings = helix_settings(inputs.model, inputs.plan.profiles_name or inputs.model.name)
    scorer = None
    if request.get("simulate"):
        # The simulator judges candidates (as `brl replan --simulate`): it lives outside the pure planner.
        from services.cli.plan import simulator_scorer

        changed = apply_change(inputs.cluster, inputs.change)
        scorer = simulator_scorer(changed, inputs.model, inputs.profiles, settings=settings, seed=seed)
    result = replan(
        inputs.plan,
        inputs.cluster,
        inputs.model,
        inputs.profiles,
        inputs.change,
        scorer=scorer,
        budget_layers=request.get("budget_layers"),
        min_gain=float(request.get("min_gain", 0.05)),
        time_limit_s=float(request.get("time_limit_s", 10.0)),
        clock=time.monotonic,
        seed=seed,
        settings=settings,
        disk_bytes_per_s={
            t: p.disk_bytes_per_s for t, p in bundled.machine_profiles().items() if p.disk_bytes_per_s
        },
    )
    if ctx.cancelled():
        raise JobCancelled(ctx.job_id)
    plan = dataclasses.replace(
        result.plan,
        provenance={
            **result.plan.provenance,
            "code_version": code_version(),
            "service": "planner-service",
            "job_id": ctx.job_id,
            "replanned_from": inputs.plan.provenance.get("job_id"),
        },
    )
    ctx.report(incumbent_tok_per_s=result.max_flow_after, note="done", force=True, check_cancel=False)
    simulated = None
    if scorer is not None:
        simulated = {
            "decode_tok_per_s_before": result.score_before,
            "decode_tok_per_s_after": result.score_after,
        }
    return {
        "plan": plan_to_dict(plan),
        "moves": [_move(m) for m in result.moves],
        "layers_moved": result.layers_moved,
        "bytes_moved": result.bytes_moved,
        "transition_s": result.transition_s,
        "kept": result.kept,
        "uncovered_before": [list(r) for r in result.uncovered_before],
        "max_flow_before_tok_per_s": result.max_flow_before,
        "max_flow_after_tok_per_s": result.max_flow_after,
        "simulated": simulated,
        "joined": [n.name for n in inputs.change.joined],
        "profiles": inputs.plan.profiles_name or inputs.model.name,
        "nodes": len(plan.cluster.nodes) if plan.cluster is not None else None,
        "num_layers": inputs.model.num_layers,
    }
