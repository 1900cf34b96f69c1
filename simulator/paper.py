"""The paper's simulation setups on bundled data (LLaMA-2 70B and LLaMA-1 30B on the 24-node single-region
fleet): its stored layouts with the exact directed links and KV capacities of their `simulator_cluster.ini`, and the
numbers the paper's own simulator printed for them, for the reproduction test and bench/simulator.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from planner import bundled
from planner.errors import UnknownName
from simulator.inputs import SimInputs, plan_for_placement
from simulator.run import SimConfig, SimResult, simulate

PAPER_DIR = Path(__file__).resolve().parent / "data" / "paper"
MODEL = "llama2-70b"
MODEL_30B = "llama1-30b"
SETUPS = ("helix", "helix-ae", "swarm", "separate", "helix-30b", "swarm-30b")
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
AE_OFFLINE_30B = {"helix": 339.6, "swarm": 151.6, "separate": 309.0}
# ae_simulation_results.csv, single cluster, LLaMA-2 70B, online (1800 s): decode tokens/s at the target
# token rate (Helix 700, Swarm 350) and latency percentiles p5/p25/p50/p75/p95 in seconds.
AE_ONLINE_70B: dict[str, dict[str, Any]] = {
    "helix": {
        "rate": 700.0,
        "decode_tok_per_s": 141.6,
        "prompt": (0.80, 1.38, 2.64, 3.52, 4.41),
        "decode": (0.56, 0.76, 0.98, 1.67, 3.19),
    },
    "swarm": {
        "rate": 350.0,
        "decode_tok_per_s": 69.8,
        "prompt": (0.95, 1.70, 3.32, 4.04, 5.01),
        "decode": (0.57, 0.82, 1.04, 1.59, 2.51),
    },
}
# Offline queries in flight for the baselines (the artifact's settings): Swarm 180; separate pipelines
# 18 / 40 / 3 on the A100 / L4 / T4 sub-fleets.
SWARM_INITIAL = 180
SEPARATE_INITIAL = {"a100": 18, "l4": 40, "t4": 3}
SWARM_INITIAL_30B = 50
# The stored layouts of the 24-node fleet (bench rank correlation).
LAYOUTS = ("ilp", "ilp-single", "petals", "swarm", "homogeneous")


@dataclass(frozen=True)
class PaperRun:
    """One sub-simulation: inputs plus the config overrides the paper used."""

    label: str
    inputs: SimInputs
    config: SimConfig


def load_layout(layout: str, *, model: str = MODEL, cluster: str = CLUSTER) -> SimInputs:
    """A stored layout with the paper's links and KV capacities when a simulator_cluster.ini exists
    (bundled with the planner, or here under data/paper/<model>/<cluster>/)."""
    spec = bundled.model(model)
    profiles = bundled.profiles(spec)
    placement = bundled.layout(layout, cluster, spec)
    sim = None
    try:
        sim = bundled.layout_simulator_cluster(layout, cluster, model)
    except UnknownName:
        extra = PAPER_DIR / model / cluster / f"{layout}_simulator_cluster.ini"
        if extra.exists():
            from planner.formats.helix_ini import load_simulator_cluster_ini

            sim = load_simulator_cluster_ini(extra)
    fleet = sim.cluster if sim is not None else bundled.cluster(cluster)
    plan, notes = plan_for_placement(fleet, spec, profiles, placement, method=f"{layout}-{cluster}")
    return SimInputs(fleet, spec, profiles, plan, sim.kv_capacity if sim is not None else None, notes)


def setup(name: str, base: SimConfig | None = None) -> list[PaperRun]:
    """LLaMA-2 70B: "helix" (ILP + max-flow, the README example), "helix-ae" (the AE single-cluster ILP
    layout), "swarm" (Swarm layout + scheduler), "separate" (three pipelines, random scheduling, summed).
    LLaMA-1 30B: "helix-30b" (an ILP layout per GPU type, max-flow, summed) and "swarm-30b"."""
    cfg = base or SimConfig()
    if name in ("helix", "helix-ae"):
        layout = "ilp" if name == "helix" else "ilp-single"
        return [PaperRun(name, load_layout(layout), replace(cfg, policy="maxflow"))]
    if name == "swarm":
        return [
            PaperRun(name, load_layout("swarm"), replace(cfg, policy="swarm", initial_queries=SWARM_INITIAL))
        ]
    if name == "separate":
        return [
            PaperRun(
                f"separate-{sub}",
                load_layout("separate", cluster=f"{CLUSTER}-{sub}"),
                replace(cfg, policy="random", initial_queries=n),
            )
            for sub, n in SEPARATE_INITIAL.items()
        ]
    if name == "helix-30b":
        return [
            PaperRun(
                f"helix-30b-{sub}",
                load_layout("ilp", model=MODEL_30B, cluster=f"{CLUSTER}-{sub}"),
                replace(cfg, policy="maxflow"),
            )
            for sub in SEPARATE_INITIAL
        ]
    if name == "swarm-30b":
        return [
            PaperRun(
                name,
                load_layout("swarm", model=MODEL_30B),
                replace(cfg, policy="swarm", initial_queries=SWARM_INITIAL_30B),
            )
        ]
    raise UnknownName("paper setup", name, SETUPS)


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
