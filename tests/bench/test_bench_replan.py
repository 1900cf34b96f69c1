"""bench/replan.py at toy size: the simulated half through the merged entry point (the live half has its own
toy test, tests/bench/test_bench_replan_live.py, which runs four worker processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import replan


def test_sim_only_quick_prints_the_headline_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert replan.main(["--quick", "--sim-only"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert set(replan.HEADLINE) <= set(figures)
    assert figures["live"] is None and figures["recover_s"] is None and figures["lost"] is None
    rows = figures["sim"]["rows"]
    assert rows, "the simulated half ran no scenario"
    ratios = [r["ratio_vs_fresh"] for r in rows if r["ratio_vs_fresh"] is not None]
    assert figures["ratio_vs_fresh"] == min(ratios)
    assert any(line.startswith("== simulated") for line in out)


def test_headline_takes_each_key_from_its_half() -> None:
    live = {"recover_s": 3.5, "lost": 0, "measured_vs_predicted": 0.1}
    sim = {"ratio_vs_fresh": 0.95, "moved_share": 0.4}
    assert replan.headline(live, sim) == {
        "recover_s": 3.5,
        "ratio_vs_fresh": 0.95,
        "moved_share": 0.4,
        "lost": 0,
        "measured_vs_predicted": 0.1,
    }
    assert replan.headline(None, sim)["lost"] is None


def test_it_runs_as_a_script_from_any_directory(tmp_path: Path) -> None:
    script = Path(replan.__file__).resolve()
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--live-only" in out.stdout
