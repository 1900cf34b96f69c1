"""The simulator service on real loopback servers, fetching plans from a real planner service: a dry run
by plan id, inline plans, plots, determinism, cancel, auth, malformed requests, and gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from planner.errors import NoRoute
from protos import planner_pb2
from protos import simulator_pb2 as pb
from protos import simulator_pb2_grpc as pb_grpc
from services.http_errors import NotFound
from services.jobs.serving import RunningServers
from services.planner_service.main import settings_from as planner_settings
from services.planner_service.main import start as start_planner
from services.simulator_service.main import settings_from, start
from services.simulator_service.plans import fetch_plan
from tests.services.jobs.client import API_KEY, running, wait_job

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHORT = {"mode": "offline", "duration_s": 30, "warmup_s": 5, "seed": 3}


@pytest.fixture(scope="module")
def planner_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("planner") / "planner.db"


@pytest.fixture(scope="module")
def planner(planner_db: Path) -> Iterator[tuple[RunningServers, httpx.Client]]:
    settings = planner_settings({"db_path": str(planner_db), "port": 0, "api_key": API_KEY, "max_workers": 1})
    with running(lambda: start_planner(settings)) as pair:
        yield pair


@pytest.fixture(scope="module")
def plan_job(planner: tuple[RunningServers, httpx.Client]) -> dict[str, Any]:
    _, client = planner
    body = {"cluster": "cluster24", "model": "llama2-70b", "method": "petals", "time_limit_s": 5}
    job = wait_job(client, client.post("/v1/plans", json=body).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.fixture(scope="module")
def simulator(
    tmp_path_factory: pytest.TempPathFactory, planner: tuple[RunningServers, httpx.Client]
) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = tmp_path_factory.mktemp("simulator") / "simulator.db"
    settings = settings_from(
        {
            "db_path": str(db),
            "port": 0,
            "grpc_port": 0,
            "api_key": API_KEY,
            "planner_url": planner[0].base_url,
            "planner_api_key": API_KEY,
            "max_workers": 1,
            "max_queued": 2,
            "cancel_grace_s": 0.5,
            "max_duration_s": 86400,
        }
    )
    with running(lambda: start(settings)) as pair:
        yield pair


@pytest.fixture(scope="module")
def dry_run(simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any]) -> dict[str, Any]:
    _, client = simulator
    response = client.post("/v1/simulations", json={"plan_id": plan_job["id"], **SHORT})
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["url"])


def test_dry_run_of_a_plan_by_id(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any], dry_run: dict[str, Any]
) -> None:
    _, client = simulator
    assert dry_run["status"] == "succeeded", dry_run["error"]
    summary = dry_run["result"]["summary"]
    plan = plan_job["result"]["plan"]
    assert summary["max_flow_tok_per_s"] == pytest.approx(plan["objective_tok_per_s"], rel=1e-3)
    assert summary["decode_tok_per_s"] > 0 and summary["admitted"] > 0
    assert dry_run["result"]["result"]["config"]["duration_s"] == 30
    # The stored request is self-contained: the plan and the fleet it was made for were copied in.
    assert dry_run["request"]["plan"] == plan and dry_run["request"]["cluster"] == "cluster24"
    assert dry_run["progress"]["extra"]["fraction"] == 1.0


def test_plots_are_pngs(simulator: tuple[RunningServers, httpx.Client], dry_run: dict[str, Any]) -> None:
    _, client = simulator
    plots = client.get(f"/v1/simulations/{dry_run['id']}/plots").json()["plots"]
    assert {"throughput", "latency_cdf", "placement"} <= {p["name"] for p in plots}
    for p in plots:
        response = client.get(p["url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG_MAGIC)
    assert client.get(f"/v1/simulations/{dry_run['id']}/plots/nope.png").status_code == 404


def test_inline_plan_same_seed_same_result(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any], dry_run: dict[str, Any]
) -> None:
    _, client = simulator
    body = {"plan": plan_job["result"]["plan"], **SHORT, "plots": False}
    job = wait_job(client, client.post("/v1/simulations", json=body).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["summary"] == dry_run["result"]["summary"]
    assert job["result"]["plots"] == []
    listed = [j["id"] for j in client.get("/v1/simulations").json()["items"]]
    assert job["id"] in listed and dry_run["id"] in listed


def test_online_with_inline_workload(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any]
) -> None:
    _, client = simulator
    body = {
        "plan_id": plan_job["id"],
        "mode": "online",
        "policy": "swarm",
        "duration_s": 30,
        "lengths_pairs": [[200, 20], [400, 40]],
        "arrival_counts": [5, 0, 5, 5],
        "target_tok_per_s": 300,
        "plots": False,
    }
    job = wait_job(client, client.post("/v1/simulations", json=body).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["summary"]["finished"] > 0
    assert job["result"]["result"]["config"]["policy"] == "swarm"


def test_deployment_costs_slow_the_dry_run(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any], dry_run: dict[str, Any]
) -> None:
    _, client = simulator
    nodes = list(plan_job["result"]["plan"]["placement"])
    costs = {
        "throttle": {nodes[0]: 0.5},
        "hosts": [{"name": "box", "cores": 1, "nodes": nodes[:2], "coordinator": True}],
        "coordinator_cpu_s_per_iteration": 0.002,
        "pipeline_depth": 2,
        "dead_end": "keep-path",
    }
    body = {"plan_id": plan_job["id"], **SHORT, "plots": False, **costs}
    job = wait_job(client, client.post("/v1/simulations", json=body).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    config = job["result"]["result"]["config"]
    assert config["throttle"] == {nodes[0]: 0.5} and config["hosts"][0]["nodes"] == nodes[:2]
    assert config["coordinator_cpu_s_per_iteration"] == 0.002 and config["pipeline_depth"] == 2
    assert config["dead_end"] == "keep-path"
    before, after = dry_run["result"]["summary"], job["result"]["summary"]
    assert after["decode_tok_per_s"] < before["decode_tok_per_s"]


def test_unroutable_layout_is_refused_with_422(
    simulator: tuple[RunningServers, httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NoRoute met while turning the caller's layout into a plan is the caller's error (422, code
    no_route), not the 503 of a serving NoRoute. No bundled layout reaches it, so the max-flow is made to
    raise."""
    from simulator import inputs as sim_inputs

    def no_route(*args: Any, **kwargs: Any) -> Any:
        raise NoRoute("no chain of the layout covers layers [0, 80)", uncovered=((0, 80),))

    monkeypatch.setattr(sim_inputs, "plan_for_placement", no_route)
    _, client = simulator
    body = {"layout": "ilp", "cluster": "cluster24", "model": "llama2-70b", **SHORT, "plots": False}
    response = client.post("/v1/simulations", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "no_route" and "[0, 80)" in response.json()["error"]["message"]


def test_published_layout_dry_run(simulator: tuple[RunningServers, httpx.Client]) -> None:
    """The paper's ILP layout on cluster24: its max-flow is the published 1289.56 tokens/s."""
    _, client = simulator
    body = {"layout": "ilp", "cluster": "cluster24", "model": "llama2-70b", **SHORT, "plots": False}
    job = wait_job(client, client.post("/v1/simulations", json=body).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["summary"]["max_flow_tok_per_s"] == pytest.approx(1289.56, abs=0.01)
    assert job["request"]["plan"]["method"] == "ilp"


def test_cancel_long_simulation(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any]
) -> None:
    _, client = simulator
    body = {"plan_id": plan_job["id"], "mode": "offline", "duration_s": 20000, "plots": False}
    job = client.post("/v1/simulations", json=body).json()
    wait_job(client, job["url"], ("running", "succeeded", "failed"))
    # DELETE does not stop a live job: it says to cancel first.
    refused = client.delete(f"/v1/simulations/{job['id']}")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["error"]["message"]
    assert client.post(f"/v1/simulations/{job['id']}/cancel").status_code == 200
    assert wait_job(client, job["url"])["status"] == "cancelled"
    assert client.delete(f"/v1/simulations/{job['id']}").status_code == 204


def test_auth(simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any]) -> None:
    servers, _ = simulator
    with httpx.Client(base_url=servers.base_url) as anonymous:
        response = anonymous.post("/v1/simulations", json={"plan_id": plan_job["id"]})
        assert response.status_code == 401 and "API key" in response.json()["error"]["message"]
        assert anonymous.post(f"/v1/simulations/{'0' * 32}/cancel").status_code == 401
        assert anonymous.get("/v1/simulations").status_code == 200


def _bad_plan(plan: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**plan, **changes}


@pytest.mark.parametrize("case", range(23))
def test_malformed_requests_name_the_field(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any], case: int
) -> None:
    _, client = simulator
    pid, plan = plan_job["id"], plan_job["result"]["plan"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "plan_id"),
        ({"plan_id": pid, "plan": plan}, "plan_id"),
        ({"plan_id": "xyz"}, "plan_id"),
        ({"plan_id": "0" * 32}, "plan"),
        ({"plan_id": pid, "mode": "batch"}, "mode"),
        ({"plan_id": pid, "policy": "telepathy"}, "policy"),
        ({"plan_id": pid, "lengths": "imdb"}, "lengths"),
        ({"plan_id": pid, "duration_s": -1}, "duration_s"),
        ({"plan_id": pid, "duration_s": 10**6}, "duration_s"),
        ({"plan_id": pid, "duration_s": 10, "warmup_s": 20}, "warmup_s"),
        ({"plan_id": pid, "lengths_pairs": [[0, 5]]}, "lengths_pairs"),
        ({"plan_id": pid, "arrival_counts": [0, 0]}, "arrival_counts"),
        ({"plan_id": pid, "kv_high_water": 1.5}, "kv_high_water"),
        ({"plan": _bad_plan(plan, placement={**plan["placement"], "n99": [0, 4]})}, "n99"),
        ({"plan": _bad_plan(plan, num_layers=100)}, "num_layers"),
        ({"plan": {"format": "brl-plan/1"}}, "cluster_name"),
        ({"layout": "ilp", "cluster": "cluster24"}, "layout"),
        ({"layout": "genius", "cluster": "cluster24", "model": "llama2-70b"}, "layout"),
        ({"plan_id": pid, "throttle": {"ghost": 0.5}}, "throttle.ghost"),
        ({"plan_id": pid, "throttle": {next(iter(plan["placement"])): 1.5}}, "throttle"),
        ({"plan_id": pid, "hosts": [{"cores": 0}]}, "cores"),
        ({"plan_id": pid, "step_overhead_s": {"ghost": 0.01}}, "step_overhead_s.ghost"),
        ({"plan_id": pid, "hosts": [{"cores": 2, "nodes": ["ghost"]}]}, "hosts.0.nodes"),
    ]
    body, field = cases[case]
    response = client.post("/v1/simulations", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.json()["error"]["message"], response.json()


def test_grpc_submit_get_plot(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any]
) -> None:
    servers, _ = simulator
    metadata = (("authorization", f"Bearer {API_KEY}"),)
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        stub = pb_grpc.SimulatorStub(channel)
        request = pb.SubmitSimulationRequest(
            plan_json=json.dumps(plan_job["result"]["plan"]), duration_s=30, warmup_s=5, seed=1
        )
        with pytest.raises(grpc.RpcError) as denied:
            stub.SubmitSimulation(request)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as invalid:
            stub.SubmitSimulation(
                pb.SubmitSimulationRequest(plan_id=plan_job["id"], mode="batch"), metadata=metadata
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mode" in invalid.value.details()
        job = stub.SubmitSimulation(request, metadata=metadata)
        updates = list(stub.WatchSimulation(planner_pb2.JobRef(id=job.id), timeout=60))
        assert updates[-1].status == "succeeded", updates[-1].error
        job = stub.GetSimulation(planner_pb2.JobRef(id=job.id))
        assert job.status == "succeeded" and job.summary_json == updates[-1].summary_json
        with pytest.raises(grpc.RpcError) as missing:
            list(stub.WatchSimulation(planner_pb2.JobRef(id="c" * 32), timeout=10))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert json.loads(job.summary_json)["decode_tok_per_s"] > 0
        assert "throughput" in job.plots
        plot = stub.GetPlot(pb.PlotRef(id=job.id, name="throughput"))
        assert plot.data.startswith(PNG_MAGIC)


def test_planner_db_as_plan_source(tmp_path: Path, planner_db: Path, plan_job: dict[str, Any]) -> None:
    """Sharing the planner's SQLite file (one volume) works like fetching over HTTP."""
    settings = settings_from({"db_path": str(tmp_path / "s.db"), "planner_db": str(planner_db)})
    plan, fleet = fetch_plan(settings, plan_job["id"])
    assert plan == plan_job["result"]["plan"]
    assert fleet == {"cluster": "cluster24", "model": "llama2-70b"}
    with pytest.raises(NotFound):
        fetch_plan(settings, "e" * 32)


def test_results_and_plots_survive_a_restart(tmp_path: Path, plan_job: dict[str, Any]) -> None:
    settings = settings_from(
        {"db_path": str(tmp_path / "sim.db"), "port": 0, "api_key": API_KEY, "max_workers": 1}
    )
    with running(lambda: start(settings)) as (_, client):
        body = {"plan": plan_job["result"]["plan"], **SHORT}
        done = wait_job(client, client.post("/v1/simulations", json=body).json()["url"])
        assert done["status"] == "succeeded", done["error"]
        png = client.get(f"/v1/simulations/{done['id']}/plots/throughput.png").content
    with running(lambda: start(settings)) as (_, client):
        again = client.get(f"/v1/simulations/{done['id']}").json()
        assert again["result"] == done["result"]
        assert client.get(f"/v1/simulations/{done['id']}/plots/throughput.png").content == png


def test_delete_removes_a_simulation_and_its_plots(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any]
) -> None:
    servers, client = simulator
    body = {"plan": plan_job["result"]["plan"], **SHORT, "duration_s": 10, "warmup_s": 1}
    done = wait_job(client, client.post("/v1/simulations", json=body).json()["url"])
    assert done["status"] == "succeeded" and done["result"]["plots"], done["error"]
    plot_url = f"/v1/simulations/{done['id']}/plots/throughput.png"
    assert client.get(plot_url).status_code == 200
    deleted = client.delete(f"/v1/simulations/{done['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"/v1/simulations/{done['id']}").status_code == 404
    assert client.get(plot_url).status_code == 404
    assert client.delete(f"/v1/simulations/{done['id']}").status_code == 404
    # Over gRPC: the same rule and the same auth.
    again = wait_job(client, client.post("/v1/simulations", json={**body, "plots": False}).json()["url"])
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        stub = pb_grpc.SimulatorStub(channel)
        ref = planner_pb2.JobRef(id=again["id"])
        with pytest.raises(grpc.RpcError) as denied:
            stub.DeleteSimulation(ref)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (
            stub.DeleteSimulation(ref, metadata=(("authorization", f"Bearer {API_KEY}"),)).id == again["id"]
        )
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetSimulation(ref)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


HOSTILE = [
    ('{"plan_id": "%s", "label": "\\ud800"}', "label"),
    ('{"plan_id": "%s", "throttle": {"\\udc00": 0.5}}', "throttle"),
    ('{"plan_id": "%s", "throttle": {"n0": NaN}}', "throttle.n0"),
    ('{"plan_id": "%s", "duration_s": Infinity}', "duration_s"),
    ('{"plan_id": "%s", "seed": 1' + "0" * 500 + "}", "seed"),
    ('{"plan_id": "%s", "lengths_pairs": [[1' + "0" * 40 + ", 5]]}", "lengths_pairs"),
    ('{"plan_id": "%s", "plan": ' + "[" * 300 + "]" * 300 + "}", "plan"),
]


@pytest.mark.parametrize(("raw", "field"), HOSTILE, ids=[f"{i}-{h[1]}" for i, h in enumerate(HOSTILE)])
def test_hostile_bodies_get_a_4xx_naming_the_field(
    simulator: tuple[RunningServers, httpx.Client], plan_job: dict[str, Any], raw: str, field: str
) -> None:
    _, client = simulator
    headers = {"content-type": "application/json"}
    response = client.post("/v1/simulations", content=(raw % plan_job["id"]).encode(), headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.json()["error"]["message"], response.text
