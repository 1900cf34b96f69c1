"""The chaos benchmark's toy run: real worker processes killed and restarted under load; nothing lost."""

from pathlib import Path

from tests.bench.bench_run import bench_figures


def test_bench_chaos_quick_loses_nothing_and_prints_json_last(tmp_path: Path) -> None:
    figures, stdout = bench_figures("chaos.py", "--quick", "--workdir", str(tmp_path), timeout_s=400)
    assert figures["bench"] == "chaos" and figures["quick"] is True
    assert figures["kills"] >= 1 and figures["restarts"] >= 1
    assert figures["workers_lost"] >= 1  # the coordinator noticed the kills
    assert figures["lost"] == 0
    assert figures["completed"] > 0
    assert figures["kv_left_tokens"] == 0 and figures["running_after"] == 0 and figures["waiting_after"] == 0
    assert figures["ratio_chaos_vs_calm"] > 0
    for word in ("completed", "retried", "failed", "lost"):
        assert word in stdout


def test_bench_chaos_quick_with_permanent_losses_and_joins_loses_nothing(tmp_path: Path) -> None:
    # Kills every 2-3 s so that the short run draws a permanent loss and a join as well as restarts.
    args = ["--quick", "--auto-replan", "--permanent", "--joins", "--kill-every-s", "2", "3", "--seed", "1"]
    figures, _ = bench_figures("chaos.py", *args, "--workdir", str(tmp_path), timeout_s=500)
    assert figures["auto_replan"] is True and figures["kills"] >= 1
    assert figures["permanent_losses"] + figures["joins"] >= 1, figures
    assert figures["lost"] == 0
    # Whoever is left serves every layer: the controller covered the layers of those killed for good.
    assert figures["routable_after"] is True and figures["served_after"] >= 1
    assert len(figures["workers_after"]) == 4 - figures["permanent_losses"] + figures["joins"]
    assert figures["kv_left_tokens"] == 0 and figures["running_after"] == 0
