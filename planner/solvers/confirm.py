"""The last step of a simulated search: the few best candidates are scored again on other seeds of the same
workload and the plan with the best mean wins.

Why: one short score of a plan moves by about 2% between seeds (cluster24's best plan: sd 6.7 of 334 tok/s
over ten seeds), and the candidate with the highest of many noisy scores is the one whose score is most
likely to be high by luck, so the chosen plan's score ran up to 4% above its full run. Averaging three runs
shrinks the noise by about 1.7x, for the chosen plan only, at the cost of a few runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from statistics import mean

# The contenders: at most this many best scores, within this share of the best one.
CONFIRM_TOP = 3
CONFIRM_BAND = 0.05
# Runs added to each contender's score (other seeds of the same workload).
CONFIRM_REPLICAS = 2


def contenders(scores: Mapping[str, float], top: int = CONFIRM_TOP, band: float = CONFIRM_BAND) -> list[str]:
    """The best `top` candidates whose scores lie within `band` of the best, best first."""
    ranked = sorted(scores, key=lambda name: -scores[name])[:top]
    if not ranked or scores[ranked[0]] <= 0:
        return ranked[:1]
    floor = scores[ranked[0]] * (1 - band)
    return [name for name in ranked if scores[name] >= floor]


def confirm(
    scores: Mapping[str, float],
    rescore: Callable[[str, int], float],
    affordable: Callable[[int], bool],
    *,
    replicas: int = CONFIRM_REPLICAS,
) -> dict[str, list[float]]:
    """Each contender's runs, its first score and `replicas` more from `rescore(name, replica)` (replica
    1, 2, ...), in order of score while `affordable(runs)` says that many more runs still fit the time.
    Only fully re-scored contenders are returned; an empty result means keep the single scores."""
    runs: dict[str, list[float]] = {}
    for name in contenders(scores):
        if not affordable(replicas):
            break
        runs[name] = [scores[name], *(rescore(name, r) for r in range(1, replicas + 1))]
    return runs


def confirmed_winner(scores: Mapping[str, float], runs: Mapping[str, list[float]]) -> tuple[str, float]:
    """(name, score) of the winner: the best mean among the confirmed contenders, when the single best
    score is among them; otherwise the single best score (there was no time to confirm it)."""
    best = max(scores, key=lambda name: scores[name])
    if best not in runs:
        return best, scores[best]
    means = {name: mean(values) for name, values in runs.items()}
    winner = max(means, key=lambda name: means[name])
    return winner, means[winner]
