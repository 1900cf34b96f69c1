"""bench/fidelity.py --quick: profile, simulate, run the real local deployment, compare; JSON last."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_fidelity_quick_prints_json_last() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fidelity.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=400,
    )
    lines = out.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["bench"] == "fidelity" and figures["quick"] is True and figures["requests"] >= 1
    measured = figures["measured"]
    assert measured["errors"] == [] and measured["finished"] == figures["requests"]
    assert measured["all_tok_per_s"] > 0 and measured["prompt_latency_s"]["p50"] > 0
    for name in ("profile", "profile+head", "calibrated", "+colocation"):
        pred = figures["predicted"][name]
        assert pred["finished"] == figures["requests"] and pred["all_tok_per_s"] > 0
        assert set(figures["rel_err"][name]) >= {
            "all_tok_per_s",
            "prompt_latency_s.p50",
            "decode_latency_s.p50",
        }
    cal = figures["calibration"]
    assert cal["iteration_s"] > 0 and set(cal["step_factor"]) == {"fast", "mid", "slow"}
    assert all(f > 0 for f in cal["step_factor"].values()) and cal["drift"] > 0
    assert any(line.startswith("decode latency p50") for line in lines)
