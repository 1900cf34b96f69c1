"""`python bench/replan.py [--quick] [--sim-only | --live-only]` (or `python -m bench.replan`): the issue-15 figures in one run.

Two halves, each its own bench (run either alone for its full table):
  live  bench/replan_live.py: four SmolLM2 worker processes on this machine; the only holder of some layers is
        killed under load, then comes back and is re-planned in: `recover_s`, `lost`, `measured_vs_predicted`;
  sim   bench/replan_sim.py: the paper's 24-node fleet with LLaMA-2 70B (ILP layout in force), nodes lost,
        joined and slowed, re-planned against a from-scratch `serve` plan: `ratio_vs_fresh`, `moved_share`
        (worst case over the scenarios).
Prints both tables, then one JSON object on the last line with the five headline keys and both halves in full.
Exit status 1 when a request was lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script, as the other benches are
    sys.path.insert(0, str(ROOT))

from bench import replan_live, replan_sim  # noqa: E402

HEADLINE = ("recover_s", "ratio_vs_fresh", "moved_share", "lost", "measured_vs_predicted")


def headline(live: dict[str, Any] | None, sim: dict[str, Any] | None) -> dict[str, Any]:
    """The five figures the issue names; a half that did not run gives None for its keys."""
    live = live or {}
    sim = sim or {}
    return {
        "recover_s": live.get("recover_s"),
        "ratio_vs_fresh": sim.get("ratio_vs_fresh"),
        "moved_share": sim.get("moved_share"),
        "lost": live.get("lost"),
        "measured_vs_predicted": live.get("measured_vs_predicted"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="toy size for both halves (the tests run this)")
    half = ap.add_mutually_exclusive_group()
    half.add_argument("--sim-only", action="store_true", help="only the simulated half")
    half.add_argument("--live-only", action="store_true", help="only the live half")
    ap.add_argument(
        "--pipeline-depth", type=int, help="the live coordinator's BRL_PIPELINE_DEPTH (default: its own)"
    )
    args = ap.parse_args(argv)
    live = None if args.sim_only else replan_live.run_live(args.quick, pipeline_depth=args.pipeline_depth)
    sim = None if args.live_only else replan_sim.run_sim(args.quick)
    if live is not None:
        print("== live (this machine, SmolLM2) ==")
        replan_live.print_table(live)
    if sim is not None:
        print(f"== simulated ({sim['fleet']}) ==")
        print(replan_sim.table(sim))
    print(json.dumps({"bench": "replan", **headline(live, sim), "live": live, "sim": sim}))
    return 1 if live is not None and live["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
