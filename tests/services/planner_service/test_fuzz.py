"""Fuzz the planner service's REST API from its OpenAPI document (tests/openapi_fuzz.py) on a real loopback
server with a valid key: no answer is a 5xx, every answer is one the document describes, and real fleet,
model and job names are mixed in so solves and evaluations actually run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st
from schemathesis import Case

from services.jobs.serving import RunningServers
from services.planner_service.main import settings_from, start
from tests.openapi_fuzz import Draw, fuzz_service, operation_key
from tests.services.jobs.client import API_KEY, AUTH, running, wait_job

FLEETS = ["cluster10", "cluster24"]
MODELS = ["llama2-70b", "llama1-30b"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "planner.db"
    values = {"db_path": str(db), "port": 0, "api_key": API_KEY, "max_workers": 1, "max_queued": 2}
    with running(lambda: start(settings_from(values))) as pair:
        yield pair


def _known_jobs(client: httpx.Client) -> tuple[list[str], dict[str, Any]]:
    """A succeeded plan (it seeds evaluations and re-plans) and a failed one (ten small GPUs, a 70B model)."""
    ok = {"cluster": "cluster24", "model": "llama2-70b", "method": "petals", "time_limit_s": 5}
    done = wait_job(client, client.post("/v1/plans", json=ok).json()["url"])
    failed = wait_job(client, client.post("/v1/plans", json={**ok, "cluster": "cluster10"}).json()["url"])
    assert (done["status"], failed["status"]) == ("succeeded", "failed")
    return [done["id"], failed["id"]], done["result"]["plan"]


def test_fuzz_finds_no_5xx_and_conforms(service: tuple[RunningServers, httpx.Client]) -> None:
    servers, client = service
    job_ids, plan = _known_jobs(client)
    placement = plan["placement"]

    def fill(case: Case, draw: Draw[Any]) -> None:
        if "job_id" in (case.path_parameters or {}) and draw(st.booleans()):
            # DELETE gets the failed job only, so the succeeded one stays for the other calls to read.
            choices = job_ids[1:] if case.operation.method.upper() == "DELETE" else job_ids
            case.path_parameters["job_id"] = draw(st.sampled_from(choices))
        body = case.body
        if not isinstance(body, dict) or not draw(st.booleans()):
            return
        if operation_key(case) == "POST /v1/replans":
            # The plan carries its fleet; the change names some of its nodes (or none, or unknown ones).
            body["plan"] = plan
            body["lose"] = draw(st.lists(st.sampled_from([*sorted(placement), "n999"]), max_size=3))
            body["time_limit_s"] = draw(st.floats(0.2, 1.0))
            body["simulate"] = False
            return
        for name in ("cluster_text", "cluster_spec", "hf_config", "model_name", "profiles"):
            body.pop(name, None)
        body["cluster"] = draw(st.sampled_from(FLEETS))
        body["model"] = draw(st.sampled_from(MODELS))
        key = operation_key(case)
        if key == "POST /v1/plans":
            body["method"] = draw(st.sampled_from(["petals", "swarm", "homogeneous", "milp"]))
            body["time_limit_s"] = draw(st.floats(0.2, 2.0))
        elif key == "POST /v1/evaluations":
            body["cluster"], body["model"] = "cluster24", "llama2-70b"
            keep = draw(st.lists(st.sampled_from(sorted(placement)), max_size=len(placement), unique=True))
            body["placement"] = {n: placement[n] for n in keep} or dict(placement)

    seen = fuzz_service(servers.base_url, headers=AUTH, fill=fill, max_examples=15)
    assert {"POST /v1/plans", "POST /v1/evaluations", "DELETE /v1/plans/{job_id}", "POST /v1/replans"} <= set(
        seen
    )
    # The filled cases got past validation into the solver and the max-flow.
    assert seen["POST /v1/plans"][202] > 0 and seen["POST /v1/evaluations"][200] > 0
    assert seen["GET /v1/plans/{job_id}"][200] > 0 and seen["GET /v1/plans/{job_id}/plan"][200] > 0
