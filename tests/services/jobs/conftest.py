"""Fixtures for the job-page tests (test_pages*.py): a planner and a simulator service on 127.0.0.1 with
an API key, two finished plans (petals, swarm on the paper's 24-node fleet) and a dry run of each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.jobs.serving import RunningServers
from services.planner_service.main import settings_from as planner_settings
from services.planner_service.main import start as start_planner
from services.simulator_service.main import settings_from as simulator_settings
from services.simulator_service.main import start as start_simulator
from tests.services.jobs.client import API_KEY, running, wait_job

RUN = {"mode": "offline", "duration_s": 30, "warmup_s": 5, "seed": 3}


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = tmp_path_factory.mktemp("planner") / "planner.db"
    settings = planner_settings({"db_path": str(db), "port": 0, "api_key": API_KEY, "max_workers": 2})
    with running(lambda: start_planner(settings)) as pair:
        yield pair


@pytest.fixture(scope="module")
def plans(planner: tuple[RunningServers, httpx.Client]) -> list[dict[str, Any]]:
    _, client = planner
    urls = [
        client.post(
            "/v1/plans",
            json={"cluster": "cluster24", "model": "llama2-70b", "method": m, "time_limit_s": 5, "label": m},
        ).json()["url"]
        for m in ("petals", "swarm")
    ]
    jobs = [wait_job(client, u) for u in urls]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], [j["error"] for j in jobs]
    return jobs


@pytest.fixture(scope="module")
def simulator(
    tmp_path_factory: pytest.TempPathFactory, planner: tuple[RunningServers, httpx.Client]
) -> Iterator[tuple[RunningServers, httpx.Client]]:
    db = tmp_path_factory.mktemp("simulator") / "simulator.db"
    settings = simulator_settings(
        {
            "db_path": str(db),
            "port": 0,
            "api_key": API_KEY,
            "planner_url": planner[0].base_url,
            "planner_api_key": API_KEY,
            "max_workers": 2,
        }
    )
    with running(lambda: start_simulator(settings)) as pair:
        yield pair


@pytest.fixture(scope="module")
def runs(simulator: tuple[RunningServers, httpx.Client], plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _, client = simulator
    urls = [client.post("/v1/simulations", json={"plan_id": p["id"], **RUN}).json()["url"] for p in plans]
    jobs = [wait_job(client, u, timeout_s=120) for u in urls]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], [j["error"] for j in jobs]
    return jobs
