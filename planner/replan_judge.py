"""Judging re-plan candidates with an injected scorer (the simulator, from outside the pure core): which
candidates it sees, in what order, and which one wins. Pure: the scorer is a callable passed in.

The rule: among the judged candidates, the winner is the one that loads the fewest layers while serving
within `min_gain` of the best judged (moving more layers must buy at least `min_gain`); it replaces the
repaired placement only if it serves `min_gain` more than it (hysteresis)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planner.errors import BrlError
from planner.placement import Placement
from planner.replan_moves import layers_loaded
from planner.solvers.search import Layout

Scorer = Callable[[Placement], tuple[float, Mapping[str, Any]]]
Key = tuple[tuple[str, int, int], ...]


def key_of(layout: Mapping[str, tuple[int, int]]) -> Key:
    return tuple(sorted((n, s, k) for n, (s, k) in layout.items()))


@dataclass(frozen=True)
class Judged:
    layout: Layout
    score: float
    loads: int
    origin: str


def queue(
    groups: Sequence[tuple[str, int, Iterable[Layout]]],
    base: Mapping[str, tuple[int, int]],
    budget: int | None,
    ok: Callable[[Layout], bool],
) -> list[tuple[str, Layout]]:
    """Candidates in judging order: the groups (origin, quota, layouts ranked best first) round-robin,
    `quota` from each per round, so a short time limit still sees the best of every family; duplicates,
    layouts over `budget` and layouts that carry nothing (`ok` false) left out."""
    seen: set[Key] = set()
    lanes = [(origin, quota, iter(layouts)) for origin, quota, layouts in groups]
    out: list[tuple[str, Layout]] = []
    while lanes:
        alive = []
        for origin, quota, it in lanes:
            taken = 0
            for layout in it:
                k = key_of(layout)
                if k in seen or not layout or not ok(layout):
                    continue
                if budget is not None and layers_loaded(layout, base) > budget:
                    continue
                seen.add(k)
                out.append((origin, layout))
                taken += 1
                if taken == quota:
                    alive.append((origin, quota, it))
                    break
        lanes = alive
    return out


def judge_all(
    candidates: Sequence[tuple[str, Layout]],
    base: Mapping[str, tuple[int, int]],
    score: Callable[[Layout], float],
    *,
    stop: Callable[[], bool],
) -> list[Judged]:
    """Score candidates in order until `stop()` (the first is always scored)."""
    out: list[Judged] = []
    for origin, layout in candidates:
        if out and stop():
            break
        out.append(Judged(layout, score(layout), layers_loaded(layout, base), origin))
    return out


def safe_score(scorer: Scorer, to_placement: Callable[[Layout], Placement]) -> Callable[[Layout], float]:
    def score(layout: Layout) -> float:
        try:
            value, _ = scorer(to_placement(layout))
        except BrlError:  # a placement the judge cannot run serves nothing
            return 0.0
        return float(value)

    return score


def pick(judged: Sequence[Judged], repaired: Judged, min_gain: float) -> tuple[Judged, bool]:
    """(winner, kept): the fewest-loads candidate within `min_gain` of the best judged (ties: higher score,
    then layout order), kept = the repaired placement stays (it serves something and the winner does not
    beat it by `min_gain`)."""
    every = [repaired, *judged]
    top = max(j.score for j in every)
    if top <= 0:
        return repaired, True
    near = [j for j in every if j.score * (1.0 + min_gain) >= top]
    winner = min(near, key=lambda j: (j.loads, -j.score, key_of(j.layout)))
    if repaired.score > 0 and winner.score < repaired.score * (1.0 + min_gain):
        return repaired, True
    return winner, key_of(winner.layout) == key_of(repaired.layout)
