"""planner.solvers.stages: width combinations are enumerated when few, sampled reproducibly when many."""

from __future__ import annotations

import math

from planner.solvers.stages import WIDTHS, width_choices


def test_few_combinations_are_all_tried() -> None:
    options = [[1, 2, 4], [1, 2], [1, 2, 3, 4, 6]]
    assert len(width_choices(options, limit=100, sample=5, seed=0)) == math.prod(len(o) for o in options)


def test_many_combinations_are_sampled_with_every_uniform_width_first() -> None:
    options = [[w for w in WIDTHS if w <= n] for n in (4, 6, 8, 4, 10, 6, 4)]
    picked = width_choices(options, limit=1000, sample=50, seed=3)
    assert len(picked) == len(set(picked)) == 50
    assert picked[0] == (1,) * 7
    assert (2,) * 7 in picked[:7] and (4,) * 7 in picked[:7]
    assert all(w in o for combo in picked for w, o in zip(combo, options, strict=True))
    assert picked == width_choices(options, limit=1000, sample=50, seed=3)
    assert picked != width_choices(options, limit=1000, sample=50, seed=4)
