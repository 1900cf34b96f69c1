"""The live re-plan bench's windows: an after-window is measured again while the other tenants' load differs
from the before-window's by more than the tolerance, at most `tries` times, and the last one stands."""

from __future__ import annotations

import pytest

from bench.fidelity_load import LoadSampler
from bench.replan_windows import LOAD_TOLERANCE, Cut, after_windows, comparable


def cut(load: float, start: float = 0.0) -> Cut:
    sampler = LoadSampler([])  # never started: its samples are set by hand
    sampler.samples = [load - 0.25, load + 0.25]
    return Cut(start, start + 30.0, sampler, {}, {})


def test_loads_compare_within_the_tolerance_either_way() -> None:
    assert comparable(1.0, 1.0 + LOAD_TOLERANCE) and comparable(1.0, 1.0 - LOAD_TOLERANCE)
    assert not comparable(1.0, 1.6) and not comparable(1.6, 1.0)


def test_an_after_window_under_a_different_load_is_measured_again_until_one_compares() -> None:
    before = cut(1.0)
    loads = iter([2.5, 0.2, 1.3, 1.1])
    taken: list[Cut] = []

    def take() -> Cut:
        taken.append(cut(next(loads), start=100.0 * (len(taken) + 1)))
        return taken[-1]

    afters = after_windows(before, take, tries=5)
    assert afters.loads == [2.5, 0.2, 1.3]  # the third compares: no fourth window
    assert afters.used is taken[2] and afters.used.seconds == pytest.approx(30.0)


def test_after_the_last_try_the_last_window_stands() -> None:
    loads = iter([3.0, 3.1])
    afters = after_windows(cut(1.0), lambda: cut(next(loads)), tries=2)
    assert afters.loads == [3.0, 3.1] and afters.used.sampler.mean == pytest.approx(3.1)
