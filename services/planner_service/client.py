"""A small client of the planner service for other processes (the coordinator's plan swap, scripts):
fetch a finished plan by id, submit a plan job and wait for it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from planner.errors import InvalidInput, Unavailable
from planner.formats.plan_json import plan_from_dict
from planner.plan import Plan
from services.errors_table import Conflict, NotFound

DONE = ("succeeded", "failed", "cancelled")


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code < 400:
        return
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    if response.status_code == 404:
        raise NotFound("plan", what)
    if response.status_code == 409:
        raise Conflict(message)
    if response.status_code in (400, 422):
        raise InvalidInput(message, source="planner service")
    raise Unavailable(f"planner service answered {response.status_code}: {message}")


def fetch_plan(base_url: str, plan_id: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> Plan:
    """The plan of a succeeded job (`GET /v1/plans/{id}/plan`); NotFound / Conflict / Unavailable otherwise."""
    url = f"{base_url.rstrip('/')}/v1/plans/{plan_id}/plan"
    try:
        response = httpx.get(url, headers=_headers(api_key), timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise Unavailable(f"planner service at {base_url} unreachable: {exc}") from None
    _raise_for(response, plan_id)
    return plan_from_dict(response.json(), source=url)


def submit_and_wait(
    base_url: str,
    body: Mapping[str, Any],
    *,
    api_key: str | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Submit a plan job (`POST /v1/plans`) and poll until it finishes; returns the final job object."""
    with httpx.Client(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=30.0) as client:
        try:
            response = client.post("/v1/plans", json=dict(body))
            _raise_for(response, "new")
            url = response.json()["url"]
            deadline = time.monotonic() + timeout_s
            while True:
                job: dict[str, Any] = client.get(url).json()
                if job["status"] in DONE or time.monotonic() > deadline:
                    return job
                time.sleep(poll_s)
        except httpx.HTTPError as exc:
            raise Unavailable(f"planner service at {base_url} unreachable: {exc}") from None
