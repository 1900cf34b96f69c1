"""`brl simulate`: dry-run a plan on the discrete-event simulator with the production routing policies,
print the paper's metrics, and write result.json plus PNG plots."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from planner.errors import InvalidInput
from planner.routing import policy_names
from planner.routing.maxflow import DEAD_END_RULES, DEFAULT_DEAD_END
from services.cli.simulate_capacity import find_capacity, slo_targets
from services.cli.simulate_replan import compare_without_replan, print_figures
from simulator.config import MODES, SimConfig
from simulator.fast_engine import ENGINES
from simulator.host import HostSpec
from simulator.run import WatchLine, simulate
from simulator.transition import DEFAULT_DETECT_S, DEFAULT_LOAD_BYTES_PER_S
from simulator.workload import ARRIVAL_FILES, LENGTH_FILES

DEFAULT_MODEL = "llama2-70b"  # the paper's model: what --layout and --placement default to


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "simulate", help="simulate a plan (throughput, latency) before rolling it out", description=__doc__
    )
    p.add_argument(
        "plan", nargs="?", help="plan JSON from `brl plan` (or use --cluster with --layout or --placement)"
    )
    p.add_argument("--cluster", help="cluster name or file (default: the fleet the plan embeds)")
    p.add_argument(
        "--model",
        help="model name or config.json (default: the plan's; llama2-70b with --layout/--placement)",
    )
    p.add_argument(
        "--layout",
        metavar="NAME",
        help="a bundled paper layout of --cluster and --model by method name (ilp, petals, swarm, "
        "homogeneous, ilp-single, separate), instead of a plan",
    )
    p.add_argument("--placement", help="a paper placement *_sol.ini to simulate instead of a plan")
    p.add_argument("--simulator-cluster", help="a paper simulator_cluster.ini: its links and KV capacities")
    p.add_argument("--mode", choices=MODES, default="offline")
    p.add_argument("--policy", choices=policy_names(), default="maxflow")
    p.add_argument(
        "--lengths", default="azure-conv", help=f"length distribution: {', '.join(LENGTH_FILES)} or a CSV"
    )
    p.add_argument(
        "--arrivals", default="azure-conv", help=f"online arrival trace: {', '.join(ARRIVAL_FILES)}"
    )
    p.add_argument("--duration", type=float, help="simulated seconds of feeding (offline 660, online 1800)")
    p.add_argument("--warmup", type=float, help="offline warm-up before the window (default 60)")
    p.add_argument("--rate", type=float, help="online target tokens/s (default 700 max-flow, 400 baselines)")
    p.add_argument(
        "--initial-queries", type=int, help="offline queries at start (20 max-flow, 180 baselines)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="NODE@SECONDS",
        help="inject a worker failure (repeatable), e.g. --fail n12@120",
    )
    p.add_argument(
        "--replan",
        action="store_true",
        help="with --fail: re-plan after each failure (detection, planning, loading, routing switch) and "
        "compare with the same run without re-planning (both curves in replan.png)",
    )
    p.add_argument(
        "--detect-s",
        type=float,
        default=DEFAULT_DETECT_S,
        help="with --replan: seconds until the coordinator declares a worker dead (heartbeat timeout)",
    )
    p.add_argument(
        "--replan-time-limit",
        type=float,
        default=10.0,
        metavar="S",
        help="with --replan: the incremental re-planner's search budget (planner.replan time_limit_s)",
    )
    p.add_argument(
        "--load-gbps",
        type=float,
        default=DEFAULT_LOAD_BYTES_PER_S / 1e9,
        help="with --replan: GB/s a node reads new layers at (default 1, the paper's disk speed)",
    )
    p.add_argument(
        "--throttle",
        action="append",
        default=[],
        metavar="NODE=SPEED",
        help="a node whose worker runs at SPEED in (0, 1] of its profile by sleeping (`brl worker "
        "--speed-factor`), repeatable",
    )
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="CORES:MEMBERS[:BACKGROUND]",
        help="processes sharing one machine's CPU cores, e.g. 2:fast,mid,slow,coordinator:0.1 (members are "
        "node names or `coordinator`; BACKGROUND = other tenants' mean runnable threads), repeatable",
    )
    p.add_argument(
        "--step-overhead-ms",
        action="append",
        default=[],
        metavar="NODE=MS",
        help="CPU milliseconds each step of NODE costs beyond its profile's compute, repeatable",
    )
    p.add_argument(
        "--coordinator-cpu-ms",
        type=float,
        default=0.0,
        help="coordinator CPU milliseconds per iteration (one event loop: iterations take turns)",
    )
    p.add_argument(
        "--pipeline-depth",
        type=int,
        metavar="N",
        help="model BRL's coordinator: each chain steps its ready requests together, at most N steps in "
        "flight (one per stage at most; the coordinator's BRL_PIPELINE_DEPTH, which defaults to one per "
        "stage). Default: the paper's coordinator, every request issued on its own",
    )
    p.add_argument(
        "--dead-end",
        metavar="RULE",
        default=DEFAULT_DEAD_END,
        help=f"max-flow routing ({', '.join(DEAD_END_RULES)}): what a request that finds no chain with KV "
        "room does with the IWRR charges of its walk: rollback (the paper's: all given back, the next "
        "request tries the same first stage), keep-entry (the source's charge stays: the next one tries the "
        "next first stage; the default, as in the coordinator), keep-path (every charge stays)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="which engine runs the events: compiled (C, the same figures bit for bit, 10-25x faster), "
        "python, or auto (default: compiled where it is built and models the run; it does not model "
        "throttles, shared hosts, coordinator CPU, chain steps, failures or the swarm policy)",
    )
    p.add_argument(
        "--find-capacity",
        action="store_true",
        help="search the highest online arrival rate the plan sustains with p95 TTFT <= --ttft-p95 and "
        "p95 time per output token <= --tpot-p95 (online runs of --duration, default 600 s, same seed)",
    )
    p.add_argument("--ttft-p95", type=float, metavar="S", help="with --find-capacity: p95 TTFT target (s)")
    p.add_argument("--tpot-p95", type=float, metavar="S", help="with --find-capacity: p95 TPOT target (s)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="with --find-capacity: stop when the first failing rate is within this share of the found one",
    )
    p.add_argument("--watch", action="store_true", help="print the KV watch every 10 simulated seconds")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("-o", "--out", help="folder for result.json and plots")
    p.set_defaults(func=run)


def _failure(text: str) -> tuple[str, float]:
    node, _, at = text.partition("@")
    try:
        return node, float(at)
    except ValueError:
        raise InvalidInput(f"expected NODE@SECONDS, got {text!r}", field="--fail") from None


def _per_node(text: str, flag: str, what: str) -> tuple[str, float]:
    node, sep, value = text.partition("=")
    try:
        if not sep or not node:
            raise ValueError
        return node, float(value)
    except ValueError:
        raise InvalidInput(f"expected NODE={what}, got {text!r}", field=flag) from None


def _host(i: int, text: str) -> HostSpec:
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError
        cores = float(parts[0])
        background = float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError:
        raise InvalidInput(
            f"expected CORES:MEMBERS[:BACKGROUND] (e.g. 2:n0,n1,coordinator), got {text!r}", field="--host"
        ) from None
    members = [m.strip() for m in parts[1].split(",") if m.strip()]
    nodes = tuple(m for m in members if m != "coordinator")
    return HostSpec(f"host{i}", cores, nodes, coordinator="coordinator" in members, background=background)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("brl")
    except PackageNotFoundError:
        return "unknown"


def _placement_path(args: argparse.Namespace) -> str | None:
    """--placement FILE as given, or the file of the bundled layout --layout NAME names."""
    given = [
        flag
        for flag, v in (("PLAN", args.plan), ("--layout", args.layout), ("--placement", args.placement))
        if v
    ]
    if len(given) > 1:
        raise InvalidInput(
            f"give one of a plan JSON, --layout or --placement, not {' and '.join(given)}", field=given[1]
        )
    if args.layout is None:
        return args.placement  # type: ignore[no-any-return]
    from planner import bundled

    if args.cluster is None:
        raise InvalidInput("--layout needs --cluster (a bundled cluster, e.g. cluster24)", field="--cluster")
    return str(bundled.layout_path(args.layout, args.cluster, args.model or DEFAULT_MODEL))


def run(args: argparse.Namespace) -> int:
    from simulator.inputs import load_inputs

    inputs = load_inputs(
        plan_path=args.plan,
        cluster=args.cluster,
        model=args.model,
        placement_path=_placement_path(args),
        simulator_cluster=args.simulator_cluster,
    )
    for note in inputs.notes:
        print(f"note: {note}", file=sys.stderr)
    targets = slo_targets(args)
    if args.replan and not args.fail:
        raise InvalidInput(
            "--replan needs a failure to re-plan after (--fail NODE@SECONDS)", field="--replan"
        )
    cfg = SimConfig(
        replan=args.replan,
        replan_detect_s=args.detect_s,
        load_bandwidth_bytes_per_s=args.load_gbps * 1e9,
        failures=tuple(_failure(f) for f in args.fail),
        mode=args.mode,
        policy=args.policy,
        lengths=args.lengths,
        arrivals=args.arrivals,
        duration_s=args.duration,
        warmup_s=args.warmup,
        seed=args.seed,
        initial_queries=args.initial_queries,
        target_tok_per_s=args.rate,
        kv_capacity=inputs.kv_capacity,
        throttle=dict(_per_node(t, "--throttle", "SPEED") for t in args.throttle) or None,
        step_overhead_s={
            n: ms / 1e3 for n, ms in (_per_node(t, "--step-overhead-ms", "MS") for t in args.step_overhead_ms)
        }
        or None,
        hosts=tuple(_host(i, h) for i, h in enumerate(args.host)),
        coordinator_cpu_s_per_iteration=args.coordinator_cpu_ms / 1e3,
        pipeline_depth=args.pipeline_depth,
        dead_end=args.dead_end,
        engine=args.engine,
    )

    if targets is not None:
        return find_capacity(args, inputs, cfg, targets)

    def show(line: WatchLine) -> None:
        print(line.format(), flush=True)

    wall = time.perf_counter()
    replanner = None
    if args.replan:
        from simulator.transition import planner_replanner

        replanner = planner_replanner(
            inputs.cluster, inputs.model, inputs.profiles, seed=args.seed, time_limit_s=args.replan_time_limit
        )
    result = simulate(
        inputs.cluster,
        inputs.model,
        inputs.profiles,
        inputs.plan,
        cfg,
        on_watch=show if args.watch else None,
        replanner=replanner,
    )
    wall = time.perf_counter() - wall
    figures = compare_without_replan(inputs, cfg, result) if args.replan else None
    lo, hi = result.window_s
    pl, dl = result.prompt_latency_s, result.decode_latency_s
    print(
        f"plan: {inputs.plan.method} on {inputs.cluster.name}, {inputs.model.name}; policy {args.policy}, "
        f"{args.mode}, seed {args.seed}"
    )
    # The max-flow is the planning estimate at the paper's typical batch, not a ceiling; the plan's
    # metrics carry the ceiling (planner.flow.peak_flow_bound), which no run can exceed.
    ceiling = inputs.plan.metrics.get("peak_flow_bound_tok_per_s")
    print(f"max flow: {result.max_flow_tok_per_s:.2f} tokens/s (planning estimate at typical batches)")
    print(f"window {lo:.0f}s - {hi:.0f}s: decode {result.decode_tok_per_s:.1f} tokens/s")
    print(
        f"prompt latency: mean {pl.mean:.3f}s p50 {pl.p50:.3f}s p95 {pl.p95:.3f}s p99 {pl.p99:.3f}s (n={pl.count})"
    )
    print(
        f"decode latency: mean {dl.mean:.3f}s p50 {dl.p50:.3f}s p95 {dl.p95:.3f}s p99 {dl.p99:.3f}s (n={dl.count})"
    )
    print(
        f"all tokens: {result.all_tok_per_s:.2f} tokens/s over {result.last_finish_s:.2f}s "
        f"({result.flow_efficiency:.0%} of the max-flow estimate"
        + (f"; ceiling {ceiling:.0f} tokens/s)" if isinstance(ceiling, (int, float)) else ")")
    )
    print(
        f"queries: {result.admitted} admitted, {result.rejected} rejected, {result.finished} finished; "
        f"{result.events} events in {wall:.1f}s ({result.config['engine']} engine)"
    )
    if result.failed_nodes:
        print(
            f"failures: {', '.join(result.failed_nodes)}; {result.aborted} queries aborted, {result.rerun} re-run "
            f"on new chains, {result.lost} lost"
        )
    if figures is not None:
        print_figures(figures)
    if result.kv_overflows:
        print(
            f"warning: real KV use exceeded capacity on {', '.join(result.kv_overflows)}; raise the expected "
            "output ratio or lower the high-water mark",
            file=sys.stderr,
        )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        data = result.to_dict()
        data["wall_s"] = round(wall, 3)
        data["provenance"] = {
            "brl_version": _version(),
            "plan": args.plan,
            "cluster": args.cluster or inputs.plan.cluster_name,
            "model": inputs.model.name,
            "placement": args.placement,
            "layout": args.layout,
            "simulator_cluster": args.simulator_cluster,
            "command": "brl simulate " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["simulate"] else None,
        }
        if figures is not None:
            without = figures.pop("without_replan")
            data.update(figures)
            data["without_replan"] = without.summary()
        (out / "result.json").write_text(json.dumps(data, indent=1))
        written = [out / "result.json"]
        if not args.no_plots:
            from simulator.plots import save_all, save_replan

            written += save_all(result, out)
            if figures is not None:
                written.append(save_replan(without, result, out / "replan.png"))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
