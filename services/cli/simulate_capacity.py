"""`brl simulate --find-capacity`: the flags' checks and the report of the capacity search
(simulator/capacity.py) at a latency SLO. No subcommand of its own."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from planner.errors import InvalidInput
from simulator.config import SimConfig


def slo_targets(args: argparse.Namespace) -> Any:
    """--ttft-p95/--tpot-p95 as SloTargets when --find-capacity asks for a search, else None."""
    from simulator.capacity import SloTargets

    given = [f for f, v in (("--ttft-p95", args.ttft_p95), ("--tpot-p95", args.tpot_p95)) if v is not None]
    if not args.find_capacity:
        if given:
            raise InvalidInput(f"{given[0]} is a target for --find-capacity", field=given[0])
        return None
    for flag, value in (("--ttft-p95", args.ttft_p95), ("--tpot-p95", args.tpot_p95)):
        if value is None:
            raise InvalidInput(f"--find-capacity needs {flag} S (seconds)", field=flag)
        if not (value > 0 and value != float("inf")):
            raise InvalidInput(f"must be > 0 seconds, got {value}", field=flag)
    if not 0 < args.tolerance < 1:
        raise InvalidInput(f"must be in (0, 1), got {args.tolerance}", field="--tolerance")
    for flag, bad in (
        ("--mode", args.mode != "offline"),
        ("--fail", bool(args.fail)),
        ("--watch", args.watch),
    ):
        if bad:
            raise InvalidInput(f"--find-capacity runs its own online simulations: drop {flag}", field=flag)
    return SloTargets(args.ttft_p95, args.tpot_p95)


def find_capacity(args: argparse.Namespace, inputs: Any, cfg: SimConfig, targets: Any) -> int:
    from simulator.capacity import online_config, plan_capacity

    wall = time.perf_counter()
    cap = plan_capacity(
        inputs.cluster,
        inputs.model,
        inputs.profiles,
        inputs.plan,
        targets,
        base=cfg,
        duration_s=args.duration or 600.0,
        tolerance=args.tolerance,
        start_tok_per_s=args.rate,
    )
    wall = time.perf_counter() - wall
    print(
        f"plan: {inputs.plan.method} on {inputs.cluster.name}, {inputs.model.name}; policy {args.policy}, "
        f"seed {args.seed}; targets p95 TTFT <= {targets.ttft_p95_s:g} s, p95 TPOT <= {targets.tpot_p95_s:g} s"
    )

    def at(label: str, p: Any) -> None:
        if p is None:
            return
        print(
            f"  {label} {p.rate_tok_per_s:.1f} tokens/s: p95 TTFT {p.ttft_p95_s:.3f} s, p95 TPOT "
            f"{p.tpot_p95_s:.3f} s, {p.arrivals} arrivals, {p.unserved} unserved, decode "
            f"{p.decode_tok_per_s:.1f} tokens/s"
        )

    if cap.at is None:
        print("capacity: 0 (no rate tried meets the targets)")
    else:
        print(
            f"capacity: {cap.rate_tok_per_s:.1f} tokens/s ({cap.rate_req_per_s:.3f} requests/s)"
            + (" - every rate up to the cap met the targets" if cap.capped else "")
        )
    at("meets at", cap.at)
    at("fails at", cap.first_failing)
    print(f"{cap.simulations} simulations in {wall:.1f}s (tolerance {cap.tolerance:.0%})")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        data = cap.to_dict()
        data["wall_s"] = round(wall, 3)
        data["config"] = online_config(cfg, args.duration or 600.0).to_dict()
        (out / "capacity.json").write_text(json.dumps(data, indent=1))
        print(f"wrote {out / 'capacity.json'}")
    return 0
