"""The planner service on real loopback servers: submit → poll → plan, evaluation, cancel, auth, limits,
restart persistence, OpenAPI, and gRPC."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from planner.errors import NoRoute, Unavailable
from planner.formats.plan_json import plan_from_dict
from protos import planner_pb2 as pb
from protos import planner_pb2_grpc as pb_grpc
from services.http_errors import NotFound
from services.jobs.serving import RunningServers
from services.planner_service.client import fetch_plan, submit_and_wait
from services.planner_service.main import settings_from, start
from tests.services.jobs.client import API_KEY, AUTH, running, wait_job

FAST = {
    "cluster": "cluster24",
    "model": "llama2-70b",
    "method": "petals",
    "time_limit_s": 5,
    "label": "fast one",
}
# A local search that runs to its time limit, reporting each better placement: still running when a test
# cancels it or restarts the service.
SLOW = {"cluster": "3cluster24", "model": "llama2-70b", "method": "search", "time_limit_s": 300}


def _start(db: Path, **overrides: Any) -> tuple[RunningServers, Any]:
    values = {
        "db_path": str(db),
        "port": 0,
        "grpc_port": 0,
        "api_key": API_KEY,
        "max_workers": 1,
        "max_queued": 2,
        "cancel_grace_s": 0.5,
        **overrides,
    }
    return start(settings_from(values))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = tmp_path_factory.mktemp("planner") / "planner.db"
    with running(lambda: _start(db)) as pair:
        yield pair


@pytest.fixture(scope="module")
def petals_job(service: tuple[RunningServers, httpx.Client]) -> dict[str, Any]:
    _, client = service
    response = client.post("/v1/plans", json=FAST)
    assert response.status_code == 202, response.text
    assert response.headers["location"].endswith(response.json()["id"])
    return wait_job(client, response.json()["url"])


def test_submit_poll_result(service: tuple[RunningServers, httpx.Client], petals_job: dict[str, Any]) -> None:
    _, client = service
    assert petals_job["status"] == "succeeded", petals_job["error"]
    plan = plan_from_dict(petals_job["result"]["plan"])
    assert plan.method == "petals" and plan.placement.num_layers == 80
    assert plan.objective_tok_per_s > 0
    assert plan.bound_tok_per_s is not None and plan.bound_tok_per_s >= plan.objective_tok_per_s
    # Reproducible: the plan records its inputs, seed and code version.
    assert plan.provenance["job_id"] == petals_job["id"] and plan.provenance["cluster"] == "cluster24"
    assert plan.provenance["seed"] == 0 and plan.provenance["code_version"]
    progress = petals_job["progress"]
    assert progress["incumbent_tok_per_s"] == pytest.approx(plan.objective_tok_per_s)
    assert progress["gap"] >= 0
    bare = client.get(f"/v1/plans/{petals_job['id']}/plan")
    assert bare.status_code == 200 and bare.json() == petals_job["result"]["plan"]
    listed = client.get("/v1/plans", params={"status": "succeeded"}).json()["items"]
    mine = [j for j in listed if j["id"] == petals_job["id"]]
    assert mine and mine[0]["method"] == "petals" and mine[0]["label"] == "fast one"
    assert mine[0]["result"] is None  # lists stay small


def test_evaluation_of_a_solved_placement_agrees(
    service: tuple[RunningServers, httpx.Client], petals_job: dict[str, Any]
) -> None:
    _, client = service
    plan = petals_job["result"]["plan"]
    body = {"cluster": "cluster24", "model": "llama2-70b", "placement": plan["placement"], "save": True}
    response = client.post("/v1/evaluations", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["max_flow_tok_per_s"] == pytest.approx(plan["objective_tok_per_s"], rel=1e-6)
    assert result["bound_tok_per_s"] >= result["max_flow_tok_per_s"]
    assert result["bottlenecks"], "a max-flow always has a saturated cut"
    stored = client.get(f"/v1/plans/{result['plan_id']}/plan")
    assert stored.status_code == 200 and stored.json()["method"] == "user"


def test_evaluation_reports_uncovered_layers(
    service: tuple[RunningServers, httpx.Client], petals_job: dict[str, Any]
) -> None:
    _, client = service
    placement = {n: r for n, r in petals_job["result"]["plan"]["placement"].items() if r[0] > 0}
    body = {"cluster": "cluster24", "model": "llama2-70b", "placement": placement}
    result = client.post("/v1/evaluations", json=body).json()
    assert result["max_flow_tok_per_s"] == 0
    assert result["uncovered_layers"] and result["uncovered_layers"][0][0] == 0


def test_cancel_running_solve(service: tuple[RunningServers, httpx.Client]) -> None:
    _, client = service
    job = client.post("/v1/plans", json=SLOW).json()
    running_job = wait_job(client, job["url"], ("running", "succeeded", "failed"))
    assert running_job["status"] == "running"
    # Progress comes from the worker process while the solve runs; the API answers meanwhile.
    deadline = time.monotonic() + 120
    while (running_job["progress"] or {}).get("incumbent_tok_per_s") is None and time.monotonic() < deadline:
        assert client.get("/healthz").status_code == 200
        time.sleep(0.2)
        running_job = client.get(job["url"]).json()
    progress = running_job["progress"]
    assert running_job["status"] == "running" and progress["incumbent_tok_per_s"] > 0
    assert progress["bound_tok_per_s"] >= progress["incumbent_tok_per_s"] and progress["elapsed_s"] >= 0
    response = client.post(f"/v1/plans/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    done = wait_job(client, job["url"])
    assert done["status"] == "cancelled"
    # Cancelling a finished job changes nothing and is not an error.
    assert client.post(f"/v1/plans/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"/v1/plans/{job['id']}/plan").status_code == 409


def test_auth_on_mutating_calls(service: tuple[RunningServers, httpx.Client]) -> None:
    servers, _ = service
    with httpx.Client(base_url=servers.base_url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            response = anonymous.post("/v1/plans", json=FAST, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"
        assert anonymous.post("/v1/evaluations", json={}).status_code == 401
        assert anonymous.get("/v1/plans").status_code == 200
        assert anonymous.get("/healthz").json() == {"status": "ok"}


def test_openapi_documents_constrained_bodies(service: tuple[RunningServers, httpx.Client]) -> None:
    _, client = service
    doc = client.get("/openapi.json").json()
    assert {"/v1/plans", "/v1/plans/{job_id}", "/v1/plans/{job_id}/cancel", "/v1/evaluations"} <= set(
        doc["paths"]
    )
    limit = doc["components"]["schemas"]["PlanRequest"]["properties"]["time_limit_s"]
    assert limit["exclusiveMinimum"] == 0 and "maximum" in limit


NO_MODEL = {k: v for k, v in FAST.items() if k != "model"}
LLAMA_30B_CONFIG = json.loads(
    (
        Path(__file__).resolve().parents[3] / "planner" / "data" / "models" / "llama1-30b" / "config.json"
    ).read_text()
)

MALFORMED: list[tuple[str, str, Any, str]] = [
    ("post", "/v1/plans", {**FAST, "time_limit_s": -1}, "time_limit_s"),
    ("post", "/v1/plans", {**FAST, "time_limit_s": "soon"}, "time_limit_s"),
    ("post", "/v1/plans", {**FAST, "time_limit_s": 10**9}, "time_limit_s"),
    ("post", "/v1/plans", {**FAST, "time_limit_s": 7200}, "time_limit_s"),  # over this service's limit
    ("post", "/v1/plans", {**FAST, "method": "magic"}, "method"),
    ("post", "/v1/plans", {**FAST, "method": "Bad Method!"}, "method"),
    ("post", "/v1/plans", {**FAST, "seed": -3}, "seed"),
    ("post", "/v1/plans", {**FAST, "solver": "gurobi"}, "solver"),
    ("post", "/v1/plans", {**FAST, "prune_k": 0}, "prune_k"),
    ("post", "/v1/plans", {**FAST, "cluster": "no-such-fleet"}, "cluster"),
    ("post", "/v1/plans", {**FAST, "cluster": "../../etc/passwd"}, "cluster"),
    ("post", "/v1/plans", {**FAST, "model": "gpt-17"}, "model"),
    ("post", "/v1/plans", {k: v for k, v in FAST.items() if k != "cluster"}, "cluster"),
    ("post", "/v1/plans", {**FAST, "cluster_text": "[NodeNames]\n"}, "cluster"),
    (
        "post",
        "/v1/plans",
        {**{k: v for k, v in FAST.items() if k != "cluster"}, "cluster_text": "nodes: [[["},
        "cluster_text",
    ),
    (
        "post",
        "/v1/plans",
        {**{k: v for k, v in FAST.items() if k != "model"}, "hf_config": {"num_hidden_layers": 2}},
        "profiles",
    ),
    (
        "post",
        "/v1/plans",
        {
            **{k: v for k, v in FAST.items() if k != "model"},
            "hf_config": {"num_hidden_layers": -2},
            "profiles": "llama2-70b",
        },
        "hidden_size",
    ),
    (
        "post",
        "/v1/plans",
        {**NO_MODEL, "hf_config": LLAMA_30B_CONFIG, "profiles": "llama2-70b"},
        "num_hidden_layers",
    ),
    ("post", "/v1/plans", {**FAST, "unexpected": 1}, "unexpected"),
    ("post", "/v1/plans", [1, 2, 3], "body"),
    ("post", "/v1/plans", "not json at all", "body"),
    ("post", "/v1/plans", {**FAST, "label": "x" * 500}, "label"),
    ("get", "/v1/plans/not-a-job-id", None, "job_id"),
    ("get", "/v1/plans/" + "0" * 32, None, "plan"),
    ("post", "/v1/plans/" + "0" * 32 + "/cancel", None, "plan"),
    ("get", "/v1/plans?limit=0", None, "limit"),
    ("get", "/v1/plans?status=sleeping", None, "status"),
    ("post", "/v1/evaluations", {"cluster": "cluster24", "model": "llama2-70b"}, "placement"),
    (
        "post",
        "/v1/evaluations",
        {"cluster": "cluster24", "model": "llama2-70b", "placement": {"n99": [0, 4]}},
        "placement.n99",
    ),
    (
        "post",
        "/v1/evaluations",
        {"cluster": "cluster24", "model": "llama2-70b", "placement": {"n0": [5, 2]}},
        "placement.n0",
    ),
    (
        "post",
        "/v1/evaluations",
        {"cluster": "cluster24", "model": "llama2-70b", "placement": {"n0": [0, 81]}},
        "placement.n0",
    ),
    (
        "post",
        "/v1/evaluations",
        {"cluster": "cluster24", "model": "llama2-70b", "placement": {"n0": "all"}},
        "placement.n0",
    ),
]


@pytest.mark.parametrize(
    ("verb", "path", "body", "field"), MALFORMED, ids=[f"{i}-{m[3]}" for i, m in enumerate(MALFORMED)]
)
def test_malformed_requests_name_the_field(
    service: tuple[RunningServers, httpx.Client], verb: str, path: str, body: Any, field: str
) -> None:
    _, client = service
    kwargs: dict[str, Any] = {}
    if isinstance(body, str):
        kwargs["content"] = body
        kwargs["headers"] = {**AUTH, "content-type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    response = client.request(verb.upper(), path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert field in error["message"], error
    assert error["type"] in ("invalid_request_error", "not_found_error")


def test_concurrency_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    with running(lambda: _start(tmp_path / "busy.db", max_workers=1, max_queued=0)) as (_, client):
        first = client.post("/v1/plans", json=SLOW)
        assert first.status_code == 202
        second = client.post("/v1/plans", json=FAST)
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1
        assert second.json()["error"]["type"] == "rate_limit_error"
        client.post(f"/v1/plans/{first.json()['id']}/cancel")
        assert wait_job(client, first.json()["url"])["status"] == "cancelled"
        assert client.post("/v1/plans", json=FAST).status_code == 202


def test_fleet_time_and_body_limits(tmp_path: Path) -> None:
    limits = {"max_nodes": 10, "max_time_limit_s": 30, "max_body_bytes": 20_000, "max_workers": 1}
    with running(lambda: _start(tmp_path / "limits.db", **limits)) as (_, client):
        big = client.post("/v1/plans", json=FAST)
        assert big.status_code == 400 and "24 nodes" in big.json()["error"]["message"]
        assert big.json()["error"]["param"] == "cluster"
        small = client.post("/v1/plans", json={**FAST, "cluster": "cluster10", "time_limit_s": 31})
        assert small.status_code == 400 and small.json()["error"]["param"] == "time_limit_s"
        huge = client.post("/v1/plans", json={**FAST, "label": "x" * 30_000})
        assert huge.status_code == 413 and "body" in huge.json()["error"]["message"]
        ok = client.post("/v1/plans", json={**FAST, "cluster": "cluster10", "model": "llama1-30b"})
        assert ok.status_code == 202, ok.text
        assert wait_job(client, ok.json()["url"])["status"] == "succeeded"
        # Ten small GPUs cannot hold LLaMA-2 70B: the job fails and says why.
        too_big = client.post("/v1/plans", json={**FAST, "cluster": "cluster10"})
        failed = wait_job(client, too_big.json()["url"])
        assert failed["status"] == "failed" and failed["error"]["type"] == "InfeasiblePlan"
        assert "layers" in failed["error"]["message"]


def test_restart_keeps_plans_and_fails_interrupted_jobs(tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    with running(lambda: _start(db, max_workers=1)) as (_, client):
        done = wait_job(client, client.post("/v1/plans", json=FAST).json()["url"])
        slow = client.post("/v1/plans", json=SLOW).json()
        wait_job(client, slow["url"], ("running",))
        # A second process on the same store would fail the live job: it is refused instead.
        with pytest.raises(Unavailable, match="one replica per store"):
            _start(db)
    with running(lambda: _start(db, max_workers=1)) as (_, client):
        again = client.get(f"/v1/plans/{done['id']}").json()
        assert again["status"] == "succeeded" and again["result"] == done["result"]
        cut = client.get(f"/v1/plans/{slow['id']}").json()
        assert cut["status"] == "failed"
        assert "submit it again" in cut["error"]["message"]


def test_grpc_submit_get_and_errors(
    service: tuple[RunningServers, httpx.Client], petals_job: dict[str, Any]
) -> None:
    servers, _ = service
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="brl.planner.Planner")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "brl.planner.Planner" in services and "grpc.health.v1.Health" in services
        stub = pb_grpc.PlannerStub(channel)
        request = pb.SubmitPlanRequest(
            inputs=pb.FleetAndModel(cluster="cluster24", model="llama2-70b"), method="swarm", time_limit_s=5
        )
        with pytest.raises(grpc.RpcError) as denied:
            stub.SubmitPlan(request)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {API_KEY}"),)
        bad = pb.SubmitPlanRequest(
            inputs=pb.FleetAndModel(cluster="cluster24", model="llama2-70b"), method="swarm", time_limit_s=-5
        )
        with pytest.raises(grpc.RpcError) as invalid:
            stub.SubmitPlan(bad, metadata=metadata)
        assert (
            invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "time_limit_s" in invalid.value.details()
        )
        job = stub.SubmitPlan(request, metadata=metadata)
        updates = list(stub.WatchPlan(pb.JobRef(id=job.id), timeout=60))
        assert updates and updates[-1].status == "succeeded", updates[-1].error
        assert all(u.status in ("queued", "running") for u in updates[:-1])
        job = stub.GetPlan(pb.JobRef(id=job.id))
        assert job.plan_json == updates[-1].plan_json
        plan = plan_from_dict(json.loads(job.plan_json))
        assert plan.method == "swarm" and plan.objective_tok_per_s > 0
        assert job.id in [j.id for j in stub.ListPlans(pb.ListPlansRequest()).items]
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetPlan(pb.JobRef(id="f" * 32))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        placement = {
            n: pb.LayerRange(start=r[0], end=r[1])
            for n, r in petals_job["result"]["plan"]["placement"].items()
        }
        evaluated = stub.Evaluate(
            pb.EvaluateRequest(
                inputs=pb.FleetAndModel(cluster="cluster24", model="llama2-70b"), placement=placement
            ),
            metadata=metadata,
        )
        assert evaluated.max_flow_tok_per_s == pytest.approx(
            petals_job["result"]["plan"]["objective_tok_per_s"]
        )
        assert evaluated.bottlenecks and evaluated.bound_tok_per_s >= evaluated.max_flow_tok_per_s


def test_unroutable_placement_is_422_and_failed_precondition(
    service: tuple[RunningServers, httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NoRoute met while evaluating the caller's placement is the caller's to fix: 422 over REST and
    FAILED_PRECONDITION over gRPC, not the 503/UNAVAILABLE of a serving NoRoute. No placement reaches
    NoRoute in an evaluation today (a gap evaluates to a max-flow of 0), so the max-flow is made to raise."""
    import services.planner_service.jobs as planner_jobs

    def no_route(*args: Any, **kwargs: Any) -> Any:
        raise NoRoute("no chain of the placement covers layers [1, 80)", uncovered=((1, 80),))

    monkeypatch.setattr(planner_jobs, "solve_max_flow", no_route)
    servers, client = service
    body = {"cluster": "cluster24", "model": "llama2-70b", "placement": {"n0": [0, 1]}}
    response = client.post("/v1/evaluations", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "no_route" and "[1, 80)" in error["message"]
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        request = pb.EvaluateRequest(
            inputs=pb.FleetAndModel(cluster="cluster24", model="llama2-70b"),
            placement={"n0": pb.LayerRange(start=0, end=1)},
        )
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.PlannerStub(channel).Evaluate(request, metadata=(("authorization", f"Bearer {API_KEY}"),))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "[1, 80)" in refused.value.details()


def test_client_fetches_plans(
    service: tuple[RunningServers, httpx.Client], petals_job: dict[str, Any]
) -> None:
    servers, _ = service
    plan = fetch_plan(servers.base_url, petals_job["id"])
    assert plan.objective_tok_per_s == pytest.approx(petals_job["result"]["plan"]["objective_tok_per_s"])
    with pytest.raises(NotFound):
        fetch_plan(servers.base_url, "a" * 32)
    job = submit_and_wait(servers.base_url, {**FAST, "method": "homogeneous"}, api_key=API_KEY, poll_s=0.1)
    assert job["status"] == "succeeded" and job["result"]["plan"]["method"] == "homogeneous"
    with pytest.raises(Unavailable):
        fetch_plan("http://127.0.0.1:9", petals_job["id"], timeout_s=2)


def test_metrics_count_jobs(service: tuple[RunningServers, httpx.Client], petals_job: dict[str, Any]) -> None:
    _, client = service
    text = client.get("/metrics").text
    counts = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("brl_jobs{")
    }
    assert counts['kind="plan",status="succeeded"'] >= 1
    assert "brl_job_workers 1.0" in text and "brl_job_queue_depth" in text


def test_inline_model_config(service: tuple[RunningServers, httpx.Client]) -> None:
    _, client = service
    body = {
        **NO_MODEL,
        "cluster": "cluster10",
        "hf_config": LLAMA_30B_CONFIG,
        "model_name": "my-30b",
        "profiles": "llama1-30b",
    }
    job = wait_job(client, client.post("/v1/plans", json=body).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["plan"]["model_name"] == "my-30b" and job["result"]["num_layers"] == 60


def test_inline_fleets_yaml_json_and_ini(service: tuple[RunningServers, httpx.Client]) -> None:
    """The same fleet sent three ways plans to the same max-flow as the bundled name."""
    from planner import bundled
    from planner.formats.cluster_yaml import cluster_to_dict, cluster_to_yaml

    _, client = service
    fleet = bundled.cluster("cluster10")
    ini = (Path(bundled.CLUSTERS_DIR) / "cluster10.ini").read_text()
    base = {"model": "llama1-30b", "method": "petals", "time_limit_s": 5}
    bodies = [
        {**base, "cluster": "cluster10"},
        {**base, "cluster_text": cluster_to_yaml(fleet)},
        {**base, "cluster_spec": cluster_to_dict(fleet)},
        {**base, "cluster_text": ini},
    ]
    values = []
    for body in bodies:  # one at a time: the fixture's service queues at most three jobs
        response = client.post("/v1/plans", json=body)
        assert response.status_code == 202, response.text
        job = wait_job(client, response.json()["url"])
        assert job["status"] == "succeeded", job["error"]
        values.append(job["result"]["plan"]["objective_tok_per_s"])
    assert values[0] > 0 and values == pytest.approx([values[0]] * 4)


HOSTILE = [
    # Lone surrogates: valid JSON escapes, but not text that can be written to a file or sent back.
    ('{"cluster": "cluster24", "model": "llama2-70b", "method": "petals", "label": "\\ud800"}', "label"),
    ('{"cluster_text": "nodes: [\\udfff]", "model": "llama2-70b"}', "cluster_text"),
    ('{"cluster_spec": {"\\ud800": 1}, "model": "llama2-70b"}', "cluster_spec"),
    ('{"cluster": "cluster24", "hf_config": {"x": "\\ud83d"}, "profiles": "llama2-70b"}', "hf_config.x"),
    # Numbers Python's json accepts but that are no numbers, or absurd ones.
    ('{"cluster": "cluster24", "model": "llama2-70b", "time_limit_s": NaN}', "time_limit_s"),
    ('{"cluster": "cluster24", "model": "llama2-70b", "time_limit_s": 1e999}', "time_limit_s"),
    (
        '{"cluster": "cluster24", "hf_config": {"num_hidden_layers": Infinity}, "profiles": "llama2-70b"}',
        "hf_config",
    ),
    ('{"cluster": "cluster24", "model": "llama2-70b", "seed": 1' + "0" * 400 + "}", "seed"),
    (
        '{"cluster": "cluster24", "hf_config": {"num_hidden_layers": 1'
        + "0" * 30
        + '}, "profiles": "llama2-70b"}',
        "hf_config",
    ),
    # Deep nesting: within the recursion limit, and far beyond it.
    (
        '{"cluster": "cluster24", "model": "llama2-70b", "hf_config": ' + "[" * 200 + "]" * 200 + "}",
        "hf_config",
    ),
    ("[" * 100_000 + "]" * 100_000, "body"),
]


@pytest.mark.parametrize(("raw", "field"), HOSTILE, ids=[f"{i}-{h[1]}" for i, h in enumerate(HOSTILE)])
def test_hostile_bodies_get_a_4xx_naming_the_field(
    service: tuple[RunningServers, httpx.Client], raw: str, field: str
) -> None:
    _, client = service
    headers = {**AUTH, "content-type": "application/json"}
    for path in ("/v1/plans", "/v1/evaluations"):
        response = client.post(path, content=raw.encode(), headers=headers)
        assert 400 <= response.status_code < 500, response.text
        assert field in response.json()["error"]["message"] or field == "body", response.text
    assert client.get("/healthz").status_code == 200


def test_delete_removes_finished_jobs_only(service: tuple[RunningServers, httpx.Client]) -> None:
    servers, client = service
    done = wait_job(client, client.post("/v1/plans", json={**FAST, "method": "swarm"}).json()["url"])
    slow = client.post("/v1/plans", json=SLOW).json()
    wait_job(client, slow["url"], ("running",))
    # A running job is not silently cancelled by DELETE: 409 says to cancel first.
    refused = client.delete(f"/v1/plans/{slow['id']}")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["error"]["message"]
    client.post(f"/v1/plans/{slow['id']}/cancel")
    assert wait_job(client, slow["url"])["status"] == "cancelled"
    assert client.delete(f"/v1/plans/{slow['id']}").status_code == 204
    with httpx.Client(base_url=servers.base_url) as anonymous:
        assert anonymous.delete(f"/v1/plans/{done['id']}").status_code == 401
    gone = client.delete(f"/v1/plans/{done['id']}")
    assert gone.status_code == 204 and gone.content == b""
    for job_id in (done["id"], slow["id"]):
        assert client.get(f"/v1/plans/{job_id}").status_code == 404
        assert client.delete(f"/v1/plans/{job_id}").status_code == 404
    assert done["id"] not in [j["id"] for j in client.get("/v1/plans").json()["items"]]
    # The same over gRPC.
    again = wait_job(client, client.post("/v1/plans", json={**FAST, "method": "swarm"}).json()["url"])
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        stub = pb_grpc.PlannerStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.DeletePlan(pb.JobRef(id=again["id"]))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {API_KEY}"),)
        assert stub.DeletePlan(pb.JobRef(id=again["id"]), metadata=metadata).id == again["id"]
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetPlan(pb.JobRef(id=again["id"]))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_bodies_get_the_same_checks(service: tuple[RunningServers, httpx.Client]) -> None:
    servers, _ = service
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        request = pb.SubmitPlanRequest(
            inputs=pb.FleetAndModel(cluster="cluster24", cluster_spec_json='{"name": "\\ud800"}'),
            method="petals",
        )
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.PlannerStub(channel).SubmitPlan(
                request, metadata=(("authorization", f"Bearer {API_KEY}"),)
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "surrogate" in refused.value.details()


def test_scale_jobs_are_judged_by_the_simulator_as_the_cli_judges_them(
    service: tuple[RunningServers, httpx.Client],
) -> None:
    import random

    from planner.formats.cluster_yaml import cluster_to_dict
    from planner.generate import single_region

    _, client = service
    fleet = single_region({"A100": 10, "L4": 20, "T4": 20}, random.Random(0))
    body = {
        "cluster_spec": cluster_to_dict(fleet),
        "model": "llama2-70b",
        "method": "scale",
        "time_limit_s": 20,
    }
    response = client.post("/v1/plans", json=body)
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["url"], timeout_s=120)
    assert job["status"] == "succeeded", job["error"]
    plan = job["result"]["plan"]
    region = plan["solver_stats"]["regions"]["default"]
    # The tile's serve run scored candidates in the simulator (the proxy alone scores none).
    assert region["tile"]["scored"] >= 1
    assert plan["provenance"]["flow_lanes"] == {
        "default": "type" if region["chosen"].endswith("/lanes") else "region"
    }
