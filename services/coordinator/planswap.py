"""Plan swap: load a plan by id from the planner service (or take one inline) and route new requests by it,
while requests already admitted finish on their chains with their KV still booked. With a rollout
controller (BRL_AUTO_REPLAN) the plan is rolled out: its ranges loaded on the workers first."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field

from planner.cluster import Cluster
from planner.errors import BrlError, InvalidInput, Unavailable
from planner.formats.plan_json import plan_from_dict
from planner.plan import Plan
from services.coordinator.openai_models import StrictBody
from services.errors_table import Conflict, NotFound

if TYPE_CHECKING:
    from services.coordinator.main import Coordinator

log = logging.getLogger("brl.coordinator.plan")


class PlanSwapBody(StrictBody):
    """`POST /v1/admin/plan`: either a plan id of the planner service or an inline plan (brl plan JSON).

    No URL may be sent: the planner service's address is configuration (BRL_PLANNER_URL), or any caller
    could make the coordinator send its planner key to an address of their choosing."""

    plan_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="id of a succeeded job of the planner service at BRL_PLANNER_URL",
    )
    plan: dict[str, Any] | None = Field(None, description="an inline plan, as `brl plan` writes it")


def fetch(planner_url: str | None, plan_id: str, api_key: str | None) -> Plan:
    """The plan of a succeeded planner job; NotFound (404), Conflict (409) or Unavailable (503) otherwise."""
    from services.planner_service.client import fetch_plan

    if not planner_url:
        raise InvalidInput(
            "this coordinator has no planner service configured (BRL_PLANNER_URL); send the plan inline",
            source="plan swap",
            field="plan_id",
        )
    return fetch_plan(planner_url, plan_id, api_key=api_key)


def fetch_for_client(planner_url: str | None, plan_id: str, api_key: str | None) -> Plan:
    """`fetch` for an admin request: its errors say what happened in general words plus an error id, never
    the planner's address or reply text (those go to the log under the id)."""
    try:
        return fetch(planner_url, plan_id, api_key)
    except NotFound:
        raise NotFound("plan", plan_id) from None
    except InvalidInput as exc:
        if exc.field == "plan_id" and exc.source == "plan swap":
            raise
        # A 5xx: the client reads a generic message with an error id, the log this text under that id.
        raise Unavailable(f"the planner's plan {plan_id} is unusable: {exc}") from None
    except Conflict as exc:
        log.warning("plan swap: plan %s: %s", plan_id, exc)
        raise Conflict(
            f"the planner job {plan_id} has no plan to load (not finished, failed or cancelled)"
        ) from None
    except BrlError as exc:
        raise Unavailable(f"the planner service at {planner_url} failed on plan {plan_id}: {exc}") from None


def fetch_at_start(
    planner_url: str | None,
    plan_id: str,
    api_key: str | None,
    *,
    wait_s: float = 30.0,
    retry_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Plan:
    """`fetch`, waiting up to `wait_s` for an unreachable planner service (installed together, the
    coordinator may start first); an unknown id or an unfinished job fails at once."""
    deadline = clock() + wait_s
    while True:
        try:
            return fetch(planner_url, plan_id, api_key)
        except Unavailable as exc:
            if clock() >= deadline:
                raise
            log.warning("plan %s not loaded yet (%s); retrying", plan_id, exc)
            sleep(retry_s)


async def swap(coord: Coordinator, body: PlanSwapBody) -> dict[str, Any]:
    """Fetch or parse the plan named by `body`, then switch to it (one step of the event loop: atomic for
    the engine, which runs on the same loop)."""
    origin: dict[str, Any]
    if body.plan is not None and body.plan_id is None:
        # Parsing a big inline plan is CPU work: off the event loop, like tokenizing.
        plan = await asyncio.to_thread(plan_from_dict, body.plan, source="plan swap body")
        origin = {"source": "inline"}
    elif body.plan_id is not None and body.plan is None:
        url = coord.settings.planner_url
        # The planner client is synchronous: keep the event loop (and every stream) running meanwhile.
        plan = await asyncio.to_thread(fetch_for_client, url, body.plan_id, coord.settings.planner_api_key)
        origin = {"source": "planner", "plan_id": body.plan_id}
    else:
        raise InvalidInput("send exactly one of plan_id or plan", source="plan swap", field="plan_id")
    if coord.controller is not None:
        # The controller assigns layers at run time: the plan's ranges are loaded on the workers, the
        # plan swapped, and the workers it leaves out unloaded (services/controller/controller.py).
        await coord.controller.roll_out_plan(plan, origin)
    else:
        apply(coord, plan, origin)
    return status(coord)


def with_new_nodes(known: Cluster | None, planned: Cluster | None) -> Cluster | None:
    """The coordinator's fleet plus the nodes (and their links) a plan adds to it (workers that joined
    after the start and were re-planned in): routing keeps real links for them, not a synthesised graph."""
    if known is None or planned is None:
        return known
    new = tuple(n for n in planned.nodes if not known.has_node(n.name))
    if not new:
        return known
    names = {n.name for n in new}
    links = tuple(lk for lk in planned.links if lk.src in names or lk.dst in names)
    return Cluster(
        nodes=known.nodes + new,
        links=known.links + links,
        name=known.name,
        coordinator_region=known.coordinator_region,
        coordinator_nic_bytes_per_s=known.coordinator_nic_bytes_per_s,
        meta=known.meta,
    )


def apply(coord: Coordinator, plan: Plan, origin: dict[str, Any]) -> None:
    in_flight = len(coord.engine.running)
    coord.fleet.base_cluster = with_new_nodes(coord.fleet.base_cluster, plan.cluster)
    coord.fleet.use_plan(plan)
    coord.plan_origin = {**origin, "loaded_at": round(time.time(), 3)}
    mismatch = coord.fleet.plan_mismatch()
    log.info(
        "plan %s (%s) loaded from %s; %d requests in flight keep their chains; fits the live fleet: %s",
        plan.method,
        plan.cluster_name,
        origin.get("plan_id", origin["source"]),
        in_flight,
        not mismatch,
    )
    coord.engine.plan_swapped()


def status(coord: Coordinator) -> dict[str, Any]:
    base = coord.fleet.base_plan
    coord.fleet.rebuild()
    mismatch = coord.fleet.plan_mismatch()
    return {
        "loaded": None
        if base is None
        else {
            "method": base.method,
            "cluster": base.cluster_name,
            "model": base.model_name,
            "objective_tok_per_s": base.objective_tok_per_s,
            "placement": {n: [r.start, r.end] for n, r in sorted(base.placement.ranges.items())},
            **coord.plan_origin,
        },
        # Routing follows the loaded plan's flows only while the live workers hold what it places;
        # otherwise flows are recomputed for the live fleet (see fleet.py) until the workers match.
        "in_use": coord.fleet.plan.method,
        "matches_fleet": base is not None and coord.fleet.plan is base,
        "mismatch": mismatch,
        "running": len(coord.engine.running),
        "waiting": len(coord.engine.waiting),
    }
