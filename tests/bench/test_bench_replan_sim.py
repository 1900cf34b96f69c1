"""bench/replan_sim.py at toy size (the four-worker CPU fleet with SmolLM2), so it never rots: every scenario
runs, the figures are consistent, and the last line is one JSON object."""

from __future__ import annotations

import json

from bench import replan_sim


def test_quick_run_prints_a_table_and_the_goal_figures(capsys) -> None:
    assert replan_sim.main(["--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["bench"] == "replan-sim" and result["fleet"] == "local-cpu4/smollm2-135m"
    rows = {r["scenario"]: r for r in result["rows"]}
    assert set(rows) == {name for name, *_ in replan_sim.QUICK.scenarios}
    assert len(lines) == 2 + len(rows)
    for row in rows.values():
        assert row["decode_after"] > 0 and row["decode_fresh"] > 0
        # The re-plan never serves less than the survivors did (it only moves for a gain).
        assert row["decode_after"] >= row["decode_before"]
        assert row["transition_s"] >= row["load_s"] >= 0
        assert (row["bytes_moved"] > 0) == (row["layers_moved"] > 0)
    join = rows["join-fast"]
    assert join["joined"] == ["cpu-fast-join1"] and join["layers_moved"] > 0
    assert join["decode_after"] > join["decode_before"]
    assert result["ratio_vs_fresh"] == min(r["ratio_vs_fresh"] for r in rows.values())
    # A share is undefined (None) where the fresh plan moves nothing and the re-plan moves something.
    shares = [r["moved_share"] for r in rows.values() if r["moved_share"] is not None]
    assert result["moved_share"] == (max(shares) if shares else None)
