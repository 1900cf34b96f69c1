"""`brl plan CLUSTER --model M --method METHOD -o plan.json`: place the model's layers on a fleet, write the
plan (and a PNG of it), print max-flow, bound and time. `brl plan evaluate CLUSTER --model M --placement
FILE` (or `--layout NAME`, a bundled paper layout) scores an existing placement (a Helix `*_sol.ini` or a plan
JSON): max-flow, bounds, bottlenecks. The plan JSON embeds the fleet and model it was made for.

The first Ctrl+C asks the solver to stop and still writes the best plan found; a second one aborts."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner import bundled
from planner.errors import InvalidInput
from planner.flow import compute_bound, coverage_bound, solve_max_flow
from planner.throughput import typical_throughput
from services.cli.judge import region_scorers, simulator_scorer

METHOD_HELP = (
    "milp: python-mip MILP warm-started from the best heuristic; search: local search with max-flow "
    "as oracle; serve: candidates scored by the fast simulator; petals, swarm, separate, "
    "homogeneous: the paper's heuristics"
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from planner.solvers import method_names

    p = subparsers.add_parser(
        "plan",
        help="place model layers on a fleet (or `plan evaluate` a placement)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        nargs="+",
        metavar="CLUSTER",
        help="bundled cluster name or .yaml/.ini file; or `evaluate CLUSTER`",
    )
    p.add_argument("--model", required=True, help="bundled model name or HF config.json (or its folder)")
    p.add_argument("--method", choices=method_names(), help=METHOD_HELP + " (default milp; serve with slo)")
    p.add_argument(
        "--objective",
        choices=("throughput", "slo"),
        default="throughput",
        help="throughput: the method's own objective; slo: the serve method's candidates ranked by the highest "
        "online rate each sustains with p95 TTFT <= --ttft-p95 and p95 TPOT <= --tpot-p95 (simulated)",
    )
    p.add_argument("--ttft-p95", type=float, metavar="S", help="with --objective slo: p95 TTFT target (s)")
    p.add_argument("--tpot-p95", type=float, metavar="S", help="with --objective slo: p95 TPOT target (s)")
    p.add_argument(
        "--time-limit", type=float, default=60.0, metavar="S", help="seconds of solving (default 60)"
    )
    p.add_argument("-o", "--output", type=Path, default=Path("plan.json"), help="plan JSON to write")
    p.add_argument("--png", type=Path, help="placement picture (default: the output path with .png)")
    p.add_argument("--no-png", action="store_true", help="do not draw the placement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--solver", choices=("cbc", "highs"), default="cbc", help="MILP solver (highs needs highsbox)"
    )
    p.add_argument("--prune-k", type=int, help="MILP: keep only each node's K fastest links")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--placement", type=Path, help="evaluate: a Helix *_sol.ini or a plan JSON")
    p.add_argument(
        "--layout",
        metavar="NAME",
        help="evaluate: a bundled paper layout of CLUSTER and --model by method name (ilp, petals, swarm, "
        "homogeneous, ilp-single, separate)",
    )
    p.set_defaults(func=run)


def _inputs(cluster_arg: str, model_arg: str) -> tuple[Any, Any, Any, Any]:
    cluster = bundled.cluster(cluster_arg)
    model = bundled.model(model_arg)
    profiles = bundled.profiles(model)
    try:
        settings = bundled.helix_settings(model)
    except InvalidInput:
        settings = None
    return cluster, model, profiles, settings


def run(args: argparse.Namespace) -> int:
    if args.target[0] == "evaluate":
        if len(args.target) != 2:
            raise InvalidInput(
                "usage: brl plan evaluate CLUSTER --model M (--placement FILE | --layout NAME)",
                field="CLUSTER",
            )
        return evaluate(args, args.target[1])
    if len(args.target) != 1:
        raise InvalidInput(f"expected one CLUSTER, got {' '.join(args.target)}", field="CLUSTER")
    if args.layout is not None or args.placement is not None:
        raise InvalidInput(
            "--layout and --placement score an existing placement: use `brl plan evaluate CLUSTER`",
            field="--layout" if args.layout is not None else "--placement",
        )
    return plan(args, args.target[0])


class _StopOnFirstInterrupt:
    """First Ctrl+C sets a flag the solver polls; the second restores the default and aborts."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: Any = None

    def __enter__(self) -> _StopOnFirstInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.stop = True
        print(
            "\nbrl: stopping; the best plan found so far will be written (Ctrl+C again to abort)",
            file=sys.stderr,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _progress_bar(total_s: float, quiet: bool) -> tuple[Callable[[Any], None] | None, Callable[[], None]]:
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(
        total=round(total_s, 1),
        unit="s",
        file=sys.stderr,
        dynamic_ncols=True,
        bar_format="{desc} |{bar}| {n:.0f}/{total:.0f} s",
    )

    def update(progress: Any) -> None:
        gap = progress.gap
        bound = f"{progress.bound_tok_per_s:.1f}" if progress.bound_tok_per_s is not None else "-"
        bar.set_description_str(
            f"incumbent {progress.incumbent_tok_per_s:.1f} tok/s, bound {bound}, "
            f"gap {'-' if gap is None else f'{100 * gap:.1f}%'} [{progress.note}]"
        )
        bar.n = min(bar.total, round(progress.elapsed_s, 1))
        bar.refresh()

    return update, bar.close


def plan(args: argparse.Namespace, cluster_arg: str) -> int:
    from planner.formats.plan_json import save_plan
    from planner.solvers import solve

    targets = _slo_targets(args)
    cluster, model, profiles, settings = _inputs(cluster_arg, args.model)
    options: dict[str, Any] = {"solver": args.solver}
    if args.prune_k:
        options["prune_k"] = args.prune_k
    if targets is not None:
        options["objective"] = "slo"
        # The judge stops a search once the time limit (wall-clock, from here) is spent.
        ends = time.perf_counter() + args.time_limit
        scorer = slo_scorer(
            cluster,
            model,
            profiles,
            targets,
            settings=settings,
            seed=args.seed,
            should_stop=lambda: time.perf_counter() >= ends,
        )
    elif args.method == "serve":
        scorer = _serve_scorer(cluster, model, profiles, args, settings)
    elif args.method == "scale":
        # Each tile is judged on its own sub-fleet (planner.solvers.scale), not placed on the whole one.
        options["scorer_for"] = region_scorers(model, profiles, settings=settings, seed=args.seed)
        scorer = None
    else:
        scorer = None
    update, close = _progress_bar(args.time_limit, args.quiet)
    started = time.perf_counter()
    with _StopOnFirstInterrupt() as interrupt:
        try:
            result = solve(
                args.method,
                cluster,
                model,
                profiles,
                settings=settings,
                seed=args.seed,
                time_limit_s=args.time_limit,
                clock=time.perf_counter,
                progress=update,
                should_stop=lambda: interrupt.stop,
                options=options,
                scorer=scorer,
            )
        finally:
            close()
    if targets is not None:
        result = _slo_routed(result, cluster, model, profiles, settings)
    elapsed = time.perf_counter() - started
    result = _with_provenance(result, cluster_arg, args)
    save_plan(result, args.output)
    png = None
    if not args.no_png:
        from planner.render_placement import save_placement_png

        png = save_placement_png(result, cluster, args.png or args.output.with_suffix(".png"))
    bound = f"{result.bound_tok_per_s:.2f}" if result.bound_tok_per_s is not None else "n/a"
    print(
        f"method {args.method}: max-flow {result.objective_tok_per_s:.2f} tokens/s, bound {bound} tokens/s "
        f"(compute bound {result.metrics.get('compute_bound_tok_per_s', 0.0):.2f}), time {elapsed:.1f} s"
    )
    stats = result.solver_stats
    details = stats.get("chosen_details") or {}
    if details and targets is None:
        print(
            f"  simulated ({details.get('run', 'short')} run): decode {details['decode_tok_per_s']:.1f} tokens/s, prompt latency "
            f"{details['prompt_latency_s']:.2f} s, decode latency {details['decode_latency_s']:.3f} s"
        )
    if targets is not None and "capacity_tok_per_s" in details:
        from simulator.slo_score import SLO_SEARCH_DURATION_S

        print(
            f"  capacity at p95 TTFT <= {targets.ttft_p95_s:g} s, p95 TPOT <= {targets.tpot_p95_s:g} s: "
            f"{details['capacity_tok_per_s']:.1f} tokens/s ({details['capacity_req_per_s']:.3f} requests/s; "
            f"{SLO_SEARCH_DURATION_S:.0f}-s online runs; {stats.get('scored', 0)} candidates judged)"
        )
    prov = result.provenance
    if targets is not None and prov.get("flow_region_weights"):  # planner.slo_split: max-flow above is after
        shares = ", ".join(f"{r} x{w:g}" for r, w in sorted(prov["flow_region_weights"].items()))
        before = prov["max_flow_before_weights_tok_per_s"]
        print(f"  flow weighted by region: {shares} (max-flow {before:.2f} before)")
    print(f"wrote {args.output}" + (f" and {png}" if png else ""))
    return 0


def _slo_targets(args: argparse.Namespace) -> Any:
    """Resolve --method for --objective and return the SLO targets (None for the throughput objective)."""
    from simulator.capacity import SloTargets

    given = [f for f, v in (("--ttft-p95", args.ttft_p95), ("--tpot-p95", args.tpot_p95)) if v is not None]
    if args.objective != "slo":
        if given:
            raise InvalidInput(f"{given[0]} is a target for --objective slo", field=given[0])
        args.method = args.method or "milp"
        return None
    if args.method not in (None, "serve"):
        raise InvalidInput(
            "--objective slo ranks the serve method's candidates: drop --method or use --method serve",
            field="--method",
        )
    args.method = "serve"
    for flag, value in (("--ttft-p95", args.ttft_p95), ("--tpot-p95", args.tpot_p95)):
        if value is None:
            raise InvalidInput(f"--objective slo needs {flag} S (seconds)", field=flag)
        if not (value > 0 and value != float("inf")):
            raise InvalidInput(f"must be > 0 seconds, got {value}", field=flag)
    return SloTargets(args.ttft_p95, args.tpot_p95)


def _with_provenance(result: Any, cluster_arg: str, args: argparse.Namespace) -> Any:
    import dataclasses

    try:
        from importlib.metadata import version

        code = version("brl")
    except Exception:  # noqa: BLE001 - an uninstalled checkout still plans
        code = "unknown"
    prov = dict(result.provenance)
    prov.update({"cluster": cluster_arg, "model": args.model, "code_version": code})
    return dataclasses.replace(result, provenance=prov)


def slo_scorer(
    cluster: Any,
    model: Any,
    profiles: Any,
    targets: Any,
    *,
    settings: Any = None,
    seed: int = 0,
    should_stop: Any = None,
) -> Any:
    """The `serve` method's judge for --objective slo (simulator.slo_score, outside the pure planner)."""
    from simulator.slo_score import slo_scorer as make

    return make(cluster, model, profiles, targets, settings=settings, seed=seed, should_stop=should_stop)


def _slo_routed(result: Any, cluster: Any, model: Any, profiles: Any, settings: Any) -> Any:
    """The chosen placement's plan with the routing its SLO score was measured with (planner.slo_routing:
    flow over the fewest region crossings), not the throughput objective's split."""
    from planner.slo_routing import slo_plan

    return slo_plan(
        cluster,
        model,
        profiles,
        result.placement,
        method=result.method,
        throughput=typical_throughput(cluster, model, profiles, settings),
        solver_stats=dict(result.solver_stats),
        provenance=dict(result.provenance),
    )


def _serve_scorer(cluster: Any, model: Any, profiles: Any, args: argparse.Namespace, settings: Any) -> Any:
    try:
        return simulator_scorer(cluster, model, profiles, settings=settings, seed=args.seed)
    except ImportError:  # a planner-only install: rank by the analytic proxy alone
        return None


def evaluate(args: argparse.Namespace, cluster_arg: str) -> int:
    if (args.placement is None) == (args.layout is None):
        raise InvalidInput(
            "evaluate needs one of --placement FILE (a Helix *_sol.ini or a plan JSON) or --layout NAME",
            field="--placement",
        )
    cluster, model, profiles, settings = _inputs(cluster_arg, args.model)
    path = args.placement
    if args.layout is not None:
        placement = bundled.layout(args.layout, cluster, model)
    elif path.suffix == ".ini":
        from planner.formats.helix_ini import load_solution_ini

        placement = load_solution_ini(path, cluster, model.num_layers)
    else:
        from planner.formats.plan_json import load_plan

        placement = load_plan(path).placement
    tp = typical_throughput(cluster, model, profiles, settings)
    result = solve_max_flow(cluster, model, profiles, placement, throughput=tp)
    print(
        f"max-flow {result.value_tok_per_s:.2f} tokens/s; compute bound {compute_bound(cluster, tp):.2f}; "
        f"coverage bound {coverage_bound(cluster, tp):.2f}"
    )
    print(
        f"holders {len(placement)} of {len(cluster.nodes)} nodes; saturated: "
        f"{', '.join(result.saturated_nodes()) or 'none'}"
    )
    for b in result.bottlenecks:
        print(f"  bottleneck {b.kind} {b.name}: {b.flow_tok_per_s:.1f}/{b.capacity_tok_per_s:.1f} tokens/s")
    return 0
