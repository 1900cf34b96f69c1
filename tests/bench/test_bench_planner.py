"""bench/planner.py at toy size, so it never rots: every method runs, the last line is one JSON object."""

from __future__ import annotations

import json
import random

import pytest

from bench import planner as bench_planner


def test_quick_run_prints_a_table_and_json(capsys) -> None:
    assert bench_planner.main(["--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["bench"] == "planner"
    rows = {r["method"]: r for r in result["rows"]}
    assert set(bench_planner.METHODS) <= set(rows)
    for row in rows.values():
        assert "error" not in row
        assert 0 < row["max_flow"] <= row["bound"] * (1 + 1e-6)
    # The searches never do worse than the best heuristic they start from.
    best_heuristic = max(rows[m]["max_flow"] for m in ("petals", "swarm", "separate", "homogeneous"))
    assert rows["search"]["max_flow"] >= best_heuristic * (1 - 1e-9)
    assert rows["milp"]["max_flow"] >= best_heuristic * (1 - 1e-9)
    assert any("decode_tok_per_s" in r for r in result["rows"])
    assert len(lines) >= 2 + len(rows)
    # What serve's scorer promised for its chosen plan is printed beside what the plan was simulated to serve.
    (ref,) = result["references"]
    assert ref["serve_chosen"] and ref["serve_score_decode_tok_per_s"] > 0
    assert any(line.startswith("cluster10/llama1-30b") and "serve chose" in line for line in lines)


def test_milp_ablation_runs_every_variant(capsys) -> None:
    assert bench_planner.main(["--ablation", "--time-limit", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {name for name, _ in bench_planner.ABLATION}
    assert rows["paper-petals-start"]["cols"] == 1376
    # Our warm start is never worse than the paper's petals start.
    assert rows["search-warm-start"]["max_flow"] >= rows["paper-petals-start"]["max_flow"]


def test_slo_quick_reports_capacity_of_serve_and_the_paper_and_their_ratio(capsys) -> None:
    assert bench_planner.main(["--slo", "--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["bench"] == "planner-slo"
    (fleet,) = result["fleets"]
    assert fleet["serve"]["ttft_p95_target_s"] == 5.0 and fleet["baseline"]["tpot_p95_target_s"] == 1.5
    assert fleet["fleet"] == "cluster10/llama1-30b"
    for name in ("baseline", "serve"):
        cap = fleet[name]
        assert cap["simulations"] >= 1
        if cap["at"] is not None:
            assert cap["at"]["ttft_p95_s"] <= 5.0 and cap["at"]["tpot_p95_s"] <= 1.5
    base, serve = fleet["baseline"]["rate_tok_per_s"], fleet["serve"]["rate_tok_per_s"]
    assert serve > 0
    assert fleet["ratio"] == (serve / base if base > 0 else None)
    assert any("ratio serve / paper" in line for line in lines)


def test_fleet42_is_the_papers_seven_type_fleet_in_seeded_node_orders() -> None:
    from bench.planner_fleets import initial_queries, load_cluster

    fleets = [load_cluster(f"fleet42-s{seed}") for seed in (0, 1, 2)]
    for cluster in fleets:
        assert len(cluster.nodes) == 42
        assert cluster.gpu_counts() == {
            "A100": 4,
            "V100": 6,
            "L4": 8,
            "L4x2": 4,
            "T4": 10,
            "T4x2": 6,
            "T4x4": 4,
        }
        # Full mesh both ways plus the coordinator's links to and from every node, all 1 Gbps / 1 ms.
        assert len(cluster.links) == 42 * 41 + 2 * 42
        assert {(lk.bandwidth_bytes_per_s, lk.latency_s) for lk in cluster.links} == {(1e9, 1e-3)}
        assert initial_queries(cluster) == 35
    orders = {tuple(n.gpu_type for n in c.nodes) for c in fleets}
    assert len(orders) == 3
    assert [n.gpu_type for n in load_cluster("fleet42-s1").nodes] == [n.gpu_type for n in fleets[1].nodes]


def test_full_runs_keep_the_papers_window_and_warm_big_fleets_longer() -> None:
    from bench.planner_fleets import full_run_window, load_cluster
    from planner.generate import single_region

    assert full_run_window(load_cluster("cluster24")) == (60.0, 660.0)
    assert full_run_window(load_cluster("cluster10")) == (60.0, 660.0)
    assert full_run_window(load_cluster("fleet42-s0")) == pytest.approx((105.0, 705.0))
    big = single_region({"A100": 40, "L4": 60, "T4": 100}, random.Random(0))
    assert full_run_window(big) == (180.0, 780.0)


def test_baseline_is_the_best_paper_method_layout() -> None:
    from bench.planner_fleets import best_baseline

    decode = {
        "petals": 90.0,
        "swarm": 120.0,
        "milp": 110.0,
        "serve": 300.0,
        "search": 200.0,
        "paper-ilp": None,
    }
    assert best_baseline(decode) == ("swarm", 120.0)
    assert best_baseline({**decode, "paper-ilp": 130.0}, extra=["paper-ilp"]) == ("paper-ilp", 130.0)
    assert best_baseline({"serve": 1.0}) == ("", 0.0)


def test_scorer_truth_quick_reports_error_and_rank_correlation(capsys) -> None:
    from bench.planner_truth import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert bench_planner.main(["--scorer-truth", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bench"] == "planner-scorer-truth"
    (fleet,) = result["fleets"]
    assert fleet["fleet"] == "cluster10/llama1-30b" and len(fleet["candidates"]) == 3
    assert all(c["score"] > 0 and c["full"] > 0 for c in fleet["candidates"])
    # On the toy fleet the scorer ranks the candidates as their full runs do.
    assert fleet["spearman"] >= 0.5
    assert 0 <= fleet["chosen_rel_error"] < 0.5
    assert fleet["score_is_full_run"] is False  # cluster10's links are fast: a short warm-started score
