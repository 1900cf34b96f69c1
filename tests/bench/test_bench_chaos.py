"""The chaos benchmark's toy run: real worker processes killed and restarted under load; nothing lost."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_chaos_quick_loses_nothing_and_prints_json_last(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "chaos" and figures["quick"] is True
    assert figures["kills"] >= 1 and figures["restarts"] >= 1
    assert figures["workers_lost"] >= 1  # the coordinator noticed the kills
    assert figures["lost"] == 0
    assert figures["completed"] > 0
    assert figures["kv_left_tokens"] == 0 and figures["running_after"] == 0 and figures["waiting_after"] == 0
    assert figures["ratio_chaos_vs_calm"] > 0
    for word in ("completed", "retried", "failed", "lost"):
        assert word in out.stdout
