"""The coordinator's HTTP surface on a real loopback server (fake fleet): admin routes exist only with an
admin key and take only it; every malformed body, lone surrogates included, is a 4xx naming the field; 5xx
answers are generic with an error id whose details are in the log."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from tests.services.coordinator.fakeserver import serve_fake

KEY, ADMIN = "inference-key", "admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def post_raw(url: str, raw: str, headers: dict[str, str]) -> httpx.Response:
    """A JSON body written by hand: json.dumps would refuse nothing, but this keeps escapes exactly."""
    return httpx.post(url, content=raw.encode(), headers={**headers, "Content-Type": "application/json"})


def test_without_an_admin_key_the_admin_routes_do_not_exist() -> None:
    with serve_fake({"a": (0, 4)}, api_key=KEY) as srv:
        for method in ("GET", "POST"):
            r = httpx.request(method, f"{srv.base_url}/admin/plan", headers=AUTH, json={})
            # The same answer as any unknown path: nothing tells a scanner there is an admin API.
            unknown = httpx.request(method, f"{srv.base_url}/admin/nothing", headers=AUTH, json={})
            assert r.status_code == unknown.status_code == 404
            assert r.json()["error"]["code"] == "not_found"
        paths = httpx.get(f"{srv.root_url}/openapi.json").json()["paths"]
        assert "/v1/admin/plan" not in paths and "/v1/chat/completions" in paths


def test_admin_takes_its_own_key_only() -> None:
    with serve_fake({"a": (0, 4)}, api_key=KEY, admin_api_key=ADMIN) as srv:
        url = f"{srv.base_url}/admin/plan"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers=AUTH).status_code == 401  # the inference key never opens admin
        r = httpx.get(url, headers=ADMIN_AUTH)
        assert r.status_code == 200 and r.json()["in_use"]
        # ... and the admin key is not an inference key.
        assert (
            httpx.post(f"{srv.base_url}/chat/completions", json=CHAT, headers=ADMIN_AUTH).status_code == 401
        )
        assert httpx.post(f"{srv.base_url}/chat/completions", json=CHAT, headers=AUTH).status_code == 200
        # The rollout figures: admin key only; without BRL_AUTO_REPLAN the controller is off.
        rollout = f"{srv.base_url}/admin/rollout"
        assert httpx.get(rollout, headers=AUTH).status_code == 401
        r = httpx.get(rollout, headers=ADMIN_AUTH)
        assert r.status_code == 200 and r.json() == {"enabled": False, "rollouts": 0, "last": None}


def test_plan_swap_body_may_not_name_a_url() -> None:
    with serve_fake({"a": (0, 4)}, admin_api_key=ADMIN) as srv:
        url = f"{srv.base_url}/admin/plan"
        r = httpx.post(url, json={"plan_id": "abc", "planner_url": "http://evil.example"}, headers=ADMIN_AUTH)
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "planner_url"
        assert "evil.example" not in r.text
        # No planner configured: a plan id cannot be loaded; the caller is told to send the plan inline.
        r = httpx.post(url, json={"plan_id": "abc"}, headers=ADMIN_AUTH)
        assert r.status_code == 400 and r.json()["error"]["param"] == "plan_id"


SURROGATE_BODIES = [
    ("/admin/plan", '{"plan": {"method": "\\ud800"}}', "plan.method"),
    ("/admin/plan", '{"plan_id": "\\udfff"}', "plan_id"),
    ("/admin/plan", '{"planner_url": "http://\\ud800"}', "planner_url"),
    ("/completions", '{"model": "fake", "prompt": "a\\ud800b"}', "prompt"),
    ("/completions", '{"model": "fake", "prompt": ["\\udc00"]}', "prompt.0"),
    ("/completions", '{"model": "\\ud800", "prompt": "hi"}', "model"),
    ("/completions", '{"model": "fake", "prompt": "hi", "stop": ["x", "\\ud83d"]}', "stop.1"),
    (
        "/chat/completions",
        '{"model": "fake", "messages": [{"role": "user", "content": "\\ud800"}]}',
        "messages.0.content",
    ),
    (
        "/chat/completions",
        '{"model": "fake", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udbff"}]}]}',
        "messages.0.content.0.text",
    ),
    ("/chat/completions", '{"model": "fake", "messages": [], "\\ud800": 1}', "<key>"),
]


@pytest.mark.parametrize(("path", "raw", "param"), SURROGATE_BODIES)
def test_lone_surrogates_are_a_400_naming_the_field(path: str, raw: str, param: str) -> None:
    with serve_fake({"a": (0, 4)}, admin_api_key=ADMIN) as srv:
        r = post_raw(f"{srv.base_url}{path}", raw, ADMIN_AUTH if "admin" in path else {})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        assert "surrogate" in r.json()["error"]["message"]


MALFORMED: list[tuple[str, Any, str | None]] = [
    ("/completions", "not json", None),
    ("/completions", [1, 2], None),
    ("/completions", {"model": "fake", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("/completions", {"model": "fake", "prompt": "hi", "stop": "x" * 257}, "stop"),
    ("/completions", {"model": "fake", "prompt": "hi", "bogus": 1}, "bogus"),
    ("/chat/completions", {"model": "fake", "messages": [{"role": "wizard", "content": "x"}]}, None),
    ("/chat/completions", {"model": "fake", "messages": "hi"}, "messages"),
]


@pytest.mark.parametrize(("path", "body", "param"), MALFORMED)
def test_malformed_bodies_are_4xx_naming_the_field(path: str, body: Any, param: str | None) -> None:
    with serve_fake({"a": (0, 4)}) as srv:
        if isinstance(body, str):
            r = post_raw(f"{srv.base_url}{path}", body, {})
        else:
            r = httpx.post(f"{srv.base_url}{path}", json=body)
        assert 400 <= r.status_code < 500, r.text
        if param is not None:
            assert r.json()["error"]["param"] == param


def test_a_5xx_is_generic_with_an_id_and_the_log_has_the_details(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="brl.coordinator.errors")
    with serve_fake({"a": (0, 2)}) as srv:  # layers [2,4) have no worker: no route
        r = httpx.post(f"{srv.base_url}/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "no_route"
    assert "[2,4)" not in err["message"]  # fleet internals stay in the log ...
    found = re.search(r"error id ([0-9a-f]+)", err["message"])
    assert found is not None
    logged = [rec.getMessage() for rec in caplog.records if found.group(1) in rec.getMessage()]
    assert logged and "[2,4)" in logged[0]  # ... under the id the client got
