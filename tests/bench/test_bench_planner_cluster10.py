"""bench/planner_cluster10.py at its quick size (80-s runs, one seed), so it never rots: the KV ceilings it
prints bound every layout it runs, the dense chains reach the chain ceiling, no run beats its layout's
bound, and the coordinators' comparison shows what it says it shows."""

from __future__ import annotations

import json

from bench import planner_cluster10
from services.coordinator.engine import EngineLimits


def test_quick_run_prints_ceilings_runs_and_coordinators(capsys) -> None:
    assert planner_cluster10.main(["--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    assert out["bench"] == "planner-dense-bound" and out["fleet"] == "cluster10/llama1-30b"
    assert out["slots"] == 86 and out["copies"] == 1.43
    assert out["any_layout_kv_tokens_per_layer"] >= out["chain_kv_tokens_per_layer"] > 0
    rows = {r["layout"]: r for r in out["rows"]}
    assert set(planner_cluster10.HEURISTICS) <= set(rows)
    dense = [r for name, r in rows.items() if name.startswith("dense")]
    assert dense
    for r in rows.values():
        # No layout's least-held layer holds more than the any-layout ceiling; the chains hold exactly theirs.
        assert r["least_layer_kv_tokens"] <= out["any_layout_kv_tokens_per_layer"] + 1e-6
        run = r["runs"]["0"]
        assert 0 < run["decode_tok_per_s"] <= r["decode_bound_tok_per_s"]
        assert run["decode_seqs_per_step"] > 0 and 0 < run["utilisation"] <= 1
    for r in dense:
        assert r["least_layer_kv_tokens"] == out["chain_kv_tokens_per_layer"]
    best = max(rows.values(), key=lambda r: r["runs"]["0"]["decode_tok_per_s"])
    base = max(
        (rows[m] for m in planner_cluster10.HEURISTICS), key=lambda r: r["runs"]["0"]["decode_tok_per_s"]
    )
    assert out["seed0"] == {
        "baseline": base["layout"],
        "best": best["layout"],
        "ratio": round(best["runs"]["0"]["decode_tok_per_s"] / base["runs"]["0"]["decode_tok_per_s"], 3),
    }
    paper, *brl = out["coordinators"]
    assert paper["pipeline_depth"] is None
    # A fixed depth of 2, then the coordinator's default: one step per stage (a depth at least any chain's
    # stage count: cluster10 has 10 nodes).
    assert [c["pipeline_depth"] for c in brl] == [2, EngineLimits().pipeline_depth]
    assert EngineLimits().pipeline_depth >= 10
    # The paper's coordinator is the table's: the same runs again give the same figures.
    assert set(paper["runs"]) == {base["layout"], best["layout"]}
    for name, run in paper["runs"].items():
        assert run == rows[name]["runs"]["0"]
    # BRL's chain steps carry more sequences a step than queries issued one by one.
    for coordinator in brl:
        assert set(coordinator["runs"]) == set(paper["runs"])
        for name, run in coordinator["runs"].items():
            assert run["decode_seqs_per_step"] > paper["runs"][name]["decode_seqs_per_step"], name
    assert any(line.startswith("  BRL, one per stage") for line in lines)
