"""A worker registered with two coordinator replicas over real gRPC: each replica sees half the KV and only
its own use; when one replica dies its requests here are freed and the other gets the whole cache."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from planner.errors import InvalidInput
from planner.placement import LayerRange
from services.coordinator.registry import Registry
from services.worker.registration import WorkerInfo, keep_registered, parse_coordinators
from services.worker.settings import from_env as worker_settings
from tests.services.coordinator.control_server import start_control, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Shard:
    tokens: dict[str, int] = field(default_factory=dict)
    freed: list[frozenset[str]] = field(default_factory=list)
    queue_depth: int = 0
    kv_capacity_tokens: int = 1000

    @property
    def kv_used_tokens(self) -> int:
        return sum(self.tokens.values())

    def request_ids(self) -> list[str]:
        return sorted(self.tokens)

    def request_tokens(self) -> dict[str, int]:
        return dict(self.tokens)

    def free(self, ids: frozenset[str]) -> None:
        self.freed.append(ids)
        for r in ids:
            self.tokens.pop(r, None)


def seen(reg: Registry) -> tuple[int, int] | None:
    w = reg.get("w0")
    return (w.info.kv_capacity_tokens, w.kv_used_tokens) if w else None


async def test_two_replicas_share_the_cache_and_the_survivor_gets_it_back() -> None:
    regs = [Registry(time.monotonic, expiry_s=5.0, num_layers=30) for _ in range(2)]
    (s0, p0), (s1, p1) = await start_control(regs[0], "r0.aaaa"), await start_control(regs[1], "r1.bbbb")
    shard = Shard(tokens={"req-r0.aaaa-1": 40, "req-r0.aaaa-2.1": 2, "req-r1.bbbb-1": 30})
    info = WorkerInfo("w0", "127.0.0.1:1234", LayerRange(0, 10), "cpu", 1000)
    task = asyncio.create_task(
        keep_registered(
            f"127.0.0.1:{p0},127.0.0.1:{p1}",
            info,
            lambda: shard,
            retry_s=0.05,
            held_requests=shard.request_ids,
            on_new_coordinator=shard.free,
            request_tokens=shard.request_tokens,
            session_expiry_s=0.5,
        )
    )
    try:
        await until(lambda: seen(regs[0]) == (500, 42) and seen(regs[1]) == (500, 30))
        await s0.stop(grace=None)  # replica r0 dies without a word
        took_s = await until(lambda: shard.freed != [])
        assert took_s < 5.0
        assert shard.freed == [frozenset({"req-r0.aaaa-1", "req-r0.aaaa-2.1"})]
        assert shard.tokens == {"req-r1.bbbb-1": 30}  # the living replica's request is untouched
        await until(lambda: seen(regs[1]) == (1000, 30))  # its share came back
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await s1.stop(grace=None)
    assert regs[1].names() == []  # cancelled: deregistered from the living replica


def test_coordinator_lists_parse() -> None:
    assert parse_coordinators("a:1, b:2,a:1") == (["a:1", "b:2"], None)
    assert parse_coordinators("dns:brl-coordinator-replicas:50050") == ([], "brl-coordinator-replicas:50050")
    for bad in ("", "a", "a:x", "dns:a:1,b:2"):
        with pytest.raises(ValueError):
            parse_coordinators(bad)


async def test_dns_name_registers_with_every_address_it_resolves_to() -> None:
    """`dns:NAME:PORT` (a headless Service in Kubernetes): here `localhost` resolves to 127.0.0.1."""
    reg = Registry(time.monotonic, expiry_s=5.0, num_layers=30)
    server, port = await start_control(reg, "r0.cccc")
    shard = Shard()
    info = WorkerInfo("w0", "127.0.0.1:1234", LayerRange(0, 10), "cpu", 1000)
    task = asyncio.create_task(keep_registered(f"dns:localhost:{port}", info, lambda: shard, retry_s=0.05))
    try:
        await until(lambda: seen(reg) == (1000, 0))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.stop(grace=None)


def test_worker_settings_refuse_a_bad_coordinator_list_naming_the_field() -> None:
    assert worker_settings({}, coordinator="a:1,b:2").coordinator == "a:1,b:2"
    assert worker_settings({"BRL_COORDINATOR": "dns:brl-coordinator-replicas:50050"}).coordinator
    with pytest.raises(InvalidInput) as err:
        worker_settings({}, coordinator="a:1,dns:b:2")
    assert err.value.field == "coordinator"
