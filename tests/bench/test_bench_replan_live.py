"""The live re-planning bench at toy size: real worker processes, a sole holder killed under load, then a
worker joining with a range no chain can use. Nothing is lost, every layer is served again, the joiner gets
layers from the controller and the simulator predicts more throughput for its plan; the figures come as one
JSON object on the last line."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_replan_live_quick_recovers_gains_on_join_and_loses_nothing(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "replan_live.py"), "--quick", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    f = json.loads(out.stdout.strip().splitlines()[-1])
    assert f["bench"] == "replan_live" and f["quick"] is True
    # Loss: the controller rolled out a plan that covers every layer again; nothing accepted was lost.
    assert f["loss_outcome"] == "rolled_out" and f["covered_after"] is True
    assert f["lost"] == 0, f["lost_examples"]
    assert f["recover_s"] > 0 and f["controller_recover_s"] > 0
    # Join: the joiner got a real range from the re-plan, and the fleet serves more with it.
    assert f["join_outcome"] == "rolled_out" and f["joined"] == ["fast"]
    assert f["joiner_range"] is not None and f["joiner_range"] != [25, 26]
    # The simulator (measured profile, probed serving terms, this machine's cores) predicts both windows;
    # at the same load the re-planned fleet serves more: four workers where three were.
    for key in ("predicted_tok_per_s_before_join", "predicted_tok_per_s_after_join"):
        assert math.isfinite(f[key]) and f[key] > 0, f
    assert f["predicted_join_gain_same_load"] > 1.0, f
    assert set(f["probe"]["step_ms"]) == {"fast", "fast2", "mid", "slow"}
    assert f["probe"]["hop_latency_s"] > 0 and f["probe"]["coordinator_cpu_s_per_iteration"] > 0
    # Measured throughput is wall-clock on shared cores: it is reported (with the other tenants' load),
    # and the fleet served in both windows; its rise is a figure of the bench, not a test assertion.
    assert f["tok_per_s_before_join"] > 0 and f["tok_per_s_after_join"] > 0
    assert f["measured_vs_predicted"] >= 0 and f["measured_vs_predicted_before_join"] >= 0
    # Calibrated on the before-window: the prediction times what the old fleet served over its prediction.
    calibrated = (
        f["predicted_tok_per_s_after_join"]
        * f["tok_per_s_before_join"]
        / f["predicted_tok_per_s_before_join"]
    )
    assert f["measured_vs_calibrated"] == pytest.approx(
        abs(f["tok_per_s_after_join"] - calibrated) / calibrated, abs=2e-3
    )
    # The profile is brought back to a core of its own by the share its thread had; competing load is
    # counted per session where the kernel shares per session, so never above the per-thread count.
    assert 0 < f["profile_core_share"] <= 1
    assert 0 <= f["background"] <= f["background_threads"] + 1e-9
    # Each serving worker's own step figures beside the simulator's, per window.
    assert set(f["steps_before_join"]) == {"fast2", "mid", "slow"}
    assert set(f["steps_after_join"]) == set(f["plan_after_join"])
    for row in [*f["steps_before_join"].values(), *f["steps_after_join"].values()]:
        assert row["sim_steps_per_s"] > 0 and row["sim_step_ms"] > 0
    for word in ("recover_s", "lost", "measured_vs_predicted"):
        assert word in out.stdout


def test_step_figures_are_per_window_rates_and_sit_beside_the_simulators() -> None:
    from bench.replan_predict import Predicted
    from bench.replan_windows import per_node, step_figures

    # a: 100 steps of 50 ms before the window, 60 of 25 ms in it (lifetime mean 40.6 ms); b: new in the window;
    # c: past Stats' 2048-step memory, so only the last steps' mean is known.
    # a processed 240 tokens in its 60 window steps (4 a step), busy 60 x 25 ms of the 60 s.
    first = {
        "a": {"steps": 100.0, "step_ms_mean": 50.0, "tokens_processed": 500.0},
        "c": {"steps": 3000.0, "step_ms_mean": 10.0},
    }
    last = {
        "a": {"steps": 160.0, "step_ms_mean": (100 * 50.0 + 60 * 25.0) / 160, "tokens_processed": 740.0},
        "b": {"steps": 30.0, "step_ms_mean": 90.0},
        "c": {"steps": 3120.0, "step_ms_mean": 12.0},
    }
    got = step_figures(first, last, 60.0)
    assert got["a"]["steps_per_s"] == 1.0 and got["a"]["step_ms"] == pytest.approx(25.0)
    assert got["a"]["tokens_per_step"] == pytest.approx(4.0) and got["a"]["busy"] == pytest.approx(0.025)
    assert got["b"]["steps_per_s"] == 0.5 and got["b"]["step_ms"] == pytest.approx(90.0)
    assert got["c"]["steps_per_s"] == 2.0 and got["c"]["step_ms"] == pytest.approx(12.0)
    sim = Predicted(10.0, {"a": 1.25}, {"a": 32.0}, {"a": 3.0}, {"a": 0.04})
    rows = per_node(got, sim)
    assert rows["a"] == {
        "steps_per_s": 1.0,
        "sim_steps_per_s": 1.25,
        "step_ms": 25.0,
        "sim_step_ms": 32.0,
        "tokens_per_step": 4.0,
        "sim_tokens_per_step": 3.0,
        "busy": 0.025,
        "sim_busy": 0.04,
    }
    assert rows["b"]["sim_steps_per_s"] == 0.0  # a worker the simulation did not run
