"""Fuzz the simulator service's REST API from its OpenAPI document (tests/openapi_fuzz.py) on a real loopback
server with a valid key: no answer is a 5xx, every answer is one the document describes, and a real plan,
short durations and known job ids are mixed in so simulations actually run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st
from schemathesis import Case

from planner import bundled
from planner.formats.plan_json import plan_to_dict
from planner.solvers import solve
from services.jobs.serving import RunningServers
from services.simulator_service.main import settings_from, start
from tests.openapi_fuzz import Draw, fuzz_service, operation_key
from tests.services.jobs.client import API_KEY, AUTH, running, wait_job

FLEET_FIELDS = ("cluster", "cluster_text", "cluster_spec", "model", "hf_config", "model_name", "profiles")


@pytest.fixture(scope="module")
def plan() -> dict[str, Any]:
    """A real plan of the bundled fleet, made by the core in-process (no planner service needed)."""
    cluster, model = bundled.cluster("cluster24"), bundled.model("llama2-70b")
    made = solve(
        "petals", cluster, model, bundled.profiles("llama2-70b"), time_limit_s=5, clock=time.monotonic
    )
    return plan_to_dict(made)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "simulator.db"
    values = {
        "db_path": str(db),
        "port": 0,
        "api_key": API_KEY,
        "max_workers": 1,
        "max_queued": 2,
        "max_duration_s": 60,
        "max_wall_s": 20,  # a generated workload that would run long is stopped, not waited for
        "cancel_grace_s": 0.5,
    }
    with running(lambda: start(settings_from(values))) as pair:
        yield pair


def test_fuzz_finds_no_5xx_and_conforms(
    service: tuple[RunningServers, httpx.Client], plan: dict[str, Any]
) -> None:
    servers, client = service
    short = {"plan": plan, "duration_s": 5, "warmup_s": 1}
    done = wait_job(client, client.post("/v1/simulations", json=short).json()["url"])
    spare = wait_job(client, client.post("/v1/simulations", json={**short, "plots": False}).json()["url"])
    assert done["status"] == spare["status"] == "succeeded", done["error"]
    nodes = sorted(plan["placement"])

    def fill(case: Case, draw: Draw[Any]) -> None:
        params = case.path_parameters or {}
        if "job_id" in params and draw(st.booleans()):
            # DELETE gets the spare job only, so the one with plots stays for the other calls to read.
            delete = case.operation.method.upper() == "DELETE"
            params["job_id"] = spare["id"] if delete else done["id"]
            if "name" in params and draw(st.booleans()):
                params["name"] = draw(st.sampled_from(done["result"]["plots"]))
        body = case.body
        if (
            operation_key(case) != "POST /v1/simulations"
            or not isinstance(body, dict)
            or not draw(st.booleans())
        ):
            return
        for name in (*FLEET_FIELDS, "plan_id", "layout", "plan"):
            body.pop(name, None)
        if draw(st.booleans()):
            body["plan"] = plan
        else:
            body.update(layout="ilp", cluster="cluster24", model="llama2-70b")
        body["duration_s"] = draw(st.floats(1.0, 8.0))
        body["warmup_s"] = draw(st.floats(0.0, 0.5))
        body["plots"] = draw(st.booleans())
        body.pop("initial_queries", None)
        body["policy"] = draw(st.sampled_from(["maxflow", "swarm", "random"]))
        body["lengths"] = draw(st.sampled_from(["azure-conv", "azure-code"]))
        body.pop("lengths_pairs", None)
        if body.get("mode") == "online" and "arrival_counts" not in body:
            body["arrivals"] = "azure-conv"
        else:
            body.pop("arrivals", None)
        for field in ("throttle", "step_overhead_s"):
            if field in body:
                body[field] = {draw(st.sampled_from(nodes)): draw(st.floats(0.2, 1.0))}
        hosts = body.get("hosts")
        for host in hosts if isinstance(hosts, list) else []:
            if isinstance(host, dict):
                host["nodes"] = draw(st.lists(st.sampled_from(nodes), max_size=3, unique=True))

    seen = fuzz_service(servers.base_url, headers=AUTH, fill=fill, max_examples=20)
    assert {"POST /v1/simulations", "DELETE /v1/simulations/{job_id}"} <= set(seen)
    # The filled cases got past validation into the simulator; reads reached real jobs and plots.
    assert seen["POST /v1/simulations"][202] >= 3
    assert seen["GET /v1/simulations/{job_id}"][200] > 0
    assert seen["GET /v1/simulations/{job_id}/plots/{name}.png"][200] > 0
