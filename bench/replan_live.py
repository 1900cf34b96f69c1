"""Live re-planning figures on this machine (issue 15): a coordinator with BRL_AUTO_REPLAN and four SmolLM2
worker processes on the bundled local-cpu4 fleet, each throttled to its GPU type's declared speed.

  loss   `fast`, the only holder of layers [0,10), is SIGKILLed while streams run: `recover_s` is the time
         from the kill until the coordinator's live workers cover every layer again (goal <= 10 s);
         every stream accepted before the kill must end with the calm text (`lost` counts those that do not).
  join   `fast` comes back holding one layer no chain can use ([25,26)): the controller re-plans with it,
         loads its new range and swaps the plan. Throughput (decode tokens/s of one closed loop of clients
         kept running throughout, fixed prompts, max_tokens with ignore_eos) is cut afterwards from a window
         before the join and one after it that starts once no worker drains an old range (Stats.draining);
         an after-window whose competing load moved by > 0.5 sessions from the before-window's is
         measured again (bench/replan_windows.py, as tests/services/controller/test_join_throughput.py).
  model  the simulator predicts both windows for the plan in force with bench/fidelity.py's terms
         (bench/replan_predict.py): this machine's per-layer profile and LM head (`brl profile`'s code,
         decode at the workload's mean context, measured while the fleet idles), the serving overheads a
         probe of the fresh fleet measures (worker CPU per step, gRPC hop, coordinator CPU per iteration),
         the workers' throttles, and this machine's cores shared by the workers, the coordinator and the
         other sessions with runnable work measured during each window (simulator.host; bench/fidelity_load.py:
         the kernel shares the cores per session). The same workload: the
         prompts' lengths, the same decodes, max-flow routing over the plan's flows with the clients'
         fixed concurrency (SimConfig.fixed_concurrency).

    .venv/bin/python bench/replan_live.py            # ~5 minutes
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fidelity_live import Probe, probe_fleet  # noqa: E402
from bench.fidelity_load import LoadSampler  # noqa: E402
from bench.fidelity_profiles import Measured, measure_torch, scaled  # noqa: E402
from bench.replan_clients import SteadyLoop, Window, closed_loop, references  # noqa: E402
from bench.replan_predict import (  # noqa: E402
    Predicted,
    Ranges,
    Terms,
    Workload,
    calibrated,
    predict,
    probe_terms,
    rel_err,
    routing_plan,
)
from bench.replan_windows import (  # noqa: E402
    AFTER_TRIES,
    after_windows,
    measure,
    per_node,
    step_figures,
    wait_drained,
)
from planner.formats.plan_json import save_plan  # noqa: E402
from services.cli.run import SPEED_FACTORS  # noqa: E402
from tests.services.coordinator.fleet_procs import MODEL, ProcFleet, WorkerSpec  # noqa: E402

CLUSTER = "local-cpu4"
ADMIN_KEY = "replan-live-admin"
TYPES = {"fast": "cpu-fast", "fast2": "cpu-fast", "mid": "cpu-mid", "slow": "cpu-slow"}
START = {"fast": (0, 10), "mid": (10, 20), "slow": (20, 30), "fast2": (10, 30)}
JOIN_RANGE = (25, 26)  # no chain can use it: any gain after the join is the re-plan's
GOAL_RECOVER_S = 10.0
GOAL_REL_ERR = 0.20


def spec(name: str, rng: tuple[int, int]) -> WorkerSpec:
    gpu = TYPES[name]
    return WorkerSpec(name, *rng, gpu_type=gpu, extra_args=("--speed-factor", str(SPEED_FACTORS[gpu])))


SPEEDS = {n: SPEED_FACTORS[t] for n, t in TYPES.items()}


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
        busy = status["running"] or any(status["pending"].values()) or status.get("unloading")
        if status["rollouts"] >= count and not busy:
            return status
        time.sleep(0.2)
    raise TimeoutError(f"no rollout #{count} in {timeout_s} s: {admin(fleet, 'rollout')}")


# ----------------------------------------------------------------------------------------------- scenario
def fleet_ranges(fleet: ProcFleet) -> dict[str, tuple[int, int]]:
    """The placement of the plan the coordinator has loaded."""
    return {n: (int(r[0]), int(r[1])) for n, r in admin(fleet, "plan")["loaded"]["placement"].items()}


def measure_terms(
    fleet: ProcFleet,
    measured: Measured,
    ranges: Ranges,
    speeds: dict[str, float],
    *,
    rounds: int,
    seed: int,
    workdir: Path,
) -> tuple[Terms, Probe]:
    """The serving terms of a fleet of local-cpu4 workers holding `ranges`, as started (every worker
    fresh, nothing queued): lone steps through each chain of their plan, then the coordinator's CPU per
    iteration (bench/fidelity_live.py)."""
    assert fleet.coordinator is not None  # started by the caller
    pids = {n: fleet.workers[n].pid for n in ranges}
    pids["coordinator"] = fleet.coordinator.pid
    found = probe_fleet(
        {n: fleet.worker_address(n) for n in ranges},
        pids,
        fleet.root_url,
        MODEL,
        routing_plan(CLUSTER, MODEL, ranges),
        rounds=rounds,
        seed=seed,
    )
    cores = float(os.cpu_count() or 1)
    return probe_terms(measured, found, ranges, speeds, cores=cores, workdir=workdir), found


def addresses(fleet: ProcFleet, names: Iterable[str]) -> dict[str, str]:
    return {n: fleet.worker_address(n) for n in names}


def run_live(
    quick: bool, *, workdir: Path | None = None, seed: int = 0, pipeline_depth: int | None = None
) -> dict[str, Any]:
    """The loss and the join on a fresh fleet; `pipeline_depth` None keeps the coordinator's default (a
    chain keeps at most one micro-batch per stage in flight whatever the setting)."""
    clients, max_tokens, window_s, warmup_s = (3, 8, 8.0, 2.0) if quick else (6, 16, 60.0, 10.0)
    settle_s, after_tries = (2.0, 2) if quick else (6.0, AFTER_TRIES)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="brl-replan-live-"))
    plan_path = workdir / "plan.json"
    save_plan(routing_plan(CLUSTER, MODEL, START), plan_path)
    cores = float(os.cpu_count() or 1)
    env = {"BRL_AUTO_REPLAN": "1", "BRL_ADMIN_API_KEY": ADMIN_KEY, "BRL_SEED": str(seed)}
    if pipeline_depth is not None:
        env["BRL_PIPELINE_DEPTH"] = str(pipeline_depth)
    with ProcFleet(
        workdir, coordinator_args=["--plan", str(plan_path), "--cluster", CLUSTER], coordinator_env=env
    ) as fleet:
        fleet.start_coordinator()
        fleet.start_workers([spec(n, r) for n, r in START.items()])
        fleet.wait_workers(START, timeout_s=240)
        reference, prompt_tokens = asyncio.run(references(fleet.base_url, MODEL, max_tokens))
        # This machine's torch timings (brl profile's code, as fidelity measures them) with the decode steps
        # at this workload's mean context (prompt + half the decodes), on the idle fleet, brought back to a
        # core of their own by the share of a core the measuring thread had (its CPU time / wall time).
        context = round(sum(prompt_tokens.values()) / len(prompt_tokens) + (max_tokens - 1) / 2)
        with LoadSampler([os.getpid()]) as during_profile:
            raw = measure_torch(quick=quick, decode_context=context)
        profile_background = during_profile.mean
        measured = scaled(raw, raw.core_share)
        terms, found = measure_terms(
            fleet, measured, START, SPEEDS, rounds=1 if quick else 3, seed=seed, workdir=workdir / "probe"
        )

        # -- loss: kill the sole holder of [0,10) under load -------------------------------------------
        async def loss() -> tuple[Window, float]:
            task = asyncio.create_task(
                closed_loop(fleet.base_url, MODEL, clients, max(8.0, window_s / 3), max_tokens, reference)
            )
            await asyncio.sleep(1.0)
            t_kill = time.monotonic()
            await asyncio.to_thread(fleet.kill, "fast", signal.SIGKILL)
            while not await asyncio.to_thread(covered, fleet):
                if time.monotonic() - t_kill > 120:
                    raise TimeoutError("layers [0,10) not covered again within 120 s")
                await asyncio.sleep(0.05)
            recovered_s = time.monotonic() - t_kill
            return await task, recovered_s

        during_loss, recover_s = asyncio.run(loss())
        after_loss = wait_rollouts(fleet, 1, 120)["last"]
        wait_drained(addresses(fleet, [n for n in START if n != "fast"]), 120)

        # -- join: fast comes back with a range no chain uses, under one steady loop of clients ----------
        # The windows are cut from that loop afterwards (as the join test does): no window starts with every
        # client at once and an empty pipeline, and the after-window starts once the old ranges drained.
        ranges_before = fleet_ranges(fleet)
        with SteadyLoop(fleet.base_url, MODEL, clients, max_tokens, reference) as loop:
            time.sleep(warmup_s)
            before = measure(addresses(fleet, ranges_before), fleet.pids(), window_s)
            fleet.start_workers([spec("fast", JOIN_RANGE)])
            t_join = time.monotonic()
            fleet.wait_workers([*START], timeout_s=240)
            joined = wait_rollouts(fleet, 2, 120)["last"]
            join_s = time.monotonic() - t_join
            drain_s = wait_drained(addresses(fleet, START), 120)
            time.sleep(settle_s)  # the clients spread over the new plan's chains
            ranges_after = fleet_ranges(fleet)
            afters = after_windows(
                before,
                lambda: measure(addresses(fleet, ranges_after), fleet.pids(), window_s),
                tries=after_tries,
            )
        after = afters.used
        health = fleet.health()
        win_before, win_after = loop.window(before.start, before.end), loop.window(after.start, after.end)
        sampled_before, sampled_after = before.sampler, after.sampler
        steps_before = step_figures(before.first, before.last, before.seconds)
        steps_after = step_figures(after.first, after.last, after.seconds)

    workload = Workload(clients, tuple(prompt_tokens.values()), max_tokens - 1, window_s, warmup_s)

    def predicted_for(ranges: Ranges, background: float, tag: str) -> Predicted:
        return predict(
            CLUSTER,
            MODEL,
            ranges,
            SPEEDS,
            terms,
            workload,
            background=background,
            workdir=workdir / tag,
            seed=seed,
        )

    # Each window at the steady background that slows our jobs as its sampled load did (LoadSampler.effective).
    load_after, load_before = sampled_after.effective(cores), sampled_before.effective(cores)
    sim_after = predicted_for(ranges_after, load_after, "predict-after")
    sim_before = predicted_for(ranges_before, load_before, "predict-before")
    predicted, predicted_before = sim_after.decode_tok_per_s, sim_before.decode_tok_per_s
    # The plans' own difference: both at the after-window's load (the windows' loads differ by chance).
    same_load = predicted_for(ranges_before, load_after, "predict-before-same-load").decode_tok_per_s
    measured_tps = win_after.decode_tok_per_s
    lost = during_loss.lost + loop.lost
    return {
        "bench": "replan_live",
        "quick": quick,
        "clients": clients,
        "max_tokens": max_tokens,
        "window_s": window_s,
        "warmup_s": warmup_s,
        "recover_s": round(recover_s, 3),
        "controller_recover_s": after_loss.get("recover_s"),
        "loss_outcome": after_loss["outcome"],
        "lost": lost,
        "lost_examples": during_loss.examples + loop.examples,
        "refused_during_loss": during_loss.refused,
        "refused_after_loss": loop.refused,
        "join_outcome": joined["outcome"],
        "joined": joined.get("joined"),
        "join_s": round(join_s, 3),
        "joiner_range": list(ranges_after.get("fast", ())) or None,
        "plan_before_join": {n: list(r) for n, r in ranges_before.items()},
        "plan_after_join": {n: list(r) for n, r in ranges_after.items()},
        "join_layers_moved": joined.get("layers_moved"),
        "completed_before_join": win_before.completed,
        "completed_after_join": win_after.completed,
        "tok_per_s_before_join": round(win_before.decode_tok_per_s, 3),
        "tok_per_s_after_join": round(measured_tps, 3),
        "join_gain": round(measured_tps / win_before.decode_tok_per_s, 3)
        if win_before.decode_tok_per_s
        else None,
        "drain_s": round(drain_s, 3),
        "settle_s": settle_s,
        "after_window_loads": afters.loads,
        "pipeline_depth": pipeline_depth,
        "background": round(sampled_after.mean, 2),
        "background_before": round(sampled_before.mean, 2),
        "background_effective": round(load_after, 2),
        "background_effective_before": round(load_before, 2),
        "background_threads": round(sampled_after.threads_mean, 2),
        "background_threads_before": round(sampled_before.threads_mean, 2),
        "ours_runnable": round(sampled_after.ours_mean, 2),
        "ours_runnable_before": round(sampled_before.ours_mean, 2),
        "steps_before_join": per_node(steps_before, sim_before),
        "steps_after_join": per_node(steps_after, sim_after),
        "profile_decode_context": context,
        "profile_background": round(profile_background, 2),
        "profile_core_share": round(raw.core_share, 3),
        "profile_core_share_from_load": round(min(1.0, cores / (1.0 + profile_background)), 3),
        "probe": found.to_dict(),
        "step_overhead_ms": {n: round(v * 1e3, 3) for n, v in terms.step_overhead_s.items()},
        "lone_step_own_core_ms": terms.lone_step_ms,
        "predicted_tok_per_s_before_join": round(predicted_before, 3),
        "predicted_tok_per_s_after_join": round(predicted, 3),
        "predicted_join_gain_same_load": round(predicted / same_load, 3) if same_load > 0 else None,
        "measured_vs_predicted_before_join": rel_err(win_before.decode_tok_per_s, predicted_before),
        "measured_vs_predicted": rel_err(measured_tps, predicted),
        # The prediction calibrated on the before-window (what the fleet served over what the simulator gave
        # it), as the join test asserts it: this machine's speed drifts between the profile and the windows.
        "measured_vs_calibrated": rel_err(
            measured_tps, calibrated(predicted, win_before.decode_tok_per_s, predicted_before)
        ),
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
        ("measured_vs_predicted before the join (sanity)", f["measured_vs_predicted_before_join"], ""),
        (
            "competing sessions, mean (effective): before, after",
            f"{f['background_before']} ({f['background_effective_before']}), "
            f"{f['background']} ({f['background_effective']})",
            "",
        ),
        ("measured_vs_predicted", f["measured_vs_predicted"], f"<= {GOAL_REL_ERR}"),
        ("measured_vs_calibrated (on the before-window)", f["measured_vs_calibrated"], ""),
    ]
    for name, value, goal in rows:
        print(f"{name:<48} {value!s:<24} {goal}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="toy run (tests)")
    ap.add_argument("--workdir", type=Path, help="plan, lengths and process logs go here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pipeline-depth", type=int, help="BRL_PIPELINE_DEPTH for the coordinator (default: its own)"
    )
    args = ap.parse_args(argv)
    figures = run_live(args.quick, workdir=args.workdir, seed=args.seed, pipeline_depth=args.pipeline_depth)
    print_table(figures)
    print(json.dumps(figures))
    return 1 if figures["lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
