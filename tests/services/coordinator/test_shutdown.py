"""Graceful stop of the coordinator (SIGTERM in a rolling update): every request in flight ends cleanly (an
OpenAI-shaped error event then `data: [DONE]` on streams, 503 otherwise) and the workers get their KV back."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import uvicorn

from services.coordinator.main import Coordinator, DrainingServer, bind_http
from services.coordinator.routes import build_app
from services.coordinator.serving import OpenAIServing
from services.coordinator.settings import CoordinatorSettings
from tests.services.coordinator.fakes import MODEL, FakeWorld, make_engine
from tests.services.coordinator.fakeserver import FakeTokenizer

pytestmark = pytest.mark.anyio


async def until(cond, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_sigterm_ends_streams_with_error_and_done_and_frees_kv() -> None:
    world = FakeWorld(step_delay_s=0.02)  # ~50 tokens/s: 2000-token requests are still running at the stop
    engine = make_engine(world, {"a": (0, 2), "b": (2, 4)})
    settings = CoordinatorSettings(model="fake", http_port=0, grpc_port=0)
    serving = OpenAIServing(engine, FakeTokenizer(), model_name="fake")  # type: ignore[arg-type]
    coord = Coordinator(
        settings,
        MODEL,
        engine.fleet.registry,
        engine.fleet,
        engine,
        serving,
        engine.metrics,
        "t",
        time.time(),
    )
    sock = bind_http("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/completions"
    config = uvicorn.Config(
        build_app(coord), log_level="warning", lifespan="off", timeout_graceful_shutdown=3
    )
    server = DrainingServer(config, engine)
    await engine.start()
    serve = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started)

    async def stream(client: httpx.AsyncClient) -> list[str]:
        body = {"model": "fake", "prompt": "hello there", "max_tokens": 2000, "stream": True}
        async with client.stream("POST", url, json=body) as resp:
            assert resp.status_code == 200
            return [line async for line in resp.aiter_lines() if line.startswith("data: ")]

    async def plain(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(url, json={"model": "fake", "prompt": "hi", "max_tokens": 2000})

    try:
        async with httpx.AsyncClient(timeout=30) as client:
            streams = [asyncio.create_task(stream(client)) for _ in range(3)]
            blocking = asyncio.create_task(plain(client))
            await until(lambda: len(engine.running) == 4 and world.kv_used() == 8)  # 4 requests x 2 hops
            await until(lambda: all(len(r.generated) > 3 for r in engine.running.values()))
            # What uvicorn's SIGTERM/SIGINT handler does (calling it here would re-raise the signal in pytest).
            server.should_exit = True
            outs = await asyncio.wait_for(asyncio.gather(*streams), timeout=30)
            answer = await asyncio.wait_for(blocking, timeout=30)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serve, timeout=30)
        await engine.stop()
        sock.close()

    for lines in outs:
        assert lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2].removeprefix("data: "))
        assert error["error"]["type"] and "shutting down" in error["error"]["message"]
        assert len(lines) > 3  # some tokens came before the error
    assert answer.status_code == 503 and "shutting down" in answer.json()["error"]["message"]
    assert world.kv_used() == 0  # aborted on every hop
    assert engine.running == {} and not engine.waiting
