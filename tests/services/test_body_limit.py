"""The body limit on real loopback servers: bytes are counted as they arrive, so a chunked body (no
Content-Length) or a declared length over the limit answers 413 in the one error shape, a body under the
limit reaches the route intact, and the server keeps serving afterwards."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI, Request

from services.jobs.http import install
from services.jobs.serving import RunningServers

LIMIT = 20_000


def _app() -> FastAPI:
    app = FastAPI()
    install(app, max_body_bytes=LIMIT)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServers]:
    servers = RunningServers(_app(), host="127.0.0.1", port=0, grpc_spec=None, on_close=lambda: None)
    servers.start_background()
    try:
        yield servers
    finally:
        servers.stop()


def _raw(server: RunningServers, head: str, chunks: list[bytes]) -> tuple[int, dict[str, object]]:
    """Send one request by hand (chunked when no Content-Length is in `head`) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n")
        for chunk in chunks:
            sock.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            more = sock.recv(65536)
            if not more:
                break
            data += more
    header, _, body = data.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    return status, json.loads(body[: _length(data)])


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def _chunked(payload: bytes, size: int) -> list[bytes]:
    parts = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]


CHUNKED_HEAD = (
    "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
)


def test_chunked_body_over_the_limit_is_413_and_the_server_lives_on(server: RunningServers) -> None:
    status, body = _raw(server, CHUNKED_HEAD, _chunked(b"x" * (LIMIT + 5_000), 4_000))
    assert status == 413
    error = body["error"]
    assert isinstance(error, dict) and error["param"] == "body" and str(LIMIT) in error["message"]
    assert error["type"] == "invalid_request_error"
    # The same server answers the next request, on a new connection.
    status, body = _raw(server, CHUNKED_HEAD, _chunked(b"y" * (LIMIT - 10), 4_000))
    assert (status, body) == (200, {"received": LIMIT - 10})


def test_declared_length_over_the_limit_is_refused_unread(server: RunningServers) -> None:
    head = f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {LIMIT + 1}\r\n"
    status, body = _raw(server, head, [b"z" * 100])  # the rest never comes: the answer does not wait for it
    assert status == 413 and f"Content-Length {LIMIT + 1}" in str(body["error"])


def test_streamed_body_from_httpx(server: RunningServers) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 1000):
            yield b"a" * 1000

    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        ok = client.post("/echo", content=chunks(LIMIT))  # exactly the limit: allowed
        assert ok.status_code == 200 and ok.json() == {"received": LIMIT}
        # Small enough to sit in the socket buffers whole, so the client always reads the answer.
        over = client.post("/echo", content=chunks(LIMIT + 3_000))
        assert over.status_code == 413 and over.json()["error"]["param"] == "body"
        assert client.post("/echo", content=b"{}").json() == {"received": 2}


def test_the_coordinator_enforces_its_setting() -> None:
    """The coordinator app carries the same guard, sized by BRL_MAX_BODY_BYTES (`max_body_bytes`). The app is
    built around a stand-in coordinator (settings, an event log and a registry: what building the routes and
    the dashboard reads); an over-limit body is refused before any route runs."""
    import time

    from services.coordinator.eventlog import EventLog
    from services.coordinator.registry import Registry
    from services.coordinator.routes import build_app
    from services.coordinator.settings import from_env

    settings = from_env({"BRL_MAX_BODY_BYTES": "2000"})
    assert settings.max_body_bytes == 2000
    coord = SimpleNamespace(
        settings=settings,
        engine=SimpleNamespace(events=EventLog()),
        registry=Registry(time.monotonic, expiry_s=60, num_layers=30),
    )
    app = build_app(coord)  # type: ignore[arg-type]
    servers = RunningServers(app, host="127.0.0.1", port=0, grpc_spec=None, on_close=lambda: None)
    servers.start_background()
    try:
        head = CHUNKED_HEAD.replace("/echo", "/v1/completions")
        status, body = _raw(servers, head, _chunked(b"p" * 3_000, 1_000))
        assert status == 413 and "2000" in str(body["error"])
    finally:
        servers.stop()
