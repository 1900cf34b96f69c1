import json
from pathlib import Path

import pytest

from planner import bundled
from planner.formats.plan_json import load_plan, save_plan
from services.cli.main import main
from simulator.inputs import plan_for_placement

ILP = "planner/data/layouts/llama2-70b/cluster24/ilp_sol.ini"


def test_simulate_a_paper_placement(tmp_path, capsys) -> None:
    code = main(
        [
            "simulate",
            "--cluster",
            "cluster24",
            "--placement",
            ILP,
            "--duration",
            "30",
            "--warmup",
            "10",
            "--seed",
            "1",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "max flow: 1289.56 tokens/s" in out and "decode latency" in out
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["config"]["seed"] == 1 and data["decode_tok_per_s"] > 0
    assert {p.name for p in tmp_path.glob("*.png")} == {"throughput.png", "latency_cdf.png", "placement.png"}


def test_simulate_a_plan_json_online_with_a_baseline(tmp_path, capsys) -> None:
    model = bundled.model("llama2-70b")
    cluster = bundled.cluster("cluster24")
    placement = bundled.layout("ilp", cluster, model)
    plan, _ = plan_for_placement(cluster, model, bundled.profiles(model), placement)
    save_plan(plan, tmp_path / "plan.json")
    code = main(
        [
            "simulate",
            str(tmp_path / "plan.json"),
            "--mode",
            "online",
            "--policy",
            "random",
            "--duration",
            "30",
            "--rate",
            "200",
            "--no-plots",
            "-o",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    assert "policy random, online" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*.png"))


def test_simulate_with_the_papers_simulator_cluster(tmp_path, capsys) -> None:
    sim = "planner/data/layouts/llama2-70b/cluster24/ilp_simulator_cluster.ini"
    code = main(
        [
            "simulate",
            "--cluster",
            "cluster24",
            "--placement",
            ILP,
            "--simulator-cluster",
            sim,
            "--policy",
            "swarm",
            "--duration",
            "20",
            "--warmup",
            "5",
            "--initial-queries",
            "40",
            "-o",
            str(tmp_path),
            "--no-plots",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "result.json").read_text())
    # The paper's file lists only the 30 directed links the ILP layout uses, and its KV capacities.
    assert data["config"]["kv_capacity"]["n10"] == 5048576
    assert data["config"]["policy"] == "swarm" and data["admitted"] >= 40
    assert "provenance" in data and data["provenance"]["placement"].endswith("ilp_sol.ini")


def test_bad_input_exits_2(capsys) -> None:
    assert main(["simulate"]) == 2
    assert main(["simulate", "--cluster", "cluster24", "--placement", ILP, "--lengths", "nope"]) == 2
    assert "unknown length distribution" in capsys.readouterr().err


def test_simulate_with_an_injected_failure(tmp_path, capsys) -> None:
    # n3, n5 and n21 all hold layers [53, 60) in the ILP layout: losing n3 re-routes over the other two.
    code = main(
        [
            "simulate",
            "--cluster",
            "cluster24",
            "--placement",
            ILP,
            "--duration",
            "40",
            "--warmup",
            "10",
            "--fail",
            "n3@25",
            "--no-plots",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "failures: n3;" in capsys.readouterr().out
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["failed_nodes"] == ["n3"] and data["aborted"] > 0 and data["lost"] == 0
    assert main(["simulate", "--cluster", "cluster24", "--placement", ILP, "--fail", "n3"]) == 2


def test_simulate_a_local_deployment_with_its_serving_costs(tmp_path, capsys) -> None:
    from services.cli.run import plan_local

    plan, _ = plan_local("local-cpu", "smollm2-135m")
    save_plan(plan, tmp_path / "plan.json")
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("input_len,output_len\n20,10\n40,6\n12,16\n")
    common = [str(tmp_path / "plan.json"), "--mode", "online", "--duration", "30", "--rate", "40"]
    common += ["--lengths", str(lengths), "--no-plots"]
    assert main(["simulate", *common, "-o", str(tmp_path / "bare")]) == 0
    costs = [
        "--throttle",
        "mid=0.5",
        "--throttle",
        "slow=0.25",
        "--host",
        "2:fast,mid,slow,coordinator:0.5",
        "--coordinator-cpu-ms",
        "3",
        "--step-overhead-ms",
        "fast=2",
        "--pipeline-depth",
        "2",
        "--dead-end",
        "rollback",
    ]
    assert main(["simulate", *common, *costs, "-o", str(tmp_path / "costs")]) == 0
    bare = json.loads((tmp_path / "bare" / "result.json").read_text())
    data = json.loads((tmp_path / "costs" / "result.json").read_text())
    assert data["config"]["throttle"] == {"mid": 0.5, "slow": 0.25}
    assert data["config"]["hosts"] == [
        {
            "name": "host0",
            "cores": 2.0,
            "nodes": ["fast", "mid", "slow"],
            "coordinator": True,
            "background": 0.5,
        }
    ]
    assert data["config"]["coordinator_cpu_s_per_iteration"] == 0.003
    assert data["config"]["step_overhead_s"] == {"fast": 0.002}
    assert data["config"]["pipeline_depth"] == 2 and bare["config"]["pipeline_depth"] is None
    assert data["config"]["dead_end"] == "rollback" and bare["config"]["dead_end"] == "keep-entry"
    assert data["finished"] == bare["finished"] > 0
    assert data["decode_latency_s"]["mean"] > bare["decode_latency_s"]["mean"]
    capsys.readouterr()
    for bad, field in [
        (["--throttle", "mid"], "--throttle"),
        (["--throttle", "ghost=0.5"], "throttle"),
        (["--throttle", "mid=2"], "throttle"),
        (["--host", "two:fast"], "--host"),
        (["--host", "2:fast,ghost"], "hosts"),
        (["--step-overhead-ms", "fast"], "--step-overhead-ms"),
        (["--pipeline-depth", "0"], "pipeline_depth"),
        (["--dead-end", "retry"], "dead_end"),
    ]:
        assert main(["simulate", *common, *bad]) == 2
        assert field in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source", "model"),
    [
        ("planner/data/clusters/local-cpu.yaml", "smollm2-135m"),
        ("planner/data/clusters/cluster10.ini", "llama1-30b"),
    ],
    ids=["yaml", "ini"],
)
def test_a_plan_simulates_after_its_fleet_file_is_gone(tmp_path, capsys, source: str, model: str) -> None:
    """`brl plan FILE` then `brl simulate plan.json`: the plan carries the fleet, the file is not needed."""
    fleet_file = tmp_path / f"myfleet{Path(source).suffix}"
    text = Path(source).read_text()
    fleet_file.write_text(text.replace("name: local-cpu\n", ""))  # the YAML's name then is its stem
    fleet = bundled.cluster(str(fleet_file))
    assert fleet.name == "myfleet" and "myfleet" not in bundled.cluster_names()
    plan_path = tmp_path / "plan.json"
    args = ["plan", str(fleet_file), "--model", model, "--method", "petals", "--no-png", "--quiet"]
    assert main([*args, "-o", str(plan_path)]) == 0
    fleet_file.unlink()
    embedded = load_plan(plan_path).cluster
    assert embedded is not None and embedded.nodes == fleet.nodes and embedded.links == fleet.links
    capsys.readouterr()
    run = [
        "simulate",
        str(plan_path),
        "--duration",
        "20",
        "--warmup",
        "5",
        "--no-plots",
        "-o",
        str(tmp_path / "o"),
    ]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert f"on myfleet, {model}" in out
    data = json.loads((tmp_path / "o" / "result.json").read_text())
    assert data["provenance"]["cluster"] == "myfleet" and data["admitted"] > 0 and data["total_tokens"] > 0


def test_simulate_a_bundled_layout_by_name(tmp_path, capsys) -> None:
    args = ["simulate", "--layout", "ilp", "--cluster", "cluster24", "--model", "llama2-70b"]
    assert main([*args, "--duration", "30", "--warmup", "10", "--no-plots", "-o", str(tmp_path)]) == 0
    assert "max flow: 1289.56 tokens/s" in capsys.readouterr().out
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["provenance"]["layout"] == "ilp" and data["provenance"]["placement"] is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--layout", "magic", "--cluster", "cluster24"],
            "expected one of: homogeneous, ilp, ilp-single, petals, swarm",
        ),
        (["--layout", "ilp"], "--layout needs --cluster"),
        (["--layout", "ilp", "--cluster", "cluster24", "--placement", ILP], "not --layout and --placement"),
    ],
    ids=["unknown-name", "no-cluster", "two-sources"],
)
def test_bad_layouts_exit_2_with_one_line(capsys, args: list[str], expected: str) -> None:
    assert main(["simulate", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_simulate_a_failure_with_and_without_replanning(tmp_path, capsys) -> None:
    # n10 (A100) is the only holder of layers [60, 68) in the ILP layout: without re-planning nothing
    # finishes after it dies; with it, service resumes once the new plan's layers are loaded.
    args = ["simulate", "--cluster", "cluster24", "--layout", "ilp", "--duration", "70", "--warmup", "10"]
    fail = ["--fail", "n10@20", "--replan", "--replan-time-limit", "1", "--seed", "2"]
    code = main([*args, *fail, "-o", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "after it without re-plan 0.0" in out and "without re-plan never" in out
    data = json.loads((tmp_path / "result.json").read_text())
    (t,) = data["transitions"]
    # detection 2 s + planning 1 s + the slowest node's load (whole layers of 1.53 GB at 1 GB/s)
    assert t["recover_s"] == pytest.approx(data["recover_s"])
    loads = max(m["load_s"] for m in t["moves"])
    assert data["recover_s"] <= 3.0 + loads + 1e-6 and loads == pytest.approx(round(loads / 1.53) * 1.53)
    assert data["layers_moved"] >= 8 and data["transition_s"] > 0
    assert data["decode_tok_per_s_before"] > 0 and data["decode_tok_per_s_after_without_replan"] == 0
    assert data["decode_tok_per_s_after_with_replan"] > 0 and data["recover_s_without_replan"] is None
    assert data["without_replan"]["lost"] > 0
    assert (tmp_path / "replan.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--replan"]) == 2
    assert "--replan needs a failure" in capsys.readouterr().err


def test_find_capacity_reports_the_rate_and_the_latencies_around_it(tmp_path, capsys) -> None:
    args = ["simulate", "--cluster", "cluster24", "--layout", "ilp", "--find-capacity"]
    targets = ["--ttft-p95", "5", "--tpot-p95", "1.5", "--duration", "300", "--tolerance", "0.1"]
    assert main([*args, *targets, "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "capacity: " in out and "requests/s" in out and "simulations in" in out
    data = json.loads((tmp_path / "capacity.json").read_text())
    assert data["simulations"] == len(data["probes"]) >= 2
    at, fail = data["at"], data["first_failing"]
    assert at["ttft_p95_s"] <= 5 and at["tpot_p95_s"] <= 1.5 and at["unserved"] == 0
    assert f"meets at {at['rate_tok_per_s']:.1f} tokens/s" in out
    if fail is not None:
        assert fail["rate_tok_per_s"] > at["rate_tok_per_s"]
        assert fail["ttft_p95_s"] > 5 or fail["tpot_p95_s"] > 1.5 or fail["unserved"] > 0
        assert f"fails at {fail['rate_tok_per_s']:.1f} tokens/s" in out
    assert data["config"]["mode"] == "online" and data["ttft_p95_target_s"] == 5.0


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--find-capacity", "--tpot-p95", "1.5"], "--ttft-p95"),
        (["--find-capacity", "--ttft-p95", "5"], "--tpot-p95"),
        (["--find-capacity", "--ttft-p95", "0", "--tpot-p95", "1"], "--ttft-p95"),
        (["--find-capacity", "--ttft-p95", "5", "--tpot-p95", "-1"], "--tpot-p95"),
        (["--find-capacity", "--ttft-p95", "5", "--tpot-p95", "1", "--tolerance", "1"], "--tolerance"),
        (["--find-capacity", "--ttft-p95", "5", "--tpot-p95", "1", "--mode", "online"], "--mode"),
        (["--ttft-p95", "5"], "--ttft-p95"),
    ],
)
def test_bad_capacity_flags_exit_2_naming_the_flag(capsys, extra: list[str], flag: str) -> None:
    assert main(["simulate", "--cluster", "cluster24", "--layout", "ilp", *extra]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


def test_the_engine_is_chosen_and_named_and_both_give_one_answer(tmp_path, capsys) -> None:
    base = ["simulate", "--cluster", "cluster24", "--placement", ILP, "--duration", "30", "--warmup", "10"]
    results = {}
    for engine in ("python", "compiled"):
        assert main([*base, "--engine", engine, "-o", str(tmp_path / engine)]) == 0
        assert f"({engine} engine)" in capsys.readouterr().out
        results[engine] = json.loads((tmp_path / engine / "result.json").read_text())
    for engine, result in results.items():
        assert result["config"].pop("engine") == engine
        assert result.pop("wall_s") > 0
    assert results["python"] == results["compiled"]
    # Where the compiled engine cannot run, asking for it is a bad input that says why.
    assert main([*base, "--engine", "compiled", "--policy", "swarm", "-o", str(tmp_path / "x")]) == 2
    assert "swarm" in capsys.readouterr().err
