"""The real-process fleet the controller tests share: a coordinator on the local-cpu4 fleet with
BRL_AUTO_REPLAN and the admin API, started from a plan of SmolLM2 ranges, plus its SmolLM2 workers
(tests.services.coordinator.fleet_procs), and the admin calls the tests read the rollout through. Each test
states only its plan, its workers and how long it waits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from planner import bundled
from planner.flow import plan_from_placement
from planner.formats.plan_json import save_plan
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from tests.services.coordinator.fleet_procs import MODEL, ProcFleet, WorkerSpec

ADMIN_KEY = "admin-test-key"
CLUSTER = "local-cpu4"
TIMEOUT_S = 240.0  # slack for a machine shared with other test runs; never a measured figure


def plan_of(ranges: Mapping[str, tuple[int, int]]) -> Plan:
    """The max-flow plan of SmolLM2 ranges on the local-cpu4 fleet."""
    model = bundled.model(MODEL)
    placement = Placement(model.num_layers, {n: LayerRange(*r) for n, r in ranges.items()})
    return plan_from_placement(
        bundled.cluster(CLUSTER), model, bundled.profiles(model), placement, method="test"
    )


@contextlib.contextmanager
def replan_fleet(
    workdir: Path,
    workers: Iterable[WorkerSpec] = (),
    *,
    plan: Mapping[str, tuple[int, int]] | None = None,
    wait_s: float = TIMEOUT_S,
    exactly: bool = False,
) -> Iterator[ProcFleet]:
    """A coordinator serving `plan` (the workers' own ranges when None; written to workdir/plan.json) with
    the controller on, then `workers` started and waited for until the coordinator can route (only them
    when `exactly`); no worker: the coordinator alone. On exit every process is stopped; none may be left."""
    specs = list(workers)
    path = workdir / "plan.json"
    save_plan(plan_of({s.name: (s.start, s.end) for s in specs} if plan is None else plan), path)
    with ProcFleet(
        workdir,
        coordinator_args=["--plan", str(path), "--cluster", CLUSTER],
        coordinator_env={"BRL_AUTO_REPLAN": "1", "BRL_ADMIN_API_KEY": ADMIN_KEY},
    ) as fleet:
        fleet.start_coordinator()
        if specs:
            fleet.start_workers(specs)
            fleet.wait_workers([s.name for s in specs], timeout_s=wait_s, exactly=exactly)
        yield fleet
    assert fleet.pids() == []


def admin(
    fleet: ProcFleet,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    timeout_s: float = TIMEOUT_S,
) -> httpx.Response:
    """One call to the coordinator's admin API (/v1/admin/`path`) with the operator's key."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(
        method, f"{fleet.base_url}/admin/{path}", headers=headers, json=body, timeout=timeout_s
    )


def rollout_status(fleet: ProcFleet, *, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The controller's figures (GET /v1/admin/rollout): enabled, running, pending, last, history..."""
    resp = admin(fleet, "GET", "rollout", timeout_s=timeout_s)
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def settled(fleet: ProcFleet) -> dict[str, Any] | None:
    """The rollout figures once nothing runs, waits or drains; None while the controller is busy."""
    s = rollout_status(fleet)
    busy = s["running"] or any(s["pending"].values()) or s["unloading"]
    return None if busy else s
