"""The coordinator's live dashboard: GET /dashboard (a page with no data in it) and GET /v1/dashboard/state
(the one JSON document the page polls and the tests read): the fleet with each node alive, late, loading,
dead or missing; the placement over [0, L); planned and real flow per edge; KV, queues and step times per
node; throughput and latency over the last minutes; the latest requests with their chains."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse

from planner.cluster import SINK, SOURCE
from services.bearer import bearer_matches
from services.coordinator.dashboard_record import HISTORY_S, NodeBook, Recorder
from services.coordinator.errors import AuthenticationFailed
from services.web import pages

if TYPE_CHECKING:
    from services.coordinator.main import Coordinator
    from services.worker.records import WorkerStats

# The page polls this often; worker Stats are asked at most this often, however many pages are open.
POLL_MS = 1000
STATS_MAX_AGE_S = 1.0
STATS_TIMEOUT_S = 0.8
# A worker whose heartbeat is this many intervals overdue is shown as late (the registry drops it later).
LATE_INTERVALS = 2.0


class Dashboard:
    """Owns what the page shows that the coordinator does not keep itself: the event tee, the lost
    workers, the last worker Stats."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        events = coord.engine.events
        # The engine logs every step and finished request through this tee; its files are unchanged.
        self.recorder = events if isinstance(events, Recorder) else Recorder(events)
        coord.engine.events = self.recorder
        self.nodes = NodeBook()
        coord.registry.watch(self.nodes.on_event)
        self._stats: dict[str, WorkerStats] = {}
        self._stats_errors: dict[str, str] = {}
        self._stats_at = float("-inf")
        self._stats_lock = asyncio.Lock()

    # -- worker Stats (loading, step times), cached ----------------------------------------------------
    async def refresh_stats(self) -> None:
        from services.worker.client import stats

        async with self._stats_lock:
            if time.monotonic() - self._stats_at < STATS_MAX_AGE_S:
                return
            alive = self.coord.registry.alive()
            conns = self.coord.engine.connections

            async def one(name: str, address: str) -> tuple[str, WorkerStats | str]:
                try:
                    return name, await stats(address, connections=conns, timeout_s=STATS_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001 - any failure is shown on the node, never raised
                    return name, f"Stats failed: {type(exc).__name__}"

            found = await asyncio.gather(*(one(n, w.info.address) for n, w in alive.items()))
            # A worker too busy to answer in time keeps its last figures (the error is shown beside them).
            fresh = {n: s for n, s in found if not isinstance(s, str)}
            self._stats = {n: fresh.get(n) or self._stats[n] for n in alive if n in fresh or n in self._stats}
            self._stats_errors = {n: s for n, s in found if isinstance(s, str)}
            self._stats_at = time.monotonic()

    # -- the state document -----------------------------------------------------------------------------
    async def state(self) -> dict[str, Any]:
        await self.refresh_stats()
        coord = self.coord
        fleet = coord.fleet
        fleet.rebuild()
        coord.refresh_gauges()
        plan = fleet.plan
        rollout = coord.controller.status() if coord.controller is not None else {"enabled": False}
        return {
            "model": coord.settings.model_name,
            "num_layers": coord.model.num_layers,
            "wall_s": time.time(),
            "poll_ms": POLL_MS,
            "history_s": HISTORY_S,
            "routable": fleet.routable,
            "reason": fleet.no_route_reason or None,
            "running": len(coord.engine.running),
            "waiting": len(coord.engine.waiting),
            "plan": {
                "method": plan.method,
                "loaded": None if fleet.base_plan is None else fleet.base_plan.method,
                "origin": coord.plan_origin,
                "mismatch": fleet.plan_mismatch(),
                # Without profiles for the live workers the flows are equal weights, not tokens/s.
                "flow_unit": "weight" if plan.method == "live-uniform" else "tok/s",
                "throughput_tok_per_s": sum(f for (s, _), f in plan.edge_flows.items() if s == SOURCE),
            },
            "nodes": self.node_rows(),
            "uncovered": [list(r) for r in fleet.uncovered()],
            "edges": self.edge_rows(),
            "latency": self.recorder.latency(),
            "series": self.recorder.series(),
            "requests": [request_row(r) for r in self.recorder.recent()],
            "rollout": rollout,
        }

    def node_rows(self) -> list[dict[str, Any]]:
        coord = self.coord
        fleet = coord.fleet
        now_mono, now_wall = time.monotonic(), time.time()
        late_s = coord.settings.heartbeat_interval_s * LATE_INTERVALS
        cluster = fleet.base_cluster or fleet.cluster
        regions = {n.name: n.region for n in cluster.nodes}
        rows: list[dict[str, Any]] = []
        alive = coord.registry.alive()
        for name, w in alive.items():
            st = self._stats.get(name)
            size = w.info.layers.size
            booked = fleet.kv.used(name) / size if name in fleet.kv.nodes() and size else 0.0
            age_s = max(0.0, now_mono - w.last_seen_s)
            status = "alive"
            if st is not None and st.loading:
                status = "loading"
            elif age_s > late_s:
                status = "late"
            rows.append(
                {
                    "name": name,
                    "status": status,
                    "region": regions.get(name, "default"),
                    "gpu_type": w.info.gpu_type,
                    "address": w.info.address,
                    "backend": w.info.backend,
                    "layers": [w.info.layers.start, w.info.layers.end],
                    "kv_used_tokens": w.kv_used_tokens,
                    "kv_booked_tokens": round(booked, 1),
                    "kv_capacity_tokens": w.info.kv_capacity_tokens,
                    "queue_depth": w.queue_depth,
                    "step_ms_p50": None if st is None else st.step_ms_p50,
                    "step_ms_p99": None if st is None else st.step_ms_p99,
                    "active_requests": None if st is None else st.active_requests,
                    "loading_range": None
                    if st is None or st.loading_range is None
                    else list(st.loading_range),
                    "heartbeat_age_s": round(age_s, 3),
                    "stats_error": self._stats_errors.get(name),
                }
            )
        for name, lost in self.nodes.lost.items():
            if name in alive:
                continue
            info = lost.state.info
            rows.append(
                {
                    "name": name,
                    "status": "dead",
                    "region": regions.get(name, "default"),
                    "gpu_type": info.gpu_type,
                    "address": info.address,
                    "backend": info.backend,
                    "layers": [info.layers.start, info.layers.end],
                    "kv_capacity_tokens": info.kv_capacity_tokens,
                    "dead_for_s": round(max(0.0, now_wall - lost.lost_wall_s), 1),
                }
            )
        if fleet.base_plan is not None:
            gpu = {n.name: n.gpu_type for n in cluster.nodes}
            for name, r in fleet.base_plan.placement.ranges.items():
                if name not in alive and name not in self.nodes.lost:
                    rows.append(
                        {
                            "name": name,
                            "status": "missing",
                            "region": regions.get(name, "default"),
                            "gpu_type": gpu.get(name, "?"),
                            "layers": [r.start, r.end],
                        }
                    )
        rows.sort(key=lambda r: (r["region"], r["gpu_type"], r["layers"][0], r["name"]))
        return rows

    def edge_rows(self) -> list[dict[str, Any]]:
        """Every edge that is planned or has carried traffic: planned tokens/s (the plan's max flow), the
        real rates over the last seconds and the totals of the `brl_edge_*` counters."""
        plan = self.coord.fleet.plan
        metrics = self.coord.metrics
        totals = metrics.edge_totals()
        rates = metrics.edge_window.rates()
        planned = {e: f for e, f in plan.edge_flows.items() if f > 0}
        alive = set(self.coord.registry.names()) | {SOURCE, SINK}
        rows = []
        for edge in sorted(set(planned) | set(totals)):
            req_total, tok_total = totals.get(edge, (0.0, 0.0))
            req_rate, tok_rate = rates.get(edge, (0.0, 0.0))
            rows.append(
                {
                    "src": edge[0],
                    "dst": edge[1],
                    "planned_tok_per_s": planned.get(edge, 0.0),
                    "requests_per_s": req_rate,
                    "tokens_per_s": tok_rate,
                    "requests_total": req_total,
                    "tokens_total": tok_total,
                    "live": edge[0] in alive and edge[1] in alive,
                }
            )
        return rows


def request_row(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "wall", "input_len", "output_len", "route", "retries", "finish_reason", "error")
    return {
        **{k: r.get(k) for k in keys},
        **{k: r.get(k) for k in ("ttft_s", "decode_latency_s", "e2e_s")},
    }


# -- HTTP -------------------------------------------------------------------------------------------------
PAGE_BODY = """
<div id="dash-banner" class="dash-banner" hidden></div>
<div id="dash-summary" class="dash-summary"></div>
<div class="dash-cols">
  <div class="dash-col">
    <section class="brl-panel"><h2>Fleet</h2><div id="dash-fleet"></div></section>
    <section class="brl-panel"><h2>Placement over layers [0, L)</h2><div id="dash-placement"></div></section>
    <section class="brl-panel"><h2>Routing graph: planned vs real flow</h2><div id="dash-graph"></div></section>
  </div>
  <div class="dash-col">
    <section class="brl-panel"><h2>Throughput (tokens/s, requests/s)</h2><div id="dash-tput"></div>
      <h2>Latency p50 / p95 (s)</h2><div id="dash-lat"></div><div id="dash-lat-summary"></div></section>
    <section class="brl-panel"><h2>Edges</h2><div id="dash-edges"></div></section>
    <section class="brl-panel dash-requests"><h2>Recent requests</h2><div id="dash-requests"></div></section>
  </div>
</div>
"""


def page_keys(coord: Coordinator) -> list[str]:
    """Keys that open the dashboard's data: the API key, and the admin key (operators hold it)."""
    return [k for k in (coord.settings.api_key, coord.settings.admin_api_key) if k]


def mount(app: FastAPI, coord: Coordinator, responses: dict[int | str, dict[str, Any]]) -> Dashboard:
    dash = Dashboard(coord)
    pages.mount(app)
    keys = page_keys(coord)

    async def require_page_key(request: Request) -> None:
        if keys and not any(bearer_matches(request, k) for k in keys):
            raise AuthenticationFailed(
                "missing or wrong API key: send the header `Authorization: Bearer <key>` "
                "(BRL_API_KEY, or the admin key)"
            )

    router = APIRouter(responses=responses)

    @router.get("/v1/dashboard/state", dependencies=[Depends(require_page_key)])
    async def dashboard_state() -> dict[str, Any]:
        return await dash.state()

    @router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard_page() -> HTMLResponse:
        return pages.render(
            title=f"Fleet · {coord.settings.model_name}",
            body=PAGE_BODY,
            vendor=["uplot"],
            scripts=[f"{pages.STATIC_URL}/coordinator/dashboard.js"],
            styles=[f"{pages.STATIC_URL}/coordinator/dashboard.css"],
            config={"state_url": "/v1/dashboard/state", "poll_ms": POLL_MS},
        )

    app.include_router(router)
    return dash
