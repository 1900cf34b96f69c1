"""`brl replan`: re-plans a plan JSON after a change, prints the moves and figures, writes the new plan;
bad node names and values exit 2 naming the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.flow import plan_from_placement
from planner.formats.plan_json import load_plan, save_plan
from planner.placement import LayerRange, Placement
from services.cli.main import main
from tests.planner.solvers.fleets import complete_cluster, profiles, tiny_model


@pytest.fixture
def toy_plan(tmp_path: Path) -> Path:
    """n0 alone holds [0, 4); n1 and n2 hold [4, 8); n3 is idle."""
    fleet = complete_cluster(["A100", "L4", "L4", "T4"], name="toy")
    placement = Placement(8, {"n0": LayerRange(0, 4), "n1": LayerRange(4, 8), "n2": LayerRange(4, 8)})
    plan = plan_from_placement(fleet, tiny_model(8), profiles(), placement, method="hand")
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    return path


def test_replan_repairs_and_writes_the_new_plan(toy_plan: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "new.json"
    code = main(
        ["replan", str(toy_plan), "--lose", "n0", "--join", "l4:1", "--time-limit", "1", "-o", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "uncovered after the change: [0,4)" in text
    assert "layers moved" in text and "transition" in text and "max-flow 0.0 ->" in text
    new = load_plan(out)
    assert new.method == "replan" and new.objective_tok_per_s > 0
    assert new.placement.uncovered() == ()
    assert new.cluster is not None
    assert not new.cluster.has_node("n0") and new.cluster.has_node("l4-join1")
    assert new.provenance["lost"] == ["n0"] and new.provenance["joined"] == ["l4-join1"]


def test_replan_with_the_simulator_reports_decode_before_and_after(
    toy_plan: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "new.json"
    code = main(
        ["replan", str(toy_plan), "--slow", "n1=0.5", "--simulate", "--time-limit", "2", "-o", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("simulated decode"))
    before, after = (float(x) for x in line.split()[2:5:2])
    assert before > 0 and after > 0
    assert load_plan(out).placement.uncovered() == ()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lose", "n9"], "--lose"),
        (["--slow", "n9=0.5"], "--slow"),
        (["--slow", "n1=2"], "--slow"),
        (["--slow", "n1"], "--slow"),
        (["--join", "h100:1"], "--join"),
        (["--join", "a100"], "--join"),
        ([], "--lose"),
        (["--lose", "n0", "--budget-layers", "-1"], "--budget-layers"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(toy_plan: Path, tmp_path: Path, capsys, argv, flag) -> None:
    out = tmp_path / "new.json"
    code = main(["replan", str(toy_plan), *argv, "--time-limit", "1", "-o", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err
    assert not out.exists()
