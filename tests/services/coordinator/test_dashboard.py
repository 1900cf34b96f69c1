"""The dashboard in headless Chromium over a live local fleet (a real coordinator and two SmolLM2 worker
processes, [0,15) and [15,30)): nodes, layer bars and edge flows on the page match the plan and /metrics;
a killed worker is marked dead and its layers red within 3 s. Screenshots are kept as test artifacts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import Chromium
from tests.services.coordinator.fleet_procs import MODEL, ProcFleet, WorkerSpec

WORKERS = [WorkerSpec("a", 0, 15), WorkerSpec("b", 15, 30)]
CHAIN = ["source", "a", "b", "sink"]
PROMPTS = ["Name a colour.", "Name a fruit.", "Name a planet."]
# Heartbeats every 0.25 s, lost after 4 misses (1 s); the page polls every second.
HEARTBEAT_S = 0.25
DEAD_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcFleet]:
    with ProcFleet(tmp_path_factory.mktemp("dashboard"), heartbeat_interval_s=HEARTBEAT_S) as f:
        f.start_coordinator()
        f.start_workers(WORKERS)
        f.wait_workers([w.name for w in WORKERS], timeout_s=180)
        yield f


@pytest.fixture(scope="module")
def chrome() -> Iterator[Chromium]:
    with Chromium() as c:
        yield c


def edge_samples(metrics_text: str, name: str) -> dict[tuple[str, str], float]:
    """`name{dst="..",src=".."} value` lines of /metrics, by (src, dst)."""
    out: dict[tuple[str, str], float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            out[(labels["src"], labels["dst"])] = float(line.rsplit(" ", 1)[1])
    return out


def test_dashboard_shows_the_live_fleet_then_a_dead_worker(
    fleet: ProcFleet, chrome: Chromium, tmp_path: Path
) -> None:
    for prompt in PROMPTS:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 6, "temperature": 0}
        r = httpx.post(f"{fleet.base_url}/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text

    with chrome.page(tmp_path) as page:
        page.goto(f"{fleet.root_url}/dashboard")
        # No API key configured: the data is open and the login form never shows.
        page.wait_for(
            "Array.from(document.querySelectorAll('tr[data-node]')).filter(e => e.dataset.status === 'alive')"
            ".length === 2",
            timeout_s=15,
        )
        assert not page.logged_out()
        nodes = {n["node"]: n for n in page.data("tr[data-node]")}
        assert {n: (int(v["start"]), int(v["end"])) for n, v in nodes.items()} == {
            "a": (0, 15),
            "b": (15, 30),
        }
        assert {v["gpu"] for v in nodes.values()} == {"cpu"}

        bars = {b["node"]: (int(b["start"]), int(b["end"])) for b in page.data("rect[data-bar]")}
        assert bars == {"a": (0, 15), "b": (15, 30)}
        assert page.data("rect[data-uncovered]") == []

        # Edge totals on the page = the brl_edge_* counters of /metrics; planned flow = the state's plan.
        page.wait_for(
            "document.querySelectorAll('tr[data-edge-row][data-requests-total=\"3\"]').length === 3",
            timeout_s=10,
        )
        metrics = httpx.get(f"{fleet.root_url}/metrics", timeout=10).text
        requests_total = edge_samples(metrics, "brl_edge_requests_total")
        tokens_total = edge_samples(metrics, "brl_edge_tokens_total")
        rows = {(e["src"], e["dst"]): e for e in page.data("tr[data-edge-row]")}
        chain_edges = set(zip(CHAIN, CHAIN[1:], strict=False))
        assert set(rows) == chain_edges == set(requests_total)
        status, state = page.fetch_json("/v1/dashboard/state")
        assert status == 200
        planned = {(e["src"], e["dst"]): e["planned_tok_per_s"] for e in state["edges"]}
        for edge, row in rows.items():
            assert float(row["requestsTotal"]) == requests_total[edge] == len(PROMPTS)
            assert float(row["tokensTotal"]) == tokens_total[edge]
            assert float(row["planned"]) == pytest.approx(planned[edge], rel=1e-6)
            assert planned[edge] > 0
        # The graph draws the same edges, and every request shows the chain it took.
        assert {(g["src"], g["dst"]) for g in page.data("g[data-edge]")} == chain_edges
        chains = page.texts("tr[data-request] td.chain")
        assert chains == ["a[0,15) → b[15,30)"] * len(PROMPTS)
        page.screenshot("dashboard-live")

        fleet.kill("b")
        page.wait_for(
            "(document.querySelector('tr[data-node=\"b\"]') || {dataset: {}}).dataset.status === 'dead' && "
            'document.querySelector(\'rect[data-uncovered][data-start="15"][data-end="30"]\') !== null',
            timeout_s=DEAD_WITHIN_S,
            poll_s=0.05,
        )
        assert page.data("tr[data-node='a']")[0]["status"] in ("alive", "late")  # late: a slow heartbeat
        assert page.text("#dash-banner").startswith("No route")
        page.screenshot("dashboard-dead")
