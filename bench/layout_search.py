"""A hill climb over layouts judged by full offline runs (the compiled engine makes one ~0.05 s on
cluster10), to test the claim that no layout of a fleet serves much more than the planner's: from the
best heuristic's layout and each dense chain, random moves (a node's range grown, shrunk or moved, two
nodes swapped) are kept when the mean decode over the search seeds does not fall; the best layout found
is then run on held-out seeds beside its start, since a climb on a few seeds also climbs their noise.

    .venv/bin/python -m bench.layout_search [--fleet cluster10/llama1-30b] [--steps 300] \\
        [--seeds 0,1] [--holdout 2,3,4,5,6,7] [--quick]

Prints a line per start and the held-out comparison; the last line is JSON."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench.planner_fleets import full_run_window, initial_queries, load_cluster
from planner import bundled
from planner.errors import BrlError
from planner.flow import plan_from_placement
from planner.solvers import solve
from planner.solvers.base import SolveContext
from planner.solvers.dense import dense_candidates
from planner.solvers.search import Layout, from_placement, to_placement
from planner.throughput import typical_throughput

DENSE_STARTS = 4


def covers(layout: Layout, num_layers: int, max_layers: dict[str, int]) -> bool:
    """Every node within its range limits, every layer held at least once."""
    held = [0] * num_layers
    for name, (start, k) in layout.items():
        if k < 1 or start < 0 or start + k > num_layers or k > max_layers[name]:
            return False
        for layer in range(start, start + k):
            held[layer] += 1
    return min(held) >= 1


def move(layout: Layout, rng: random.Random, num_layers: int, max_layers: dict[str, int]) -> Layout | None:
    """One random move, or None where it breaks the layout."""
    new = dict(layout)
    names = sorted(new)
    name = rng.choice(names)
    start, k = new[name]
    r = rng.random()
    if r < 0.3:
        new[name] = (start, k + rng.choice((-1, 1)))
    elif r < 0.6:
        new[name] = (start + rng.choice((-2, -1, 1, 2)), k)
    elif r < 0.75:
        new[name] = (start + rng.choice((-1, 1)), k + rng.choice((-1, 1)))
    else:
        other = rng.choice(names)
        new[name], new[other] = new[other], new[name]
    return new if new != layout and covers(new, num_layers, max_layers) else None


def climb(
    start: Layout,
    judge: Callable[[Layout], float],
    steps: int,
    rng: random.Random,
    num_layers: int,
    max_layers: dict[str, int],
) -> tuple[Layout, float]:
    best, score = start, judge(start)
    for _ in range(steps):
        cand = move(best, rng, num_layers, max_layers)
        if cand is None:
            continue
        value = judge(cand)
        if value >= score:
            best, score = cand, value
    return best, score


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fleet", default="cluster10/llama1-30b", help="cluster/model")
    parser.add_argument("--steps", type=int, default=300, help="moves tried from each start")
    parser.add_argument("--seeds", default="0,1", help="seeds a layout is judged on while climbing")
    parser.add_argument("--holdout", default="2,3,4,5,6,7", help="seeds for the final comparison")
    parser.add_argument("--quick", action="store_true", help="80-s runs, 20 steps, one start: for the tests")
    args = parser.parse_args(argv)
    from simulator.run import SimConfig, simulate

    cluster_name, model_name = args.fleet.split("/", 1)
    cluster = load_cluster(cluster_name)
    model = bundled.model(model_name)
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    table = typical_throughput(cluster, model, profiles, settings)
    layers = model.num_layers
    max_layers = {n.name: profiles.get(n.gpu_type).max_layers for n in cluster.nodes}
    warmup_s, duration_s = (20.0, 80.0) if args.quick else full_run_window(cluster)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    holdout = [int(s) for s in args.holdout.split(",") if s]
    steps = 20 if args.quick else args.steps
    seen: dict[tuple[tuple[str, int, int], ...], float] = {}

    def decode(layout: Layout, on: Sequence[int]) -> float:
        """Mean decode tok/s of full runs on these seeds; a layout that cannot run serves nothing."""
        try:
            plan = plan_from_placement(
                cluster,
                model,
                profiles,
                to_placement(layout, layers),
                method="layout-search",
                throughput=table,
                split="balanced",
            )
            runs = [
                simulate(
                    cluster,
                    model,
                    profiles,
                    plan,
                    SimConfig(
                        seed=s,
                        initial_queries=initial_queries(cluster),
                        warmup_s=warmup_s,
                        duration_s=duration_s,
                    ),
                ).decode_tok_per_s
                for s in on
            ]
        except BrlError:
            return 0.0
        return statistics.mean(runs)

    def judge(layout: Layout) -> float:
        key = tuple(sorted((n, s, k) for n, (s, k) in layout.items()))
        if key not in seen:
            seen[key] = decode(layout, seeds)
        return seen[key]

    swarm = solve("swarm", cluster, model, profiles, settings=settings, throughput=table, seed=0)
    starts: list[tuple[str, Layout]] = [("swarm", from_placement(swarm.placement))]
    ctx = SolveContext(cluster, model, profiles, table, random.Random(0))
    starts += [(name, dict(lay)) for name, lay in dense_candidates(ctx)[:DENSE_STARTS]]
    if args.quick:
        starts = starts[1:2]
    rng = random.Random(0)
    found: list[dict[str, Any]] = []
    for name, lay in starts:
        end, score = climb(lay, judge, steps, rng, layers, max_layers)
        found.append({"start": name, "start_score": judge(lay), "score": score, "layout": end})
        print(f"{name:14s} {judge(lay):7.2f} -> {score:7.2f} after {steps} moves", flush=True)
    top = max(found, key=lambda f: f["score"])
    start_layout = dict(starts)[top["start"]]
    held: dict[str, float | None] = {
        "found": decode(top["layout"], holdout),
        "start": decode(start_layout, holdout),
        "swarm": None if args.quick else decode(starts[0][1], holdout),
    }
    print(
        f"best found from {top['start']}: {top['score']:.2f} on seeds {args.seeds}; held-out seeds "
        f"{args.holdout}: found {held['found']:.2f}, its start {held['start']:.2f}"
        + (f", swarm {held['swarm']:.2f}" if held["swarm"] is not None else "")
    )
    out = {
        "bench": "layout-search",
        "fleet": args.fleet,
        "layouts_run": len(seen),
        "starts": [{k: v for k, v in f.items() if k != "layout"} for f in found],
        "best": {"start": top["start"], "score": top["score"], "layout": top["layout"]},
        "holdout": held,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
