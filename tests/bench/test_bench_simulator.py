from tests.bench.bench_run import bench_figures


def test_bench_simulator_toy_prints_json_last() -> None:
    figures, _ = bench_figures("simulator.py", "--toy", "--no-candidates")
    assert figures["bench"] == "simulator" and figures["toy"] is True
    assert figures["events"] > 0 and figures["events_per_s"] > 0 and figures["peak_rss_bytes"] > 0
    assert -1.0 <= figures["score_rank_correlation"] <= 1.0
    assert set(figures["plans"]) == {"ilp", "swarm", "homogeneous"}
