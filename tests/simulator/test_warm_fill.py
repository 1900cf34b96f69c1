"""simulator.warm_fill: what a warm start puts in flight, capped by age, spread evenly."""

from __future__ import annotations

import math
import random

import pytest

from planner.errors import InvalidInput
from simulator.config import SimConfig
from simulator.engine import EventLoop
from simulator.warm_fill import FillShape, InFlightTable, halton_point, progress_of
from simulator.workload import OfflineFeeder, load_lengths

PAIRS = ((10, 0), (20, 9), (30, 9), (40, 99))


def _grid(table: InFlightTable, limit: float, n: int = 2000) -> list[tuple[int, int]]:
    return [table.pick(limit, (k + 0.5) / n, 0.5) for k in range(n)]


def test_uncapped_picks_are_length_biased() -> None:
    # Weights count(o) * (o + 1): 1, 2 * 10, 100 of 121 for outputs 0, 9, 99.
    picks = _grid(InFlightTable.of(PAIRS), math.inf)
    share = {o: sum(1 for _, out in picks if out == o) / len(picks) for o in (0, 9, 99)}
    assert share == pytest.approx({0: 1 / 121, 9: 20 / 121, 99: 100 / 121}, abs=2e-3)


def test_a_cap_weighs_long_outputs_by_the_cap() -> None:
    # Capped at 10 iterations: weights 1, 2 * 10, 10 (the long query cannot be older than 10 steps).
    picks = _grid(InFlightTable.of(PAIRS), 10.0)
    share = {o: sum(1 for _, out in picks if out == o) / len(picks) for o in (0, 9, 99)}
    assert share == pytest.approx({0: 1 / 31, 9: 20 / 31, 99: 10 / 31}, abs=2e-3)


def test_inputs_are_drawn_among_the_pairs_of_the_picked_output() -> None:
    table = InFlightTable.of(PAIRS)
    assert {table.pick(math.inf, 0.1, v) for v in (0.0, 0.49, 0.5, 0.99)} == {(20, 9), (30, 9)}


def test_progress_stays_within_the_output_and_the_cap() -> None:
    for w in (0.0, 0.3, 0.999):
        assert 1 <= progress_of(500, 40.0, w) <= 40
        assert 1 <= progress_of(5, 40.0, w) <= 5
        assert 1 <= progress_of(500, math.inf, w) <= 500
    assert progress_of(0, 40.0, 0.5) == 0
    assert progress_of(500, 40.0, 0.999) == 40


def test_the_halton_sequence_covers_each_coordinate_evenly() -> None:
    points = [halton_point((0.1, 0.2, 0.3, 0.4), k) for k in range(1, 201)]
    for dim in range(4):
        bins = [0] * 10
        for p in points:
            assert 0.0 <= p[dim] < 1.0
            bins[int(p[dim] * 10)] += 1
        # Independent draws put 20 +- 4.2 (sd) in a bin; the sequence stays within +-2.
        assert max(bins) - min(bins) <= 4, (dim, bins)


def test_the_iteration_cap_follows_age_and_littles_law() -> None:
    shape = FillShape(ages_s=(60.0, 660.0), decode_tok_per_s=300.0)
    # 300 tok/s over 150 queries: 2 tokens a second each; an age of 60..660 s is 120..1320 iterations.
    assert shape.iteration_cap(0.0, 150) == pytest.approx(120.0)
    assert shape.iteration_cap(1.0, 150) == pytest.approx(1320.0)
    assert shape.iteration_cap(0.5, None) == math.inf
    assert FillShape(ages_s=None, decode_tok_per_s=300.0).iteration_cap(0.5, 150) == math.inf


def _fill(shape: FillShape, room: int) -> list[tuple[int, int, int]]:
    loop = EventLoop()
    held: list[tuple[int, int, int]] = []

    def warm(i: int, o: int, progress: int, issue_s: float) -> object | None:
        if len(held) >= room:
            return None
        held.append((i, o, progress))
        return object()

    OfflineFeeder(
        loop,
        lambda i, o: object(),
        load_lengths("azure-conv"),
        random.Random(3),
        start_s=0.0,
        end_s=10.0,
        initial=room,
        kv_gate=None,
        warm=warm,
        fill_shape=shape,
    )
    loop.run(0.5)
    return held


def test_an_age_capped_fill_holds_younger_shorter_queries() -> None:
    # 100 queries sharing 50 decode tok/s: one token every 2 s each, so a fleet 60..120 s old holds none
    # past iteration 60, while the steady state holds queries hundreds of tokens in.
    steady = _fill(FillShape(ages_s=None, decode_tok_per_s=50.0), 100)
    young = _fill(FillShape(ages_s=(60.0, 120.0), decode_tok_per_s=50.0), 100)
    assert len(steady) == len(young) == 100
    assert max(p for _, _, p in young) <= 60 < max(p for _, _, p in steady)
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    assert mean(young, 1) < mean(steady, 1)
    assert mean(young, 2) < 0.5 * mean(steady, 2)


def test_warm_ages_must_be_an_ordered_non_negative_range() -> None:
    with pytest.raises(InvalidInput) as err:
        SimConfig(warm_start=True, warm_ages_s=(600.0, 60.0))
    assert err.value.field == "warm_ages_s"
    assert SimConfig(warm_start=True, warm_ages_s=(60.0, 660.0)).to_dict()["warm_ages_s"] == [60.0, 660.0]
