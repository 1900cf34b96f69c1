"""`brl plan` and `brl plan evaluate`: files written, figures printed, bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner import bundled
from planner.formats.helix_ini import save_solution_ini
from planner.formats.plan_json import load_plan
from services.cli.main import main


def test_plan_writes_json_and_png(tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan.json"
    code = main(
        [
            "plan",
            "cluster10",
            "--model",
            "llama1-30b",
            "--method",
            "search",
            "--time-limit",
            "1",
            "-o",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    plan = load_plan(out)
    assert plan.method == "search" and plan.objective_tok_per_s > 0
    assert plan.placement.has_full_chain()
    assert plan.provenance["cluster"] == "cluster10" and plan.provenance["seed"] == 0
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "max-flow" in text and "bound" in text and "time" in text


def test_plan_milp_with_progress_bar(tmp_path: Path, capsys) -> None:
    out = tmp_path / "milp.json"
    assert (
        main(
            [
                "plan",
                "cluster10",
                "--model",
                "llama1-30b",
                "--method",
                "milp",
                "--time-limit",
                "2",
                "-o",
                str(out),
                "--no-png",
            ]
        )
        == 0
    )
    assert not out.with_suffix(".png").exists()
    err = capsys.readouterr().err
    assert "incumbent" in err and "gap" in err
    assert load_plan(out).objective_tok_per_s > 0


def test_evaluate_stored_layout_and_plan(tmp_path: Path, capsys) -> None:
    cluster = bundled.cluster("cluster24")
    sol = tmp_path / "ilp_sol.ini"
    save_solution_ini(bundled.layout("ilp", "cluster24", "llama2-70b"), cluster, sol)
    assert main(["plan", "evaluate", "cluster24", "--model", "llama2-70b", "--placement", str(sol)]) == 0
    text = capsys.readouterr().out
    assert "max-flow 1289.5" in text and "bottleneck compute" in text


def test_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["plan", "no-such-fleet", "--model", "llama2-70b", "-o", str(tmp_path / "p.json")]) == 2
    assert "no-such-fleet" in capsys.readouterr().err
    assert main(["plan", "evaluate", "cluster24", "--model", "llama2-70b"]) == 2
    with pytest.raises(SystemExit):
        main(["plan", "cluster24", "--model", "llama2-70b", "--method", "gurobi"])
