"""The planner and simulator pages in headless Chromium (tests/browser.py): log in with the key, watch a
job appear and finish in the live list, open a finished plan and check its layer bars and edge flows
against the plan JSON, and compare two dry runs ticked in the list. Screenshots are kept as artifacts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from planner.formats.plan_json import parse_edge_key
from services.jobs.serving import RunningServers
from tests.browser import Chromium
from tests.services.jobs.client import API_KEY, wait_job

# Set to a folder to refresh the README's screenshot of the comparison page (docs/img/compare.png).
README_SHOT_ENV = "BRL_README_SCREENSHOTS"


@pytest.fixture(scope="module")
def chrome() -> Iterator[Chromium]:
    with Chromium() as c:
        yield c


def test_logged_out_shows_the_login_and_no_jobs(
    chrome: Chromium,
    planner: tuple[RunningServers, httpx.Client],
    plans: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    servers, _ = planner
    with chrome.page(tmp_path) as page:
        page.goto(f"{servers.base_url}/ui/plans")
        page.wait_for("!document.getElementById('brl-login').hidden")
        assert page.evaluate("document.querySelectorAll('#job-rows tr').length") == 0
        page.login("wrong", expect_ok=False)
        page.wait_for("document.getElementById('brl-login-error').textContent.includes('refused')")
        assert page.logged_out()
        page.screenshot("login")
        # The shared login of services/web: the right key is kept in the tab and opens the list.
        page.login(API_KEY)
        page.wait_for("document.querySelectorAll('#job-rows tr').length >= 2")
        assert page.evaluate("sessionStorage.getItem('brl.apiKey')") == API_KEY
        assert API_KEY not in page.pw.url


def test_live_list_then_a_plan_page_matches_the_plan(
    chrome: Chromium,
    planner: tuple[RunningServers, httpx.Client],
    plans: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    servers, client = planner
    with chrome.page(tmp_path) as page:
        page.goto(f"{servers.base_url}/ui/plans")
        page.login(API_KEY)
        page.wait_for("document.querySelectorAll('#job-rows tr').length >= 2")
        assert {p["id"] for p in plans} <= {r["id"] for r in page.data("#job-rows tr")}
        # A job submitted now shows up and finishes in the open page, with no reload.
        body = {"cluster": "cluster24", "model": "llama2-70b", "method": "petals", "time_limit_s": 5}
        new = client.post("/v1/plans", json={**body, "label": "live"}).json()
        page.wait_for(f"document.querySelector('#job-rows tr[data-id=\"{new['id']}\"]')", timeout_s=20)
        page.wait_for(
            f"document.querySelector('#job-rows tr[data-id=\"{new['id']}\"]').dataset.status === 'succeeded'",
            timeout_s=60,
        )
        page.screenshot("plans-list")

        plan = plans[0]["result"]["plan"]
        page.pw.click(f'#job-rows tr[data-id="{plans[0]["id"]}"] a')
        page.wait_for("document.querySelectorAll('.layer-bar').length > 0")
        bars = {d["node"]: (int(d["start"]), int(d["end"])) for d in page.data(".layer-bar")}
        assert bars == {n: tuple(r) for n, r in plan["placement"].items()}
        flows = {(d["src"], d["dst"]): float(d["flow"]) for d in page.data("g.edge")}
        planned = {parse_edge_key(k): v for k, v in plan["edge_flows"].items()}
        assert flows.keys() == planned.keys()
        for edge, value in planned.items():
            assert flows[edge] == pytest.approx(value, abs=1e-3)
        shown = page.text("[data-field=objective]").replace(",", "")
        assert float(shown) == pytest.approx(plan["objective_tok_per_s"], abs=0.05)
        assert page.evaluate("document.querySelectorAll('table.cut tr[data-kind]').length") >= 1
        page.screenshot("plan")
    assert wait_job(client, f"/v1/plans/{new['id']}")["status"] == "succeeded"


def test_compare_two_dry_runs_ticked_in_the_list(
    chrome: Chromium,
    simulator: tuple[RunningServers, httpx.Client],
    runs: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    servers, _ = simulator
    with chrome.page(tmp_path) as page:
        page.goto(f"{servers.base_url}/ui/simulations")
        page.login(API_KEY)
        for run in runs:
            row = f'#job-rows tr[data-id="{run["id"]}"]'
            page.wait_for(f"document.querySelector('{row}')")
            page.pw.check(f"{row} input[type=checkbox]")
        page.pw.click("#compare-btn")
        page.wait_for("document.querySelector('article.compare')")
        page.wait_for("document.querySelectorAll('.layer-bar').length > 0")
        assert page.pw.url.endswith(f"/ui/simulations/compare?a={runs[0]['id']}&b={runs[1]['id']}")
        cells = page.texts("tr[data-row=decode_tok_per_s] td")
        shown = [float(c.replace(",", "")) for c in cells[:2]]
        expected = [r["result"]["summary"]["decode_tok_per_s"] for r in runs]
        assert shown == pytest.approx(expected, abs=1e-3)
        nodes = {d["node"] for d in page.data(".layer-bar")}
        assert nodes == set(runs[0]["request"]["plan"]["placement"]) | set(
            runs[1]["request"]["plan"]["placement"]
        )
        shot = page.screenshot("compare")
    keep = os.environ.get(README_SHOT_ENV)
    if keep:
        shutil.copyfile(shot, Path(keep) / "compare.png")
