"""Re-planning through the planner service on real loopback servers (REST /v1/replans and gRPC): a plan of
the four-worker CPU fleet loses a node, gains one, is judged by the simulator; bad changes get a 4xx /
INVALID_ARGUMENT naming the field; replans are jobs of their own (list, get, cancel, delete)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from planner import bundled
from planner.formats.plan_json import plan_from_dict, plan_to_dict
from planner.solvers import solve
from protos import planner_pb2 as pb
from protos import planner_pb2_grpc as pb_grpc
from services.jobs.serving import RunningServers
from services.planner_service.main import settings_from, start
from tests.services.jobs.client import API_KEY, running, wait_job

METADATA = (("authorization", f"Bearer {API_KEY}"),)
PLAN = object()  # stands for the fixture's plan in parameters


@pytest.fixture(scope="module")
def plan_json() -> dict[str, Any]:
    """A petals plan of local-cpu4 (fast, fast2, mid, slow) for SmolLM2: it embeds its fleet and model."""
    cluster, model = bundled.cluster("local-cpu4"), bundled.model("smollm2-135m")
    plan = solve(
        "petals", cluster, model, bundled.profiles(model), seed=0, time_limit_s=5, clock=time.monotonic
    )
    return plan_to_dict(plan)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = Path(tmp_path_factory.mktemp("replans")) / "planner.db"
    values = {"db_path": str(db), "port": 0, "grpc_port": 0, "api_key": API_KEY, "max_workers": 1}
    with running(lambda: start(settings_from(values))) as pair:
        yield pair


def _replan(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/replans", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == response.json()["url"]
    return wait_job(client, response.json()["url"])


def test_lost_node_is_replanned_and_every_layer_covered(
    service: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]
) -> None:
    _, client = service
    job = _replan(client, {"plan": plan_json, "lose": ["fast"], "time_limit_s": 1, "label": "lose fast"})
    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "replan" and job["label"] == "lose fast"
    result = job["result"]
    new = plan_from_dict(result["plan"])
    assert "fast" not in new.placement.ranges and not new.placement.uncovered()
    assert new.cluster is not None and not new.cluster.has_node("fast")
    assert new.provenance["job_id"] == job["id"] and new.provenance["service"] == "planner-service"
    # The figures describe the moves: layers moved is the sum of the layers each node loads.
    assert result["layers_moved"] == sum(m["layers_to_load"] for m in result["moves"])
    assert result["max_flow_after_tok_per_s"] > 0 and result["simulated"] is None
    assert all(m["node"] != "fast" for m in result["moves"])
    # The new plan is fetchable like any plan: under /v1/replans and under /v1/plans (the coordinator's
    # plan swap by id reads the latter).
    assert client.get(f"/v1/replans/{job['id']}/plan").json() == result["plan"]
    assert client.get(f"/v1/plans/{job['id']}/plan").json() == result["plan"]
    # Replans are listed apart from plans, and a plan route does not answer for a replan.
    assert job["id"] in [j["id"] for j in client.get("/v1/replans").json()["items"]]
    assert job["id"] not in [j["id"] for j in client.get("/v1/plans").json()["items"]]
    assert client.get(f"/v1/plans/{job['id']}").status_code == 404


def test_joining_node_gets_a_name_and_a_place_in_the_fleet(
    service: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]
) -> None:
    _, client = service
    job = _replan(client, {"plan": plan_json, "join": ["CPU-FAST:1"], "slow": {"slow": 0.5}, "min_gain": 0})
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["joined"] == ["cpu-fast-join1"]
    new = plan_from_dict(job["result"]["plan"])
    assert new.cluster is not None and new.cluster.node("cpu-fast-join1").gpu_type == "cpu-fast"
    assert len(new.cluster.nodes) == 5 and job["result"]["nodes"] == 5
    assert not new.placement.uncovered()


def test_simulate_reports_decode_before_and_after(
    service: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]
) -> None:
    _, client = service
    job = _replan(client, {"plan": plan_json, "lose": ["fast2"], "simulate": True, "time_limit_s": 2})
    assert job["status"] == "succeeded", job["error"]
    simulated = job["result"]["simulated"]
    assert simulated["decode_tok_per_s_before"] >= 0 and simulated["decode_tok_per_s_after"] > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lose": ["n99"]}, "lose.0"),
        ({"lose": ["fast", "fast"]}, "lose"),
        ({"join": ["a100:2"]}, "join.0"),
        ({"join": ["cpu-fast"]}, "join.0"),
        ({"join": ["cpu-fast:0"]}, "join.0"),
        ({"slow": {"nope": 0.5}}, "slow.nope"),
        ({"slow": {"mid": 1.5}}, "slow.mid"),
        ({"lose": ["mid"], "slow": {"mid": 0.5}}, "slow.mid"),
        ({"lose": ["fast", "fast2", "mid", "slow"]}, "lose"),
    ],
)
def test_bad_changes_are_400_naming_the_field(
    service: tuple[RunningServers, httpx.Client],
    plan_json: dict[str, Any],
    change: dict[str, Any],
    field: str,
) -> None:
    _, client = service
    response = client.post("/v1/replans", json={"plan": plan_json, **change})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error", error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lose": ["fast"]}, "plan"),
        ({"plan": "x", "lose": ["fast"]}, "plan"),
        ({"plan": {"format": "brl-plan/1"}, "lose": ["fast"]}, "plan"),
        ({"plan": PLAN, "lose": ["fast"], "time_limit_s": 0}, "time_limit_s"),
        ({"plan": PLAN, "lose": ["fast"], "budget_layers": -1}, "budget_layers"),
        ({"plan": PLAN, "lose": ["fast"], "surprise": 1}, "surprise"),
        ({"plan": PLAN}, "lose, join or slow"),
    ],
)
def test_malformed_bodies_name_the_field(
    service: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    _, client = service
    full = {k: plan_json if v is PLAN else v for k, v in body.items()}
    response = client.post("/v1/replans", json=full)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert (error["param"] or "").startswith(field) or field in error["message"], error


def test_auth_cancel_and_delete(
    service: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]
) -> None:
    servers, client = service
    body = {"plan": plan_json, "lose": ["slow"], "time_limit_s": 0.5}
    denied = httpx.post(f"{servers.base_url}/v1/replans", json=body)
    assert denied.status_code == 401
    job = _replan(client, body)
    assert job["status"] == "succeeded", job["error"]
    # A finished job is left as it is by a cancel, and a delete removes it.
    assert client.post(f"/v1/replans/{job['id']}/cancel").json()["status"] == "succeeded"
    assert httpx.delete(f"{servers.base_url}/v1/replans/{job['id']}").status_code == 401
    assert client.delete(f"/v1/replans/{job['id']}").status_code == 204
    assert client.get(f"/v1/replans/{job['id']}").status_code == 404
    assert client.delete(f"/v1/replans/{job['id']}").status_code == 404


def test_openapi_documents_the_replan_routes(service: tuple[RunningServers, httpx.Client]) -> None:
    _, client = service
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert {"post", "get"} <= set(paths["/v1/replans"])
    assert {"get", "delete"} <= set(paths["/v1/replans/{job_id}"])
    assert "post" in paths["/v1/replans/{job_id}/cancel"] and "get" in paths["/v1/replans/{job_id}/plan"]
    schema = doc["components"]["schemas"]["ReplanRequest"]
    assert schema["required"] == ["plan"] and schema["additionalProperties"] is False
    assert schema["properties"]["time_limit_s"]["exclusiveMinimum"] == 0


def test_grpc_replan_watch_and_errors(
    service: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]
) -> None:
    servers, _ = service
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        stub = pb_grpc.PlannerStub(channel)
        request = pb.SubmitReplanRequest(
            plan_json=json.dumps(plan_json), lose=["mid"], join=["cpu-mid:1"], time_limit_s=1, min_gain=0
        )
        with pytest.raises(grpc.RpcError) as denied:
            stub.SubmitReplan(request)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for bad, field in (
            (pb.SubmitReplanRequest(plan_json=json.dumps(plan_json), lose=["n99"]), "lose.0"),
            (pb.SubmitReplanRequest(plan_json=json.dumps(plan_json), join=["tpu:1"]), "join.0"),
            (pb.SubmitReplanRequest(plan_json="{", lose=["mid"]), "plan_json"),
            (pb.SubmitReplanRequest(lose=["mid"]), "plan_json"),
        ):
            with pytest.raises(grpc.RpcError) as invalid:
                stub.SubmitReplan(bad, metadata=METADATA)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in invalid.value.details()
        job = stub.SubmitReplan(request, metadata=METADATA)
        updates = list(stub.WatchReplan(pb.JobRef(id=job.id), timeout=60))
        assert updates and updates[-1].status == "succeeded", updates[-1].error
        done = stub.GetReplan(pb.JobRef(id=job.id))
        new = plan_from_dict(json.loads(done.plan_json))
        assert "mid" not in new.placement.ranges and not new.placement.uncovered()
        result = json.loads(done.result_json)
        assert result["joined"] == ["cpu-mid-join1"] and result["plan"] == json.loads(done.plan_json)
        assert job.id in [j.id for j in stub.ListReplans(pb.ListPlansRequest()).items]
        assert job.id not in [j.id for j in stub.ListPlans(pb.ListPlansRequest()).items]
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetPlan(pb.JobRef(id=job.id))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.DeleteReplan(pb.JobRef(id=job.id), metadata=METADATA).id == job.id
        with pytest.raises(grpc.RpcError) as gone:
            stub.GetReplan(pb.JobRef(id=job.id))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
