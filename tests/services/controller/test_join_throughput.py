"""A joining worker gets layers and throughput rises, with real processes (issue 15): a coordinator with
BRL_AUTO_REPLAN serves from one slow chain (slow [0,12) -> mid [12,30), throttled SmolLM2 workers) under a
closed loop of streaming clients; an idle cpu-fast worker joins under that load, is re-planned in and rolled
out and serves its share of the same closed loop (decode tokens/s before and after are printed, not
asserted: see the test for why), every answer token-exact, nothing lost or refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bench.replan_clients import PROMPTS, Window, closed_loop
from planner.formats.plan_json import save_plan
from services.worker.client import stats
from tests.services.controller.test_run_time_layers import plan_of
from tests.services.coordinator.fleet_procs import MODEL, ProcFleet, WorkerSpec
from tests.services.coordinator.test_api import Reference

ADMIN_KEY = "admin-test-key"
# The slow chain: every token crosses a cpu-slow stage (12 layers at speed 0.25: 48 layer-times) and a
# cpu-mid one (18 layers at 0.5: 36 layer-times), 84 layer-times a token plus two hops.
PLAN = {"slow": (0, 12), "mid": (12, 30)}
SPEEDS = {"fast": 1.0, "mid": 0.5, "slow": 0.25}
TYPES = {"fast": "cpu-fast", "mid": "cpu-mid", "slow": "cpu-slow"}
CLIENTS = 4
MAX_TOKENS = 6
WINDOW_S = 12.0
WARMUP_S = 2.0
TIMEOUT_S = 240.0  # slack for a machine shared with other test runs; never a measured figure


def spec(name: str, layers: tuple[int, int]) -> WorkerSpec:
    return WorkerSpec(name, *layers, gpu_type=TYPES[name], extra_args=("--speed-factor", str(SPEEDS[name])))


def rollout_status(fleet: ProcFleet) -> dict[str, Any]:
    resp = httpx.get(
        f"{fleet.base_url}/admin/rollout", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def settled_after(fleet: ProcFleet, rollouts: int) -> bool:
    s = rollout_status(fleet)
    busy = s["running"] or any(s["pending"].values()) or s["unloading"]
    return not busy and s["rollouts"] > rollouts


@dataclass
class Tally:
    """What the clients saw while the fleet changed: answers checked against the reference as in a window."""

    completed: int = 0
    lost: int = 0
    refused: int = 0


async def load_until(fleet: ProcFleet, reference: dict[str, str], done: Any) -> Tally:
    """The same closed loop in 3-s rounds until `done()` (polled between rounds) or TIMEOUT_S."""
    tally = Tally()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        win = await closed_loop(fleet.base_url, MODEL, CLIENTS, 3.0, MAX_TOKENS, reference)
        tally.completed += win.completed
        tally.lost += win.lost
        tally.refused += win.refused
        assert win.lost == 0, win.examples
        if await asyncio.to_thread(done):
            return tally
    raise TimeoutError("the joiner was not rolled out")


def processed(fleet: ProcFleet, names: list[str]) -> dict[str, int]:
    return {n: asyncio.run(stats(fleet.worker_address(n))).tokens_processed for n in names}


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    """transformers' greedy text for each prompt; each runs the full MAX_TOKENS (no EOS), so the clients'
    ignore_eos changes nothing and the texts compare exactly."""
    ref = Reference()
    out: dict[str, str] = {}
    for prompt in PROMPTS:
        text, n = ref.greedy(list(ref.tok.encode(prompt, add_special_tokens=False)), MAX_TOKENS)
        assert n == MAX_TOKENS, (prompt, n)
        out[prompt] = text
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcFleet]:
    workdir = tmp_path_factory.mktemp("join-throughput")
    save_plan(plan_of(PLAN), workdir / "plan.json")
    with ProcFleet(
        workdir,
        coordinator_args=["--plan", str(workdir / "plan.json"), "--cluster", "local-cpu4"],
        coordinator_env={"BRL_AUTO_REPLAN": "1", "BRL_ADMIN_API_KEY": ADMIN_KEY},
    ) as f:
        f.start_coordinator()
        f.start_workers([spec(n, r) for n, r in PLAN.items()])
        f.wait_workers(PLAN, timeout_s=TIMEOUT_S, exactly=True)
        yield f
    assert f.pids() == []


def test_a_fast_joiner_gets_layers_and_serves_a_share_of_the_same_load(
    fleet: ProcFleet, reference: dict[str, str]
) -> None:
    before: Window = asyncio.run(
        closed_loop(fleet.base_url, MODEL, CLIENTS, WINDOW_S, MAX_TOKENS, reference, warmup_s=WARMUP_S)
    )
    assert before.lost == 0 and before.refused == 0, before.examples
    assert before.completed > 0 and before.decode_tokens > 0

    # The joiner starts idle (no layers) while the clients keep going; nothing they send may be lost.
    rollouts = rollout_status(fleet)["rollouts"]
    fleet.start_workers([spec("fast", (0, 0))], timeout_s=None)
    during = asyncio.run(load_until(fleet, reference, lambda: settled_after(fleet, rollouts)))
    assert during.lost == 0 and during.refused == 0, during
    last = rollout_status(fleet)["last"]
    assert last["outcome"] == "rolled_out" and last["joined"] == ["fast"], last
    fleet.wait_workers([*PLAN, "fast"], timeout_s=TIMEOUT_S)
    held = fleet.health()["fleet"]["fast"]["layers"]
    assert held[1] > held[0], held
    loaded = httpx.get(
        f"{fleet.base_url}/admin/plan", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ).json()["loaded"]["placement"]
    assert loaded["fast"] == held, loaded

    tokens0 = processed(fleet, ["fast", *PLAN])
    after: Window = asyncio.run(
        closed_loop(fleet.base_url, MODEL, CLIENTS, WINDOW_S, MAX_TOKENS, reference, warmup_s=WARMUP_S)
    )
    tokens1 = processed(fleet, ["fast", *PLAN])
    assert after.lost == 0 and after.refused == 0, after.examples
    served = {n: tokens1[n] - tokens0[n] for n in tokens0}
    assert served["fast"] > 0, served  # the plan routes to the joiner

    # Rates from the same clients over equal windows, compared with each other (never a wall-clock bound).
    # Why only "does not fall": maxflow routing (IWRR) sends the joiner its planned share p of the requests,
    # p = 124.6 / (124.6 + 92.2) = 0.575 for fast [0,30) beside slow -> mid, whatever the chains' latencies.
    # A closed loop then gains 1 / (p / r + 1 - p), r = old chain's time per token / the joiner's (2-3.2
    # here): 1.4-1.65x, never above 1 / (1 - p) = 2.35x; and IWRR hands requests out in blocks (a block of
    # clients to one chain, the next to the other), so a 12-s window sees one or two blocks and the machine's
    # other jobs move each window's rate by +-30%. Measured on 2 shared cores: x0.94-x2.18 over 7 runs.
    ratio = after.decode_tok_per_s / before.decode_tok_per_s
    print(
        f"decode tok/s {before.decode_tok_per_s:.1f} -> {after.decode_tok_per_s:.1f} (x{ratio:.2f}); "
        f"completed {before.completed} -> {after.completed}; tokens per worker after: {served}; "
        f"during the join: {during}; joiner holds {held}"
    )
    # Not asserted: with the rise capped near 1.5x and +-30% noise per window, any threshold here would fail
    # CI on a busy machine or prove nothing; what is asserted above (the joiner holds the plan's range and
    # serves tokens of the same closed loop, nothing lost, token-exact) is what cannot be noise.
