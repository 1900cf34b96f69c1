"""A hill climb over layouts judged by full offline runs (the compiled engine makes one ~0.05 s on
cluster10), to test the claim that no layout of a fleet serves much more than the planner's: from swarm's
layout and each dense chain, random moves (a node's range grown, shrunk or moved, two
nodes swapped) are kept when the mean decode over the search seeds does not fall; the best layout found
is then run on held-out seeds beside its start, since a climb on a few seeds also climbs their noise.

With --chains, every single chain at the highest KV level instead (planner.solvers.dense: each node holds
its count at that level or one less, the counts sum to the model, the GPU types in every order; 9,450 on
cluster10): each run on the first seed, the best TOP_RERUN again on all of --seeds, the best TOP_HELD of
those on the held-out seeds beside swarm's layout.

    .venv/bin/python -m bench.layout_search [--fleet cluster10/llama1-30b] [--steps 300] \\
        [--seeds 0,1] [--holdout 2,3,4,5,6,7] [--chains] [--quick]

Prints a line per start and the held-out comparison; the last line is JSON."""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bench.planner_cluster10 import run_full
from bench.planner_fleets import load_fleet
from planner.errors import BrlError
from planner.flow import plan_from_placement
from planner.solvers import solve
from planner.solvers.base import SolveContext
from planner.solvers.dense import chain_levels, dense_candidates
from planner.solvers.search import Layout, from_placement, to_placement

DENSE_STARTS = 4
# --chains: how many of the first seed's best are run again on every seed, and of those on the held-out ones.
TOP_RERUN = 40
TOP_HELD = 5
MAX_CHAINS = 50_000


def type_orders(types: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Every distinct order of a multiset of GPU types."""
    if not types:
        yield ()
        return
    for t in sorted(set(types)):
        rest = list(types)
        rest.remove(t)
        for tail in type_orders(rest):
            yield (t, *tail)


def top_level_chains(
    names: Sequence[str], types: Sequence[str], counts: Sequence[int], num_layers: int
) -> Iterator[Layout]:
    """Single chains over every node: node i holds counts[i] or one less (at least one), the holdings
    sum to num_layers, in every order of the types (each type's nodes in the order given)."""
    by_type: dict[str, list[tuple[str, int]]] = {}
    for name, t, c in zip(names, types, counts, strict=True):
        by_type.setdefault(t, []).append((name, c))
    for order in type_orders(list(types)):
        taken = dict.fromkeys(by_type, 0)
        seq = []
        for t in order:
            seq.append(by_type[t][taken[t]])
            taken[t] += 1
        options = [[k for k in (c - 1, c) if k >= 1] for _, c in seq]
        for sizes in itertools.product(*options):
            if sum(sizes) != num_layers:
                continue
            layout: Layout = {}
            start = 0
            for (name, _), k in zip(seq, sizes, strict=True):
                layout[name] = (start, k)
                start += k
            yield layout


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
    parser.add_argument("--chains", action="store_true", help="every chain at the highest KV level instead")
    parser.add_argument(
        "--quick", action="store_true", help="80-s runs, 20 steps, one start (30 chains): for the tests"
    )
    args = parser.parse_args(argv)

    fleet = load_fleet(args.fleet)
    cluster, model, profiles = fleet.cluster, fleet.model, fleet.profiles
    settings, table = fleet.settings, fleet.table
    layers = model.num_layers
    max_layers = {n.name: profiles.get(n.gpu_type).max_layers for n in cluster.nodes}
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
            runs = [run_full(cluster, model, profiles, plan, s, args.quick)["decode_tok_per_s"] for s in on]
        except BrlError:
            return 0.0
        return statistics.mean(runs)

    def judge(layout: Layout) -> float:
        key = tuple(sorted((n, s, k) for n, (s, k) in layout.items()))
        if key not in seen:
            seen[key] = decode(layout, seeds)
        return seen[key]

    swarm = solve("swarm", cluster, model, profiles, settings=settings, throughput=table, seed=0)
    if args.chains:
        return sweep_chains(args, cluster, profiles, layers, decode, from_placement(swarm.placement))
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


def sweep_chains(
    args: argparse.Namespace,
    cluster: Any,
    profiles: Any,
    layers: int,
    decode: Callable[[Layout, Sequence[int]], float],
    swarm: Layout,
) -> int:
    names = [n.name for n in cluster.nodes]
    types = [n.gpu_type for n in cluster.nodes]
    levels = chain_levels(types, profiles, layers)
    if not levels:
        raise SystemExit(f"{args.fleet}: no single chain over every node holds the model")
    level, counts = levels[0]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    holdout = [int(s) for s in args.holdout.split(",") if s]
    chains = list(itertools.islice(top_level_chains(names, types, counts, layers), MAX_CHAINS + 1))
    if len(chains) > MAX_CHAINS:
        raise SystemExit(f"{args.fleet}: more than {MAX_CHAINS} chains at the top KV level; too many to run")
    if args.quick:
        chains = chains[:30]
    first = sorted(((decode(c, seeds[:1]), i) for i, c in enumerate(chains)), reverse=True)
    again = sorted(((decode(chains[i], seeds), i) for _, i in first[:TOP_RERUN]), reverse=True)
    held = [(decode(chains[i], holdout), v, i) for v, i in again[:TOP_HELD]]
    swarm_held = decode(swarm, holdout)
    print(
        f"{len(chains)} chains at {level:,.0f} KV tokens a layer; on seed {seeds[0]}: best {first[0][0]:.2f}, "
        f"median {first[len(first) // 2][0]:.2f}, worst {first[-1][0]:.2f}; "
        f"swarm's layout on the held-out seeds {args.holdout}: {swarm_held:.2f}"
    )
    for h, v, i in held:
        sizes = [k for _, k in sorted(chains[i].values())]
        ratio = f" ({h / swarm_held:.3f}x)" if swarm_held > 0 else ""
        print(f"  seeds {args.seeds}: {v:.2f}  held out: {h:.2f}{ratio}  layers {sizes}")
    out = {
        "bench": "layout-search-chains",
        "fleet": args.fleet,
        "chains": len(chains),
        "kv_level": level,
        "best_first_seed": first[0][0],
        "median_first_seed": first[len(first) // 2][0],
        "worst_first_seed": first[-1][0],
        "held": [{"seeds": v, "holdout": h, "layout": chains[i]} for h, v, i in held],
        "swarm_holdout": swarm_held,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
