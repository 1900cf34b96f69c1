"""planner.solvers.confirm: the best few scores are run again and the best mean wins."""

from __future__ import annotations

import pytest

from planner.solvers.confirm import confirm, confirmed_winner, contenders


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
