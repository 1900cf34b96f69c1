"""Live re-planning figures on this machine (issue 15): a coordinator with BRL_AUTO_REPLAN and four SmolLM2
worker processes on the bundled local-cpu4 fleet, each throttled to its GPU type's declared speed.

  loss   `fast`, the only holder of layers [0,10), is SIGKILLed while streams run: `recover_s` is the time
         from the kill until the coordinator's live workers cover every layer again (goal <= 10 s);
         every stream accepted before the kill must end with the calm text (`lost` counts those that do not).
  join   `fast` comes back holding one layer no chain can use ([25,26)): the controller re-plans with it,
         loads its new range and swaps the plan. Throughput (decode tokens/s of a closed loop of clients,
         fixed prompt, max_tokens with ignore_eos) is measured before and after, and the simulator predicts it
         for the plan in force after the move: same lengths, same number of clients in flight, the workers'
         throttles, and this machine's cores shared by the workers, the coordinator and the other tenants'
         runnable threads measured during the window (simulator.host).

    .venv/bin/python bench/replan_live.py            # ~3 minutes
    .venv/bin/python bench/replan_live.py --quick    # toy run (tests/bench/test_bench_replan_live.py)

Prints a table, then one JSON object on the last line: recover_s, lost, measured_vs_predicted, join figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fidelity_live import LoadSampler  # noqa: E402
from planner import bundled  # noqa: E402
from planner.flow import plan_from_placement  # noqa: E402
from planner.formats.plan_json import save_plan  # noqa: E402
from planner.placement import LayerRange, Placement  # noqa: E402
from planner.plan import Plan  # noqa: E402
from services.cli.run import SPEED_FACTORS  # noqa: E402
from tests.services.coordinator.fleet_procs import (  # noqa: E402
    MODEL,
    ProcFleet,
    WorkerSpec,
    stream_completion,
)

CLUSTER = "local-cpu4"
ADMIN_KEY = "replan-live-admin"
TYPES = {"fast": "cpu-fast", "fast2": "cpu-fast", "mid": "cpu-mid", "slow": "cpu-slow"}
START = {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30), "fast2": (10, 30)}
JOIN_RANGE = (25, 26)  # no chain can use it: any gain after the join is the re-plan's
PROMPTS = ("The capital of France is", "One, two, three,", "The sky is", "Water boils at")
GOAL_RECOVER_S = 10.0
GOAL_REL_ERR = 0.20


def spec(name: str, rng: tuple[int, int]) -> WorkerSpec:
    gpu = TYPES[name]
    return WorkerSpec(name, *rng, gpu_type=gpu, extra_args=("--speed-factor", str(SPEED_FACTORS[gpu])))


def plan_for(ranges: dict[str, tuple[int, int]]) -> Plan:
    model = bundled.model(MODEL)
    placement = Placement(model.num_layers, {n: LayerRange(*r) for n, r in ranges.items()})
    return plan_from_placement(
        bundled.cluster(CLUSTER), model, bundled.profiles(model), placement, method="live"
    )


# ----------------------------------------------------------------------------------------------- clients
@dataclass
class Window:
    """A closed loop of clients: completed requests, decode tokens, wall time, and anything lost."""

    completed: int = 0
    decode_tokens: int = 0
    wall_s: float = 0.0
    lost: int = 0
    refused: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def decode_tok_per_s(self) -> float:
        return self.decode_tokens / self.wall_s if self.wall_s > 0 else 0.0


async def closed_loop(
    base_url: str, clients: int, seconds: float, max_tokens: int, reference: dict[str, str]
) -> Window:
    """`clients` streams at a time for `seconds`; a stream is lost when it breaks off or its greedy text
    differs from the reference of its prompt; a clean 503/429 is refused (told, may retry)."""
    win = Window()
    t0 = time.monotonic()
    last_end = t0

    async def one(http: httpx.AsyncClient, i: int) -> None:
        nonlocal last_end
        k = i
        while time.monotonic() < t0 + seconds:
            prompt = PROMPTS[k % len(PROMPTS)]
            k += clients
            out = await stream_completion(http, base_url, prompt, max_tokens, read_timeout_s=180)
            if out.status in (429, 503):
                win.refused += 1
                await asyncio.sleep(0.2)
                continue
            if out.error is None and out.finish_reason is not None and out.text == reference[prompt]:
                win.completed += 1
                win.decode_tokens += max_tokens - 1  # the simulator's decodes: every token after the prompt's
                last_end = time.monotonic()
            else:
                win.lost += 1
                if len(win.examples) < 3:
                    win.examples.append(f"{prompt!r}: {out.error or out.text!r}")

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 2)) as http:
        await asyncio.gather(*(one(http, i) for i in range(clients)))
    win.wall_s = last_end - t0
    return win


async def references(base_url: str, max_tokens: int) -> tuple[dict[str, str], int]:
    """Each prompt's greedy text (ignore_eos, so every answer has max_tokens) and the prompt's length."""
    out: dict[str, str] = {}
    prompt_tokens = 0
    async with httpx.AsyncClient() as http:
        for p in PROMPTS:
            body = {
                "model": MODEL,
                "prompt": p,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            resp = await http.post(f"{base_url}/completions", json=body, timeout=180)
            resp.raise_for_status()
            out[p] = resp.json()["choices"][0]["text"]
            prompt_tokens = max(prompt_tokens, int(resp.json()["usage"]["prompt_tokens"]))
    return out, prompt_tokens


def admin(fleet: ProcFleet, path: str) -> dict[str, Any]:
    resp = httpx.get(
        f"{fleet.base_url}/admin/{path}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    )
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def covered(fleet: ProcFleet) -> bool:
    try:
        return held_everywhere(fleet.health())
    except (httpx.HTTPError, ValueError):
        return False


def held_everywhere(health: dict[str, Any]) -> bool:
    """Every layer is held by some live worker and the coordinator can route."""
    held = [0] * 30
    for w in health.get("fleet", {}).values():
        for layer in range(*w["layers"]):
            held[layer] += 1
    return all(held) and bool(health.get("routable"))


def wait_rollouts(fleet: ProcFleet, count: int, timeout_s: float) -> dict[str, Any]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        status = admin(fleet, "rollout")
        if status["rollouts"] >= count and not status["running"] and not any(status["pending"].values()):
            return status
        time.sleep(0.2)
    raise TimeoutError(f"no rollout #{count} in {timeout_s} s: {admin(fleet, 'rollout')}")


# ----------------------------------------------------------------------------------------------- prediction
def predict(
    ranges: dict[str, tuple[int, int]],
    *,
    clients: int,
    prompt_tokens: int,
    max_tokens: int,
    window_s: float,
    background: float,
    workdir: Path,
) -> float:
    """The simulator's decode tokens/s for the plan in force under the window's workload."""
    from simulator.config import SimConfig
    from simulator.host import HostSpec
    from simulator.run import simulate

    lengths = workdir / "lengths.csv"
    lengths.write_text(f"input_len,output_len\n{prompt_tokens},{max_tokens - 1}\n")
    plan = plan_for(ranges)
    cores = float(os.cpu_count() or 1)
    host = HostSpec("this machine", cores, tuple(ranges), coordinator=True, background=background)
    # A closed loop of `clients`: the offline feeder without a KV gate replaces each finished query, which
    # only the non-max-flow policies get; "random" walks the plan's chains (the coordinator weighs them by
    # the plan's flows: a difference in routing, not in load, at this concurrency).
    config = SimConfig(
        mode="offline",
        policy="random",
        lengths=str(lengths),
        initial_queries=clients,
        duration_s=window_s,
        warmup_s=min(5.0, window_s / 4),
        expected_output_len=max_tokens - 1,
        throttle={n: SPEED_FACTORS[TYPES[n]] for n in ranges if SPEED_FACTORS[TYPES[n]] < 1.0},
        hosts=(host,),
        watch_interval_s=0,
    )
    model = bundled.model(MODEL)
    result = simulate(bundled.cluster(CLUSTER), model, bundled.profiles(model), plan, config)
    return float(result.decode_tok_per_s)


# ----------------------------------------------------------------------------------------------- scenario
def run_live(quick: bool, *, workdir: Path | None = None, seed: int = 0) -> dict[str, Any]:
    clients, max_tokens, window_s = (3, 8, 8.0) if quick else (6, 16, 25.0)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="brl-replan-live-"))
    plan_path = workdir / "plan.json"
    save_plan(plan_for(START), plan_path)
    env = {"BRL_AUTO_REPLAN": "1", "BRL_ADMIN_API_KEY": ADMIN_KEY, "BRL_SEED": str(seed)}
    with ProcFleet(
        workdir, coordinator_args=["--plan", str(plan_path), "--cluster", CLUSTER], coordinator_env=env
    ) as fleet:
        fleet.start_coordinator()
        fleet.start_workers([spec(n, r) for n, r in START.items()])
        fleet.wait_workers(START, timeout_s=240)
        reference, prompt_tokens = asyncio.run(references(fleet.base_url, max_tokens))

        # -- loss: kill the sole holder of [0,10) under load -------------------------------------------
        async def loss() -> tuple[Window, float]:
            load = asyncio.create_task(closed_loop(fleet.base_url, clients, window_s, max_tokens, reference))
            await asyncio.sleep(1.0)
            t_kill = time.monotonic()
            await asyncio.to_thread(fleet.kill, "fast", signal.SIGKILL)
            while not await asyncio.to_thread(covered, fleet):
                if time.monotonic() - t_kill > 120:
                    raise TimeoutError("layers [0,10) not covered again within 120 s")
                await asyncio.sleep(0.05)
            recovered_s = time.monotonic() - t_kill
            return await load, recovered_s

        during_loss, recover_s = asyncio.run(loss())
        after_loss = wait_rollouts(fleet, 1, 120)["last"]

        # -- join: fast comes back with a range no chain uses -------------------------------------------
        pids = [p for p in fleet.pids()]
        with LoadSampler(pids) as sampled_before:
            before = asyncio.run(closed_loop(fleet.base_url, clients, window_s, max_tokens, reference))
        ranges_before = {n: tuple(r) for n, r in admin(fleet, "plan")["loaded"]["placement"].items()}
        fleet.start_workers([spec("fast", JOIN_RANGE)])
        t_join = time.monotonic()
        fleet.wait_workers([*START], timeout_s=240)
        joined = wait_rollouts(fleet, 2, 120)["last"]
        join_s = time.monotonic() - t_join
        loaded = admin(fleet, "plan")["loaded"]
        ranges_after = {n: (int(r[0]), int(r[1])) for n, r in loaded["placement"].items()}
        with LoadSampler(fleet.pids()) as sampled_after:
            after = asyncio.run(closed_loop(fleet.base_url, clients, window_s, max_tokens, reference))
        health = fleet.health()

    predicted = predict(
        ranges_after,
        clients=clients,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        window_s=window_s,
        background=sampled_after.mean,
        workdir=workdir,
    )
    predicted_before = predict(
        {n: (int(r[0]), int(r[1])) for n, r in ranges_before.items()},
        clients=clients,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        window_s=window_s,
        background=sampled_before.mean,
        workdir=workdir,
    )
    measured = after.decode_tok_per_s
    lost = during_loss.lost + before.lost + after.lost
    return {
        "bench": "replan_live",
        "quick": quick,
        "clients": clients,
        "max_tokens": max_tokens,
        "window_s": window_s,
        "recover_s": round(recover_s, 3),
        "controller_recover_s": after_loss.get("recover_s"),
        "loss_outcome": after_loss["outcome"],
        "lost": lost,
        "lost_examples": during_loss.examples + before.examples + after.examples,
        "refused_during_loss": during_loss.refused,
        "join_outcome": joined["outcome"],
        "joined": joined.get("joined"),
        "join_s": round(join_s, 3),
        "joiner_range": list(ranges_after.get("fast", ())) or None,
        "plan_before_join": {n: list(r) for n, r in ranges_before.items()},
        "plan_after_join": {n: list(r) for n, r in ranges_after.items()},
        "join_layers_moved": joined.get("layers_moved"),
        "tok_per_s_before_join": round(before.decode_tok_per_s, 3),
        "tok_per_s_after_join": round(measured, 3),
        "join_gain": round(measured / before.decode_tok_per_s, 3) if before.decode_tok_per_s else None,
        "background_threads": round(sampled_after.mean, 2),
        "background_threads_before": round(sampled_before.mean, 2),
        "predicted_tok_per_s_before_join": round(predicted_before, 3),
        "predicted_tok_per_s_after_join": round(predicted, 3),
        "measured_vs_predicted": round(abs(measured - predicted) / predicted, 4) if predicted else None,
        "covered_after": held_everywhere(health),
        "goals": {"recover_s": GOAL_RECOVER_S, "lost": 0, "measured_vs_predicted": GOAL_REL_ERR},
    }


def print_table(f: dict[str, Any]) -> None:
    rows = [
        ("recover_s (kill -> every layer covered)", f["recover_s"], f"<= {GOAL_RECOVER_S}"),
        ("controller recover_s (last heartbeat -> swap)", f["controller_recover_s"], ""),
        ("lost", f["lost"], "0"),
        ("join: joiner's new range", f["joiner_range"], ""),
        (
            "join: decode tok/s before -> after",
            f"{f['tok_per_s_before_join']} -> {f['tok_per_s_after_join']}",
            "",
        ),
        (
            "join: simulator's prediction before -> after",
            f"{f['predicted_tok_per_s_before_join']} -> {f['predicted_tok_per_s_after_join']}",
            "",
        ),
        (
            "other tenants' runnable threads (before, after)",
            f"{f['background_threads_before']}, {f['background_threads']}",
            "",
        ),
        ("measured_vs_predicted", f["measured_vs_predicted"], f"<= {GOAL_REL_ERR}"),
    ]
    for name, value, goal in rows:
        print(f"{name:<48} {value!s:<24} {goal}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="toy run (tests)")
    ap.add_argument("--workdir", type=Path, help="plan, lengths and process logs go here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    figures = run_live(args.quick, workdir=args.workdir, seed=args.seed)
    print_table(figures)
    print(json.dumps(figures))
    return 1 if figures["lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
