"""Plan swap against a real planner service on loopback: the coordinator loads a plan by id (at start-up or
on `POST /v1/admin/plan`) or inline, and switches routing to it while requests in flight finish on their
chains with their KV still booked; new requests follow the new plan."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from planner import bundled
from planner.errors import Unavailable
from planner.formats.plan_json import plan_to_dict
from planner.placement import LayerRange
from planner.plan import Plan
from planner.routing import chain_nodes
from services.coordinator import planswap
from services.coordinator.engine import Engine, EngineLimits
from services.coordinator.fleet import Fleet
from services.coordinator.main import Coordinator, DrainingServer, bind_http, build
from services.coordinator.metrics import Metrics
from services.coordinator.registry import Registry, WorkerInfo
from services.coordinator.routes import build_app
from services.coordinator.serving import OpenAIServing
from services.coordinator.settings import CoordinatorSettings
from services.http_errors import NotFound
from services.jobs.serving import RunningServers
from services.planner_service.main import settings_from, start
from tests.services.coordinator.fakes import FakeWorld, reference
from tests.services.coordinator.fakeserver import FakeTokenizer
from tests.services.jobs.client import API_KEY, running, wait_job

pytestmark = pytest.mark.anyio
COORD_KEY = "coord-key"
ADMIN_KEY = "admin-key"
AUTH = {"Authorization": f"Bearer {COORD_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# fast [0,30), mid [0,20), slow [20,30) on the bundled local fleet: two chains, fast and mid>slow.
JOB = {"cluster": "local-cpu", "model": "smollm2-135m", "method": "homogeneous", "time_limit_s": 5}


@dataclass
class Planner:
    url: str
    plan_id: str
    plan: dict[str, Any]


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planner]:
    db = tmp_path_factory.mktemp("planner") / "planner.db"

    def launch() -> tuple[RunningServers, Any]:
        values = {"db_path": str(db), "port": 0, "grpc_port": 0, "api_key": API_KEY, "max_workers": 1}
        return start(settings_from(values))

    with running(launch) as (servers, client):
        response = client.post("/v1/plans", json=JOB)
        assert response.status_code == 202, response.text
        job = wait_job(client, response.json()["url"])
        assert job["status"] == "succeeded", job
        yield Planner(servers.base_url, job["id"], job["result"]["plan"])


def only_chain(plan: Plan, nodes: list[str]) -> dict[str, Any]:
    """`plan` as JSON with flow only along `nodes` (source > nodes > sink): an inline plan to swap to."""
    path = ["source", *nodes, "sink"]
    d = plan_to_dict(plan)
    d["method"] = "only-" + "-".join(nodes)
    d["edge_flows"] = {f"{a}->{b}": 10.0 for a, b in zip(path, path[1:], strict=False)}
    return d


@asynccontextmanager
async def coordinator(
    layout: dict[str, LayerRange], world: FakeWorld, planner_url: str | None = None
) -> AsyncIterator[tuple[str, Coordinator]]:
    spec = bundled.model("smollm2-135m")
    registry = Registry(time.monotonic, expiry_s=60.0, num_layers=spec.num_layers)
    for name, layers in layout.items():
        world.add(f"fake:{name}")
        registry.register(WorkerInfo(name, f"fake:{name}", layers, "cpu", 10_000))
    fleet = Fleet(registry, spec)
    metrics = Metrics("fake")
    engine = Engine(
        fleet,
        metrics,
        limits=EngineLimits(tick_s=0.02),
        chain_factory=world.chain,
        release_fn=world.release,
        probe_fn=world.probe,
    )
    settings = CoordinatorSettings(
        model="fake",
        api_key=COORD_KEY,
        admin_api_key=ADMIN_KEY,
        planner_url=planner_url,
        http_port=0,
        grpc_port=0,
    )
    serving = OpenAIServing(engine, FakeTokenizer(), model_name="fake")  # type: ignore[arg-type]
    coord = Coordinator(settings, spec, registry, fleet, engine, serving, metrics, "t", time.time())
    sock = bind_http("127.0.0.1", 0)
    config = uvicorn.Config(build_app(coord), log_level="warning", lifespan="off")
    server = DrainingServer(config, engine)
    await engine.start()
    serve = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", coord
    finally:
        server.should_exit = True
        await asyncio.wait_for(serve, timeout=30)
        await engine.stop()
        sock.close()


async def until(cond, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def chains(coord: Coordinator) -> dict[str, list[str]]:
    return {rid: list(chain_nodes(r.chain)) for rid, r in coord.engine.running.items() if r.chain is not None}


async def completion(client: httpx.AsyncClient, url: str, prompt: str, n: int) -> str:
    body = {"model": "fake", "prompt": prompt, "max_tokens": n, "stream": True}
    text = []
    async with client.stream("POST", f"{url}/v1/completions", json=body, headers=AUTH) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                event = json.loads(line.removeprefix("data: "))
                assert "error" not in event, event
                text.append(event["choices"][0]["text"])
    return "".join(text)


def expected(prompt: str, n: int) -> str:
    tok = FakeTokenizer()
    return tok.decode(reference(tok.encode(prompt), n))


async def test_swap_keeps_in_flight_requests_and_routes_new_ones_by_the_new_plan(planner: Planner) -> None:
    served = plan_to_dict(planswap.fetch(planner.url, planner.plan_id, None))
    layout = {n: LayerRange(a, b) for n, (a, b) in served["placement"].items()}
    assert set(layout) == {"fast", "mid", "slow"}
    world = FakeWorld(step_delay_s=0.01)
    async with (
        coordinator(layout, world, planner.url) as (url, coord),
        httpx.AsyncClient(timeout=60) as client,
    ):
        swap = f"{url}/v1/admin/plan"
        # The admin key only: neither no key nor the inference key opens it.
        assert (await client.post(swap, json={"plan_id": planner.plan_id})).status_code == 401
        assert (await client.post(swap, json={"plan_id": planner.plan_id}, headers=AUTH)).status_code == 401
        # By id from the planner service configured at start (BRL_PLANNER_URL).
        r = await client.post(swap, json={"plan_id": planner.plan_id}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["matches_fleet"] and r.json()["in_use"] == "homogeneous"
        assert r.json()["loaded"]["plan_id"] == planner.plan_id

        # Inline: only mid > slow carries flow; a long request starts there.
        base = coord.fleet.base_plan
        assert base is not None
        r = await client.post(swap, json={"plan": only_chain(base, ["mid", "slow"])}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["in_use"] == "only-mid-slow"
        long_prompt, long_n = "the long one", 400
        long = asyncio.create_task(completion(client, url, long_prompt, long_n))
        await until(lambda: list(chains(coord).values()) == [["mid", "slow"]])
        await until(lambda: all(len(r.generated) > 5 for r in coord.engine.running.values()))
        booked = coord.fleet.kv.used("mid")
        assert booked > 0

        # Swap to "only fast" while it runs: it keeps its chain and its KV charge; new requests go to fast.
        r = await client.post(swap, json={"plan": only_chain(base, ["fast"])}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["running"] == 1
        assert coord.fleet.kv.used("mid") == booked
        news = [asyncio.create_task(completion(client, url, f"new {i}", 150)) for i in range(3)]
        await until(lambda: len(coord.engine.running) == 4)
        routes = chains(coord)
        assert sorted(routes.values()) == [["fast"], ["fast"], ["fast"], ["mid", "slow"]]
        assert not long.done()
        texts = await asyncio.wait_for(asyncio.gather(long, *news), timeout=60)
        metrics = (await client.get(f"{url}/metrics")).text
        assert "brl_plan_swaps_total 3.0" in metrics

    assert texts[0] == expected(long_prompt, long_n)  # nothing lost or repeated across the swap
    assert texts[1:] == [expected(f"new {i}", 150) for i in range(3)]
    assert world.kv_used() == 0


async def test_bad_swaps_are_refused_with_the_reason(planner: Planner) -> None:
    world = FakeWorld()
    layout = {"fast": LayerRange(0, 30)}
    async with (
        coordinator(layout, world, planner.url) as (url, coord),
        httpx.AsyncClient(timeout=30) as client,
    ):
        swap = f"{url}/v1/admin/plan"

        async def post(body: dict[str, Any]) -> httpx.Response:
            return await client.post(swap, json=body, headers=ADMIN)

        assert (await post({"plan_id": "0" * 32})).status_code == 404
        # The body may not name a URL: the planner's address is configuration only.
        r = await post({"plan_id": planner.plan_id, "planner_url": planner.url})
        assert r.status_code == 400 and r.json()["error"]["param"] == "planner_url"
        assert (await post({})).status_code == 400
        assert (await post({"plan_id": planner.plan_id, "plan": planner.plan})).status_code == 400
        wrong = {**planner.plan, "num_layers": 4, "placement": {"fast": [0, 4]}, "edge_flows": {}}
        assert (await post({"plan": wrong})).status_code == 400
        assert coord.fleet.base_plan is None  # nothing was swapped in
        # A plan for other workers is accepted (a rollout comes next) and says what does not match yet.
        r = await post({"plan": planner.plan})
        assert r.status_code == 200 and not r.json()["matches_fleet"]
        assert r.json()["mismatch"]["mid"] == "planned but not registered"
        status = await client.get(swap, headers=ADMIN)
        assert status.json()["loaded"]["source"] == "inline"

    async with coordinator(layout, FakeWorld()) as (url, _), httpx.AsyncClient(timeout=30) as client:
        # No planner configured: a plan id cannot be loaded.
        r = await client.post(f"{url}/v1/admin/plan", json={"plan_id": planner.plan_id}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == "plan_id"


async def test_planner_failures_never_echo_its_address_or_reply(
    planner: Planner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    dead = "http://127.0.0.1:9"
    async with (
        coordinator({"fast": LayerRange(0, 30)}, FakeWorld(), dead) as (url, _),
        httpx.AsyncClient(timeout=30) as client,
    ):
        r = await client.post(f"{url}/v1/admin/plan", json={"plan_id": planner.plan_id}, headers=ADMIN)
    assert r.status_code == 503
    message = r.json()["error"]["message"]
    assert "127.0.0.1" not in message and ":9" not in message
    found = re.search(r"error id ([0-9a-f]+)", message)
    assert found is not None
    assert any(found.group(1) in rec.getMessage() for rec in caplog.records)
    assert any(dead in rec.getMessage() for rec in caplog.records)  # the details are in the log


def test_start_up_loads_the_plan_by_id(planner: Planner, tmp_path: Path) -> None:
    settings = CoordinatorSettings(
        http_port=0, grpc_port=0, planner_url=planner.url, plan_id=planner.plan_id, log_dir=tmp_path
    )
    coord = build(settings, tokenizer=FakeTokenizer())  # type: ignore[arg-type]
    base = coord.fleet.base_plan
    assert base is not None and base.method == "homogeneous"
    assert dict(base.placement.ranges) == {
        n: LayerRange(a, b) for n, (a, b) in planner.plan["placement"].items()
    }
    assert coord.plan_origin["plan_id"] == planner.plan_id
    coord.engine.events.close()


def test_start_up_waits_a_while_for_the_planner_then_names_it(planner: Planner) -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    def clock() -> float:
        return now[0]

    with pytest.raises(Unavailable, match="127.0.0.1:9"):
        planswap.fetch_at_start("http://127.0.0.1:9", "x", None, wait_s=3.0, clock=clock, sleep=sleep)
    assert now[0] == 3.0  # retried until the deadline
    now[0] = 0.0
    with pytest.raises(NotFound):  # a wrong id is not worth waiting for
        planswap.fetch_at_start(planner.url, "0" * 32, None, wait_s=30.0, clock=clock, sleep=sleep)
    assert now[0] == 0.0
