"""Planning and simulating at scale: generated fleets of A100 : L4 : T4 = 1 : 1.5 : 2.5 (the issue's 200-GPU
mix), one region or several. Per size: plan time, peak memory (a fresh child process per job, its
ru_maxrss), max-flow, coverage bound; where asked, the full offline run (660 simulated seconds) of the
`scale` plan and of petals / swarm / separate, every plan fed in proportion to the fleet, with the run's own
time and memory, and the ratio to the best heuristic. The full run's warm-up grows with the fleet as in
bench.planner (up to 180 s: a 200-GPU fleet is still filling at 60 s, and a window that opens on the ramp
favours plans that fill fast over plans that serve more). Last line: one JSON object.

    .venv/bin/python -m bench.planner --scale [--sizes 50,100,200,500,1000] [--simulate 200,1000]
        [--regions 1,3] [--time-limit 240] [--window 600] [--warmup S] [--methods scale,swarm]
        [--plans-dir DIR] [--quick]

A full run at 1,000 GPUs takes many CPU minutes per method: `--plans-dir` keeps every plan (with its
planning figures) as DIR/<method>-n<nodes>-r<regions>-s<seed>.json and reuses the ones already there, and
`--methods` names the methods to run, so each method's run can be its own invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.planner_fleets import full_run_window, initial_queries
from planner.cluster import Cluster
from planner.generate import multi_region, single_region

MIX = {"A100": 1.0, "L4": 1.5, "T4": 2.5}
HEURISTICS = ("petals", "swarm", "separate")
MODEL = "llama2-70b"


def fleet(nodes: int, regions: int, seed: int = 0) -> Cluster:
    """`nodes` GPUs in MIX's proportions (largest remainders), dealt evenly over `regions`."""
    share = sum(MIX.values())
    counts = {g: math.floor(nodes * w / share) for g, w in MIX.items()}
    for g in sorted(MIX, key=lambda g: -(nodes * MIX[g] / share % 1))[: nodes - sum(counts.values())]:
        counts[g] += 1
    name = f"mix{nodes}-r{regions}-s{seed}"
    if regions == 1:
        return single_region(counts, random.Random(seed), name=name)
    per = {
        f"r{i}": {g: c // regions + (1 if i < c % regions else 0) for g, c in counts.items()}
        for i in range(regions)
    }
    per = {r: {g: c for g, c in cs.items() if c > 0} for r, cs in per.items()}
    return multi_region(per, random.Random(seed), name=name)


def _plan_job(
    nodes: int, regions: int, method: str, time_limit_s: float, tile_nodes: int, seed: int
) -> dict[str, Any]:
    """In a fresh process: build the fleet, plan, report time, memory and the plan's figures."""
    from planner import bundled
    from planner.formats.plan_json import plan_to_dict
    from planner.solvers import solve
    from services.cli.judge import region_scorers

    began = time.perf_counter()
    cluster = fleet(nodes, regions, seed)
    model = bundled.model(MODEL)
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    built_s = time.perf_counter() - began
    options: dict[str, Any] = {}
    if method == "scale":
        options = {
            "tile_nodes": tile_nodes,
            "scorer_for": region_scorers(model, profiles, settings=settings, seed=seed),
        }
    plan = solve(
        method,
        cluster,
        model,
        profiles,
        settings=settings,
        seed=seed,
        time_limit_s=time_limit_s,
        clock=time.perf_counter,
        options=options,
    )
    return {
        "fleet_s": round(built_s, 2),
        "plan_s": round(time.perf_counter() - began - built_s, 2),
        "cpu_s": round(time.process_time(), 2),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "max_flow": round(plan.objective_tok_per_s, 1),
        "bound": round(float(plan.metrics.get("coverage_bound_tok_per_s") or 0.0), 1),
        "placed": len(plan.placement.ranges),
        "stats": {
            k: v
            for k, v in plan.solver_stats.items()
            if k in ("tiles", "per_tile_nodes", "left_out", "regions")
        },
        # Without the fleet (a million links at 1,000 GPUs): the simulating child builds it again.
        "plan": {k: v for k, v in plan_to_dict(plan).items() if k != "cluster"},
    }


def _sim_job(
    nodes: int, regions: int, plan_doc: dict[str, Any], window_s: float, warmup_s: float | None, seed: int
) -> dict[str, Any]:
    """In a fresh process: the full offline run of a plan, fed in proportion to the fleet: `warmup_s`
    (None: bench.planner's, growing with the fleet) then a `window_s` measured window."""
    from planner import bundled
    from planner.formats.plan_json import plan_from_dict
    from simulator.run import SimConfig, simulate

    cluster = fleet(nodes, regions, seed)
    model = bundled.model(MODEL)
    profiles = bundled.profiles(model)
    plan = plan_from_dict(plan_doc)
    began = time.perf_counter()
    warm = full_run_window(cluster)[0] if warmup_s is None else warmup_s
    cfg = SimConfig(
        seed=seed,
        initial_queries=initial_queries(cluster),
        warmup_s=warm,
        duration_s=warm + window_s,
        watch_interval_s=0,
    )
    sim = simulate(cluster, model, profiles, plan, cfg)
    return {
        "sim_s": round(time.perf_counter() - began, 2),
        "cpu_s": round(time.process_time(), 2),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "warmup_s": warm,
        "events": sim.events,
        "decode_tok_per_s": round(sim.decode_tok_per_s, 1),
        "all_tok_per_s": round(sim.all_tok_per_s, 1),
    }


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """Run fn(*args) in a fresh (spawned) process, so its ru_maxrss is its own peak."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        result: dict[str, Any] = pool.apply(fn, args)
    return result


def _planned(
    plans_dir: Path | None,
    nodes: int,
    regions: int,
    method: str,
    time_limit_s: float,
    tile_nodes: int,
    seed: int,
) -> dict[str, Any]:
    """_plan_job's result (plan included), read from `plans_dir` when an earlier run kept it there."""
    path = None if plans_dir is None else plans_dir / f"{method}-n{nodes}-r{regions}-s{seed}.json"
    if path is not None and path.exists():
        kept: dict[str, Any] = json.loads(path.read_text())
        return kept
    job = in_child(_plan_job, nodes, regions, method, time_limit_s, tile_nodes, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(job))
    return job


def run(
    sizes: list[int],
    simulate_sizes: list[int],
    regions_list: list[int],
    *,
    time_limit_s: float,
    window_s: float,
    warmup_s: float | None,
    tile_nodes: int,
    seed: int,
    methods: tuple[str, ...] = ("scale", *HEURISTICS),
    plans_dir: Path | None = None,
) -> dict[str, Any]:
    curve: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for regions in regions_list:
        for nodes in sizes:
            planned = dict(_planned(plans_dir, nodes, regions, "scale", time_limit_s, tile_nodes, seed))
            doc = planned.pop("plan")
            row = {"nodes": nodes, "regions": regions, **planned}
            curve.append(row)
            print(
                f"plan  {nodes:5d} GPUs {regions} region(s): {row['plan_s']:7.1f} s wall "
                f"({row['cpu_s']:.1f} s CPU), peak {row['peak_mb']:7.1f} MB, max-flow {row['max_flow']:9.1f}, "
                f"bound {row['bound']:9.1f}, tiles {row['stats'].get('tiles')}",
                flush=True,
            )
            for region, r in sorted(row["stats"].get("regions", {}).items()):
                print(f"  {region}: chose {r.get('chosen')} of {r.get('scores')}", flush=True)
            if nodes not in simulate_sizes:
                continue
            decode: dict[str, float] = {}
            sims: dict[str, Any] = {}
            plans = {"scale": doc} if "scale" in methods else {}
            for method in HEURISTICS:
                if method in methods:
                    plans[method] = _planned(
                        plans_dir, nodes, regions, method, time_limit_s, tile_nodes, seed
                    )["plan"]
            for method, plan_doc in plans.items():
                sims[method] = in_child(_sim_job, nodes, regions, plan_doc, window_s, warmup_s, seed)
                decode[method] = sims[method]["decode_tok_per_s"]
                s = sims[method]
                print(
                    f"  sim {method:9s} decode {s['decode_tok_per_s']:9.1f} tok/s (warm-up {s['warmup_s']:.0f} s), "
                    f"{s['events']} events, "
                    f"{s['sim_s']:.1f} s wall ({s['cpu_s']:.1f} s CPU), peak {s['peak_mb']:.1f} MB",
                    flush=True,
                )
            ran = [m for m in HEURISTICS if m in decode]
            best = max(ran, key=lambda m: decode[m]) if ran else None
            ratio: float | None = None
            if best is not None and "scale" in decode:
                ratio = decode["scale"] / decode[best] if decode[best] > 0 else math.inf
                print(f"  scale / best heuristic run ({best}): {ratio:.2f}x", flush=True)
            runs.append(
                {
                    "nodes": nodes,
                    "regions": regions,
                    "plan_s": row["plan_s"],
                    "plan_peak_mb": row["peak_mb"],
                    "max_flow": row["max_flow"],
                    "bound": row["bound"],
                    "decode_tok_per_s": decode,
                    "best_heuristic": best,
                    "ratio": None if ratio is None else round(ratio, 3),
                    "sims": sims,
                }
            )
    return {"curve": curve, "runs": runs, "time_limit_s": time_limit_s, "window_s": window_s}


FULL: dict[str, Any] = {
    "sizes": "50,100,200,500,1000",
    "simulate": "200,1000",
    "regions": "1,3",
    "time_limit": 240.0,
    "window": 600.0,
    "tile_nodes": 40,
}
QUICK: dict[str, Any] = {
    "sizes": "24,48",
    "simulate": "48",
    "regions": "1",
    "time_limit": 10.0,
    "window": 20.0,
    "warmup": 20.0,
    "tile_nodes": 24,
}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="fleet sizes for the cost curve (default 50,100,200,500,1000)")
    parser.add_argument("--simulate", help="sizes to simulate, scale vs the heuristics (default 200,1000)")
    parser.add_argument("--regions", help="region counts, 1 = one region (default 1,3)")
    parser.add_argument("--time-limit", type=float, help="plan time limit, wall-clock s (default 240)")
    parser.add_argument(
        "--window", type=float, help="measured simulated seconds per offline run (default 600)"
    )
    parser.add_argument(
        "--warmup", type=float, help="simulated warm-up seconds (default: grows with the fleet, 60-180)"
    )
    parser.add_argument("--tile-nodes", type=int, help="nodes per tile of the scale method (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods", default="scale," + ",".join(HEURISTICS), help="methods to simulate (default all four)"
    )
    parser.add_argument("--plans-dir", type=Path, help="keep plans here and reuse those already kept")
    parser.add_argument("--quick", action="store_true", help="toy sizes (for the tests)")
    args = parser.parse_args(argv)
    # Flags given win over both sets of defaults.
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = run(
        _ints(args.sizes),
        _ints(args.simulate),
        _ints(args.regions),
        time_limit_s=args.time_limit,
        window_s=args.window,
        warmup_s=args.warmup,
        tile_nodes=args.tile_nodes,
        seed=args.seed,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        plans_dir=args.plans_dir,
    )
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
