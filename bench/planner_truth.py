"""Does `serve`'s scorer tell the truth? For candidates of serve's own search on several fleets: the score
(the short warm-started run serve ranks by) vs the full offline run (660 simulated s, feed scaled to the
fleet), the chosen plan's |full - score| / full (goal <= 3%) and the per-fleet Spearman rank correlation
(goal >= 0.95). Prints a table; the last line is one JSON object.

    .venv/bin/python -m bench.planner --scorer-truth [--candidates 14] [--fleets ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from typing import Any

from bench.planner_fleets import full_run_window, initial_queries, load_cluster
from planner import bundled
from planner.flow import plan_from_placement
from planner.solvers.base import SolveContext
from planner.solvers.confirm import confirm, confirmed_winner
from planner.solvers.search import to_placement
from planner.solvers.serve import ProxyOracle, ranked_candidates
from planner.solvers.stages import structure
from planner.throughput import typical_throughput

TRUTH_FLEETS = (("cluster24", "llama2-70b"), ("3cluster24", "llama2-70b"), ("cluster10", "llama1-30b"))
# Goals of the bench: the chosen plan's score within 3% of its full run, rank correlation >= 0.95.
GOAL_REL_ERROR = 0.03
GOAL_SPEARMAN = 0.95


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on ranks); None when either side is constant or too short."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return None if vx == 0 or vy == 0 else cov / (vx * vy) ** 0.5


def spread(ranked: list[tuple[str, Any]], count: int, cluster: Any) -> list[tuple[str, Any]]:
    """`count` candidates of distinct structures spread over the proxy ranking (best, worst, between)."""
    seen: set[Any] = set()
    distinct = []
    for name, lay in ranked:
        key = structure(cluster, lay)
        if key not in seen:
            seen.add(key)
            distinct.append((name, lay))
    if len(distinct) <= count:
        return distinct
    step = (len(distinct) - 1) / max(count - 1, 1)
    return [distinct[round(i * step)] for i in range(count)]


def truth_fleet(
    cluster_name: str, model_name: str, count: int, seed: int, full_duration_s: float | None
) -> dict[str, Any]:
    from services.cli.plan import simulator_scorer
    from simulator.run import SimConfig, simulate

    cluster = load_cluster(cluster_name)
    model = bundled.model(model_name)
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    table = typical_throughput(cluster, model, profiles, settings)
    ctx = SolveContext(
        cluster, model, profiles, table, random.Random(seed), seed=seed, clock=time.perf_counter
    )
    ranked = ranked_candidates(ctx, ProxyOracle(ctx), {}, time.perf_counter() + 20.0)
    score = simulator_scorer(cluster, model, profiles, settings=settings, seed=seed)
    warmup_s, duration_s = full_run_window(cluster)
    config = SimConfig(
        seed=seed,
        initial_queries=initial_queries(cluster),
        watch_interval_s=0,
        warmup_s=warmup_s,
        duration_s=duration_s,
    )
    if full_duration_s is not None:
        config = SimConfig(
            seed=seed,
            initial_queries=initial_queries(cluster),
            watch_interval_s=0,
            duration_s=full_duration_s,
            warmup_s=full_duration_s / 4,
        )
    rows = []
    placements = {}
    for name, lay in spread(ranked, count, cluster):
        placement = placements[name] = to_placement(lay, model.num_layers)
        value, _ = score(placement)
        plan = plan_from_placement(
            cluster,
            model,
            profiles,
            placement,
            method="candidate",
            throughput=table,
            partial=False,
            split="balanced",
        )
        full = simulate(cluster, model, profiles, plan, config)
        rows.append({"candidate": name, "score": value, "full": float(full.decode_tok_per_s)})
        print(
            f"{cluster_name:14s} {name:36s} score {value:8.1f}  full {full.decode_tok_per_s:8.1f}", flush=True
        )
    # serve's last step (planner.solvers.confirm): the contenders scored on more seeds, the best mean wins.
    scores = {r["candidate"]: r["score"] for r in rows}
    runs = confirm(scores, lambda name, r: float(score.replica(placements[name], r)[0]), lambda _: True)
    chosen_name, chosen_score = confirmed_winner(scores, runs)
    chosen = {**next(r for r in rows if r["candidate"] == chosen_name), "score": chosen_score}
    for name, values in runs.items():
        print(
            f"{cluster_name:14s} {name:36s} confirmed over {len(values)} seeds: {', '.join(f'{v:.1f}' for v in values)}"
        )
    rel = abs(chosen["full"] - chosen["score"]) / chosen["full"] if chosen["full"] > 0 else None
    rho = spearman([r["score"] for r in rows], [r["full"] for r in rows])
    from simulator.score import slow_links

    return {
        "fleet": f"{cluster_name}/{model_name}",
        # Fleets with slow links are scored by the full run itself (simulator.score): agreement by design.
        "score_is_full_run": slow_links(cluster, model),
        "candidates": rows,
        "chosen": chosen["candidate"],
        "chosen_score": chosen["score"],
        "confirmed": runs,
        "chosen_rel_error": rel,
        "spearman": rho,
        "best_by_full": max(rows, key=lambda r: r["full"])["candidate"],
    }


def truth_main(args: argparse.Namespace) -> int:
    fleets: Sequence[tuple[str, str]] = TRUTH_FLEETS
    count, full_duration = args.candidates, None
    if args.quick:
        fleets, count, full_duration = (("cluster10", "llama1-30b"),), min(count, 3), 120.0
    if args.fleets:
        fleets = [tuple(f.split("/", 1)) for f in args.fleets.split(",") if f]  # type: ignore[misc]
    results = []
    for cluster_name, model_name in fleets:
        res = truth_fleet(cluster_name, model_name, count, args.seed, full_duration)
        rel, rho = res["chosen_rel_error"], res["spearman"]
        print(
            f"{res['fleet']:24s} chosen {res['chosen']}: |full - score| / full "
            f"{'-' if rel is None else f'{rel:.1%}'} (goal <= {GOAL_REL_ERROR:.0%}); Spearman "
            f"{'-' if rho is None else f'{rho:.3f}'} (goal >= {GOAL_SPEARMAN})"
            + (" [slow links: the score is the full run]" if res["score_is_full_run"] else ""),
            flush=True,
        )
        results.append(res)
    print(
        json.dumps(
            {
                "bench": "planner-scorer-truth",
                "seed": args.seed,
                "candidates": sum(len(r["candidates"]) for r in results),
                "fleets": results,
            },
            sort_keys=True,
        )
    )
    return 0
