"""The coordinator's metrics: per-edge counters along a request's path, the same totals as /metrics shows,
and rates over the last seconds on a hand-driven clock."""

from __future__ import annotations

import pytest

from services.coordinator.metrics import EdgeWindow, Metrics


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_edge_counters_follow_the_path_and_match_the_exposition() -> None:
    clock = Clock()
    m = Metrics("m", clock)
    m.route(["a", "b"], prompt_tokens=10)
    m.decode_tokens(["a", "b"], 3)
    totals = m.edge_totals()
    assert totals == {("source", "a"): (1.0, 13.0), ("a", "b"): (1.0, 13.0), ("b", "sink"): (1.0, 13.0)}
    text = m.render().decode()
    assert 'brl_edge_requests_total{dst="b",src="a"} 1.0' in text
    assert 'brl_edge_tokens_total{dst="sink",src="b"} 13.0' in text


def test_edge_window_rates_cover_only_the_window() -> None:
    clock = Clock()
    w = EdgeWindow(clock, window_s=10.0)
    w.add(("a", "b"), 1, 100)
    clock.t = 4.0
    # Younger than the window: rates over the time since start.
    assert w.rates() == {("a", "b"): (pytest.approx(0.25), pytest.approx(25.0))}
    clock.t = 9.0
    w.add(("a", "b"), 0, 50)
    clock.t = 10.0
    assert w.rates()[("a", "b")] == (pytest.approx(0.1), pytest.approx(15.0))
    clock.t = 10.5  # the first event (t=0) left the window
    assert w.rates()[("a", "b")] == (pytest.approx(0.0), pytest.approx(5.0))
    clock.t = 30.0
    assert w.rates() == {}
