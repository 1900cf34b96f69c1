"""bench/planner_scale.py at toy size (via bench.planner --scale), so it never rots: the cost curve, the
runs against the heuristics, and the last line one JSON object."""

from __future__ import annotations

import json

import pytest

from bench import planner as bench_planner


def test_quick_scale_run_prints_the_curve_and_json(capsys) -> None:
    assert bench_planner.main(["--scale", "--quick", "--sizes", "24", "--simulate", "24"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    (point,) = result["curve"]
    assert point["nodes"] == 24 and point["placed"] == 24
    assert point["peak_mb"] > 0 and point["plan_s"] > 0
    assert 0 < point["max_flow"] <= point["bound"] * (1 + 1e-6)
    # Which candidate won the region's contest, among those judged.
    (region,) = point["stats"]["regions"].values()
    assert region["chosen"] in region["scores"]
    assert any(line.strip().startswith("default: chose ") for line in lines)
    (run,) = result["runs"]
    assert set(run["decode_tok_per_s"]) == {"scale", "petals", "swarm", "separate"}
    assert run["decode_tok_per_s"]["scale"] > 0
    assert all(sim["warmup_s"] == 20.0 for sim in run["sims"].values())
    best = run["decode_tok_per_s"][run["best_heuristic"]]
    assert best == max(run["decode_tok_per_s"][m] for m in ("petals", "swarm", "separate"))
    assert run["ratio"] == pytest.approx(run["decode_tok_per_s"]["scale"] / best, abs=1e-3)
    assert any(line.startswith("plan ") for line in lines)


def test_plans_kept_in_a_folder_are_reused_and_methods_run_one_at_a_time(capsys, tmp_path) -> None:
    argv = ["--scale", "--quick", "--sizes", "24", "--simulate", "24", "--plans-dir", str(tmp_path)]
    assert bench_planner.main([*argv, "--methods", "scale,swarm"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scale-n24-r1-s0.json", "swarm-n24-r1-s0.json"]
    (run,) = first["runs"]
    assert set(run["decode_tok_per_s"]) == {"scale", "swarm"} and run["best_heuristic"] == "swarm"
    # A second invocation plans nothing: the curve's figures are the kept ones, to the digit.
    assert bench_planner.main([*argv, "--methods", "swarm"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["curve"] == first["curve"]
    (again,) = second["runs"]
    assert set(again["decode_tok_per_s"]) == {"swarm"} and again["ratio"] is None
    assert again["decode_tok_per_s"]["swarm"] == pytest.approx(run["decode_tok_per_s"]["swarm"])
