"""The simulator's prediction for a plan in force on bench/replan_live.py's fleet, with every term that
bench/fidelity.py models: this machine's measured per-layer profile and LM head, the serving overheads a
probe of the live fleet measured, and the host model of processes sharing this machine's cores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bench.fidelity import step_overheads
from bench.fidelity_live import Probe
from bench.fidelity_profiles import Measured, write_profiles
from planner import bundled
from planner.cluster import Cluster
from planner.flow import plan_from_placement
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from services.coordinator.engine import EngineLimits
from services.profiling.overheads import lone_decode_ms, with_hop_latency
from simulator.host import HostSpec
from simulator.run import SimConfig, simulate

Ranges = dict[str, tuple[int, int]]
# The simulated window, at least: a few clients finish a handful of requests in a short live window, and
# where its last one falls against the window's end moves the count by a request's tokens; the steady
# state is what the live window estimates, so the simulator runs long enough for it (runs take ~0.2 s).
STEADY_WINDOW_S = 120.0


@dataclass(frozen=True)
class Workload:
    """A closed loop of `clients` streams, each prompt of its own length, `decodes` tokens after it."""

    clients: int
    prompt_tokens: tuple[int, ...]
    decodes: int
    window_s: float
    warmup_s: float


@dataclass(frozen=True)
class Predicted:
    """The simulator's figures for one window: decode tokens/s, and per node its steps per second, mean
    step time (throttle included), tokens per step and share of the time busy, to set beside what each
    worker's own Stats report."""

    decode_tok_per_s: float
    steps_per_s: dict[str, float]
    step_ms: dict[str, float]
    tokens_per_step: dict[str, float] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Terms:
    """What the prediction takes from this machine: the torch timings, and per node the CPU seconds a step
    costs beyond them (from a lone-step probe), the gRPC hop and the coordinator's CPU per iteration."""

    measured: Measured
    step_overhead_s: dict[str, float]
    hop_latency_s: float
    coordinator_cpu_s_per_iteration: float
    cores: float
    # Per node, a lone decode step on a core of its own (ms): what the tables charge, and what the probe
    # measured (its wall step x throttle x its share of a core). Overheads are the excess of the second
    # (never negative). Where the tables charge more, they are left as measured: scaling them down to the
    # probe was tried and made the prediction worse in every run where it applied (the probe's conversion
    # to a core of its own is the noisier of the two, most of all under load).
    lone_step_ms: dict[str, dict[str, float]] = field(default_factory=dict)


def node_type(node: str) -> str:
    """Each node gets a GPU type of its own: a step's fixed cost is shared by the layers its node holds,
    so two nodes of one type holding different numbers of layers need tables of their own."""
    return f"node-{node}"


def per_node_cluster(cluster: Cluster) -> Cluster:
    nodes = tuple(dataclasses.replace(n, gpu_type=node_type(n.name)) for n in cluster.nodes)
    return dataclasses.replace(cluster, nodes=nodes)


def routing_plan(cluster_name: str, model_name: str, ranges: Ranges) -> Plan:
    """The plan the coordinator routes by for these ranges: flows from the bundled profiles, as the live
    controller computes them (`method="live"`)."""
    model = bundled.model(model_name)
    placement = Placement(model.num_layers, {n: LayerRange(*r) for n, r in ranges.items()})
    return plan_from_placement(
        bundled.cluster(cluster_name), model, bundled.profiles(model), placement, method="live"
    )


def probe_terms(
    measured: Measured,
    probe: Probe,
    ranges: Ranges,
    speeds: dict[str, float],
    *,
    cores: float,
    workdir: Path,
) -> Terms:
    """The probe (lone steps on the fleet holding `ranges`) turned into per-node step overheads, each step
    brought back to a core of its own by the share of a core its worker had meanwhile (schedstat: the
    probe's `core_share`; where the kernel keeps none, estimated from the competitors counted)."""
    placement = {n: (node_type(n), LayerRange(*r)) for n, r in ranges.items()}
    profiles = write_profiles(workdir, measured, placement)
    share = min(1.0, cores / (1.0 + probe.background))
    layers = measured.model.num_layers
    overheads = step_overheads(profiles, placement, speeds, probe, layers, share=share, measured_share=True)
    lone = {
        n: {
            "tables": round(lone_decode_ms(profiles, t, rng.size, last=rng.end == layers), 2),
            "probe": round(probe.step_ms[n] * speeds[n] * probe.core_share.get(n, share), 2),
        }
        for n, (t, rng) in placement.items()
    }
    return Terms(measured, overheads, probe.hop_latency_s, probe.coordinator_cpu_s_per_iteration, cores, lone)


def predict(
    cluster_name: str,
    model_name: str,
    ranges: Ranges,
    speeds: dict[str, float],
    terms: Terms,
    load: Workload,
    *,
    background: float,
    workdir: Path,
    seed: int = 0,
    pipeline_depth: int | None = EngineLimits().pipeline_depth,
) -> Predicted:
    """What the simulator predicts for the plan in force (`ranges`) under the closed loop, with
    `background` competitors for this machine's cores (bench/fidelity_load.py). The coordinator routes with
    max-flow over the plan's flows and steps each chain's ready requests together, `pipeline_depth` steps
    in flight (as the live one does); the offline feeder holds `clients` queries in flight (a finished one
    is replaced)."""
    workdir.mkdir(parents=True, exist_ok=True)
    placement = {n: (node_type(n), LayerRange(*r)) for n, r in ranges.items()}
    profiles = write_profiles(workdir / "profiles", terms.measured, placement)
    lengths = workdir / "lengths.csv"
    rows = [f"{p},{load.decodes}" for p in load.prompt_tokens]
    lengths.write_text("input_len,output_len\n" + "\n".join(rows) + "\n")
    # A node the probe did not see (none here: the joiner is a node that was probed before it died) pays
    # the mean of the others.
    mean_overhead = sum(terms.step_overhead_s.values()) / max(1, len(terms.step_overhead_s))
    cfg = SimConfig(
        mode="offline",
        policy="maxflow",
        fixed_concurrency=True,
        lengths=str(lengths),
        initial_queries=load.clients,
        duration_s=max(load.window_s, STEADY_WINDOW_S),
        warmup_s=load.warmup_s,
        seed=seed,
        load_time_s=0.0,
        expected_output_len=load.decodes,
        throttle={n: s for n, s in speeds.items() if n in ranges and s < 1.0},
        step_overhead_s={n: terms.step_overhead_s.get(n, mean_overhead) for n in ranges},
        coordinator_cpu_s_per_iteration=terms.coordinator_cpu_s_per_iteration,
        hosts=(
            HostSpec("this machine", terms.cores, tuple(ranges), coordinator=True, background=background),
        ),
        watch_interval_s=0,
        pipeline_depth=pipeline_depth,
    )
    cluster = with_hop_latency(per_node_cluster(bundled.cluster(cluster_name)), terms.hop_latency_s)
    model = bundled.model(model_name)
    result = simulate(cluster, model, profiles, routing_plan(cluster_name, model_name, ranges), cfg)
    span_s = max(1e-9, result.end_s - result.start_s)
    nodes = result.nodes
    return Predicted(
        float(result.decode_tok_per_s),
        {n: float(v["steps"]) / span_s for n, v in nodes.items()},
        {n: 1e3 * float(v["busy_s"]) / max(1, int(v["steps"])) for n, v in nodes.items()},
        {
            n: (int(v["decode_seqs"]) + int(v["prompt_tokens"])) / max(1, int(v["steps"]))
            for n, v in nodes.items()
        },
        {n: float(v["utilisation"]) for n, v in nodes.items()},
    )


def calibrated(predicted: float, measured_before: float, predicted_before: float) -> float:
    """`predicted` (tokens/s of the plan after a move) calibrated on the fleet before it, as a controller
    would on its own metrics: times what the old fleet measured over what the simulator gave the old plan.
    On shared cores the machine's speed drifts between a profile and a window by as much as the goal (see
    tests/services/controller/test_join_throughput.py); the calibration takes only what is known before
    the move. 0 where the old plan was predicted to serve nothing."""
    return predicted * measured_before / predicted_before if predicted_before > 0 else 0.0


def rel_err(measured: float, predicted: float) -> float | None:
    return round(abs(measured - predicted) / predicted, 4) if predicted > 0 else None
