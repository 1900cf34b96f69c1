"""bench/fidelity_profiles.py: several measurements of this machine made into one typical one."""

import dataclasses

import pytest

from bench.fidelity_profiles import median_of, scaled
from tests.bench.test_bench_replan_predict import synthetic_measured


def test_median_of_takes_each_points_median_and_leaves_a_core_of_its_own() -> None:
    base = synthetic_measured()
    rounds = [scaled(base, f) for f in (1.0, 1.6, 1.2)]
    # One round with its points out of step with the others: the median is taken point by point.
    odd = rounds[2].measurement
    decode = dataclasses.replace(odd.decode, many_layers_ms=(50.0, *odd.decode.many_layers_ms[1:]))
    rounds[2] = dataclasses.replace(
        rounds[2], measurement=dataclasses.replace(odd, decode=decode), core_share=0.5
    )
    got = median_of(rounds)
    m = base.measurement
    assert got.core_share == 1.0
    assert got.measurement.decode.many_layers_ms[0] == pytest.approx(1.6 * m.decode.many_layers_ms[0])
    assert got.measurement.decode.many_layers_ms[1:] == pytest.approx(
        [1.2 * x for x in m.decode.many_layers_ms[1:]]
    )
    assert got.measurement.prompt.one_layer_ms == pytest.approx([1.2 * x for x in m.prompt.one_layer_ms])
    assert got.head.ms == pytest.approx([1.2 * x for x in base.head.ms])
    assert got.measurement.decode.points == m.decode.points
