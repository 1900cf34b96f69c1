"""Two coordinator replicas with the rollout controller on (BRL_AUTO_REPLAN) serve three SmolLM2 workers
(real processes). The sole holder of layers [0,10) is SIGKILLed: exactly one rollout happens, the
leader's; the follower adopts the leader's plan (its /v1/admin/rollout shows it followed, and rolled out
nothing); both replicas serve token-exact afterwards. Then the leader replica is SIGKILLed and the other
one becomes the leader (its status says so) and still serves."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from planner import bundled
from planner.flow import plan_from_placement
from planner.formats.plan_json import save_plan
from planner.placement import LayerRange, Placement
from tests.services.coordinator.fleet_procs import MODEL, WorkerSpec
from tests.services.coordinator.replica_procs import ReplicaFleet

CLUSTER = "local-cpu4"
ADMIN_KEY = "replicas-controller-admin"
# fast alone holds [0,10); losing it leaves those layers uncovered until the controller loads them.
START = {"fast": (0, 10), "fast2": (10, 30), "mid": (10, 30)}
TYPES = {"fast": "cpu-fast", "fast2": "cpu-fast", "mid": "cpu-mid"}
PROMPTS = ("The capital of France is", "One, two, three,")
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaFleet]:
    workdir = tmp_path_factory.mktemp("replicas-controller")
    model = bundled.model(MODEL)
    placement = Placement(model.num_layers, {n: LayerRange(*r) for n, r in START.items()})
    plan = plan_from_placement(
        bundled.cluster(CLUSTER), model, bundled.profiles(model), placement, method="start"
    )
    save_plan(plan, workdir / "plan.json")
    env = {"BRL_AUTO_REPLAN": "1", "BRL_ADMIN_API_KEY": ADMIN_KEY, "BRL_SEED": "0"}
    with ReplicaFleet(
        workdir,
        coordinator_args=["--plan", str(workdir / "plan.json"), "--cluster", CLUSTER],
        coordinator_env=env,
    ) as f:
        f.start_replicas(2)
        f.start_workers([WorkerSpec(n, *r, gpu_type=TYPES[n]) for n, r in START.items()])
        f.wait_replicas(START, timeout_s=240)
        yield f


def admin(fleet: ReplicaFleet, index: int, path: str) -> dict[str, Any]:
    resp = httpx.get(
        f"http://{fleet.http_addresses[index]}/v1/admin/{path}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def complete(fleet: ReplicaFleet, index: int, prompt: str) -> str:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True}
    resp = httpx.post(f"{fleet.base_urls()[index]}/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["text"])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < timeout_s:
        try:
            last = check()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached in {timeout_s} s; last: {last!r}")


def rolled_out(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in status["history"] if h.get("outcome") == "rolled_out"]


def settled(status: dict[str, Any]) -> bool:
    return not status["running"] and not any(status["pending"].values())


def test_one_leader_rolls_out_the_follower_follows_and_takes_over(fleet: ReplicaFleet) -> None:
    ids = [fleet.replica_health(i)["replica"] for i in range(2)]
    # Both replicas agree: r0 (the lowest id the workers report) leads, r1 follows.
    for i in range(2):
        wait_for(
            f"r{i} sees both replicas",
            lambda i=i: (
                (r := fleet.replica_health(i)["replicas"])["leader"] == ids[0]
                and r["is_leader"] == (i == 0)
                and ids[1 - i] in r["peers"]
            ),
        )
    reference = {p: complete(fleet, 0, p) for p in PROMPTS}
    assert {p: complete(fleet, 1, p) for p in PROMPTS} == reference

    fleet.kill("fast")

    def leader_done() -> dict[str, Any] | None:
        status = admin(fleet, 0, "rollout")
        return status if rolled_out(status) and settled(status) else None

    leader = wait_for("the leader's rollout", leader_done)
    (done,) = rolled_out(leader)
    assert done["lost"] == ["fast"] and done["uncovered_before"] == [[0, 10]]
    want = admin(fleet, 0, "plan")["loaded"]["placement"]
    assert "fast" not in want

    # The follower runs the leader's plan, taken over GetPlan, not re-planned.
    def followed() -> dict[str, Any] | None:
        status = admin(fleet, 1, "rollout")
        same = admin(fleet, 1, "plan")["loaded"]["placement"] == want
        return status if same and status["replicas"]["followed"] else None

    follower = wait_for("the follower adopts the leader's plan", followed)
    assert rolled_out(follower) == []
    assert follower["replicas"]["followed"][-1]["from"] == ids[0]
    assert admin(fleet, 1, "plan")["loaded"]["source"] == "replica"
    for i in range(2):
        wait_for(f"r{i} routes without fast", lambda i=i: fleet.replica_health(i)["routable"])
        assert {p: complete(fleet, i, p) for p in PROMPTS} == reference
    # Exactly one rollout in all: the leader's, once.
    assert len(rolled_out(admin(fleet, 0, "rollout"))) == 1

    fleet.kill_replica(0)

    def leads() -> dict[str, Any] | None:
        replicas: dict[str, Any] = fleet.replica_health(1)["replicas"]
        return replicas if replicas["is_leader"] and replicas["takeovers"] >= 1 else None

    status = wait_for("r1 leads", leads)
    assert status["leader"] == ids[1] and status["peers"] == {}
    assert admin(fleet, 1, "rollout")["replicas"]["is_leader"] is True
    assert {p: complete(fleet, 1, p) for p in PROMPTS} == reference
