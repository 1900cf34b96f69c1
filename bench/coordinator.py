"""Coordinator overhead bench: max-flow routing decisions per CPU second with the KV book (24-, 42- and
200-node plans), the time to recompute flows after a node loss, and coordinator CPU microseconds per
generated token end to end against stub workers that answer at once (1 and 2 replicas), each beside a
baseline from the same run; then the cProfile top of one coordinator under that load.

`--quick` is the toy run the tests use. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import coordinator_cpu, coordinator_routing  # noqa: E402
from planner import bundled  # noqa: E402

PROFILE_TOP = 15


def profile_top(path: Path, top: int = PROFILE_TOP) -> list[str]:
    """The `top` functions by own time (tottime), one line each."""
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    return [line.rstrip() for line in lines[start : start + top + 1] if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes (the tests' run)")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    args = ap.parse_args(argv)
    quick = args.quick
    names = ("nodes24",) if quick else ("nodes24", "nodes42", "nodes200")
    decisions = 2_000 if quick else 50_000
    model = bundled.model(coordinator_routing.MODEL)
    profiles = bundled.profiles(model)
    out: dict[str, Any] = {"quick": quick}
    for fleet in coordinator_routing.fleets(names, model, profiles):
        out.update(coordinator_routing.routing_figures(fleet, decisions))
        if fleet.name in ("nodes24", "nodes42"):
            out.update(coordinator_routing.replan_figures(fleet, model, profiles, 3 if quick else 7))
        print(json.dumps({k: v for k, v in out.items() if fleet.name in k}), file=sys.stderr)
    clients, per_client, max_tokens = (2, 2, 8) if quick else (16, 8, 64)
    load = {"clients": clients, "requests": per_client, "max_tokens": max_tokens}
    out["end_to_end.load"] = load
    with tempfile.TemporaryDirectory(prefix="brl-bench-coordinator-") as tmp:
        work = Path(tmp)
        for replicas in (1, 2):
            found = asyncio.run(
                coordinator_cpu.measure(
                    replicas, work, clients=clients, requests=per_client, max_tokens=max_tokens
                )
            )
            out[f"cpu_us_per_token.replicas{replicas}"] = found["cpu_us_per_token"]
            for key in ("tokens", "failed", "tokens_per_s"):
                out[f"end_to_end.replicas{replicas}.{key}"] = found[key]
        if out["cpu_us_per_token.replicas1"] and out["cpu_us_per_token.replicas2"]:
            out["cpu_us_per_token.replicas2_vs_1"] = (
                out["cpu_us_per_token.replicas2"] / out["cpu_us_per_token.replicas1"]
            )
        if not args.no_profile:
            prof = work / "coordinator.prof"
            asyncio.run(
                coordinator_cpu.measure(
                    1, work, clients=clients, requests=per_client, max_tokens=max_tokens, profile_out=prof
                )
            )
            top = profile_top(prof) if prof.exists() else []
            print("coordinator profile (one replica, stub workers), top by own time:", file=sys.stderr)
            for line in top:
                print("  " + line, file=sys.stderr)
            out["profile_top"] = top
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
