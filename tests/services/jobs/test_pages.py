"""The job pages of the planner and simulator services on real loopback servers: pages carry no data,
fragments need the key (as a header) and show what the job has — layer bars, per-edge flows, the min cut,
a dry run's numbers — and the compare pages put two plans / two runs side by side."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from planner.formats.plan_json import parse_edge_key
from services.jobs.serving import RunningServers
from services.web.pages import CSP, STATIC_URL
from tests.services.jobs.client import API_KEY

FLOAT = r"([0-9.]+)"
# The one URL a page script may name: the SVG namespace (an identifier, never fetched).
SVG_NS = "http://www.w3.org/2000/svg"


def _no_key(client: httpx.Client) -> httpx.Client:
    return httpx.Client(base_url=str(client.base_url), timeout=30.0)


def _config(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="brl-config">(.*?)</script>', page, re.S)
    assert found is not None
    config: dict[str, Any] = json.loads(found[1])
    return config


def test_pages_are_public_carry_no_data_and_use_the_shared_base(
    planner: tuple[RunningServers, httpx.Client], plans: list[dict[str, Any]]
) -> None:
    _, client = planner
    with _no_key(client) as anon:
        for path in (
            "/ui/plans",
            f"/ui/plans/{plans[0]['id']}",
            f"/ui/plans/compare?a={plans[0]['id']}&b={plans[1]['id']}",
        ):
            page = anon.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            # The one base page of services/web: its login form, brl.js, its CSP; no inline script.
            assert 'id="brl-login"' in page.text and 'type="password"' in page.text
            assert f'src="{STATIC_URL}/brl.js"' in page.text
            assert page.text.index("/brl.js") < page.text.index("/jobs/pages.js")
            assert page.headers["content-security-policy"] == CSP
            assert "layer-bar" not in page.text and "cluster24" not in page.text
            # Nothing from elsewhere: every script and stylesheet is served by the service itself.
            assert not re.search(r'(src|href)="(https?:)?//', page.text)
            for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
                asset = anon.get(url)
                assert asset.status_code == 200, url
                if "/vendor/" not in url:  # vendored files are npm's, checked in tests/services/web
                    text = asset.text.replace(SVG_NS, "")
                    assert "https://" not in text and "http://" not in text, url
        assert anon.get("/ui", follow_redirects=False).headers["location"] == "/ui/plans"
        assert anon.get(f"{STATIC_URL}/../settings.py").status_code == 404
        assert anon.get("/ui/static/pages.js").status_code == 404  # one static mount: services/web's
        assert anon.get("/ui/plans/compare?a=nothex&b=x").status_code == 422


def test_fragments_need_the_key_as_a_header(
    planner: tuple[RunningServers, httpx.Client], plans: list[dict[str, Any]]
) -> None:
    _, client = planner
    paths = ("/ui/fragments/plans", f"/ui/fragments/plans/{plans[0]['id']}")
    with _no_key(client) as anon:
        for path in paths:
            assert anon.get(path).status_code == 401
            assert anon.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert anon.get(path, params={"key": API_KEY}).status_code == 401  # a key in the URL is no key
    for path in paths:
        assert client.get(path).status_code == 200


def test_pages_stay_out_of_the_openapi_schema(planner: tuple[RunningServers, httpx.Client]) -> None:
    _, client = planner
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]


def test_plan_page_shows_bars_flows_and_the_min_cut(
    planner: tuple[RunningServers, httpx.Client], plans: list[dict[str, Any]]
) -> None:
    _, client = planner
    plan = plans[0]["result"]["plan"]
    html = client.get(f"/ui/fragments/plans/{plans[0]['id']}").text
    bars = {
        m["node"]: (int(m["start"]), int(m["end"]))
        for m in re.finditer(
            r'class="layer-bar" data-node="(?P<node>[^"]+)" data-gpu="[^"]*" '
            r'data-start="(?P<start>\d+)" data-end="(?P<end>\d+)"',
            html,
        )
    }
    assert bars == {n: tuple(r) for n, r in plan["placement"].items()}
    assert 'data-num-layers="80"' in html
    flows = {
        (m[1], m[2]): float(m[3])
        for m in re.finditer(
            r'<g class="edge" data-src="([^"]+)" data-dst="([^"]+)" data-flow="' + FLOAT, html
        )
    }
    planned = {parse_edge_key(k): v for k, v in plan["edge_flows"].items()}
    assert flows.keys() == planned.keys()
    for edge, value in planned.items():
        assert flows[edge] == pytest.approx(value, abs=1e-3)
    found = re.search(r'data-field="cut-capacity">([0-9,.]+)<', html)
    assert found is not None
    cut = float(found[1].replace(",", ""))
    assert cut == pytest.approx(plan["objective_tok_per_s"], abs=0.1)
    assert re.search(r'<tr data-kind="(compute|nic_in|nic_out|link|coordinator)"', html)
    assert 'data-field="method">petals<' in html


def test_compare_plans_side_by_side(
    planner: tuple[RunningServers, httpx.Client], plans: list[dict[str, Any]]
) -> None:
    _, client = planner
    a, b = plans
    html = client.get(f"/ui/fragments/plans/compare?a={a['id']}&b={b['id']}").text
    assert html.count('class="side"') == 2
    for job in plans:
        objective = f"{job['result']['plan']['objective_tok_per_s']:,.1f}"
        assert f'data-field="objective">{objective}<' in html
    assert client.get(f"/ui/fragments/plans/compare?a={a['id']}&b={'0' * 32}").status_code == 404
    assert client.get(f"/ui/fragments/plans/compare?a={a['id']}&b=nothex").status_code == 422
    assert client.get(f"/ui/fragments/plans/{'0' * 32}").status_code == 404


def test_dry_run_page_shows_its_numbers_and_plots(
    simulator: tuple[RunningServers, httpx.Client], runs: list[dict[str, Any]]
) -> None:
    _, client = simulator
    run = runs[0]
    html = client.get(f"/ui/fragments/simulations/{run['id']}").text
    summary = run["result"]["summary"]
    assert f'data-field="decode_tok_per_s">{summary["decode_tok_per_s"]:,.1f}<' in html
    assert f'data-field="finished">{summary["finished"]}<' in html
    p95 = re.search(r'data-latency="decode">.*?data-p="p95">([0-9.,]+)<', html, re.S)
    assert p95 is not None and float(p95[1]) == pytest.approx(summary["decode_latency_s"]["p95"], abs=1e-3)
    for name in run["result"]["plots"]:
        assert f'src="/v1/simulations/{run["id"]}/plots/{name}.png"' in html
    assert html.count('class="layer-bar"') == len(run["request"]["plan"]["placement"])


def test_compare_two_dry_runs(
    simulator: tuple[RunningServers, httpx.Client], runs: list[dict[str, Any]]
) -> None:
    _, client = simulator
    a, b = runs
    html = client.get(f"/ui/fragments/simulations/compare?a={a['id']}&b={b['id']}").text
    row = re.search(r'data-row="decode_tok_per_s">.*?</tr>', html, re.S)
    assert row is not None
    cells = [float(v.replace(",", "")) for v in re.findall(r'<td class="num[^"]*">([0-9.,]+)</td>', row[0])]
    da, db = a["result"]["summary"]["decode_tok_per_s"], b["result"]["summary"]["decode_tok_per_s"]
    assert cells == pytest.approx([da, db, db / da], abs=1e-2)
    assert html.count('class="series"') >= 2  # both runs drawn on the throughput chart
    assert html.count('class="side"') == 2 and "petals" in html and "swarm" in html


def test_list_page_config_points_at_the_json_route(simulator: tuple[RunningServers, httpx.Client]) -> None:
    _, client = simulator
    config = _config(client.get("/ui/simulations").text)
    assert config["view"] == "list" and config["json"] == "/v1/simulations"
    assert config["fragment"] == "/ui/fragments/simulations" and config["base"] == "/ui/simulations"
    assert 0 < config["poll_ms"] <= 2000
    job = _config(client.get(f"/ui/simulations/{'a' * 32}").text)
    assert job["view"] == "job" and job["fragment"] == f"/ui/fragments/simulations/{'a' * 32}"
