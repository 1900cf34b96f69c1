"""Load what a simulation needs from files or bundled names: a plan JSON from `brl plan`, or a paper
placement (`*_sol.ini`) on a cluster, optionally with the paper's `simulator_cluster.ini` (its exact
directed links and per-node KV capacities). File reading happens only in these load functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from planner import bundled
from planner.cluster import Cluster
from planner.errors import InvalidInput
from planner.flow import plan_from_placement
from planner.model import ModelSpec
from planner.placement import Placement
from planner.plan import Plan
from planner.profile import ProfileSet


@dataclass(frozen=True)
class SimInputs:
    cluster: Cluster
    model: ModelSpec
    profiles: ProfileSet
    plan: Plan
    kv_capacity: Mapping[str, int] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def plan_for_placement(
    cluster: Cluster, model: ModelSpec, profiles: ProfileSet, placement: Placement, *, method: str = "import"
) -> tuple[Plan, tuple[str, ...]]:
    """The max-flow plan of a placement, made exactly as `planner.flow.plan_from_placement` makes it by
    default (so a layout simulated from its file and from a plan JSON gets one answer). Layouts that force
    more layers on a GPU than its profile allows (the paper's separate pipelines) have no throughput model:
    they get a plan without flows, which the baselines can route but max-flow cannot."""
    try:
        return plan_from_placement(cluster, model, profiles, placement, method=method), ()
    except InvalidInput as exc:
        note = f"no max-flow for this placement ({exc}); use --policy random|swarm|shortest-queue"
        return Plan(cluster.name, model.name, method, placement, cluster=cluster, model=model), (note,)


def load_inputs(
    *,
    plan_path: str | None = None,
    cluster: str | None = None,
    model: str | None = None,
    placement_path: str | None = None,
    simulator_cluster: str | None = None,
) -> SimInputs:
    """Either `plan_path` (cluster and model default to those the plan embeds), or `cluster` +
    `placement_path` (+ `model`). `simulator_cluster` replaces the cluster's links and KV capacities by
    those of a paper `simulator_cluster.ini`."""
    from planner.formats.helix_ini import load_simulator_cluster_ini, load_solution_ini
    from planner.formats.plan_json import load_plan

    kv: Mapping[str, int] | None = None
    if plan_path is not None:
        plan = load_plan(plan_path)
        # The fleet and model the plan embeds; bundled names for plans written before they were embedded.
        spec = bundled.model(model) if model else plan.model or bundled.model(plan.model_name)
        fleet = bundled.cluster(cluster) if cluster else plan.cluster or bundled.cluster(plan.cluster_name)
        if simulator_cluster is not None:
            sim = load_simulator_cluster_ini(simulator_cluster)
            fleet, kv = sim.cluster, sim.kv_capacity
        profiles_name = None if model else plan.profiles_name
        profiles = bundled.profiles(spec if profiles_name in (None, spec.name) else str(profiles_name))
        return SimInputs(fleet, spec, profiles, plan, kv)
    if cluster is None or placement_path is None:
        raise InvalidInput("give a plan JSON, or --cluster and --placement", field="PLAN")
    spec = bundled.model(model or "llama2-70b")
    fleet = bundled.cluster(cluster)
    if simulator_cluster is not None:
        sim = load_simulator_cluster_ini(simulator_cluster)
        fleet, kv = sim.cluster, sim.kv_capacity
    placement = load_solution_ini(Path(placement_path), fleet, spec.num_layers)
    profiles = bundled.profiles(spec)
    plan, notes = plan_for_placement(fleet, spec, profiles, placement, method=Path(placement_path).stem)
    return SimInputs(fleet, spec, profiles, plan, kv, notes)
