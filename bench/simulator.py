"""Simulator benchmark: the paper's README example (LLaMA-2 70B, cluster24, ILP layout, offline, max-flow)
with wall time, peak memory and events/s against the paper's own simulator (~25 min, ~11 GB); then the
fast score's rank agreement with full runs over the paper's stored layouts and the planner's candidates.

    .venv/bin/python bench/simulator.py          # full (~1-2 minutes)
    .venv/bin/python bench/simulator.py --toy    # seconds; run by tests/bench/test_bench_simulator.py
    .venv/bin/python bench/simulator.py --scale 1000   # CPU and memory at 1,000 GPUs (bench/simulator_scale.py)

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator import paper  # noqa: E402
from simulator.inputs import SimInputs, plan_for_placement  # noqa: E402
from simulator.run import SimConfig, SimResult, simulate  # noqa: E402
from simulator.score import score_plan  # noqa: E402

# What the paper's simulator cost for the same example on this kind of machine (its artifact notes).
PAPER_WALL_S = 25 * 60
PAPER_MEMORY_BYTES = 11e9
MAX_CANDIDATES = 12


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman rank correlation with average ranks for ties."""

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    if n < 2:
        return 1.0
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy) if vx > 0 and vy > 0 else 0.0


def run(inputs: SimInputs, cfg: SimConfig) -> tuple[SimResult, float]:
    t0 = time.perf_counter()
    r = simulate(
        inputs.cluster,
        inputs.model,
        inputs.profiles,
        inputs.plan,
        replace(cfg, kv_capacity=inputs.kv_capacity),
    )
    return r, time.perf_counter() - t0


def candidates(toy: bool, limit: int = MAX_CANDIDATES) -> list[tuple[str, SimInputs]]:
    """The planner's own starting layouts for cluster24 (heuristics and lane layouts), when available."""
    try:
        from planner import bundled
        from planner.solvers.base import SolveContext
        from planner.solvers.search import heuristic_starts, to_placement
        from planner.throughput import typical_throughput
    except ImportError:
        return []
    cluster = bundled.cluster(paper.CLUSTER)
    model = bundled.model(paper.MODEL)
    profiles = bundled.profiles(model)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    ctx = SolveContext(cluster=cluster, model=model, profiles=profiles, throughput=tp, rng=random.Random(0))
    out = []
    starts = heuristic_starts(ctx)
    # At most MAX_CANDIDATES, spread over the list (the planner may propose dozens).
    keep = 3 if toy else max(2, limit)
    if len(starts) > keep:
        starts = [starts[round(i * (len(starts) - 1) / (keep - 1))] for i in range(keep)]
    for name, layout in starts:
        placement = to_placement(layout, model.num_layers)
        plan, notes = plan_for_placement(cluster, model, profiles, placement, method=f"planner-{name}")
        if not notes and plan.objective_tok_per_s > 0:
            out.append((f"planner-{name}", SimInputs(cluster, model, profiles, plan)))
    return out


def reproduce() -> dict[str, Any]:
    """Swarm and separate pipelines offline; Helix and Swarm online: ours vs the paper's decode tok/s."""
    out: dict[str, Any] = {}
    offline = {
        "swarm": paper.AE_OFFLINE_70B["swarm"],
        "separate": paper.AE_OFFLINE_70B["separate"],
        "helix-30b": paper.AE_OFFLINE_30B["helix"],
        "swarm-30b": paper.AE_OFFLINE_30B["swarm"],
    }
    for name, ref in offline.items():
        t0 = time.perf_counter()
        got = sum(r.decode_tok_per_s for r in paper.run_all(paper.setup(name)))
        out[f"{name}-offline"] = {
            "decode_tok_per_s": round(got, 2),
            "paper": ref,
            "ratio": round(got / ref, 4),
        }
        print(
            f"  {name} offline: decode {got:.1f} tok/s (paper {ref}, ratio {got / ref:.3f}, "
            f"{time.perf_counter() - t0:.1f} s)"
        )
    for name, oref in paper.AE_ONLINE_70B.items():
        setup = "helix-ae" if name == "helix" else name
        t0 = time.perf_counter()
        cfg = SimConfig(mode="online", target_tok_per_s=float(oref["rate"]))
        runs = [
            replace(r, config=replace(r.config, mode="online", target_tok_per_s=cfg.target_tok_per_s))
            for r in paper.setup(setup, cfg)
        ]
        (res,) = paper.run_all(runs)
        pl, dl = res.prompt_latency_s, res.decode_latency_s
        mine = {
            "prompt": [round(x, 2) for x in (pl.p5, pl.p25, pl.p50, pl.p75, pl.p95)],
            "decode": [round(x, 2) for x in (dl.p5, dl.p25, dl.p50, dl.p75, dl.p95)],
        }
        decode_ref = float(oref["decode_tok_per_s"])
        out[f"{name}-online"] = {
            "decode_tok_per_s": round(res.decode_tok_per_s, 2),
            "paper": decode_ref,
            "ratio": round(res.decode_tok_per_s / decode_ref, 4),
            **mine,
        }
        print(
            f"  {name} online at {oref['rate']} tok/s: decode {res.decode_tok_per_s:.1f} tok/s (paper {decode_ref}); "
            f"prompt p5..p95 {mine['prompt']} (paper {list(oref['prompt'])}); decode {mine['decode']} "
            f"(paper {list(oref['decode'])}) [{time.perf_counter() - t0:.1f} s]"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", action="store_true", help="short horizons and few layouts (seconds)")
    ap.add_argument("--no-candidates", action="store_true", help="skip the planner's candidate layouts")
    ap.add_argument(
        "--max-candidates",
        type=int,
        default=MAX_CANDIDATES,
        help=f"planner candidates to compare (default {MAX_CANDIDATES}, spread over its list)",
    )
    ap.add_argument(
        "--reproduce",
        action="store_true",
        help="also rerun the paper's baselines offline and its online runs (about a minute more)",
    )
    ap.add_argument(
        "--scale",
        type=int,
        metavar="NODES",
        help="instead: the simulator's CPU time and memory on a generated fleet of NODES GPUs "
        "(bench/simulator_scale.py, which takes more flags)",
    )
    args = ap.parse_args(argv)
    if args.scale is not None:
        from bench.simulator_scale import main as scale_main

        return scale_main(["--nodes", str(args.scale)])
    toy = args.toy
    full_cfg = SimConfig(duration_s=40.0, warmup_s=10.0, watch_interval_s=10) if toy else SimConfig()

    # 1. The README example.
    rss_before = peak_rss_bytes()
    example = paper.setup("helix")[0]
    result, wall = run(
        example.inputs, replace(example.config, duration_s=full_cfg.duration_s, warmup_s=full_cfg.warmup_s)
    )
    rss_peak = peak_rss_bytes()
    ref = paper.EXAMPLE
    print(f"example: ILP layout, max-flow, offline, {result.end_s - result.start_s:.0f} simulated s")
    print(
        f"  wall {wall:.2f} s, {result.events} events ({result.events / wall:,.0f} events/s), "
        f"peak RSS {rss_peak / 1e6:.0f} MB (+{(rss_peak - rss_before) / 1e6:.0f} MB during the run)"
    )
    print(
        f"  decode {result.decode_tok_per_s:.1f} tok/s (paper {ref['decode_tok_per_s']}, "
        f"ratio {result.decode_tok_per_s / ref['decode_tok_per_s']:.3f}); all tokens {result.all_tok_per_s:.1f} "
        f"(paper {ref['all_tok_per_s']}, ratio {result.all_tok_per_s / ref['all_tok_per_s']:.3f})"
    )
    print(
        f"  prompt latency {result.prompt_latency_s.mean:.3f} s (paper {ref['prompt_latency_mean_s']}), decode "
        f"latency {result.decode_latency_s.mean:.3f} s (paper {ref['decode_latency_mean_s']})"
    )
    print(
        f"  vs the paper's simulator: {PAPER_WALL_S / wall:.0f}x faster, "
        f"{PAPER_MEMORY_BYTES / rss_peak:.0f}x less memory (its ~25 min / ~11 GB from the artifact notes)"
    )

    # 2. Fast score vs full run.
    layouts: list[tuple[str, SimInputs]] = [
        (n, paper.load_layout(n)) for n in (("ilp", "swarm", "homogeneous") if toy else paper.LAYOUTS)
    ]
    if not args.no_candidates:
        layouts += candidates(toy, args.max_candidates)
    rows = []
    score_walls = []
    for name, inp in layouts:
        full, full_wall = run(inp, full_cfg)
        t0 = time.perf_counter()
        sc = score_plan(inp.cluster, inp.model, inp.profiles, inp.plan, kv_capacity=inp.kv_capacity)
        score_walls.append(time.perf_counter() - t0)
        rows.append(
            (name, inp.plan.objective_tok_per_s, full.decode_tok_per_s, sc.decode_tok_per_s, full_wall)
        )
        print(
            f"  {name:22s} max-flow {inp.plan.objective_tok_per_s:7.1f}  full {full.decode_tok_per_s:6.1f} "
            f"({full_wall:4.1f} s)  score {sc.decode_tok_per_s:6.1f} ({score_walls[-1]:.2f} s)"
        )
    rho_score = spearman([r[2] for r in rows], [r[3] for r in rows])
    rho_flow = spearman([r[2] for r in rows], [r[1] for r in rows])
    print(
        f"rank correlation with the full run over {len(rows)} plans: score {rho_score:.3f}, "
        f"max-flow {rho_flow:.3f} (baseline); score {max(score_walls):.2f} s max, "
        f"{sum(score_walls) / len(score_walls):.2f} s mean"
    )
    reproduced = reproduce() if args.reproduce else {}
    figures: dict[str, Any] = {
        "bench": "simulator",
        "toy": toy,
        "wall_s": round(wall, 3),
        "events": result.events,
        "events_per_s": round(result.events / wall),
        "peak_rss_bytes": rss_peak,
        "decode_tok_per_s": round(result.decode_tok_per_s, 2),
        "all_tok_per_s": round(result.all_tok_per_s, 2),
        "prompt_latency_mean_s": round(result.prompt_latency_s.mean, 4),
        "decode_latency_mean_s": round(result.decode_latency_s.mean, 4),
        "decode_vs_paper": round(result.decode_tok_per_s / ref["decode_tok_per_s"], 4),
        "all_vs_paper": round(result.all_tok_per_s / ref["all_tok_per_s"], 4),
        "speedup_vs_paper_sim": round(PAPER_WALL_S / wall, 1),
        "score_rank_correlation": round(rho_score, 4),
        "maxflow_rank_correlation": round(rho_flow, 4),
        "score_wall_s_max": round(max(score_walls), 3),
        "reproduced": reproduced,
        "plans": {
            r[0]: {"max_flow": round(r[1], 2), "full": round(r[2], 2), "score": round(r[3], 2)} for r in rows
        },
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
