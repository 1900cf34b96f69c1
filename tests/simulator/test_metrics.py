import random

import pytest

from simulator.metrics import LatencyHistogram, Metrics


def test_histogram_percentiles_match_sorted_samples() -> None:
    rng = random.Random(0)
    values = [rng.lognormvariate(0, 1) for _ in range(5000)]
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    ordered = sorted(values)
    for p in (0.5, 0.95, 0.99):
        assert h.percentile(p) == pytest.approx(ordered[int(len(values) * p)], rel=0.003)
    assert h.stats().mean == pytest.approx(sum(values) / len(values))
    cdf = h.cdf()
    assert cdf[-1][1] == 1.0 and all(a[0] < b[0] for a, b in zip(cdf, cdf[1:], strict=False))


def test_window_counts_only_decodes_inside() -> None:
    m = Metrics(10.0, 20.0)
    m.record(False, 0.5, 1, 5.0)
    m.record(False, 0.5, 1, 15.0)
    m.record(True, 2.0, 300, 15.0)
    m.record(False, 0.7, 1, 25.0)
    assert m.decode_tok_per_s() == pytest.approx(0.1)
    assert m.total_tokens == 303 and m.last_finish_s == 25.0
    assert m.all_tok_per_s() == pytest.approx(303 / 25.0)
    assert m.prompt.n == 1 and m.decode.n == 1 and sum(m.series) == 303
