"""A real coordinator HTTP server on 127.0.0.1 over the fake fleet of `fakes.py` (no model, no workers):
for HTTP-level tests that need many requests fast (overload, load generator)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import uvicorn

from planner.placement import LayerRange
from services.coordinator.engine import Engine, EngineLimits
from services.coordinator.fleet import Fleet
from services.coordinator.main import Coordinator, bind_http
from services.coordinator.metrics import Metrics
from services.coordinator.registry import Registry, WorkerInfo
from services.coordinator.routes import build_app
from services.coordinator.serving import OpenAIServing
from services.coordinator.settings import CoordinatorSettings
from tests.services.coordinator.fakes import MODEL, FakeWorld


class FakeTokenizer:
    """Characters <-> ids; no model needed."""

    max_model_len = 4096
    vocab_size = 50_000
    eos_ids: frozenset[int] = frozenset()

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 50 + 5 for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(97 + i % 26) for i in ids)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return self.encode("".join(m["content"] for m in messages))


@dataclass
class FakeServer:
    base_url: str
    root_url: str
    world: FakeWorld
    coordinator: Coordinator


@contextlib.contextmanager
def serve_fake(
    layouts: dict[str, tuple[int, int]],
    *,
    limits: EngineLimits | None = None,
    kv_tokens: int = 10_000,
    step_delay_s: float = 0.001,
    api_key: str | None = None,
    admin_api_key: str | None = None,
    tokenizer: object | None = None,
    model_name: str = "fake",
    max_prompt_chars: int | None = None,
) -> Iterator[FakeServer]:
    """`tokenizer`: a real one (services.coordinator.serving.Tokenizer) to serve real text over the fake
    fleet; its ids feed the fake model, whose tokens (5..54) are ids of any real vocabulary too."""
    world = FakeWorld(step_delay_s=step_delay_s)
    settings = CoordinatorSettings(
        model=model_name,
        api_key=api_key,
        admin_api_key=admin_api_key,
        http_port=0,
        grpc_port=0,
        max_prompt_chars=max_prompt_chars,
    )
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        registry = Registry(time.monotonic, expiry_s=60.0, num_layers=MODEL.num_layers)
        for name, (start, end) in layouts.items():
            world.add(f"fake:{name}")
            registry.register(WorkerInfo(name, f"fake:{name}", LayerRange(start, end), "cpu", kv_tokens))
        fleet = Fleet(registry, MODEL)
        metrics = Metrics("fake")
        engine = Engine(
            fleet,
            metrics,
            limits=limits or EngineLimits(tick_s=0.02),
            chain_factory=world.chain,
            release_fn=world.release,
            probe_fn=world.probe,
        )
        serving = OpenAIServing(
            engine,
            tokenizer or FakeTokenizer(),  # type: ignore[arg-type]
            model_name=model_name,
            max_prompt_chars=max_prompt_chars,
        )
        coord = Coordinator(settings, MODEL, registry, fleet, engine, serving, metrics, "fake", time.time())
        sock = bind_http("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(build_app(coord), log_level="warning", lifespan="off"))
        holder.update(coord=coord, server=server, port=sock.getsockname()[1])
        await engine.start()
        serve = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        ready.set()
        await serve
        await engine.stop()
        serving.close()
        sock.close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("fake coordinator did not start")
    port = holder["port"]
    try:
        yield FakeServer(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}", world, holder["coord"])  # type: ignore[arg-type]
    finally:
        server = holder["server"]
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=30)
