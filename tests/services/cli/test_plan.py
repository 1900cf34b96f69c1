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


def test_evaluate_a_bundled_layout_by_name(capsys) -> None:
    assert main(["plan", "evaluate", "cluster24", "--model", "llama2-70b", "--layout", "ilp"]) == 0
    assert "max-flow 1289.5" in capsys.readouterr().out
    assert main(["plan", "evaluate", "cluster24", "--model", "llama2-70b", "--layout", "best"]) == 2
    err = capsys.readouterr().err
    assert "expected one of: homogeneous, ilp, ilp-single, petals, swarm" in err
    assert len(err.strip().splitlines()) == 1
    two = ["--layout", "ilp", "--placement", "x_sol.ini"]
    assert main(["plan", "evaluate", "cluster24", "--model", "llama2-70b", *two]) == 2
    assert main(["plan", "cluster24", "--model", "llama2-70b", "--layout", "ilp"]) == 2
    assert "brl plan evaluate" in capsys.readouterr().err


def test_a_plan_of_a_fleet_file_embeds_the_fleet(tmp_path: Path) -> None:
    fleet_file = tmp_path / "edge.ini"
    fleet_file.write_text(Path("planner/data/clusters/cluster10.ini").read_text())
    out = tmp_path / "plan.json"
    args = ["plan", str(fleet_file), "--model", "llama1-30b", "--method", "swarm", "--no-png", "--quiet"]
    assert main([*args, "-o", str(out)]) == 0
    plan = load_plan(out)
    fleet = bundled.cluster(str(fleet_file))
    assert plan.cluster == fleet and plan.cluster_name == "edge"
    assert plan.model == bundled.model("llama1-30b") and plan.profiles_name == "llama1-30b"


def test_plan_for_an_slo_ranks_serve_candidates_by_capacity(tmp_path: Path, capsys) -> None:
    out = tmp_path / "slo.json"
    args = ["plan", "cluster10", "--model", "llama1-30b", "--objective", "slo", "--ttft-p95", "5"]
    assert main([*args, "--tpot-p95", "1.5", "--time-limit", "2", "--quiet", "--no-png", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "method serve:" in printed and "capacity at p95 TTFT <= 5 s, p95 TPOT <= 1.5 s:" in printed
    stats = load_plan(out).solver_stats
    details = stats["chosen_details"]
    assert details["capacity_tok_per_s"] > 0 and details["simulations"] >= 1
    # The plan chosen is the best capacity scored, and the score is that capacity.
    assert stats["decode_tok_per_s"] == details["capacity_tok_per_s"]
    assert details["capacity_tok_per_s"] == pytest.approx(max(stats["scores"].values()), abs=0.01)
    # The winner was searched in full, not screened against a better one.
    assert details["screened"] is False
    assert load_plan(out).provenance["options"]["objective"] == "slo"


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--objective", "slo", "--tpot-p95", "1.5"], "--ttft-p95"),
        (["--objective", "slo", "--ttft-p95", "5"], "--tpot-p95"),
        (["--objective", "slo", "--ttft-p95", "-5", "--tpot-p95", "1"], "--ttft-p95"),
        (["--objective", "slo", "--ttft-p95", "5", "--tpot-p95", "nan"], "--tpot-p95"),
        (["--objective", "slo", "--ttft-p95", "5", "--tpot-p95", "1", "--method", "milp"], "--method"),
        (["--tpot-p95", "1"], "--tpot-p95"),
    ],
)
def test_bad_slo_flags_exit_2_naming_the_flag(tmp_path: Path, capsys, extra: list[str], flag: str) -> None:
    assert main(["plan", "cluster10", "--model", "llama1-30b", *extra, "-o", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert not (tmp_path / "p.json").exists()


def test_scale_plans_a_generated_fleet_with_the_simulator_judging_in_lanes(tmp_path: Path) -> None:
    """`brl plan --method scale` judges each region's candidates in the simulator, each in its lanes, and
    the plan records the lanes its flow keeps to (type stages: every GPU type routed on its own)."""
    fleet_file = tmp_path / "fleet.yaml"
    gen = ["cluster", "generate", "--gpus", "A100=10,L4=20,T4=20", "-o", str(fleet_file)]
    assert main(gen) == 0
    out = tmp_path / "plan.json"
    args = ["plan", str(fleet_file), "--model", "llama2-70b", "--method", "scale", "--time-limit", "20"]
    assert main([*args, "--no-png", "--quiet", "-o", str(out)]) == 0
    plan = load_plan(out)
    (region, judged), *others = plan.solver_stats["regions"].items()
    assert not others and judged["scores"] and all(v > 0 for v in judged["scores"].values())
    typed = judged["chosen"].endswith("/lanes")
    assert plan.provenance["flow_lanes"] == {region: "type" if typed else "region"}
    gpu = {n.name: n.gpu_type for n in plan.cluster.nodes}
    inner = [(u, v) for (u, v), f in plan.edge_flows.items() if f > 0 and u in gpu and v in gpu]
    assert inner and (not typed or all(gpu[u] == gpu[v] for u, v in inner))
    assert plan.placement.has_full_chain() and plan.objective_tok_per_s > 0
