"""Failures and overload with real processes on 127.0.0.1 (issue 9): a coordinator and four SmolLM2
workers with redundant, overlapping layer ranges, killed, frozen, restarted and flooded; nothing is lost.

Fleet: a0 [0,12) + a1 [12,30) and b0 [0,20) + b1 [20,30): chains a0>a1, b0>b1, b0>a1 (a1 runs [20,30)),
a0>b0>... Coordinator and workers run with the product's default heartbeat settings.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from services.coordinator.settings import from_env
from tests.services.coordinator.fleet_procs import (
    MODEL,
    ProcFleet,
    StreamOutcome,
    WorkerSpec,
    logged_for,
    rss_bytes,
    stream_completion,
)

SPECS = (WorkerSpec("a0", 0, 12), WorkerSpec("a1", 12, 30), WorkerSpec("b0", 0, 20), WorkerSpec("b1", 20, 30))
NAMES = tuple(s.name for s in SPECS)
PROMPTS = tuple(f"Item {i}: the {w} is" for i, w in enumerate(["sky", "sea", "cat", "sun", "tree"] * 10))
MAX_TOKENS = 12
# The bound on noticing a dead worker (met where its connections break: a killed process).
NOTICE_S = 2.0


def coordinator_log(fleet: ProcFleet) -> str:
    assert fleet.coordinator is not None
    return fleet.coordinator.log(tail_chars=1_000_000)


def heartbeat_expiry_s() -> float:
    """How long the default coordinator waits for heartbeats before it declares a silent worker lost (the
    only sign of a frozen one); the engine's tick and a busy machine add a little."""
    s = from_env({})  # the defaults, whatever this process's BRL_* variables say
    return s.heartbeat_interval_s * s.heartbeat_misses + 1.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcFleet]:
    with ProcFleet(tmp_path_factory.mktemp("failures")) as f:
        f.start_coordinator()
        f.start_workers(SPECS)
        f.wait_workers(NAMES, timeout_s=120)
        yield f
    assert f.pids() == []


@pytest.fixture(scope="module")
def reference(fleet: ProcFleet) -> dict[str, str]:
    """Greedy text of every prompt on the whole fleet with no failure."""
    outs = asyncio.run(stream_all(fleet, PROMPTS))
    assert [o.error for o in outs] == [None] * len(PROMPTS)
    return {p: o.text for p, o in zip(PROMPTS, outs, strict=True)}


def healthy(fleet: ProcFleet) -> ProcFleet:
    """Every worker up and registered with a default-settings coordinator, no KV held: each test's start."""
    if fleet.coordinator is None or not fleet.coordinator.alive() or fleet.coordinator_overrides:
        fleet.start_coordinator()
    dead = [n for n, p in fleet.workers.items() if not p.alive()]
    if dead:
        fleet.start_workers([fleet.specs[n] for n in dead])
    for p in fleet.workers.values():
        p.signal(signal.SIGCONT)  # a frozen worker left by a failed test
    fleet.wait_workers(NAMES, timeout_s=120, exactly=True)
    return fleet


async def stream_all(
    fleet: ProcFleet, prompts: tuple[str, ...], max_tokens: int = MAX_TOKENS
) -> list[StreamOutcome]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=len(prompts))) as client:
        return await asyncio.gather(
            *(stream_completion(client, fleet.base_url, p, max_tokens) for p in prompts)
        )


async def when_tokens_flow(fleet: ProcFleet, at_least: float) -> None:
    """Returns once the coordinator has generated `at_least` tokens in total (so a fault lands mid-way)."""
    while await asyncio.to_thread(fleet.metric, "vllm:generation_tokens_total") < at_least:
        await asyncio.sleep(0.05)


def test_killed_worker_mid_stream_loses_and_duplicates_nothing(
    fleet: ProcFleet, reference: dict[str, str]
) -> None:
    healthy(fleet)
    lost_before = fleet.metric("brl_workers_lost_total")
    reroutes_before = fleet.metric("brl_request_reroutes_total")
    done_before = fleet.metric("vllm:request_success_total")

    async def run() -> tuple[list[StreamOutcome], float, int]:
        task = asyncio.ensure_future(stream_all(fleet, PROMPTS))
        start = fleet.metric("vllm:generation_tokens_total")
        await when_tokens_flow(fleet, start + len(PROMPTS) * MAX_TOKENS / 4)
        done_at_kill = int(fleet.metric("vllm:request_success_total") - done_before)
        fleet.kill("b0")  # SIGKILL: the worker says goodbye to no one
        noticed_s = await asyncio.to_thread(fleet.wait_gone, "b0")
        return await task, noticed_s, done_at_kill

    outs, noticed_s, done_at_kill = asyncio.run(run())
    assert [o.error for o in outs] == [None] * len(PROMPTS)
    assert [o.text for o in outs] == [reference[p] for p in PROMPTS]
    assert all(o.finish_reason in ("length", "stop") for o in outs)
    assert noticed_s < NOTICE_S
    assert fleet.metric("brl_workers_lost_total") == lost_before + 1
    # The kill really hit requests in flight: some were moved to a new chain mid-generation.
    assert fleet.metric("brl_request_reroutes_total") > reroutes_before
    assert done_at_kill < len(PROMPTS)
    # Operators can read what happened in the coordinator's log.
    assert fleet.coordinator is not None
    assert "b0" in fleet.coordinator.log(tail_chars=200_000) and "lost" in fleet.coordinator.log(200_000)


def test_no_chain_left_fails_fast_with_503_naming_layers_then_recovers(
    fleet: ProcFleet, reference: dict[str, str]
) -> None:
    healthy(fleet)
    coordinator_pid = fleet.coordinator.pid if fleet.coordinator else 0
    # Idle workers die: no request is there to fail, yet the coordinator notices.
    fleet.kill("b1")
    assert fleet.wait_gone("b1") < heartbeat_expiry_s()
    # a1 still holds [20,30): one gap-free chain is enough.
    assert asyncio.run(stream_all(fleet, PROMPTS[:2]))[0].text == reference[PROMPTS[0]]
    fleet.kill("a1")
    assert fleet.wait_gone("a1") < heartbeat_expiry_s()

    t0 = time.monotonic()
    r = httpx.post(
        f"{fleet.base_url}/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4}, timeout=30
    )
    took_s = time.monotonic() - t0
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_route"
    assert "[20,30)" in logged_for(coordinator_log(fleet), r.json()["error"]["message"])
    assert took_s < 5.0  # fails fast: not after a queue timeout
    streamed = asyncio.run(stream_all(fleet, PROMPTS[:3]))
    assert {o.status for o in streamed} == {503}
    assert all("[20,30)" in logged_for(coordinator_log(fleet), o.error or "") for o in streamed)
    ready = httpx.get(f"{fleet.root_url}/ready", timeout=10)
    assert ready.status_code == 503 and not ready.json()["routable"]

    # a1 back: every layer is held again; then a wider gap, and the message follows it.
    fleet.restart_worker("a1")
    fleet.wait_workers(["a0", "a1", "b0"], exactly=True)
    assert httpx.get(f"{fleet.root_url}/ready", timeout=10).status_code == 200
    outs = asyncio.run(stream_all(fleet, PROMPTS[:5]))
    assert [o.text for o in outs] == [reference[p] for p in PROMPTS[:5]]
    fleet.kill("a1")
    fleet.kill("b0")
    fleet.wait_gone("a1")
    fleet.wait_gone("b0")
    r = httpx.post(
        f"{fleet.base_url}/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4}, timeout=30
    )
    assert r.status_code == 503
    assert "[12,30)" in logged_for(coordinator_log(fleet), r.json()["error"]["message"])

    # Service resumes when workers register again, without restarting the coordinator.
    fleet.start_workers([fleet.specs["a1"], fleet.specs["b1"], fleet.specs["b0"]])
    fleet.wait_workers(NAMES, exactly=True)
    outs = asyncio.run(stream_all(fleet, PROMPTS[:5]))
    assert [o.text for o in outs] == [reference[p] for p in PROMPTS[:5]]
    assert fleet.coordinator is not None and fleet.coordinator.pid == coordinator_pid


def test_disconnect_and_cancel_free_kv_on_every_hop(fleet: ProcFleet) -> None:
    healthy(fleet)
    body = {
        "model": MODEL,
        "prompt": "Tell me a long story about a dragon.",
        "max_tokens": 400,
        "temperature": 0,
        "ignore_eos": True,
    }

    async def run() -> list[int]:
        held: list[int] = []
        async with httpx.AsyncClient(timeout=60) as client:

            async def hang_up_after_tokens(i: int) -> None:
                async with client.stream(
                    "POST", f"{fleet.base_url}/completions", json={**body, "stream": True, "seed": i}
                ) as resp:
                    assert resp.status_code == 200
                    seen = 0
                    async for line in resp.aiter_lines():
                        seen += line.startswith("data: ")
                        if seen == 4:
                            held.append(sum((await fleet.kv_used()).values()))
                            return  # closes the connection mid-stream

            await asyncio.gather(*(hang_up_after_tokens(i) for i in range(4)))
            # A plain (non-streaming) request whose client gives up.
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"{fleet.base_url}/completions", json=body, timeout=1.5)
        # The official client closing its stream.
        oai = openai.AsyncOpenAI(base_url=fleet.base_url, api_key="x", max_retries=0, timeout=60)
        stream = await oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count to one thousand."}],
            max_tokens=400,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        n = 0
        async for _ in stream:
            n += 1
            if n == 4:
                held.append(sum((await fleet.kv_used()).values()))
                break
        await stream.close()
        await oai.close()
        return held

    held = asyncio.run(run())
    assert len(held) == 5 and all(h > 0 for h in held)
    used = asyncio.run(fleet.wait_kv_zero(timeout_s=15))
    assert used == dict.fromkeys(NAMES, 0)
    health = fleet.health()
    assert health["running"] == 0 and health["waiting"] == 0


def test_frozen_worker_is_routed_around(fleet: ProcFleet, reference: dict[str, str]) -> None:
    """A worker that stops answering without dying (SIGSTOP: a hung GPU, a paused VM) is treated as lost."""
    healthy(fleet)
    prompts = PROMPTS[:20]

    async def run() -> tuple[list[StreamOutcome], float]:
        task = asyncio.ensure_future(stream_all(fleet, prompts))
        start = fleet.metric("vllm:generation_tokens_total")
        await when_tokens_flow(fleet, start + len(prompts) * MAX_TOKENS / 4)
        fleet.kill("b0", signal.SIGSTOP)
        noticed_s = await asyncio.to_thread(fleet.wait_gone, "b0")
        return await task, noticed_s

    try:
        outs, noticed_s = asyncio.run(run())
    finally:
        fleet.workers["b0"].signal(signal.SIGCONT)
    assert [o.error for o in outs] == [None] * len(prompts)
    assert [o.text for o in outs] == [reference[p] for p in prompts]
    assert noticed_s < heartbeat_expiry_s()  # no socket breaks: only the missed heartbeats tell
    # Thawed, it registers again by itself, and what it held for the moved requests is freed.
    fleet.wait_workers(NAMES, exactly=True, timeout_s=30)
    assert asyncio.run(fleet.wait_kv_zero(timeout_s=15)) == dict.fromkeys(NAMES, 0)


def test_coordinator_crash_gives_in_flight_a_clean_error_and_workers_reregister(
    fleet: ProcFleet, reference: dict[str, str]
) -> None:
    healthy(fleet)
    worker_pids = {n: p.pid for n, p in fleet.workers.items()}

    async def run() -> list[StreamOutcome]:
        task = asyncio.ensure_future(stream_all(fleet, PROMPTS[:6], max_tokens=200))
        start = fleet.metric("vllm:generation_tokens_total")
        await when_tokens_flow(fleet, start + 12)
        fleet.kill("coordinator")
        return await asyncio.wait_for(task, timeout=30)  # an error, never a hang

    outs = asyncio.run(run())
    # Each stream was cut before its end and the client knows it (no [DONE]); none looks complete.
    assert all(o.status in (0, 200) and o.error for o in outs)
    assert all(o.finish_reason is None for o in outs)

    fleet.start_coordinator()
    fleet.wait_workers(NAMES, exactly=True, timeout_s=60)
    assert {n: p.pid for n, p in fleet.workers.items()} == worker_pids  # the same processes re-registered
    outs = asyncio.run(stream_all(fleet, PROMPTS[:5]))
    assert [o.text for o in outs] == [reference[p] for p in PROMPTS[:5]]


def test_coordinator_crash_leaves_no_kv_on_workers(fleet: ProcFleet) -> None:
    """Requests of a coordinator that crashed can never finish: once the workers meet its successor, the
    KV those requests hold must be freed (or a fleet leaks a little memory at every crash)."""
    healthy(fleet)

    async def run() -> None:
        task = asyncio.ensure_future(stream_all(fleet, PROMPTS[:4], max_tokens=200))
        start = fleet.metric("vllm:generation_tokens_total")
        await when_tokens_flow(fleet, start + 8)
        fleet.kill("coordinator")
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(run())
    assert sum(asyncio.run(fleet.kv_used()).values()) > 0  # held by requests nobody will finish
    fleet.start_coordinator()
    fleet.wait_workers(NAMES, exactly=True, timeout_s=60)
    assert asyncio.run(fleet.wait_kv_zero(timeout_s=15)) == dict.fromkeys(NAMES, 0)


def test_graceful_stop_ends_streams_with_an_error_event_and_frees_kv(fleet: ProcFleet) -> None:
    """SIGTERM (a rolling update): streams in flight end with an error event and `data: [DONE]`, not a cut
    connection, and their KV is freed on every hop."""
    healthy(fleet)

    async def run() -> list[StreamOutcome]:
        task = asyncio.ensure_future(stream_all(fleet, PROMPTS[:4], max_tokens=200))
        start = fleet.metric("vllm:generation_tokens_total")
        await when_tokens_flow(fleet, start + 8)
        fleet.kill("coordinator", signal.SIGTERM)
        return await asyncio.wait_for(task, timeout=30)

    outs = asyncio.run(run())
    assert all(o.error and "stream ended" not in o.error and "Error:" not in o.error for o in outs), [
        o.error for o in outs
    ]
    assert asyncio.run(fleet.wait_kv_zero(timeout_s=15)) == dict.fromkeys(NAMES, 0)


def test_overload_gets_429_with_retry_after_and_memory_stays_bounded(fleet: ProcFleet) -> None:
    """Room for a few (4 running, 8 waiting) and 200 clients at once, three times."""
    healthy(fleet)
    fleet.start_coordinator(BRL_MAX_RUNNING="4", BRL_MAX_WAITING="8")
    fleet.wait_workers(NAMES, exactly=True, timeout_s=60)
    assert fleet.coordinator is not None
    pid = fleet.coordinator.pid
    prompts = tuple(f"Say {i}" for i in range(200))

    async def burst() -> list[StreamOutcome]:
        return await stream_all(fleet, prompts, max_tokens=6)

    asyncio.run(stream_all(fleet, prompts[:4], max_tokens=6))  # warm up lazy imports and caches
    rss: list[int] = [rss_bytes(pid)]
    outcomes: Counter[tuple[int, bool]] = Counter()
    for _ in range(3):
        outs = asyncio.run(burst())
        rss.append(rss_bytes(pid))
        for o in outs:
            outcomes[(o.status, o.error is None)] += 1
            if o.status == 200:
                assert o.error is None and o.finish_reason in ("length", "stop") and o.text
            else:
                assert o.status == 429, o.error
                assert o.retry_after is not None and int(o.retry_after) >= 1
                assert "retry" in (o.error or "")
    assert set(outcomes) == {(200, True), (429, False)}
    assert fleet.coordinator.alive()
    # Bounded: later bursts do not grow the coordinator (each one is the same work).
    assert rss[3] - rss[1] < 32 * 2**20, [r // 2**20 for r in rss]
    health = fleet.health()
    assert health["running"] == 0 and health["waiting"] == 0
    assert asyncio.run(fleet.wait_kv_zero()) == dict.fromkeys(NAMES, 0)
