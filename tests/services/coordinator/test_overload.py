"""Overload and HTTP behaviour on the fake fleet: a bounded admission queue answers 429 with Retry-After
beyond it, every other request completes, and the server keeps serving afterwards."""

from __future__ import annotations

import asyncio

import httpx

from services.coordinator.engine import EngineLimits
from tests.services.coordinator.fakes import reference
from tests.services.coordinator.fakeserver import FakeTokenizer, serve_fake

LAYOUT = {"a": (0, 2), "b": (2, 4)}


def test_two_hundred_clients_complete_or_get_429() -> None:
    limits = EngineLimits(max_waiting=8, max_running=4, tick_s=0.02)
    with serve_fake(LAYOUT, limits=limits, step_delay_s=0.002) as srv:

        async def one(client: httpx.AsyncClient, i: int) -> tuple[int, dict[str, object], dict[str, str]]:
            r = await client.post(
                "/completions", json={"model": "fake", "prompt": f"p{i}", "max_tokens": 6, "temperature": 0}
            )
            return r.status_code, r.json(), dict(r.headers)

        async def run() -> list[tuple[int, dict[str, object], dict[str, str]]]:
            limits_http = httpx.Limits(max_connections=None)
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=60, limits=limits_http) as client:
                return await asyncio.gather(*(one(client, i) for i in range(200)))

        results = asyncio.run(run())
        codes = [c for c, _, _ in results]
        assert set(codes) <= {200, 429}
        assert codes.count(200) >= limits.max_running + limits.max_waiting
        assert codes.count(429) > 0
        for code, body, headers in results:
            if code == 429:
                assert int(headers["retry-after"]) >= 1
                assert body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        tok = FakeTokenizer()
        for i, (code, body, _) in enumerate(results):
            if code == 200:
                want = tok.decode(reference(tok.encode(f"p{i}"), 6))
                assert body["choices"][0]["text"] == want  # type: ignore[index]
        coord = srv.coordinator
        assert not coord.engine.running and not coord.engine.waiting
        assert coord.fleet.kv.total_used() == 0
        r = httpx.post(
            f"{srv.base_url}/completions", json={"model": "fake", "prompt": "x", "max_tokens": 2}, timeout=30
        )
        assert r.status_code == 200


def test_no_route_is_503_and_ready_says_so() -> None:
    with serve_fake({"a": (0, 2)}) as srv:
        r = httpx.post(
            f"{srv.base_url}/chat/completions",
            timeout=30,
            json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_route"
        assert httpx.get(f"{srv.root_url}/ready", timeout=10).status_code == 503
        assert httpx.get(f"{srv.root_url}/health", timeout=10).status_code == 200


def test_unknown_path_is_openai_404() -> None:
    with serve_fake(LAYOUT) as srv:
        r = httpx.get(f"{srv.base_url}/engines", timeout=10)
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "invalid_request_error"
