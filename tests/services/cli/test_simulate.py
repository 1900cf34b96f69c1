import json

from planner import bundled
from planner.formats.plan_json import save_plan
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
    ]:
        assert main(["simulate", *common, *bad]) == 2
        assert field in capsys.readouterr().err
