"""Test helpers for the job services: start real servers on 127.0.0.1 (port 0) and poll jobs over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from services.jobs.serving import RunningServers

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DONE = ("succeeded", "failed", "cancelled")


@contextmanager
def running(start: Callable[[], tuple[RunningServers, Any]]) -> Iterator[tuple[RunningServers, httpx.Client]]:
    servers, _ = start()
    servers.start_background()
    try:
        with httpx.Client(base_url=servers.base_url, headers=AUTH, timeout=30.0) as client:
            yield servers, client
    finally:
        servers.stop()


def wait_job(
    client: httpx.Client, url: str, statuses: tuple[str, ...] = DONE, timeout_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} stayed {job['status']}: {job}")
        time.sleep(0.1)
