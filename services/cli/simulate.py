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
from simulator.config import MODES, SimConfig
from simulator.host import HostSpec
from simulator.run import WatchLine, simulate
from simulator.workload import ARRIVAL_FILES, LENGTH_FILES


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "simulate", help="simulate a plan (throughput, latency) before rolling it out", description=__doc__
    )
    p.add_argument("plan", nargs="?", help="plan JSON from `brl plan` (or use --cluster + --placement)")
    p.add_argument("--cluster", help="cluster name or file (default: the one the plan names)")
    p.add_argument(
        "--model", help="model name or config.json (default: the plan's; llama2-70b with --placement)"
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


def run(args: argparse.Namespace) -> int:
    from simulator.inputs import load_inputs

    inputs = load_inputs(
        plan_path=args.plan,
        cluster=args.cluster,
        model=args.model,
        placement_path=args.placement,
        simulator_cluster=args.simulator_cluster,
    )
    for note in inputs.notes:
        print(f"note: {note}", file=sys.stderr)
    cfg = SimConfig(
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
    )

    def show(line: WatchLine) -> None:
        print(line.format(), flush=True)

    wall = time.perf_counter()
    result = simulate(
        inputs.cluster, inputs.model, inputs.profiles, inputs.plan, cfg, on_watch=show if args.watch else None
    )
    wall = time.perf_counter() - wall
    lo, hi = result.window_s
    pl, dl = result.prompt_latency_s, result.decode_latency_s
    print(
        f"plan: {inputs.plan.method} on {inputs.cluster.name}, {inputs.model.name}; policy {args.policy}, "
        f"{args.mode}, seed {args.seed}"
    )
    print(f"max flow: {result.max_flow_tok_per_s:.2f} tokens/s")
    print(f"window {lo:.0f}s - {hi:.0f}s: decode {result.decode_tok_per_s:.1f} tokens/s")
    print(
        f"prompt latency: mean {pl.mean:.3f}s p50 {pl.p50:.3f}s p95 {pl.p95:.3f}s p99 {pl.p99:.3f}s (n={pl.count})"
    )
    print(
        f"decode latency: mean {dl.mean:.3f}s p50 {dl.p50:.3f}s p95 {dl.p95:.3f}s p99 {dl.p99:.3f}s (n={dl.count})"
    )
    print(
        f"all tokens: {result.all_tok_per_s:.2f} tokens/s over {result.last_finish_s:.2f}s "
        f"({result.flow_efficiency:.0%} of max flow)"
    )
    print(
        f"queries: {result.admitted} admitted, {result.rejected} rejected, {result.finished} finished; "
        f"{result.events} events in {wall:.1f}s"
    )
    if result.failed_nodes:
        print(
            f"failures: {', '.join(result.failed_nodes)}; {result.aborted} queries aborted, {result.rerun} re-run "
            f"on new chains, {result.lost} lost"
        )
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
            "simulator_cluster": args.simulator_cluster,
            "command": "brl simulate " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["simulate"] else None,
        }
        (out / "result.json").write_text(json.dumps(data, indent=1))
        written = [out / "result.json"]
        if not args.no_plots:
            from simulator.plots import save_all

            written += save_all(result, out)
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
