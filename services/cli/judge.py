"""The `serve` method's judge: the simulator scoring a candidate placement (a short warm-started run, or the
full run on fleets with slow links), with replicas on other seeds for serve's confirming runs. Lives outside
the pure planner, which must not import the simulator."""

from __future__ import annotations

from typing import Any

from planner.throughput import typical_throughput

# The serve method's judge: a warm-started offline run with an 80-s window (~1-2 s of CPU on cluster24),
# longer for plans of little max-flow (simulator.score.score_window_s); on fleets with slow links between
# nodes (3cluster24) the full offline run itself, ~3 s of CPU. The simulator's own 40-s score
# window ranked the stored ILP layout and our candidates too noisily to pick a winner.
SERVE_SCORE_DURATION_S = 110.0
SERVE_SCORE_WARMUP_S = 30.0


def simulator_scorer(
    cluster: Any,
    model: Any,
    profiles: Any,
    *,
    settings: Any = None,
    seed: int = 0,
    throttle: Any = None,
    lanes: Any = None,
) -> Any:
    """placement -> (simulated decode tokens/s, details): the simulator as the `serve` method's judge.
    Lives here, outside the pure planner, which must not import the simulator. `throttle`: node -> speed
    factor in (0, 1] (slowed nodes, as `brl replan --slow` gives them). `lanes`: the candidates' flow kept
    in these lanes (planner.flow_split), as `scale` builds its type-stage layouts."""
    from dataclasses import fields

    from simulator.run import SimConfig, simulate
    from simulator.score import full_run_ages, full_run_config, score_plan, score_window_s, slow_links

    table = typical_throughput(cluster, model, profiles, settings)
    warm = any(f.name == "warm_start" for f in fields(SimConfig))
    # Fleets with slow links between nodes are judged by the full offline run itself (simulator.score).
    cold = slow_links(cluster, model)

    def score(placement: Any, run_seed: int = seed) -> tuple[float, dict[str, Any]]:
        candidate = _candidate(cluster, model, profiles, placement, table, lanes)
        if cold:
            base = SimConfig(throttle=dict(throttle) if throttle else None)
            sim = simulate(
                cluster, model, profiles, candidate, full_run_config(cluster, seed=run_seed, base=base)
            )
        elif warm:
            window_s = score_window_s(
                SERVE_SCORE_DURATION_S - SERVE_SCORE_WARMUP_S, candidate.objective_tok_per_s
            )
            config = SimConfig(
                duration_s=SERVE_SCORE_WARMUP_S + window_s,
                warmup_s=SERVE_SCORE_WARMUP_S,
                warm_start=True,
                warm_ages_s=full_run_ages(cluster, SERVE_SCORE_WARMUP_S, window_s),
                watch_interval_s=0,
                seed=run_seed,
                throttle=dict(throttle) if throttle else None,
            )
            sim = simulate(cluster, model, profiles, candidate, config)
        else:
            sim = score_plan(cluster, model, profiles, candidate, seed=run_seed)
        return float(sim.decode_tok_per_s), {
            "decode_tok_per_s": float(sim.decode_tok_per_s),
            "prompt_latency_s": float(sim.prompt_latency_s.mean),
            "decode_latency_s": float(sim.decode_latency_s.mean),
            "finished": int(sim.finished),
            "max_flow_tok_per_s": candidate.objective_tok_per_s,
            "run": "full" if cold else "short",
        }

    return ReplicaScorer(score, seed)


def region_scorers(model: Any, profiles: Any, *, settings: Any = None, seed: int = 0) -> Any:
    """`scale`'s judge (its options["scorer_for"]): (cluster, lanes=None) -> the simulator scoring a tile or a
    region's sample on its own, each candidate's flow in `lanes`; None on a planner-only install (the
    analytic proxy judges then)."""

    def scorer_for(cluster: Any, lanes: Any = None) -> Any:
        try:
            return simulator_scorer(cluster, model, profiles, settings=settings, seed=seed, lanes=lanes)
        except ImportError:
            return None

    return scorer_for


# Seeds of a scorer's replicas (planner.solvers.confirm): far from the seeds users pick.
REPLICA_SEED_STEP = 7919


class ReplicaScorer:
    """placement -> (score, details) on the scorer's seed; `replica(placement, r)` scores it on the r-th
    other seed of the same workload (the confirming runs of serve's last step)."""

    def __init__(self, score: Any, seed: int) -> None:
        self._score = score
        self._seed = seed

    def __call__(self, placement: Any) -> tuple[float, dict[str, Any]]:
        result: tuple[float, dict[str, Any]] = self._score(placement)
        return result

    def replica(self, placement: Any, r: int) -> tuple[float, dict[str, Any]]:
        result: tuple[float, dict[str, Any]] = self._score(placement, self._seed + REPLICA_SEED_STEP * r)
        return result


def _candidate(cluster: Any, model: Any, profiles: Any, placement: Any, table: Any, lanes: Any = None) -> Any:
    """A serve candidate as the scorers simulate it: routed over exact joins, the balanced split."""
    from planner.flow import plan_from_placement

    return plan_from_placement(
        cluster,
        model,
        profiles,
        placement,
        method="serve-candidate",
        throughput=table,
        partial=False,
        split="balanced",
        lanes=lanes,
    )
