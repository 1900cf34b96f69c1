"""Run-time layer assignment with real processes (issue 15): a coordinator with BRL_AUTO_REPLAN and a plan of
three nodes, every SmolLM2 worker started with no layers (as the Helm chart starts them). It answers 503
until the controller has loaded the plan's ranges into the idle workers (no re-plan), then serves the
reference text token for token. A fourth idle worker the plan does not name joins and is re-planned in; an
operator's plan that leaves two nodes out is rolled out, and those two unload and stay registered idle,
holding no layer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from planner.formats.plan_json import plan_to_dict
from services.worker.client import stats
from tests.services.controller.replan_fleet import (
    TIMEOUT_S,
    admin,
    plan_of,
    replan_fleet,
    rollout_status,
    settled,
)
from tests.services.coordinator.fleet_procs import MODEL, ProcFleet, WorkerSpec
from tests.services.coordinator.test_api import Reference

PLAN = {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30)}
TYPES = {"fast": "cpu-fast", "fast2": "cpu-fast", "mid": "cpu-mid", "slow": "cpu-slow"}
PROMPT = "The capital of France is"
MAX_TOKENS = 8


def idle_spec(name: str) -> WorkerSpec:
    return WorkerSpec(name, 0, 0, gpu_type=TYPES[name])  # --layers 0:0: no layers until a Load


def complete(fleet: ProcFleet) -> tuple[int, str]:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    resp = httpx.post(f"{fleet.base_url}/completions", json=body, timeout=TIMEOUT_S)
    return resp.status_code, resp.json()["choices"][0]["text"] if resp.status_code == 200 else ""


def wait_for(cond: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcFleet]:
    with replan_fleet(tmp_path_factory.mktemp("run-time-layers"), plan=PLAN) as f:  # no worker yet
        yield f


@pytest.fixture(scope="module")
def reference() -> str:
    ref = Reference()
    text, _ = ref.greedy(list(ref.tok.encode(PROMPT, add_special_tokens=False)), MAX_TOKENS)
    return text


def test_idle_workers_get_the_plans_ranges_and_then_serve_the_reference(
    fleet: ProcFleet, reference: str
) -> None:
    assert complete(fleet)[0] == 503  # no worker yet: no chain covers [0,30)
    fleet.start_workers([idle_spec(n) for n in PLAN])
    fleet.wait_workers(PLAN, timeout_s=TIMEOUT_S, exactly=True)
    assert complete(fleet) == (200, reference)
    health = fleet.health()
    assert {n: tuple(w["layers"]) for n, w in health["fleet"].items()} == PLAN
    status = rollout_status(fleet)
    # Only loads of the planned ranges: the plan in force counted on these workers, nothing was re-planned.
    assert status["history"] and all(h["outcome"] == "assigned" for h in status["history"]), status
    assigned = {a["node"]: tuple(a["after"]) for h in status["history"] for a in h["assigned"]}
    assert assigned == PLAN
    assert admin(fleet, "GET", "plan").json()["matches_fleet"] is True


def test_a_joiner_is_replanned_in_and_nodes_an_operator_plan_drops_go_idle(
    fleet: ProcFleet, reference: str
) -> None:
    if set(fleet.health().get("workers", [])) != set(PLAN):
        test_idle_workers_get_the_plans_ranges_and_then_serve_the_reference(fleet, reference)
    rollouts = rollout_status(fleet)["rollouts"]
    fleet.start_workers([idle_spec("fast2")])
    wait_for(lambda: (s := settled(fleet)) is not None and s["rollouts"] > rollouts, "no rollout for fast2")
    last = rollout_status(fleet)["last"]
    assert last["outcome"] == "rolled_out" and last["joined"] == ["fast2"], last
    loaded = admin(fleet, "GET", "plan").json()["loaded"]["placement"]
    assert "fast2" in loaded
    fleet.wait_workers([*PLAN, "fast2"], timeout_s=TIMEOUT_S)
    assert complete(fleet) == (200, reference)

    # The operator's plan leaves mid and slow out: loaded, swapped, and the two unload (drain, then idle).
    target = plan_of({"fast": (0, 30), "fast2": (0, 30)})
    resp = admin(fleet, "POST", "plan", {"plan": plan_to_dict(target)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["loaded"]["placement"] == {"fast": [0, 30], "fast2": [0, 30]}
    wait_for(lambda: settled(fleet) is not None, "mid and slow still unloading")
    last = rollout_status(fleet)["last"]
    assert last["outcome"] == "rolled_out" and sorted(last["unloaded"]) == ["mid", "slow"], last
    fleet.wait_workers(["fast", "fast2"], timeout_s=TIMEOUT_S, exactly=True)  # mid, slow: idle, not serving
    for name in ("mid", "slow"):
        held = asyncio.run(stats(fleet.worker_address(name))).held_layers
        assert held == 0, (name, held)
        assert fleet.workers[name].alive()
    assert complete(fleet) == (200, reference)
    # Their idleness is no join: the operator's plan stays in force.
    status = rollout_status(fleet)
    assert status["last"]["reason"].startswith("operator plan") and status["pending"]["joined"] == []
    assert admin(fleet, "GET", "plan").json()["matches_fleet"] is True
