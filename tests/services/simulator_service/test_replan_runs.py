"""Dry runs through a failure on the simulator service (real loopback servers): `fail` + `replan` give the
with/without re-planning figures and the replan plot, the same figures as the core
(simulator.replan_compare, what `brl simulate --fail --replan` prints); bad failures are 4xx naming the
field; gRPC carries the same fields."""

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
from planner.formats.plan_json import plan_to_dict
from planner.solvers import solve
from protos import planner_pb2
from protos import simulator_pb2 as pb
from protos import simulator_pb2_grpc as pb_grpc
from services.jobs.serving import RunningServers
from services.simulator_service.main import settings_from, start
from simulator.config import SimConfig
from simulator.replan_compare import run_with_replan
from tests.services.jobs.client import API_KEY, running, wait_job

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN = {"mode": "offline", "duration_s": 60, "warmup_s": 5, "seed": 1, "replan_time_limit_s": 1}
METADATA = (("authorization", f"Bearer {API_KEY}"),)


@pytest.fixture(scope="module")
def plan_json() -> dict[str, Any]:
    """A swarm plan of local-cpu4 for SmolLM2 in which `fast` holds the only copy of layers [10, 20)."""
    cluster, model = bundled.cluster("local-cpu4"), bundled.model("smollm2-135m")
    plan = solve(
        "swarm", cluster, model, bundled.profiles(model), seed=0, time_limit_s=5, clock=time.monotonic
    )
    assert plan.placement.without({"fast"}).uncovered()
    return plan_to_dict(plan)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = Path(tmp_path_factory.mktemp("sim-replan")) / "simulator.db"
    values = {"db_path": str(db), "port": 0, "grpc_port": 0, "api_key": API_KEY, "max_workers": 1}
    with running(lambda: start(settings_from(values))) as pair:
        yield pair


@pytest.fixture(scope="module")
def replan_run(simulator: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]) -> dict[str, Any]:
    _, client = simulator
    body = {"plan": plan_json, **RUN, "fail": [{"node": "fast", "at_s": 20}], "replan": True}
    response = client.post("/v1/simulations", json=body)
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["url"])


def test_failure_with_replan_recovers_and_matches_the_core(
    simulator: tuple[RunningServers, httpx.Client], replan_run: dict[str, Any], plan_json: dict[str, Any]
) -> None:
    _, client = simulator
    assert replan_run["status"] == "succeeded", replan_run["error"]
    figures = replan_run["result"]["replan"]
    # `fast` held the only copy of some layers: without re-planning they are never covered again.
    assert (
        figures["recover_s_without_replan"] is None and figures["decode_tok_per_s_after_without_replan"] == 0
    )
    assert figures["recover_s"] is not None and figures["recover_s"] > 0 and figures["layers_moved"] > 0
    assert figures["decode_tok_per_s_after_with_replan"] > 0
    assert figures["without_replan"]["failed_nodes"] == ["fast"]
    assert replan_run["result"]["summary"]["failed_nodes"] == ["fast"]
    # The same run in-process (same seed, same re-planner budget): the figures agree.
    cluster, model = bundled.cluster("local-cpu4"), bundled.model("smollm2-135m")
    from planner.formats.plan_json import plan_from_dict

    core = run_with_replan(
        cluster,
        model,
        bundled.profiles(model),
        plan_from_dict(plan_json),
        SimConfig(duration_s=60, warmup_s=5, seed=1, failures=(("fast", 20.0),)),
        replan_time_limit_s=1,
    )
    assert figures["layers_moved"] == core.figures["layers_moved"]
    assert figures["decode_tok_per_s_after_with_replan"] == pytest.approx(
        core.figures["decode_tok_per_s_after_with_replan"], rel=1e-6
    )
    assert "replan" in replan_run["result"]["plots"]
    plot = client.get(f"/v1/simulations/{replan_run['id']}/plots/replan.png")
    assert plot.status_code == 200 and plot.content.startswith(PNG_MAGIC)


def test_failure_without_replan_has_no_comparison(
    simulator: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]
) -> None:
    _, client = simulator
    body = {"plan": plan_json, **RUN, "fail": [{"node": "mid", "at_s": 10}], "plots": False}
    job = wait_job(client, client.post("/v1/simulations", json=body).json()["url"])
    assert job["status"] == "succeeded", job["error"]
    assert "replan" not in job["result"] and job["result"]["summary"]["failed_nodes"] == ["mid"]


@pytest.mark.parametrize(
    ("extra", "field", "status"),
    [
        ({"fail": [{"node": "n99", "at_s": 5}]}, "fail.0.node", 400),
        ({"fail": [{"node": "mid", "at_s": 600}]}, "fail.0.at_s", 400),
        ({"fail": [{"node": "mid", "at_s": -1}]}, "fail.0.at_s", 422),
        ({"fail": [{"node": "mid"}]}, "fail.0.at_s", 422),
        ({"replan": True}, "replan needs a failure", 422),
        ({"fail": [{"node": "mid", "at_s": 5}], "replan_time_limit_s": 0}, "replan_time_limit_s", 422),
        ({"dead_end": "retry"}, "dead_end", 422),
    ],
)
def test_bad_failures_name_the_field(
    simulator: tuple[RunningServers, httpx.Client],
    plan_json: dict[str, Any],
    extra: dict[str, Any],
    field: str,
    status: int,
) -> None:
    _, client = simulator
    response = client.post("/v1/simulations", json={"plan": plan_json, **RUN, **extra})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert field in error["message"] or (error["param"] or "") == field, error


def test_grpc_dry_run_with_failure_and_replan(
    simulator: tuple[RunningServers, httpx.Client], plan_json: dict[str, Any]
) -> None:
    servers, _ = simulator
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        stub = pb_grpc.SimulatorStub(channel)
        request = pb.SubmitSimulationRequest(
            plan_json=json.dumps(plan_json),
            duration_s=60,
            warmup_s=5,
            seed=1,
            plots=False,
            fail=[pb.Failure(node="fast", at_s=20)],
            replan=True,
        )
        bad = pb.SubmitSimulationRequest(plan_json=json.dumps(plan_json), replan=True, duration_s=60)
        with pytest.raises(grpc.RpcError) as invalid:
            stub.SubmitSimulation(bad, metadata=METADATA)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "replan" in invalid.value.details()
        job = stub.SubmitSimulation(request, metadata=METADATA)
        updates = list(stub.WatchSimulation(planner_pb2.JobRef(id=job.id), timeout=120))
        assert updates[-1].status == "succeeded", updates[-1].error
        figures = json.loads(updates[-1].replan_json)
        assert figures["recover_s_without_replan"] is None and figures["layers_moved"] > 0
