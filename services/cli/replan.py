"""`brl replan PLAN.json --lose n3 --join a100:2 --slow n4=0.5 -o new.json`: re-plan after a fleet change,
warm-started from the plan (planner.replan): print the moves (node, range before -> after, layers, bytes,
seconds to load), the layers and bytes moved, the transition time, max-flow before and after, and with
`--simulate` the simulated decode tokens/s before and after; write the new plan (it embeds the new fleet).

Exit 2 with one line naming the flag for a node, GPU type or value that does not fit the plan's fleet."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from planner.errors import InvalidInput, UnknownName


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "replan",
        help="re-plan a plan after nodes are lost, join or slow down (few layers moved)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("plan", type=Path, metavar="PLAN", help="plan JSON from `brl plan` (embeds its fleet)")
    p.add_argument("--lose", action="append", default=[], metavar="NODE", help="a node gone (repeatable)")
    p.add_argument(
        "--join",
        action="append",
        default=[],
        metavar="TYPE:COUNT",
        help="new nodes of a GPU type, e.g. a100:2 (repeatable); links copied from a node of that type",
    )
    p.add_argument(
        "--slow",
        action="append",
        default=[],
        metavar="NODE=FACTOR",
        help="a node running at FACTOR in (0, 1] of its speed (repeatable)",
    )
    p.add_argument(
        "--budget-layers",
        type=int,
        metavar="N",
        help="most layers loaded on all nodes together (default: any)",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=0.05,
        metavar="R",
        help="adopt a new placement only if it serves at least this much more, relative (default 0.05)",
    )
    p.add_argument(
        "--time-limit", type=float, default=10.0, metavar="S", help="seconds of search (default 10)"
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="judge candidates with a short simulator run (as `brl plan --method serve`), report decode "
        "tokens/s before and after; slower (about 1-2 s per candidate on 24 nodes)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=Path("replan.json"), help="new plan JSON to write")
    p.set_defaults(func=run)


def _slow(text: str) -> tuple[str, float]:
    node, sep, value = text.partition("=")
    try:
        if not sep or not node:
            raise ValueError
        factor = float(value)
    except ValueError:
        raise InvalidInput(f"expected NODE=FACTOR (e.g. n4=0.5), got {text!r}", field="--slow") from None
    if not 0 < factor <= 1:
        raise InvalidInput(f"{node}: factor must be in (0, 1], got {factor:g}", field="--slow")
    return node, factor


def build_change(args: argparse.Namespace, cluster: Any, profiles: Any) -> Any:
    """The FleetChange the flags describe, each name checked against the plan's fleet (errors name the flag)."""
    from planner.replan import FleetChange, join_nodes

    valid = list(cluster.node_names)
    for name in args.lose:
        if not cluster.has_node(name):
            raise UnknownName("node", name, valid, field="--lose")
    if len(set(args.lose)) != len(args.lose):
        raise InvalidInput("a node is named twice", field="--lose")
    slowed = dict(_slow(t) for t in args.slow)
    for name in slowed:
        if not cluster.has_node(name):
            raise UnknownName("node", name, valid, field="--slow")
        if name in args.lose:
            raise InvalidInput(f"{name} is lost and slowed at once", field="--slow")
    types = sorted(set(cluster.gpu_counts()) | set(profiles.types()))
    joined: list[Any] = []
    for spec in args.join:
        try:
            joined += join_nodes(cluster, spec, gpu_types=types, taken=[n.name for n in joined])
        except UnknownName as exc:
            raise UnknownName(exc.kind, exc.name, exc.valid, field="--join") from None
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, field="--join") from None
    change = FleetChange(lost=tuple(args.lose), joined=tuple(joined), slowed=slowed)
    if change.is_empty():
        raise InvalidInput("nothing changed: give --lose, --join or --slow", field="--lose")
    return change


def run(args: argparse.Namespace) -> int:
    from planner import bundled
    from planner.formats.plan_json import load_plan, save_plan
    from planner.replan import apply_change, replan

    if args.budget_layers is not None and args.budget_layers < 0:
        raise InvalidInput(f"must be >= 0, got {args.budget_layers}", field="--budget-layers")
    if args.min_gain < 0:
        raise InvalidInput(f"must be >= 0, got {args.min_gain:g}", field="--min-gain")
    if not args.time_limit > 0:
        raise InvalidInput(f"must be > 0, got {args.time_limit:g}", field="--time-limit")
    current = load_plan(args.plan)
    cluster = current.cluster or bundled.cluster(current.cluster_name)
    model = current.model or bundled.model(current.model_name)
    profiles = bundled.profiles(current.profiles_name or model)
    change = build_change(args, cluster, profiles)
    scorer = None
    if args.simulate:
        from services.cli.plan import simulator_scorer

        scorer = simulator_scorer(
            apply_change(cluster, change), model, profiles, seed=args.seed, throttle=change.slowed
        )
    started = time.perf_counter()
    result = replan(
        current,
        cluster,
        model,
        profiles,
        change,
        scorer=scorer,
        budget_layers=args.budget_layers,
        min_gain=args.min_gain,
        time_limit_s=args.time_limit,
        clock=time.perf_counter,
        seed=args.seed,
        disk_bytes_per_s={
            t: p.disk_bytes_per_s for t, p in bundled.machine_profiles().items() if p.disk_bytes_per_s
        },
    )
    elapsed = time.perf_counter() - started
    save_plan(result.plan, args.output)
    print(render(result))
    print(f"re-planned in {elapsed:.1f} s; wrote {args.output}")
    return 0


def _range(rng: Any) -> str:
    return "-" if rng is None else str(rng)


def render(result: Any) -> str:
    """The moves and the figures of a Replan, one line each."""
    lines = []
    if result.uncovered_before:
        gaps = ", ".join(f"[{a},{b})" for a, b in result.uncovered_before)
        lines.append(f"uncovered after the change: {gaps} (repaired first)")
    if result.kept:
        lines.append("kept the current placement (gain under --min-gain); only repairs below")
    for m in result.moves:
        lines.append(
            f"  {m.node}: {_range(m.before)} -> {_range(m.after)}  load {m.layers_to_load} layers, "
            f"{m.bytes_to_load / 1e9:.2f} GB, {m.load_s:.1f} s"
        )
    if not result.moves:
        lines.append("  no node changes its layers")
    lines.append(
        f"layers moved {result.layers_moved}, bytes moved {result.bytes_moved / 1e9:.2f} GB, "
        f"transition {result.transition_s:.1f} s (nodes load in parallel)"
    )
    lines.append(
        f"max-flow {result.max_flow_before:.1f} -> {result.max_flow_after:.1f} tokens/s "
        f"(plan {result.plan.objective_tok_per_s:.1f})"
    )
    if result.stats.get("scorer"):
        lines.append(
            f"simulated decode {result.score_before:.1f} -> {result.score_after:.1f} tokens/s (short run)"
        )
    return "\n".join(lines)
