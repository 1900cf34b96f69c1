"""The coordinator chaos benchmark's toy run: two real replicas, one SIGKILLed under streaming load;
nothing lost, no KV left on the workers, the survivor gets the whole cache back."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_chaos_kill_coordinators_quick_loses_nothing(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "chaos.py"),
            "--kill-coordinators",
            "--quick",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "chaos_coordinators" and figures["quick"] is True
    assert figures["replicas"] == 2 and figures["kills"] == 1
    assert figures["lost"] == 0 and figures["kv_left_tokens"] == 0
    assert figures["completed"] > 0
    assert figures["share_returned"] is True
    caps = figures["survivor_kv_capacity_tokens"]
    assert set(caps) == {"w0", "w1"} and all(c > 0 for c in caps.values())
    for word in ("completed", "failed", "lost", "KV left"):
        assert word in out.stdout
