"""A joining worker gets layers and throughput rises, with real processes (issue 15): a coordinator with
BRL_AUTO_REPLAN serves from one slow chain (slow [0,12) -> mid [12,30), throttled SmolLM2 workers) under a
steady closed loop of streaming clients; an idle cpu-fast worker joins under that load, is re-planned in
and rolled out, and the same loop's decode tokens/s, measured once the rollout has settled, rise by at
least MIN_GAIN over the window just before the join, and come within PREDICTION_TOLERANCE of what the
simulator predicts for the re-planned fleet (this machine's profile, serving terms probed on the fresh
fleet, the after-window's load, calibrated on what the fleet served before the join); every answer
token-exact, nothing lost or refused."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fidelity_load import LoadSampler, core_shares, sched_times_ns
from bench.fidelity_profiles import measure_torch_typical
from bench.replan_clients import PROMPTS, SteadyLoop, references
from bench.replan_live import measure_terms
from bench.replan_predict import Terms, Workload, calibrated, predict, rel_err
from planner.formats.plan_json import save_plan
from services.worker.client import stats
from tests.services.controller.test_run_time_layers import plan_of
from tests.services.coordinator.fleet_procs import MODEL, ProcFleet, WorkerSpec
from tests.services.coordinator.test_api import Reference

ADMIN_KEY = "admin-test-key"
# The slow chain: every token crosses a cpu-slow stage (12 layers at speed 0.25: 48 layer-times) and a
# cpu-mid one (18 layers at 0.5: 36 layer-times), 84 layer-times a token plus two hops.
PLAN = {"slow": (0, 12), "mid": (12, 30)}
TYPES = {"fast": "cpu-fast", "mid": "cpu-mid", "slow": "cpu-slow"}
# Every worker runs at THROTTLE times its type's declared speed (local-cpu4: 1, 0.5, 0.25), so the joiner
# too sleeps half of each step: on 2 shared cores a full-speed joiner is one more always-runnable process,
# and the old chain's share of a core fell by a fifth when it joined (0.35 -> 0.28, 0.39 -> 0.31; with all
# at half speed: 0.27 -> 0.30, 0.30 -> 0.28). The ratios between the types, all the plan sees, are unchanged.
THROTTLE = 0.5
SPEEDS = {name: THROTTLE * declared for name, declared in {"fast": 1.0, "mid": 0.5, "slow": 0.25}.items()}
# One micro-batch in flight per chain. With the default two, the joiner's chain (one stage) runs its two
# micro-batches one after the other, each client getting a token every other step, while the old chain's
# two stages work on both at once: that halved the joiner's edge (its tokens per step 2.3) and capped the
# rise near x1.3 (measured x1.03-x1.45, 4 runs). With one, each chain steps all its requests together. It
# costs the old chain about a fifth of its rate here (3.6 against 4.7 decode tok/s before the join, 5.7
# once), and the joined fleet at depth 1 still serves more than the old chain did at depth 2 (5.6-7.7).
PIPELINE_DEPTH = 1
CLIENTS = 8
MAX_TOKENS = 6
WARM_S = 6.0  # the loop's clients have all started and the chain steps them together
# The old chain steps its clients in lock step, 8 tokens a step of ~1.5 s: one step more or less in a window
# moves its rate by 1/steps. At 30 s (~20 steps) the prediction's error spread over -0.18..+0.14 in 9 runs.
WINDOW_S = 45.0
# After the rollout, the requests under way keep the old plan's chains (all 8 clients, who step in lock
# step) until they end: 10-15 s, once 26 s, behind one 17-s step, a window of x0.86. The after-window waits
# for every worker's old range to drain, then SETTLE_S for the clients to spread over both chains.
SETTLE_S = 6.0
TIMEOUT_S = 240.0  # slack for a machine shared with other test runs; never a measured figure
# The plan sends the joiner p = 0.575 of the work (IWRR over its flows: fast [0,30) beside slow -> mid),
# whatever the chains' latencies. A closed loop then gains 1 / (p / r + 1 - p), r = the old chain's time
# per token / the joiner's: 84 layer-times and two hops against 30 and one, r ~ 2.8: x1.6, more where the
# old chain's smaller batches step faster. Measured on 2 shared cores: x1.39, 1.43, 1.47 (idle machine),
# 1.58, 1.60, 1.68, 2.50 (where the other tenants' load fell between the windows, 3.1 -> 1.7); x0.82 and
# x1.19 where it rose (1.1 -> 2.1, 0.1 -> 1.1 runnable sessions: LOAD_TOLERANCE, the latter skipped); with
# 20-s windows and a fixed 6-s settle, x1.24-2.10 over 11 runs (load average 6-10). Default depth: x1.03-1.45.
MIN_GAIN = 1.15
LOAD_TOLERANCE = 0.5  # other runnable sessions (bench/fidelity_load.py), mean over a window
AFTER_TRIES = 3
CLUSTER = "local-cpu4"
# Issue 15: the re-planned fleet serves within 20% of what the simulator predicted for it.
PREDICTION_TOLERANCE = 0.20
PROFILE_ROUNDS = 3


def spec(name: str, layers: tuple[int, int]) -> WorkerSpec:
    return WorkerSpec(name, *layers, gpu_type=TYPES[name], extra_args=("--speed-factor", str(SPEEDS[name])))


def admin(fleet: ProcFleet, path: str) -> dict[str, Any]:
    resp = httpx.get(
        f"{fleet.base_url}/admin/{path}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def rollout_status(fleet: ProcFleet) -> dict[str, Any]:
    return admin(fleet, "rollout")


def settled_after(fleet: ProcFleet, rollouts: int) -> bool:
    s = rollout_status(fleet)
    busy = s["running"] or any(s["pending"].values()) or s["unloading"]
    return not busy and s["rollouts"] > rollouts


def wait_settled(fleet: ProcFleet, rollouts: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not settled_after(fleet, rollouts):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the joiner was not rolled out: {rollout_status(fleet)}")
        time.sleep(0.2)


def wait_drained(fleet: ProcFleet, names: list[str]) -> None:
    """Until no worker still serves an old range's requests (Stats.draining)."""
    deadline = time.monotonic() + TIMEOUT_S
    while any(asyncio.run(stats(fleet.worker_address(n))).draining for n in names):
        if time.monotonic() > deadline:
            raise TimeoutError("the old ranges did not drain")
        time.sleep(0.2)


def processed(fleet: ProcFleet, names: list[str]) -> dict[str, int]:
    return {n: asyncio.run(stats(fleet.worker_address(n))).tokens_processed for n in names}


class Measured:
    """One window's bounds, tokens each worker processed, its processes' share of a core, other load."""

    def __init__(self, fleet: ProcFleet, names: list[str]) -> None:
        self.fleet, self.names = fleet, names
        self.pids = {n: fleet.workers[n].pid for n in names}

    def __enter__(self) -> Measured:
        self.sampler = LoadSampler(self.fleet.pids()).__enter__()
        self.sched0 = {n: sched_times_ns(p) for n, p in self.pids.items()}
        self.tokens0 = processed(self.fleet, self.names)
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = time.monotonic()
        tokens1 = processed(self.fleet, self.names)
        self.served = {n: tokens1[n] - self.tokens0[n] for n in self.names}
        shares = core_shares(self.sched0, {n: sched_times_ns(p) for n, p in self.pids.items()})
        self.core_share = {n: round(v, 2) for n, v in shares.items()}
        self.sampler.__exit__()


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
        coordinator_env={
            "BRL_AUTO_REPLAN": "1",
            "BRL_ADMIN_API_KEY": ADMIN_KEY,
            "BRL_PIPELINE_DEPTH": str(PIPELINE_DEPTH),
        },
    ) as f:
        f.start_coordinator()
        f.start_workers([spec(n, r) for n, r in PLAN.items()])
        f.wait_workers(PLAN, timeout_s=TIMEOUT_S, exactly=True)
        yield f
    assert f.pids() == []


@dataclass(frozen=True)
class FreshTerms:
    """What the prediction takes from the fresh fleet: the serving terms and each prompt's length."""

    terms: Terms
    prompt_tokens: dict[str, int]


@pytest.fixture(scope="module")
def fresh_terms(fleet: ProcFleet, tmp_path_factory: pytest.TempPathFactory) -> FreshTerms:
    """bench/replan_live.py's terms on the fleet as started: one request per prompt first (the workers'
    first steps are slower: a probe taken cold predicted 20-50% low), this machine's torch timings at the
    loop's mean context brought back to a core of their own (the median of PROFILE_ROUNDS), then lone steps
    through the start plan's chain and the coordinator's CPU per iteration."""
    _, prompt_tokens = asyncio.run(references(fleet.base_url, MODEL, MAX_TOKENS))
    context = round(sum(prompt_tokens.values()) / len(prompt_tokens) + (MAX_TOKENS - 1) / 2)
    measured = measure_torch_typical(rounds=PROFILE_ROUNDS, quick=False, decode_context=context)
    terms, _ = measure_terms(
        fleet, measured, PLAN, SPEEDS, rounds=3, seed=0, workdir=tmp_path_factory.mktemp("join-probe")
    )
    return FreshTerms(terms, prompt_tokens)


def test_a_fast_joiner_gets_layers_and_the_same_load_is_served_faster_as_predicted(
    fleet: ProcFleet, reference: dict[str, str], fresh_terms: FreshTerms, tmp_path: Path
) -> None:
    # One steady loop throughout; the windows are cut from it afterwards (rates over equal spans of the same
    # clients, compared with each other: never a wall-clock bound).
    with SteadyLoop(fleet.base_url, MODEL, CLIENTS, MAX_TOKENS, reference) as loop:
        time.sleep(WARM_S)
        with Measured(fleet, list(PLAN)) as before:
            time.sleep(WINDOW_S)

        # The joiner starts idle (no layers) while the clients keep going; nothing they send may be lost.
        rollouts = rollout_status(fleet)["rollouts"]
        joined_at = time.monotonic()
        fleet.start_workers([spec("fast", (0, 0))], timeout_s=None)
        wait_settled(fleet, rollouts)
        join_s = time.monotonic() - joined_at
        last = rollout_status(fleet)["last"]
        assert last["outcome"] == "rolled_out" and last["joined"] == ["fast"], last
        fleet.wait_workers([*PLAN, "fast"], timeout_s=TIMEOUT_S)
        held = fleet.health()["fleet"]["fast"]["layers"]
        assert held[1] > held[0], held
        loaded = admin(fleet, "plan")["loaded"]["placement"]
        assert loaded["fast"] == held, loaded
        ranges_after = {n: (int(r[0]), int(r[1])) for n, r in loaded.items()}

        # The transition (the joiner's start and load, the old plan's requests ending) is left out.
        wait_drained(fleet, ["fast", *PLAN])
        transition_s = time.monotonic() - joined_at
        time.sleep(SETTLE_S)
        # The rates compare only where the other tenants' load was alike: on 2 cores one more runnable job
        # there takes a share from every process of ours (1.1 -> 2.1 other sessions between the windows
        # nearly halved the old chain's share of a core, 0.7 -> 0.41, and measured x0.82). An after-window
        # that met a different load is measured again, AFTER_TRIES times at most.
        for _ in range(AFTER_TRIES):
            with Measured(fleet, ["fast", *PLAN]) as after:
                time.sleep(WINDOW_S)
            if abs(after.sampler.mean - before.sampler.mean) <= LOAD_TOLERANCE:
                break
    assert loop.lost == 0 and loop.refused == 0, (loop.lost, loop.refused, loop.examples)
    assert after.served["fast"] > 0, after.served  # the plan routes to the joiner

    rate_before = loop.window(before.start, before.end)
    rate_after = loop.window(after.start, after.end)
    assert rate_before.completed > 0 and rate_before.decode_tokens > 0
    ratio = rate_after.decode_tok_per_s / rate_before.decode_tok_per_s

    # The simulator's prediction for each window: the plan in force, the loop's workload, the window's load.
    cores = float(os.cpu_count() or 1)
    workload = Workload(
        CLIENTS, tuple(fresh_terms.prompt_tokens[p] for p in PROMPTS), MAX_TOKENS - 1, WINDOW_S, WARM_S
    )

    def predicted(ranges: dict[str, tuple[int, int]], window: Measured, tag: str) -> float:
        return predict(
            CLUSTER,
            MODEL,
            ranges,
            SPEEDS,
            fresh_terms.terms,
            workload,
            background=window.sampler.effective(cores),
            workdir=tmp_path / tag,
            pipeline_depth=PIPELINE_DEPTH,
        ).decode_tok_per_s

    predicted_before = predicted(PLAN, before, "before")
    predicted_after = predicted(ranges_after, after, "after")
    # This machine's speed moves by a quarter from one minute to the next (a 28-layer decode step timed at
    # 10.2-22.8 ms in nine measurements a minute apart, with no competitor counted), and the profile and the
    # probe are a few seconds of it: the same fleet under the same load was predicted 0.23 high in one run
    # and 0.31 low in another. So the prediction is calibrated on the fleet before the move, as a controller
    # would calibrate it on its own metrics: the simulator's figure for the new plan, times what the old
    # fleet measured over what the simulator gave the old plan. All it takes is known before the join.
    expected = calibrated(predicted_after, rate_before.decode_tok_per_s, predicted_before)
    err = rel_err(rate_after.decode_tok_per_s, expected)
    assert err is not None, (predicted_before, predicted_after)
    uncalibrated = {
        "before": rel_err(rate_before.decode_tok_per_s, predicted_before),
        "after": rel_err(rate_after.decode_tok_per_s, predicted_after),
    }
    print(
        f"decode tok/s {rate_before.decode_tok_per_s:.2f} -> {rate_after.decode_tok_per_s:.2f} (x{ratio:.2f}); "
        f"completed {rate_before.completed} -> {rate_after.completed}; tokens per worker "
        f"{before.served} -> {after.served}; core share {before.core_share} -> {after.core_share}; "
        f"other runnable sessions {before.sampler.mean:.2f} -> {after.sampler.mean:.2f}; "
        f"join {join_s:.1f} s, old ranges drained {transition_s:.1f} s; joiner holds {held}; predicted "
        f"{predicted_before:.2f} -> {predicted_after:.2f}, calibrated {expected:.2f} (error {err:.3f}; "
        f"uncalibrated {uncalibrated}); lone steps {fresh_terms.terms.lone_step_ms}"
    )
    # The re-planned fleet serves what the simulator said it would, whatever the other tenants did (each
    # window's measured load is its simulated host's background).
    assert err <= PREDICTION_TOLERANCE, (rate_after.decode_tok_per_s, expected, uncalibrated)
    # Where the load differed, the outcome that it could have caused is inconclusive, the other one stands:
    # more load after the join can only lower the ratio (a pass still counts), less can only raise it (a
    # failure still counts).
    shift = after.sampler.mean - before.sampler.mean
    passed = ratio >= MIN_GAIN
    if (shift > LOAD_TOLERANCE and not passed) or (shift < -LOAD_TOLERANCE and passed):
        pytest.skip(
            f"other tenants' load moved {shift:+.2f} in every after-window (x{ratio:.2f} inconclusive)"
        )
    assert passed, (ratio, rate_before.decode_tokens, rate_after.decode_tokens)
