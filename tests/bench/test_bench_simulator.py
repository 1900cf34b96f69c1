import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_simulator_toy_prints_json_last() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "simulator.py"), "--toy", "--no-candidates"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "simulator" and figures["toy"] is True
    assert figures["events"] > 0 and figures["events_per_s"] > 0 and figures["peak_rss_bytes"] > 0
    assert -1.0 <= figures["score_rank_correlation"] <= 1.0
    assert set(figures["plans"]) == {"ilp", "swarm", "homogeneous"}
