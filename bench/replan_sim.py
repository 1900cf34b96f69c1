"""`python -m bench.replan_sim [--quick]`: incremental re-planning judged in the simulator. For each fleet
change (a node lost, joined or slowed) on the paper's 24-node fleet with LLaMA-2 70B and the paper's ILP
layout as the plan in force: simulated decode tok/s before and after `planner.replan` (the simulator as its
judge), layers/bytes to move and the transition time, against a from-scratch `serve` plan for the new
fleet. Last line: one JSON object with the worst-case `ratio_vs_fresh` and `moved_share`.

ratio_vs_fresh = simulated decode tok/s after re-planning / that of the from-scratch plan (same scorer);
moved_share = layers the re-plan loads / layers the from-scratch plan would load from the plan in force.
`--quick`: the four-worker CPU fleet with SmolLM2 and short time limits (the toy size the tests run)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from planner import bundled
from planner.flow import plan_from_placement
from planner.plan import Plan
from planner.replan import FleetChange, apply_change, join_nodes, moved_against, replan
from planner.solvers import solve


@dataclass(frozen=True)
class Setup:
    cluster: str
    model: str
    current: str  # "ilp": the paper's stored layout; else a method solved without a scorer
    fresh_time_limit_s: float
    replan_time_limit_s: float
    # (name, lose, join spec, slowed node, factor)
    scenarios: tuple[tuple[str, str | None, str | None, str | None, float], ...]


FULL = Setup(
    "cluster24",
    "llama2-70b",
    "ilp",
    60.0,
    20.0,
    (
        ("lose-a100", "n10", None, None, 1.0),  # the only holder of layers [60, 68)
        ("lose-l4", "n0", None, None, 1.0),
        ("lose-t4", "n1", None, None, 1.0),
        ("join-a100", None, "a100:1", None, 1.0),
        ("join-l4", None, "l4:1", None, 1.0),
        ("slow-a100", None, None, "n17", 0.5),
    ),
)
QUICK = Setup(
    "local-cpu4",
    "smollm2-135m",
    "serve",
    2.0,
    2.0,
    (
        ("lose-fast", "fast2", None, None, 1.0),
        ("join-fast", None, "cpu-fast:1", None, 1.0),
    ),
)


def _current(setup: Setup, cluster: Any, model: Any, profiles: Any) -> Plan:
    if setup.current == "ilp":
        layout = bundled.layout("ilp", cluster, model)
        return plan_from_placement(cluster, model, profiles, layout, method="paper-ilp")
    return solve(setup.current, cluster, model, profiles, time_limit_s=setup.fresh_time_limit_s)


def _change(cluster: Any, lose: str | None, join: str | None, slow: str | None, factor: float) -> FleetChange:
    return FleetChange(
        lost=(lose,) if lose else (),
        joined=join_nodes(cluster, join) if join else (),
        slowed={slow: factor} if slow else {},
    )


def run_scenario(
    setup: Setup, current: Plan, name: str, change: FleetChange, cluster: Any, model: Any, profiles: Any
) -> dict[str, Any]:
    """One change: the re-plan (judged by the simulator) against a from-scratch serve plan."""
    from services.cli.plan import simulator_scorer
    from simulator.transition import DEFAULT_DETECT_S, plan_moves

    new_cluster = apply_change(cluster, change)
    scorer = simulator_scorer(new_cluster, model, profiles, throttle=change.slowed)
    t0 = time.perf_counter()
    fresh = solve("serve", new_cluster, model, profiles, time_limit_s=setup.fresh_time_limit_s, scorer=scorer)
    fresh_s = time.perf_counter() - t0
    fresh_score, _ = scorer(fresh.placement)
    t0 = time.perf_counter()
    result = replan(
        current,
        cluster,
        model,
        profiles,
        change,
        scorer=scorer,
        time_limit_s=setup.replan_time_limit_s,
        clock=time.perf_counter,
    )
    replan_s = time.perf_counter() - t0
    fresh_moved = moved_against(fresh.placement, current.placement)
    moves = plan_moves(current, result.plan, new_cluster, model, profiles, lost=change.lost)
    load_s = max((m.load_s for m in moves), default=0.0)
    return {
        "scenario": name,
        "lost": list(change.lost),
        "joined": [n.name for n in change.joined],
        "slowed": dict(change.slowed),
        "decode_before": round(result.score_before, 2),
        "decode_after": round(result.score_after, 2),
        "decode_fresh": round(fresh_score, 2),
        "ratio_vs_fresh": round(result.score_after / fresh_score, 4) if fresh_score > 0 else None,
        "layers_moved": result.layers_moved,
        "fresh_layers_moved": fresh_moved,
        # A fresh plan that moves nothing leaves the share undefined unless the re-plan moves nothing too.
        "moved_share": round(result.layers_moved / fresh_moved, 4)
        if fresh_moved
        else (0.0 if result.layers_moved == 0 else None),
        "bytes_moved": result.bytes_moved,
        "kept": result.kept,
        "scored": result.stats.get("scored"),
        "replan_s": round(replan_s, 2),
        "fresh_s": round(fresh_s, 2),
        # simulator/transition.py's model: detection, planning (as measured here), the slowest load.
        "load_s": round(load_s, 2),
        "transition_s": round(DEFAULT_DETECT_S + replan_s + load_s, 2),
        "paused_nodes": sum(1 for m in moves if not m.serves_old_while_loading),
    }


def run_sim(quick: bool, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every scenario of the setup, or those named in `only`."""
    setup = QUICK if quick else FULL
    names = [name for name, *_ in setup.scenarios]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise SystemExit(f"replan_sim: unknown scenario {unknown}; valid: {names}")
    cluster = bundled.cluster(setup.cluster)
    model = bundled.model(setup.model)
    profiles = bundled.profiles(model)
    current = _current(setup, cluster, model, profiles)
    rows = [
        run_scenario(
            setup, current, name, _change(cluster, lose, join, slow, factor), cluster, model, profiles
        )
        for name, lose, join, slow, factor in setup.scenarios
        if not only or name in only
    ]
    ratios = [r["ratio_vs_fresh"] for r in rows if r["ratio_vs_fresh"] is not None]
    return {
        "bench": "replan-sim",
        "fleet": f"{setup.cluster}/{setup.model}",
        "current": setup.current,
        "replan_time_limit_s": setup.replan_time_limit_s,
        "fresh_time_limit_s": setup.fresh_time_limit_s,
        "rows": rows,
        "ratio_vs_fresh": min(ratios) if ratios else None,
        "moved_share": max((r["moved_share"] for r in rows if r["moved_share"] is not None), default=None),
    }


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'scenario':<11} {'before':>7} {'after':>7} {'fresh':>7} {'ratio':>6} {'moved':>5} {'fresh':>5} "
        f"{'share':>5} {'GB':>6} {'load s':>6} {'trans s':>7}"
    )
    lines = [head]
    for r in result["rows"]:
        lines.append(
            f"{r['scenario']:<11} {r['decode_before']:7.1f} {r['decode_after']:7.1f} {r['decode_fresh']:7.1f} "
            f"{r['ratio_vs_fresh'] or 0:6.3f} {r['layers_moved']:5d} {r['fresh_layers_moved']:5d} "
            f"{r['moved_share'] if r['moved_share'] is not None else float('nan'):5.2f} {r['bytes_moved'] / 1e9:6.2f} {r['load_s']:6.1f} {r['transition_s']:7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy size (the CPU fleet with SmolLM2)")
    p.add_argument("--scenario", action="append", default=[], help="run only this scenario (repeatable)")
    args = p.parse_args(argv)
    result = run_sim(args.quick, tuple(args.scenario))
    print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
