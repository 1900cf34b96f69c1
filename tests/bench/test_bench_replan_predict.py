"""bench/replan_predict.py's workload in the simulator: max-flow routing over the live controller's plan,
with the offline feeder holding a closed loop's fixed number of queries in flight (bundled profiles:
the feeder, not the machine's timings, is under test)."""

from pathlib import Path

from bench.replan_predict import node_type, per_node_cluster, routing_plan
from planner import bundled
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
