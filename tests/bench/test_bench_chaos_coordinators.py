"""The coordinator chaos benchmark's toy run: two real replicas, one SIGKILLed under streaming load;
nothing lost, no KV left on the workers, the survivor gets the whole cache back."""

from pathlib import Path

from tests.bench.bench_run import bench_figures


def test_bench_chaos_kill_coordinators_quick_loses_nothing(tmp_path: Path) -> None:
    args = ("--kill-coordinators", "--quick", "--workdir", str(tmp_path))
    figures, stdout = bench_figures("chaos.py", *args, timeout_s=400)
    assert figures["bench"] == "chaos_coordinators" and figures["quick"] is True
    assert figures["replicas"] == 2 and figures["kills"] == 1
    assert figures["lost"] == 0 and figures["kv_left_tokens"] == 0
    assert figures["completed"] > 0
    assert figures["share_returned"] is True
    caps = figures["survivor_kv_capacity_tokens"]
    assert set(caps) == {"w0", "w1"} and all(c > 0 for c in caps.values())
    for word in ("completed", "failed", "lost", "KV left"):
        assert word in stdout
