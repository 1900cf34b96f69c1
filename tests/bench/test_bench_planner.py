"""bench/planner.py at toy size, so it never rots: every method runs, the last line is one JSON object."""

from __future__ import annotations

import json

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
