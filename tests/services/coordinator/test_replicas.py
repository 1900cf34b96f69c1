"""Two coordinator replicas (real `brl coordinator` processes) serve one fleet of two SmolLM2 workers that
register with both: both serve, no worker's KV is ever over-committed, request ids never collide; then one
replica is SIGKILLed under streaming load: the other's streams finish token-exact, the dead one's clients
get an error at once, its KV on every worker is freed within 5 s and its share returns to the survivor."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services.coordinator.fleet_procs import StreamOutcome, WorkerSpec, stream_completion
from tests.services.coordinator.replica_procs import ReplicaFleet

KV_CAPACITY_TOKENS = 400  # small, so two replicas' load presses on it
SPECS = (
    WorkerSpec("w0", 0, 15, extra_args=("--kv-capacity-tokens", str(KV_CAPACITY_TOKENS))),
    WorkerSpec("w1", 15, 30, extra_args=("--kv-capacity-tokens", str(KV_CAPACITY_TOKENS))),
)
PROMPTS = ("The river is", "My neighbour said that", "A small robot wanted", "The old library is")
MAX_TOKENS = 12
LONG_TOKENS = 48  # streams still running when a replica is killed
FREED_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaFleet]:
    with ReplicaFleet(tmp_path_factory.mktemp("replicas")) as f:
        f.start_replicas(2)
        f.start_workers(SPECS)
        f.wait_replicas([s.name for s in SPECS])
        yield f


async def streams(base_url: str, prompts: list[str], max_tokens: int = MAX_TOKENS) -> list[StreamOutcome]:
    async with httpx.AsyncClient() as client:
        return list(
            await asyncio.gather(*(stream_completion(client, base_url, p, max_tokens) for p in prompts))
        )


def test_both_replicas_serve_within_their_shares(fleet: ReplicaFleet) -> None:
    half = {"w0": KV_CAPACITY_TOKENS // 2, "w1": KV_CAPACITY_TOKENS // 2}
    for i in range(2):
        assert fleet.replica_health(i)["replica"].startswith(f"r{i}.")
        # Each replica is given half of every worker's cache (services/worker/leases.py), at the latest
        # one heartbeat after the other replica's registration.
        assert _wait_shares(fleet, i, half), fleet.replica_health(i)

    async def load_and_watch() -> tuple[list[list[StreamOutcome]], list[tuple[int, int]]]:
        readings: list[tuple[int, int]] = []
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                for s in (await fleet.worker_stats()).values():
                    readings.append((s.kv_used_tokens, s.kv_capacity_tokens))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            per_replica = [list(PROMPTS) * 3 for _ in range(2)]
            results = await asyncio.gather(
                *(streams(u, p) for u, p in zip(fleet.base_urls(), per_replica, strict=True))
            )
        finally:
            done.set()
            await watcher
        return list(results), readings

    results, readings = asyncio.run(load_and_watch())
    for outcomes in results:
        # Everyone is served: completed, or a clean 429 when this replica's share is full; never a cut.
        assert all(o.error is None or o.status == 429 for o in outcomes), [o.error for o in outcomes]
        assert sum(o.error is None for o in outcomes) >= len(PROMPTS)
    assert readings and max(used for used, _ in readings) > 0
    assert all(used <= cap == KV_CAPACITY_TOKENS for used, cap in readings)  # never over-committed
    texts = {o.text for outcomes in results for o in outcomes if o.error is None}
    assert len(texts) == len(PROMPTS)  # greedy: one text per prompt, whichever replica served it

    ids = [fleet.request_ids(0), fleet.request_ids(1)]
    for _ in range(100):  # the request logs are flushed after each iteration
        if all(ids):
            break
        time.sleep(0.05)
        ids = [fleet.request_ids(0), fleet.request_ids(1)]
    assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])
    assert all("-r0." in r for r in ids[0]) and all("-r1." in r for r in ids[1])
    asyncio.run(fleet.wait_kv_zero(timeout_s=15))
    assert set(asyncio.run(fleet.kv_used()).values()) == {0}


def test_killing_a_replica_spares_the_other_and_frees_its_kv(fleet: ReplicaFleet) -> None:
    reference = {o.text for o in asyncio.run(streams(fleet.base_urls()[0], [PROMPTS[0]], LONG_TOKENS))}
    (ref_text,) = reference
    dead_session = fleet.replica_health(1)["replica"]

    async def run() -> tuple[list[StreamOutcome], list[StreamOutcome], float]:
        urls = fleet.base_urls()
        survivors = asyncio.create_task(streams(urls[0], [PROMPTS[0]] * 4, LONG_TOKENS))
        victims = asyncio.create_task(streams(urls[1], [PROMPTS[0]] * 4, LONG_TOKENS))
        # Kill r1 once both replicas have KV on the workers (their streams are running).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            used = sum((await fleet.kv_used()).values())
            healths = [fleet.replica_health(i) for i in range(2)]
            own = [sum(w["kv_used_tokens"] for w in h["fleet"].values()) for h in healths]
            if used and all(own):
                break
            await asyncio.sleep(0.05)
        fleet.kill_replica(1)
        killed_at = time.monotonic()
        return await survivors, await victims, killed_at

    survived, killed, killed_at = asyncio.run(run())
    assert all(o.error is None and o.text == ref_text for o in survived), [o.error for o in survived]
    # A client of the dead process sees its connection drop: an error at once, not a hang.
    assert all(o.error is not None and "Timeout" not in o.error for o in killed), [o.error for o in killed]

    # Every worker frees the dead replica's requests within 5 s of the kill (its log says when).
    for name in fleet.workers:
        freed = _wait_log(
            fleet.workers[name].log_path,
            rf"freeing \d+ requests of expired coordinator {re.escape(dead_session)}",
            killed_at + FREED_WITHIN_S,
        )
        assert freed, f"{name} did not free {dead_session}'s requests within {FREED_WITHIN_S} s"
    assert set(asyncio.run(fleet.wait_kv_zero(timeout_s=15)).values()) == {0}
    # The survivor is given every worker's whole cache again.
    assert _wait_shares(fleet, 0, {"w0": KV_CAPACITY_TOKENS, "w1": KV_CAPACITY_TOKENS})
    # And it serves on.
    (after,) = asyncio.run(streams(fleet.base_urls()[0], [PROMPTS[0]]))
    assert after.error is None and after.text == ref_text[: len(after.text)] and after.text


def _wait_log(path: Path, pattern: str, deadline: float) -> bool:
    """Polls a process's log until `pattern` shows up or `deadline` (monotonic) passes."""
    found = re.compile(pattern)
    while True:
        if found.search(path.read_text(errors="replace")):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _wait_shares(fleet: ReplicaFleet, index: int, want: dict[str, int], timeout_s: float = 10.0) -> bool:
    """Polls replica `index`'s /health until its workers' KV capacities (its shares) are `want`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fleet_view = fleet.replica_health(index)["fleet"]
        if {n: w["kv_capacity_tokens"] for n, w in fleet_view.items()} == want:
            return True
        time.sleep(0.05)
    return False
