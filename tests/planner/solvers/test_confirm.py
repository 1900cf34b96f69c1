"""planner.solvers.confirm: the best few scores are run again and the best mean wins."""

from __future__ import annotations

import random

import pytest

from planner import bundled
from planner.solvers.base import SolveContext, check_placement
from planner.solvers.confirm import CONFIRM_REPLICAS, confirm, confirmed_winner, contenders
from planner.solvers.serve import solve_serve
from planner.throughput import typical_throughput


def test_contenders_are_the_best_few_within_the_band() -> None:
    scores = {"a": 100.0, "b": 98.0, "c": 96.0, "d": 95.9, "e": 50.0}
    assert contenders(scores, top=3, band=0.05) == ["a", "b", "c"]
    assert contenders(scores, top=5, band=0.03) == ["a", "b"]
    assert contenders({"only": 0.0}) == ["only"]


def test_a_lucky_single_score_loses_to_a_better_mean() -> None:
    # "lucky" scored 100 once and ~90 on its replicas; "steady" 98 then ~97.
    scores = {"lucky": 100.0, "steady": 98.0, "far": 10.0}
    again = {"lucky": [90.0, 91.0], "steady": [97.0, 96.0], "far": [99.0, 99.0]}
    runs = confirm(scores, lambda name, r: again[name][r - 1], lambda n: True)
    assert runs == {"lucky": [100.0, 90.0, 91.0], "steady": [98.0, 97.0, 96.0]}  # "far" is no contender
    assert confirmed_winner(scores, runs) == ("steady", pytest.approx(97.0))


def test_without_time_the_single_best_score_stands() -> None:
    scores = {"a": 100.0, "b": 99.0}
    runs = confirm(scores, lambda name, r: 0.0, lambda n: False)
    assert runs == {}
    assert confirmed_winner(scores, runs) == ("a", 100.0)
    # Time for the first contender only: it is confirmed alone and keeps its mean.
    budget = [1]

    def affordable(n: int) -> bool:
        budget[0] -= 1
        return budget[0] >= 0

    runs = confirm(scores, lambda name, r: 94.0, affordable)
    assert list(runs) == ["a"] and confirmed_winner(scores, runs) == ("a", pytest.approx(96.0))


class SeededJudge:
    """A stand-in for the simulator (its runs are too slow for a unit test): fewer holders score higher,
    and the first run adds a bonus to placements with an odd number of holders that replicas do not."""

    def __init__(self) -> None:
        self.replicas: list[int] = []

    def __call__(self, placement) -> tuple[float, dict]:
        return 100.0 - len(placement) + (3.0 if len(placement) % 2 else 0.0), {}

    def replica(self, placement, r: int) -> tuple[float, dict]:
        self.replicas.append(r)
        return 100.0 - len(placement), {}


def test_serve_confirms_its_contenders_with_a_replicating_scorer() -> None:
    cluster = bundled.cluster("cluster24")
    model = bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    tp = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    judge = SeededJudge()
    ctx = SolveContext(
        cluster,
        model,
        profiles,
        tp,
        random.Random(0),
        time_limit_s=5.0,
        scorer=judge,
        options={"max_scored": 8, "proxy_iters": 50},
    )
    result = solve_serve(ctx)
    check_placement(ctx.cluster, ctx.throughput, result.placement, partial=False)
    confirmed = result.stats["confirmed"]
    assert confirmed and all(len(v) == 1 + CONFIRM_REPLICAS for v in confirmed.values())
    assert sorted(set(judge.replicas)) == list(range(1, CONFIRM_REPLICAS + 1))
    means = {name: sum(v) / len(v) for name, v in confirmed.items()}
    assert result.stats["chosen"] == max(means, key=lambda n: means[n])
    assert result.stats["decode_tok_per_s"] == pytest.approx(max(means.values()), abs=0.01)
