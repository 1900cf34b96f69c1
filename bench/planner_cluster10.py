"""Why a fleet with room for about one copy of the model (cluster10: 4 L4 + 6 T4, 86 layer slots for
LLaMA-30B's 60) serves what it does: the KV ceilings on queries in flight that bound every layout, a
per-token latency floor, and full offline runs of the paper's heuristics against the best dense chain
(planner.solvers.dense), with the queries each run held in flight. Prints a table; the last line is JSON.

    .venv/bin/python -m bench.planner_cluster10 [--fleet cluster10/llama1-30b] [--seeds 0,1] [--quick]

Decode tokens/s = decode queries in flight / per-token latency (Little). Queries in flight are capped by
the KV of the least-held layer: admission stops at 85% of a node's KV, each query booked at its input plus
the paper's 240 expected output tokens (the cap is given at the mean query; the watch's count of active
queries also holds those waiting for admission). The latency floor is every layer at its lone-decode time
plus one link latency per hop; `bound` = cap / floor. The runs show where a layout lands between them.

Then the best heuristic's layout and the best layout again under each coordinator, with the decode
sequences a worker step carried and the workers' mean utilisation: why the runs sit near half the bound.
The paper's coordinator issues each query on its own, so an idle stage starts a step for whatever came
first and steps stay small (~2-3 sequences): the slowest stage runs one step per batch in the ring. BRL's
(`SimConfig.pipeline_depth`: a chain's ready queries step together), at a fixed depth of 2 steps in flight
and at its default of one per stage, carries more a step but leaves the workers idle most of the time: its
steps merge, and a prompt step (~0.15 s a stage here against ~0.03 for a decode step) holds the decode
steps behind it at each stage it crosses; at depth 2 most of a 10-stage chain has no step to run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from typing import Any

from bench.planner_fleets import full_run_window, initial_queries, load_fleet
from planner.flow import plan_from_placement
from planner.routing.kv import OFFLINE_KV, PAPER_EXPECTED_OUTPUT_LEN
from planner.solvers import solve
from planner.solvers.base import SolveContext
from planner.solvers.dense import dense_candidates, kv_ceiling, kv_per_layer
from planner.solvers.search import from_placement, to_placement
from services.coordinator.engine import EngineLimits

HEURISTICS = ("petals", "swarm", "separate")
# Dense chains run in full: the highest KV level's variants (trims and group orders).
DENSE_RUNS = 4


def least_layer_kv(cluster: Any, profiles: Any, layout: dict[str, tuple[int, int]], layers: int) -> float:
    per_layer = [0.0] * layers
    for name, (start, k) in layout.items():
        for layer in range(start, start + k):
            per_layer[layer] += kv_per_layer(profiles, cluster.node(name).gpu_type, k)
    return min(per_layer)


def latency_floor_s(cluster: Any, profiles: Any, layout: dict[str, tuple[int, int]]) -> float:
    """Every layer at its lone-decode time (the paper prices one sequence at batch 2) plus the link
    latency of each hop of the fastest chain: what a token takes with the fleet to itself."""
    per_layer: dict[int, float] = {}
    for name, (start, k) in layout.items():
        prof = profiles.get(cluster.node(name).gpu_type)
        t = prof.decode_s_per_layer(prof.lone_decode_batch)
        for layer in range(start, start + k):
            per_layer[layer] = min(per_layer.get(layer, t), t)
    hops = len({s for s, _ in layout.values()})
    links = [lk.latency_s for lk in cluster.links]
    return sum(per_layer.values()) + (hops + 1) * min(links, default=0.0)


# The coordinators compared: the paper's (every query on its own) and BRL's chain steps at a fixed depth of
# 2 steps in flight (its default until it went to one per stage) and at its default, one step per stage
# (EngineLimits; ChainSteps caps the depth at a chain's stages).
COORDINATORS = (
    ("paper, per query", None),
    ("BRL, depth 2", 2),
    ("BRL, one per stage", EngineLimits().pipeline_depth),
)


def run_full(
    cluster: Any,
    model: Any,
    profiles: Any,
    plan: Any,
    seed: int,
    quick: bool,
    pipeline_depth: int | None = None,
) -> dict[str, Any]:
    from simulator.run import SimConfig, simulate

    warmup_s, duration_s = full_run_window(cluster)
    if quick:
        warmup_s, duration_s = 20.0, 80.0
    cfg = SimConfig(
        seed=seed,
        initial_queries=initial_queries(cluster),
        warmup_s=warmup_s,
        duration_s=duration_s,
        watch_interval_s=5.0,
        pipeline_depth=pipeline_depth,
    )
    sim = simulate(cluster, model, profiles, plan, cfg)
    window = [w.active for w in sim.watch if w.time_s >= sim.start_s + warmup_s]
    nodes = list(sim.nodes.values())
    steps = sum(n["steps"] for n in nodes)
    return {
        "decode_tok_per_s": round(sim.decode_tok_per_s, 2),
        "in_flight": round(statistics.mean(window), 1) if window else None,
        "decode_latency_s": round(sim.decode_latency_s.mean, 3),
        "decode_seqs_per_step": round(sum(n["decode_seqs"] for n in nodes) / steps, 2) if steps else 0.0,
        "utilisation": round(statistics.mean(n["utilisation"] for n in nodes), 3) if nodes else 0.0,
    }


def compare_coordinators(
    cluster: Any,
    model: Any,
    profiles: Any,
    plans: dict[str, Any],
    rows: list[dict[str, Any]],
    seed: int,
    quick: bool,
) -> list[dict[str, Any]]:
    """The best heuristic's layout and the best layout of all, on `seed`, under each coordinator."""
    key = str(seed)
    base = max(
        (r for r in rows if r["layout"] in HEURISTICS), key=lambda r: r["runs"][key]["decode_tok_per_s"]
    )
    best = max(rows, key=lambda r: r["runs"][key]["decode_tok_per_s"])
    print(f"seed {seed}, by coordinator: decode tok/s, decode sequences a step, workers' mean utilisation")
    out = []
    for label, depth in COORDINATORS:
        # The paper's coordinator is the table's: its runs are there already.
        runs = {
            r["layout"]: r["runs"][key]
            if depth is None
            else run_full(cluster, model, profiles, plans[r["layout"]], seed, quick, depth)
            for r in (base, best)
        }
        a, b = runs[base["layout"]], runs[best["layout"]]
        ratio = b["decode_tok_per_s"] / a["decode_tok_per_s"] if a["decode_tok_per_s"] > 0 else None
        out.append({"coordinator": label, "pipeline_depth": depth, "runs": runs, "ratio": ratio})
        print(
            f"  {label:18s} "
            + "  ".join(
                f"{name} {r['decode_tok_per_s']:.2f} ({r['decode_seqs_per_step']:.1f}/step, "
                f"{r['utilisation']:.0%} busy)"
                for name, r in runs.items()
            )
            + (f"  {ratio:.3f}x" if ratio is not None else ""),
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fleet", default="cluster10/llama1-30b", help="cluster/model")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--quick", action="store_true", help="80-s runs, one seed: for the tests")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",") if s]
    fleet = load_fleet(args.fleet)
    cluster, model, profiles = fleet.cluster, fleet.model, fleet.profiles
    settings, table = fleet.settings, fleet.table
    layers = model.num_layers
    from simulator.workload import load_lengths

    lengths = load_lengths("azure-conv")
    # Tokens per layer the KV book expects a query to hold (input + the paper's expected output).
    query_tokens = lengths.mean_input + PAPER_EXPECTED_OUTPUT_LEN * OFFLINE_KV.output_ratio
    feed = OFFLINE_KV.high_water  # admission's high-water mark in offline runs
    ceiling = kv_ceiling(cluster, profiles, layers)
    out: dict[str, Any] = {
        "bench": "planner-dense-bound",
        "fleet": args.fleet,
        "slots": ceiling.slots,
        "copies": round(ceiling.slots / layers, 2),
        "query_tokens": round(query_tokens, 1),
        "chain_kv_tokens_per_layer": round(ceiling.chain_tokens, 1),
        "any_layout_kv_tokens_per_layer": round(ceiling.any_layout_tokens, 1),
        "in_flight_ceiling_chain": round(feed * ceiling.chain_tokens / query_tokens, 1),
        "in_flight_ceiling_any": round(feed * ceiling.any_layout_tokens / query_tokens, 1),
        "rows": [],
    }
    plans: list[tuple[str, Any]] = []
    for method in HEURISTICS:
        placed = solve(method, cluster, model, profiles, settings=settings, throughput=table, seed=0)
        plans.append((method, placed))
    ctx = SolveContext(cluster, model, profiles, table, random.Random(0))
    for name, lay in dense_candidates(ctx)[:DENSE_RUNS]:
        plan = plan_from_placement(
            cluster,
            model,
            profiles,
            to_placement(lay, layers),
            method=name,
            throughput=table,
            split="balanced",
        )
        plans.append((name, plan))
    print(
        f"{args.fleet}: {ceiling.slots} slots for {layers} layers ({out['copies']} copies); a query expects "
        f"{query_tokens:.0f} tokens per layer"
    )
    print(
        f"KV per layer of the least-held layer: best chain {ceiling.chain_tokens:,.0f}, any layout <= "
        f"{ceiling.any_layout_tokens:,.0f} -> about {out['in_flight_ceiling_chain']} (chain) / "
        f"{out['in_flight_ceiling_any']} (any) queries in flight at the mean query"
    )
    header = f"{'layout':16s} {'KV/layer':>9s} {'in-flight~':>11s} {'floor s':>8s} {'bound':>7s}"
    header += "".join(f" {'s' + str(s) + ' decode':>10s} {'in flight':>9s} {'tok s':>6s}" for s in seeds)
    print(header)
    for name, plan in plans:
        lay = from_placement(plan.placement)
        kv = least_layer_kv(cluster, profiles, lay, layers)
        cap = feed * kv / query_tokens
        floor = latency_floor_s(cluster, profiles, lay)
        row: dict[str, Any] = {
            "layout": name,
            "least_layer_kv_tokens": round(kv, 1),
            "in_flight_ceiling": round(cap, 1),
            "latency_floor_s": round(floor, 3),
            "decode_bound_tok_per_s": round(cap / floor, 1),
            "runs": {},
        }
        line = f"{name:16s} {kv:9,.0f} {cap:11.1f} {floor:8.3f} {cap / floor:7.1f}"
        for seed in seeds:
            run = run_full(cluster, model, profiles, plan, seed, args.quick)
            row["runs"][str(seed)] = run
            line += f" {run['decode_tok_per_s']:10.2f} {run['in_flight'] or 0:9.1f} {run['decode_latency_s']:6.3f}"
        print(line, flush=True)
        out["rows"].append(row)
    for seed in seeds:
        key = str(seed)
        base = max(
            (r for r in out["rows"] if r["layout"] in HEURISTICS),
            key=lambda r: r["runs"][key]["decode_tok_per_s"],
        )
        best = max(out["rows"], key=lambda r: r["runs"][key]["decode_tok_per_s"])
        ratio = best["runs"][key]["decode_tok_per_s"] / base["runs"][key]["decode_tok_per_s"]
        out[f"seed{seed}"] = {"baseline": base["layout"], "best": best["layout"], "ratio": round(ratio, 3)}
        print(f"seed {seed}: best {best['layout']} / best heuristic {base['layout']} = {ratio:.3f}x")
    out["coordinators"] = compare_coordinators(
        cluster, model, profiles, dict(plans), out["rows"], seeds[0], args.quick
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
