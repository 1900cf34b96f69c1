"""Placement benchmark: every method on the paper's fleets — max-flow, planning time, simulated serving
(decode tokens/s, prompt/decode latency from the fast simulator), and ratios to the best paper-method
layout (the stored one, the paper's MILP under our solver with the same time, petals, swarm, separate)
run through the same code. Prints a table; the last line is one JSON object with all figures.

    .venv/bin/python -m bench.planner [--time-limit 30] [--full-sim] [--quick]
    .venv/bin/python -m bench.planner --scorer-truth [--candidates 14] [--quick]
    .venv/bin/python -m bench.planner --slo [--ttft-p95 S --tpot-p95 S] [--slo-duration 600] [--quick]
    .venv/bin/python -m bench.planner --scale [--sizes 50,100,200,500,1000] [--simulate 200,1000] [--quick]

--slo: capacity at a latency SLO (simulator.capacity) of `serve --objective slo` against the paper's layout
(the stored ILP solution; where none is stored, the paper's MILP under our solver with the same time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.planner_fleets import (
    FLEET42_SEEDS,
    best_baseline,
    full_run_window,
    initial_queries,
    load_cluster,
)
from planner import bundled
from planner.errors import BrlError
from planner.flow import coverage_bound, plan_from_placement
from planner.plan import Plan
from planner.solvers import solve
from planner.throughput import typical_throughput

# (cluster, model, stored layout to compare with or None, the paper's figure for it)
FLEETS: tuple[tuple[str, str, str | None, float | None], ...] = (
    ("cluster24", "llama2-70b", "ilp", 1289.56),
    ("cluster24", "llama1-30b", "petals", 898.57),
    ("3cluster24", "llama2-70b", None, None),
    ("cluster10", "llama1-30b", None, 286.59),
    *((f"fleet42-s{seed}", "llama2-70b", None, None) for seed in FLEET42_SEEDS),
)
METHODS = ("petals", "swarm", "separate", "homogeneous", "search", "milp", "serve")
SLOW = ("search", "milp", "serve")


@dataclass
class Row:
    fleet: str
    method: str
    max_flow: float
    bound: float
    wall_s: float
    decode_tok_per_s: float | None = None
    prompt_latency_s: float | None = None
    decode_latency_s: float | None = None
    finished: int | None = None
    # All-token rate of the run and the plan's ceiling on it (planner.flow.peak_flow_bound): the max-flow
    # is an estimate at typical batches that runs may exceed; the ceiling they never do.
    all_tok_per_s: float | None = None
    ceiling_tok_per_s: float | None = None
    error: str | None = None


def simulate_plan(
    cluster: Any, model: Any, profiles: Any, plan: Plan, full: bool, seed: int
) -> dict[str, Any] | None:
    try:
        from simulator.run import SimConfig, simulate
        from simulator.score import score_plan
    except ImportError:
        return None
    warmup_s, duration_s = full_run_window(cluster)
    full_config = SimConfig(
        seed=seed, initial_queries=initial_queries(cluster), warmup_s=warmup_s, duration_s=duration_s
    )
    sim = (
        simulate(cluster, model, profiles, plan, full_config)
        if full
        else score_plan(cluster, model, profiles, plan, seed=seed)
    )
    return {
        "decode_tok_per_s": float(sim.decode_tok_per_s),
        "prompt_latency_s": float(sim.prompt_latency_s.mean),
        "decode_latency_s": float(sim.decode_latency_s.mean),
        "finished": int(sim.finished),
        "all_tok_per_s": float(sim.all_tok_per_s),
    }


def run_fleet(
    cluster_name: str,
    model_name: str,
    reference: str | None,
    paper: float | None,
    *,
    methods: tuple[str, ...],
    time_limit_s: float,
    simulate_on: bool,
    full_sim: bool,
    serve_max_scored: int | None,
    seed: int,
) -> tuple[list[Row], dict[str, Any]]:
    cluster = load_cluster(cluster_name)
    model = bundled.model(model_name)
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    table = typical_throughput(cluster, model, profiles, settings)
    fleet = f"{cluster_name}/{model_name}"
    rows: list[Row] = []
    ref: dict[str, Any] = {
        "fleet": fleet,
        "coverage_bound": coverage_bound(cluster, table),
        "paper_value": paper,
    }
    if reference is not None:
        placement = bundled.layout(reference, cluster_name, model_name)
        # The paper routes its ILP layout over exact joins only; petals relies on partial overlaps.
        ref_plan = plan_from_placement(
            cluster,
            model,
            profiles,
            placement,
            method=f"paper-{reference}",
            throughput=table,
            partial=reference == "petals",
        )
        row = Row(
            fleet, f"paper-{reference}", ref_plan.objective_tok_per_s, ref_plan.bound_tok_per_s or 0.0, 0.0
        )
        row.ceiling_tok_per_s = ref_plan.metrics.get("peak_flow_bound_tok_per_s")
        sim = simulate_plan(cluster, model, profiles, ref_plan, full_sim, seed) if simulate_on else None
        if sim:
            row.decode_tok_per_s, row.prompt_latency_s = sim["decode_tok_per_s"], sim["prompt_latency_s"]
            row.decode_latency_s, row.finished = sim["decode_latency_s"], sim["finished"]
            row.all_tok_per_s = sim["all_tok_per_s"]
        rows.append(row)
        ref.update(
            {"reference": reference, "max_flow": row.max_flow, "decode_tok_per_s": row.decode_tok_per_s}
        )
    scorer = None
    if simulate_on and "serve" in methods:
        try:
            from services.cli.plan import simulator_scorer

            scorer = simulator_scorer(cluster, model, profiles, settings=settings, seed=seed)
        except ImportError:
            scorer = None
    for method in methods:
        options: dict[str, Any] = {}
        if method == "serve" and serve_max_scored is not None:
            options["max_scored"] = serve_max_scored
        started = time.perf_counter()
        try:
            plan = solve(
                method,
                cluster,
                model,
                profiles,
                settings=settings,
                throughput=table,
                seed=seed,
                time_limit_s=time_limit_s,
                clock=time.perf_counter,
                options=options,
                scorer=scorer if method == "serve" else None,
            )
        except BrlError as exc:
            rows.append(Row(fleet, method, 0.0, 0.0, time.perf_counter() - started, error=str(exc)))
            continue
        row = Row(
            fleet,
            method,
            plan.objective_tok_per_s,
            plan.bound_tok_per_s or 0.0,
            time.perf_counter() - started,
        )
        row.ceiling_tok_per_s = plan.metrics.get("peak_flow_bound_tok_per_s")
        sim = simulate_plan(cluster, model, profiles, plan, full_sim, seed) if simulate_on else None
        if sim:
            row.decode_tok_per_s, row.prompt_latency_s = sim["decode_tok_per_s"], sim["prompt_latency_s"]
            row.decode_latency_s, row.finished = sim["decode_latency_s"], sim["finished"]
            row.all_tok_per_s = sim["all_tok_per_s"]
        rows.append(row)
        if method == "serve" and "chosen" in plan.solver_stats:
            # What serve's scorer promised for the plan it chose, to set against the simulation above.
            ref["serve_chosen"] = plan.solver_stats["chosen"]
            ref["serve_scored"] = plan.solver_stats.get("scored")
            ref["serve_score_decode_tok_per_s"] = plan.solver_stats.get("decode_tok_per_s")
    base_method, base_decode = best_baseline(
        {r.method: r.decode_tok_per_s for r in rows}, extra=[f"paper-{reference}"] if reference else []
    )
    serve = next((r.decode_tok_per_s for r in rows if r.method == "serve"), None)
    ref.update(
        {
            "baseline": base_method or None,
            "baseline_decode_tok_per_s": base_decode or None,
            "serve_vs_baseline": serve / base_decode if serve is not None and base_decode else None,
            "nodes": len(cluster.nodes),
        }
    )
    return rows, ref


# MILP ablation: what each idea buys on one fleet (the paper's model as written, then tightened, cold, ours).
ABLATION: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "paper-petals-start",
        {"start_from": "petals", "symmetry": False, "bound_cut": False, "tight_big_m": False},
    ),
    (
        "tightened-petals-start",
        {"start_from": "petals", "symmetry": True, "bound_cut": True, "tight_big_m": True},
    ),
    ("cold", {"start_from": "none"}),
    ("search-warm-start", {}),
)


def run_ablation(cluster_name: str, model_name: str, time_limit_s: float, seed: int) -> list[dict[str, Any]]:
    cluster = bundled.cluster(cluster_name)
    model = bundled.model(model_name)
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    table = typical_throughput(cluster, model, profiles, settings)
    rows = []
    for name, options in ABLATION:
        started = time.perf_counter()
        try:
            plan = solve(
                "milp",
                cluster,
                model,
                profiles,
                throughput=table,
                seed=seed,
                time_limit_s=time_limit_s,
                clock=time.perf_counter,
                options={**options, "slice_s": time_limit_s},
            )
            value, stats = plan.objective_tok_per_s, dict(plan.solver_stats)
        except BrlError:
            value, stats = 0.0, {}
        rows.append(
            {
                "variant": name,
                "max_flow": value,
                "wall_s": time.perf_counter() - started,
                "warm_start": stats.get("warm_start_tok_per_s"),
                "solver_bound": stats.get("solver_bound_tok_per_s"),
                "rows": stats.get("rows"),
                "cols": stats.get("cols"),
                "status": stats.get("status"),
            }
        )
    return rows


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if "--scale" in args_in:  # 200 to 1,000 GPUs: its own flags (bench/planner_scale.py)
        from bench.planner_scale import main as scale_main

        return scale_main([a for a in args_in if a != "--scale"])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds for search / milp / serve")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--fleets", help="comma-separated cluster/model pairs (default: the paper's four and fleet42-s0..s2)"
    )
    parser.add_argument("--no-sim", action="store_true", help="max-flow only")
    parser.add_argument(
        "--full-sim",
        action="store_true",
        help="full offline runs (warm-up 60 s, more on big fleets, + 600 s) not scores",
    )
    parser.add_argument("--quick", action="store_true", help="toy size: cluster10 only, 1-s limits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ablation", action="store_true", help="MILP variants on cluster24/llama2-70b instead"
    )
    parser.add_argument(
        "--scorer-truth", action="store_true", help="serve's scores vs full runs: error and rank correlation"
    )
    parser.add_argument("--candidates", type=int, default=14, help="--scorer-truth: candidates per fleet")
    parser.add_argument("--slo", action="store_true", help="capacity at a latency SLO: serve vs the paper")
    parser.add_argument("--ttft-p95", type=float, help="--slo: p95 TTFT target (s; default per fleet)")
    parser.add_argument("--tpot-p95", type=float, help="--slo: p95 TPOT target (s; default per fleet)")
    parser.add_argument(
        "--slo-duration", type=float, default=600.0, help="--slo: simulated seconds of each online run"
    )
    args = parser.parse_args(argv)
    if args.scorer_truth:
        from bench.planner_truth import truth_main

        return truth_main(args)
    if args.slo:
        from bench.planner_slo import slo_main

        return slo_main(args)
    if args.ablation:
        ablation = run_ablation("cluster24", "llama2-70b", args.time_limit, args.seed)
        for entry in ablation:
            print(
                f"{entry['variant']:24s} max-flow {entry['max_flow']:8.2f}  warm start {fmt(entry['warm_start'], '8.2f')}  "
                f"solver bound {fmt(entry['solver_bound'], '10.1f')}  {entry['wall_s']:6.1f} s  {entry['status']}"
            )
        print(
            json.dumps({"bench": "planner-milp-ablation", "time_limit_s": args.time_limit, "rows": ablation})
        )
        return 0
    fleets = FLEETS
    time_limit = args.time_limit
    serve_max_scored = None
    if args.quick:
        fleets = (("cluster10", "llama1-30b", None, 286.59),)
        time_limit, serve_max_scored = 1.0, 2
    if args.fleets:
        known = {(f[0], f[1]): f for f in FLEETS}
        pairs = [tuple(f.split("/", 1)) for f in args.fleets.split(",") if f]
        fleets = tuple(known.get((c, m), (c, m, None, None)) for c, m in pairs)
    methods = tuple(m for m in args.methods.split(",") if m)
    all_rows: list[Row] = []
    refs: list[dict[str, Any]] = []
    header = (
        f"{'fleet':24s} {'method':14s} {'max-flow':>9s} {'x paper':>8s} {'bound':>8s} {'time s':>7s} "
        f"{'decode':>7s} {'x base':>8s} {'prompt s':>8s} {'dec s':>6s} {'all/ceil':>8s}"
    )
    print(header)
    for cluster_name, model_name, reference, paper in fleets:
        rows, ref = run_fleet(
            cluster_name,
            model_name,
            reference,
            paper,
            methods=methods,
            time_limit_s=time_limit,
            simulate_on=not args.no_sim,
            full_sim=args.full_sim,
            serve_max_scored=serve_max_scored,
            seed=args.seed,
        )
        base_flow = ref.get("max_flow") or paper
        base_decode = ref.get("baseline_decode_tok_per_s")
        for row in rows:
            flow_ratio = row.max_flow / base_flow if base_flow else None
            dec_ratio = (
                row.decode_tok_per_s / base_decode
                if base_decode and row.decode_tok_per_s is not None
                else None
            )
            print(
                f"{row.fleet:24s} {row.method:14s} {row.max_flow:9.2f} {fmt(flow_ratio, '8.3f')} "
                f"{row.bound:8.1f} {row.wall_s:7.2f} {fmt(row.decode_tok_per_s, '7.1f')} "
                f"{fmt(dec_ratio, '8.3f')} {fmt(row.prompt_latency_s, '8.2f')} "
                f"{fmt(row.decode_latency_s, '6.2f')} "
                f"{fmt(row.all_tok_per_s / row.ceiling_tok_per_s if row.all_tok_per_s and row.ceiling_tok_per_s else None, '8.3f')}"
                + (f"  ERROR {row.error}" if row.error else "")
            )
        if ref["serve_vs_baseline"] is not None:
            print(
                f"{ref['fleet']:24s} serve / best paper-method layout ({ref['baseline']}): "
                f"{ref['serve_vs_baseline']:.3f}"
            )
        promised = ref.get("serve_score_decode_tok_per_s")
        served = next((r.decode_tok_per_s for r in rows if r.method == "serve"), None)
        if promised and served:
            print(
                f"{ref['fleet']:24s} serve chose {ref['serve_chosen']} of {ref['serve_scored']} scored: "
                f"score {promised:.1f}, simulated {served:.1f} ({(promised - served) / served:+.1%})"
            )
        all_rows += rows
        refs.append(ref)
        sys.stdout.flush()
    result = {
        "bench": "planner",
        "time_limit_s": time_limit,
        "simulated": not args.no_sim,
        "sim": "full" if args.full_sim else "score",
        "references": refs,
        "rows": [{k: v for k, v in vars(r).items() if v is not None} for r in all_rows],
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
