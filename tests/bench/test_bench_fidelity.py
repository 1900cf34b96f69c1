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
    assert (
        list(figures["predicted"]) == ["profile", "+head", "+serving", "+host", "+chains"]
        and figures["best"] == "+chains"
    )
    for name in figures["predicted"]:
        pred = figures["predicted"][name]
        assert pred["finished"] == figures["requests"] and pred["all_tok_per_s"] > 0
        assert set(figures["rel_err"][name]) >= {
            "all_tok_per_s",
            "prompt_latency_s.p50",
            "decode_latency_s.p50",
        }
    probe = figures["probe"]
    assert set(probe["step_ms"]) == {"fast", "mid", "slow"} and all(
        ms > 0 for ms in probe["step_ms"].values()
    )
    assert probe["hop_latency_s"] > 0 and probe["coordinator_cpu_s_per_iteration"] > 0
    # The LM head is a cost on every last hop: it can only slow the prediction down.
    p50 = {n: figures["predicted"][n]["decode_latency_s"]["p50"] for n in figures["predicted"]}
    assert p50["profile"] < p50["+head"]
    assert set(figures["chain_decode_iteration_s"]["measured"]) <= {"fast", "mid>slow"}
    assert any(line.startswith("decode latency p50") for line in lines)
