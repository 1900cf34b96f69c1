"""bench/replan_predict.py's workload in the simulator: max-flow routing over the live controller's plan,
with the offline feeder holding a closed loop's fixed number of queries in flight (bundled profiles:
the feeder, not the machine's timings, is under test)."""

from pathlib import Path

import pytest

from bench.fidelity_live import Probe
from bench.fidelity_profiles import Measured, write_profiles
from bench.replan_predict import node_type, per_node_cluster, probe_terms, routing_plan
from planner import bundled
from planner.placement import LayerRange
from services.profiling.overheads import lone_decode_ms
from simulator.run import SimConfig, simulate

START = {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30), "fast2": (10, 30)}


def closed_loop(tmp_path: Path, clients: int, *, fixed: bool) -> tuple[int, float]:
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("input_len,output_len\n5,15\n4,15\n")
    cfg = SimConfig(
        mode="offline",
        policy="maxflow",
        fixed_concurrency=fixed,
        lengths=str(lengths),
        initial_queries=clients,
        duration_s=60.0,
        warmup_s=10.0,
        load_time_s=0.0,
        expected_output_len=15,
        watch_interval_s=0,
    )
    model = bundled.model("smollm2-135m")
    plan = routing_plan("local-cpu4", "smollm2-135m", START)
    result = simulate(bundled.cluster("local-cpu4"), model, bundled.profiles(model), plan, cfg)
    return result.active_at_end, result.decode_tok_per_s


def test_fixed_concurrency_holds_the_clients_in_flight_under_max_flow(tmp_path: Path) -> None:
    in_flight, one = closed_loop(tmp_path, 1, fixed=True)
    assert in_flight <= 1 and one > 0
    in_flight, three = closed_loop(tmp_path, 3, fixed=True)
    # A finished query is replaced one feed gap later: at the window's end one may be between the two.
    assert 2 <= in_flight <= 3 and three > one
    # Without it max-flow refills by its KV gate: far more than a closed loop of 3 keeps in flight.
    in_flight, _ = closed_loop(tmp_path, 3, fixed=False)
    assert in_flight > 3


def test_per_node_cluster_gives_every_node_its_own_profile_type() -> None:
    cluster = per_node_cluster(bundled.cluster("local-cpu4"))
    assert {n.name: n.gpu_type for n in cluster.nodes} == {n: node_type(n) for n in START}
    assert len({n.gpu_type for n in cluster.nodes}) == len(cluster.nodes)


def synthetic_measured() -> Measured:
    """A made-up torch measurement (no model run): per-step costs that grow with the batch, and a head."""
    from services.profiling.measure import HeadCost, Measurement, Series

    points = (1, 2, 4, 8)
    decode = Series(points, (2.0, 2.2, 2.6, 3.4), (5.0, 5.6, 6.8, 9.2), 4)
    prompt = Series(points, (2.0, 2.4, 3.2, 4.8), (5.0, 6.2, 8.6, 13.4), 4)
    measurement = Measurement(prompt, decode, 16, 1, "torch", "cpu", 1)
    return Measured(measurement, HeadCost((1, 2, 4), (3.0, 3.5, 4.5)), bundled.model("smollm2-135m"))


def test_probe_terms_charge_what_a_lone_step_costs_beyond_the_tables(tmp_path: Path) -> None:
    measured = synthetic_measured()
    speeds = {"fast": 1.0, "mid": 0.5, "slow": 0.25, "fast2": 1.0}
    placement = {n: (node_type(n), LayerRange(*r)) for n, r in START.items()}
    tables = write_profiles(tmp_path / "tables", measured, placement)
    lone = {n: lone_decode_ms(tables, t, rng.size, last=rng.end == 30) for n, (t, rng) in placement.items()}
    # Probe (own core, unthrottled): fast and mid 20% under the tables, slow and fast2 5 ms over them.
    own = {
        "fast": 0.8 * lone["fast"],
        "mid": 0.8 * lone["mid"],
        "slow": lone["slow"] + 5,
        "fast2": lone["fast2"] + 5,
    }
    probe = Probe(
        # The wall step: stretched by the throttle, and twice as long for having half a core.
        step_ms={n: own[n] / speeds[n] / 0.5 for n in START},
        hop_latency_s=0.001,
        coordinator_cpu_s_per_iteration=0.002,
        background=0.0,
        core_share={n: 0.5 for n in START},
    )
    terms = probe_terms(measured, probe, START, speeds, cores=2.0, workdir=tmp_path / "probe")
    # The excess over the tables is a fixed cost per step; a probe under the tables leaves them as they are.
    assert terms.step_overhead_s["slow"] == pytest.approx(0.005, rel=1e-3)
    assert terms.step_overhead_s["fast2"] == pytest.approx(0.005, rel=1e-3)
    assert terms.step_overhead_s["fast"] == terms.step_overhead_s["mid"] == 0.0
    for n in START:
        assert terms.lone_step_ms[n]["tables"] == pytest.approx(lone[n], abs=0.01)
        assert terms.lone_step_ms[n]["probe"] == pytest.approx(own[n], abs=0.01)
