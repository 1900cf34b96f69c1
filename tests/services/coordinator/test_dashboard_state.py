"""GET /v1/dashboard/state and GET /dashboard on a real loopback coordinator over the fake fleet: the data
needs the API key (or the admin key) in a header when one is set, the page itself carries no data and no
key, and the state's edges, requests and latencies follow the traffic and the `brl_edge_*` counters."""

from __future__ import annotations

import re

import httpx
import pytest

from services.coordinator.dashboard_record import BUCKET_S
from services.web.pages import STATIC_URL
from tests.services.coordinator.fakeserver import serve_fake

KEY, ADMIN = "inference-key", "admin-key"
STATE = "/v1/dashboard/state"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_data_needs_a_configured_key_in_a_header() -> None:
    with serve_fake({"a": (0, 2), "b": (2, 4)}, api_key=KEY, admin_api_key=ADMIN) as srv:
        url = srv.root_url + STATE
        for headers in ({}, bearer("wrong"), {"Authorization": KEY}):
            r = httpx.get(url, headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert "Authorization: Bearer" in r.json()["error"]["message"]
        # A key in the query string opens nothing.
        assert httpx.get(url, params={"api_key": KEY, "key": KEY}).status_code == 401
        assert httpx.get(url, headers=bearer(KEY)).status_code == 200
        assert httpx.get(url, headers=bearer(ADMIN)).status_code == 200
        # The page is public and holds no data: worker names and the key appear only in the state.
        page = httpx.get(srv.root_url + "/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="brl-login"' in page.text and KEY not in page.text
        assert not re.search(r'data-node="a"', page.text)
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # Every script and stylesheet is served by the coordinator itself, none from elsewhere.
        for src in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text):
            assert src.startswith(STATIC_URL), src
            assert httpx.get(srv.root_url + src).status_code == 200


def test_without_keys_the_data_is_open() -> None:
    with serve_fake({"a": (0, 4)}) as srv:
        r = httpx.get(srv.root_url + STATE)
        assert r.status_code == 200
        assert [n["name"] for n in r.json()["nodes"]] == ["a"]


def test_state_follows_the_traffic_and_the_counters() -> None:
    with serve_fake({"a": (0, 2), "b": (2, 4)}, api_key=KEY) as srv:
        n_requests, max_tokens = 4, 5
        for i in range(n_requests):
            body = {"model": "fake", "prompt": f"hello {i}", "max_tokens": max_tokens}
            r = httpx.post(f"{srv.base_url}/completions", json=body, headers=bearer(KEY))
            assert r.status_code == 200
        state = httpx.get(srv.root_url + STATE, headers=bearer(KEY)).json()
        assert state["routable"] and state["uncovered"] == []
        assert state["num_layers"] == 4
        nodes = {n["name"]: n for n in state["nodes"]}
        assert {n: v["layers"] for n, v in nodes.items()} == {"a": [0, 2], "b": [2, 4]}
        # The fake fleet sends no heartbeats: silent for longer than two intervals is "late", not dead.
        assert {v["status"] for v in nodes.values()} <= {"alive", "late"}
        metrics = httpx.get(srv.root_url + "/metrics").text
        edges = {(e["src"], e["dst"]): e for e in state["edges"]}
        assert set(edges) == {("source", "a"), ("a", "b"), ("b", "sink")}
        for (src, dst), e in edges.items():
            line = f'brl_edge_requests_total{{dst="{dst}",src="{src}"}} {e["requests_total"]}'
            assert line in metrics
            assert e["requests_total"] == n_requests
            assert e["requests_per_s"] > 0 and e["tokens_per_s"] > 0
            assert e["planned_tok_per_s"] > 0 and e["live"]
        recent = state["requests"]
        assert len(recent) == n_requests
        assert all(r["route"] == ["a[0,2)", "b[2,4)"] and r["output_len"] == max_tokens for r in recent)
        assert recent[0]["wall"] >= recent[-1]["wall"]  # newest first
        assert state["latency"]["e2e_s"]["n"] == n_requests
        assert 0 < state["latency"]["ttft_s"]["p50"] <= state["latency"]["ttft_s"]["p95"]
        series = state["series"]
        assert len(series["t"]) == len(series["decode_tok_per_s"]) == len(series["ttft_p50_s"])
        # Every token counted once: (max_tokens - 1) decode steps per request, the first comes from prefill.
        assert sum(series["decode_tok_per_s"]) * BUCKET_S == pytest.approx(n_requests * (max_tokens - 1))
        assert sum(series["requests_per_s"]) * BUCKET_S == pytest.approx(n_requests)


def test_a_worker_loading_layers_is_shown_loading() -> None:
    from services.coordinator.dashboard import Dashboard
    from services.worker.records import WorkerStats

    with serve_fake({"a": (0, 2), "b": (2, 4)}) as srv:
        dash = Dashboard(srv.coordinator)  # a second view of the same coordinator, Stats set by hand
        dash._stats = {"a": WorkerStats(loading=True, loading_range=(0, 4), step_ms_p50=3.0)}
        rows = {r["name"]: r for r in dash.node_rows()}
        assert rows["a"]["status"] == "loading" and rows["a"]["loading_range"] == [0, 4]
        assert rows["a"]["step_ms_p50"] == 3.0
        assert rows["b"]["status"] in ("alive", "late") and rows["b"]["step_ms_p50"] is None
