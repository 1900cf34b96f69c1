"""The paper's simulation setups on bundled data (LLaMA-2 70B on the 24-node single-region fleet): its
stored layouts with the exact directed links and KV capacities of their `simulator_cluster.ini`, and the
numbers the paper's own simulator printed for them, for the reproduction test and bench/simulator.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from planner import bundled
from planner.errors import UnknownName
from simulator.inputs import SimInputs, plan_for_placement
from simulator.run import SimConfig, SimResult, simulate

PAPER_DIR = Path(__file__).resolve().parent / "data" / "paper"
MODEL = "llama2-70b"
CLUSTER = "cluster24"
# README example (ILP layout, max-flow, offline): reference_results/example_offline_maxflow_stdout.txt.
EXAMPLE = {
    "decode_tok_per_s": 248.3,
    "all_tok_per_s": 1176.70,
    "prompt_latency_mean_s": 3.094,
    "decode_latency_mean_s": 1.457,
    "max_flow_tok_per_s": 1289.56,
}
# ae_simulation_results.csv, single cluster, LLaMA-2 70B, offline decode tokens/s.
AE_OFFLINE_70B = {"helix": 252.1, "swarm": 124.7, "separate": 124.3}
# Offline queries in flight for the baselines (the artifact's settings): Swarm 180; separate pipelines
# 18 / 40 / 3 on the A100 / L4 / T4 sub-fleets.
SWARM_INITIAL = 180
SEPARATE_INITIAL = {"a100": 18, "l4": 40, "t4": 3}
# The stored layouts of the 24-node fleet (bench rank correlation).
LAYOUTS = ("ilp", "ilp-single", "petals", "swarm", "homogeneous")


@dataclass(frozen=True)
class PaperRun:
    """One sub-simulation: inputs plus the config overrides the paper used."""

    label: str
    inputs: SimInputs
    config: SimConfig


def load_layout(layout: str, *, model: str = MODEL, cluster: str = CLUSTER) -> SimInputs:
    """A stored layout with the paper's links and KV capacities when a simulator_cluster.ini exists."""
    spec = bundled.model(model)
    profiles = bundled.profiles(spec)
    placement = bundled.layout(layout, cluster, spec)
    sim = None
    try:
        sim = bundled.layout_simulator_cluster(layout, cluster, model)
    except UnknownName:
        extra = PAPER_DIR / model / f"{layout}_simulator_cluster.ini"
        if extra.exists():
            from planner.formats.helix_ini import load_simulator_cluster_ini

            sim = load_simulator_cluster_ini(extra)
    fleet = sim.cluster if sim is not None else bundled.cluster(cluster)
    plan, notes = plan_for_placement(fleet, spec, profiles, placement, method=layout)
    return SimInputs(fleet, spec, profiles, plan, sim.kv_capacity if sim is not None else None, notes)


def load_separate(*, model: str = MODEL) -> list[tuple[str, SimInputs]]:
    """The separate-pipeline baseline: one homogeneous pipeline per GPU type, with the paper's forced
    layer counts and hand-set KV capacities."""
    from planner.formats.helix_ini import load_simulator_cluster_ini

    spec = bundled.model(model)
    profiles = bundled.profiles(spec)
    out = []
    for sub in SEPARATE_INITIAL:
        sim = load_simulator_cluster_ini(PAPER_DIR / model / f"separate_{sub}_simulator_cluster.ini")
        placement = bundled.layout("separate", f"{CLUSTER}-{sub}", spec)
        plan, notes = plan_for_placement(sim.cluster, spec, profiles, placement, method=f"separate-{sub}")
        out.append((sub, SimInputs(sim.cluster, spec, profiles, plan, sim.kv_capacity, notes)))
    return out


def setup(name: str, base: SimConfig | None = None) -> list[PaperRun]:
    """ "helix" (ILP + max-flow, the README example), "helix-ae" (the AE single-cluster ILP layout),
    "swarm" (Swarm layout + scheduler) or "separate" (three pipelines, random scheduling, summed)."""
    cfg = base or SimConfig()
    if name in ("helix", "helix-ae"):
        return [
            PaperRun(
                name, load_layout("ilp" if name == "helix" else "ilp-single"), replace(cfg, policy="maxflow")
            )
        ]
    if name == "swarm":
        return [
            PaperRun(name, load_layout("swarm"), replace(cfg, policy="swarm", initial_queries=SWARM_INITIAL))
        ]
    if name == "separate":
        return [
            PaperRun(
                f"separate-{sub}", inp, replace(cfg, policy="random", initial_queries=SEPARATE_INITIAL[sub])
            )
            for sub, inp in load_separate()
        ]
    raise UnknownName("paper setup", name, ["helix", "helix-ae", "swarm", "separate"])


def run_all(runs: Sequence[PaperRun]) -> list[SimResult]:
    return [
        simulate(
            r.inputs.cluster,
            r.inputs.model,
            r.inputs.profiles,
            r.inputs.plan,
            replace(r.config, kv_capacity=r.inputs.kv_capacity),
        )
        for r in runs
    ]
