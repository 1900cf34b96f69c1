"""simulator.capacity: the rate search on a synthetic run function (threshold, run count, never / always
meets), then on a toy fleet a looser SLO gives at least the capacity of a tighter one."""

from __future__ import annotations

import pytest

from planner.errors import InvalidInput
from simulator.capacity import MIN_ARRIVALS, Probe, SloTargets, find_capacity, plan_capacity
from tests.simulator.fleets import diamond, profiles, toy_model

TARGETS = SloTargets(ttft_p95_s=5.0, tpot_p95_s=1.0)


def threshold_run(threshold: float, calls: list[float]):
    """Latency that crosses both targets at `threshold` tokens/s (TTFT grows with load, TPOT jumps)."""

    def run(rate: float) -> Probe:
        calls.append(rate)
        over = rate > threshold
        return Probe(
            rate, ttft_p95_s=4.0 * rate / threshold, tpot_p95_s=2.0 if over else 0.5, arrivals=100, unserved=0
        )

    return run


@pytest.mark.parametrize("start", [10.0, 300.0, 5000.0])
def test_finds_the_threshold_within_tolerance_and_counts_runs(start: float) -> None:
    calls: list[float] = []
    cap = find_capacity(
        threshold_run(1000.0, calls), TARGETS, start_tok_per_s=start, tokens_per_request=100.0
    )
    assert cap.at is not None and cap.first_failing is not None
    assert cap.rate_tok_per_s <= 1000.0 < cap.first_failing.rate_tok_per_s
    assert cap.first_failing.rate_tok_per_s <= cap.rate_tok_per_s * 1.02
    assert cap.rate_req_per_s == pytest.approx(cap.rate_tok_per_s / 100.0, rel=1e-12)
    assert cap.simulations == len(calls) == len(cap.probes)
    assert not cap.capped
    # The TTFT bound binds first (4 * rate / threshold <= 5 always here below the threshold): the probe
    # at the found rate reports what the run returned.
    assert cap.at.tpot_p95_s == 0.5


def test_unserved_arrivals_fail_a_probe_whatever_the_percentiles() -> None:
    def run(rate: float) -> Probe:
        return Probe(rate, 0.1, 0.1, arrivals=100, unserved=1 if rate > 50 else 0)

    cap = find_capacity(run, TARGETS, start_tok_per_s=40.0, tokens_per_request=1.0, tolerance=0.01)
    assert 50 / 1.01 <= cap.rate_tok_per_s <= 50.0


def test_never_meets_returns_zero_after_halving_to_the_floor() -> None:
    calls: list[float] = []

    def run(rate: float) -> Probe:
        calls.append(rate)
        return Probe(rate, 60.0, 0.1, arrivals=100, unserved=0)

    cap = find_capacity(run, TARGETS, start_tok_per_s=64.0, tokens_per_request=10.0, min_tok_per_s=1.0)
    assert cap.rate_tok_per_s == 0.0 and cap.at is None and cap.rate_req_per_s == 0.0
    assert calls == [64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0]
    assert cap.first_failing is not None and cap.first_failing.rate_tok_per_s == 1.0


def test_always_meets_stops_at_the_cap() -> None:
    calls: list[float] = []

    def run(rate: float) -> Probe:
        calls.append(rate)
        return Probe(rate, 0.1, 0.1, arrivals=100, unserved=0)

    cap = find_capacity(run, TARGETS, start_tok_per_s=100.0, tokens_per_request=10.0, max_tok_per_s=700.0)
    assert cap.capped and cap.first_failing is None
    assert cap.rate_tok_per_s == 700.0
    assert calls == [100.0, 200.0, 400.0, 700.0]


def test_too_few_arrivals_for_a_p95_is_not_a_pass() -> None:
    assert not Probe(1.0, 0.0, 0.0, arrivals=0, unserved=0).meets(TARGETS)
    assert not Probe(1.0, 0.0, 0.0, arrivals=MIN_ARRIVALS - 1, unserved=0).meets(TARGETS)
    assert Probe(1.0, 0.0, 0.0, arrivals=MIN_ARRIVALS, unserved=0).meets(TARGETS)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start_tok_per_s": 0.0}, "start_tok_per_s"),
        ({"start_tok_per_s": 10.0, "tolerance": 0.0}, "tolerance"),
        ({"start_tok_per_s": 10.0, "max_tok_per_s": 5.0}, "start_tok_per_s"),
    ],
)
def test_bad_search_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        find_capacity(threshold_run(1.0, []), TARGETS, tokens_per_request=1.0, **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_targets_must_be_positive_seconds(bad: float) -> None:
    with pytest.raises(InvalidInput) as err:
        SloTargets(ttft_p95_s=bad, tpot_p95_s=1.0)
    assert err.value.field == "ttft_p95_s"


def test_a_looser_slo_sustains_at_least_the_rate_of_a_tighter_one_on_a_toy_fleet() -> None:
    cluster, plan = diamond()
    model, profs = toy_model(), profiles()
    tight = plan_capacity(
        cluster, model, profs, plan, SloTargets(0.5, 0.04), duration_s=600.0, tolerance=0.05
    )
    loose = plan_capacity(cluster, model, profs, plan, SloTargets(5.0, 0.4), duration_s=600.0, tolerance=0.05)
    assert loose.rate_tok_per_s >= tight.rate_tok_per_s > 0
    assert loose.rate_tok_per_s > tight.rate_tok_per_s  # the tight targets bind on this fleet
    for cap in (tight, loose):
        assert cap.at is not None and cap.at.meets(cap.targets)
        assert cap.first_failing is None or not cap.first_failing.meets(cap.targets)
    # Same seed, same rate, same answer: the search is reproducible.
    again = plan_capacity(
        cluster, model, profs, plan, SloTargets(0.5, 0.04), duration_s=600.0, tolerance=0.05
    )
    assert again.probes == tight.probes


def test_growth_sets_the_step_up_and_a_failing_start_can_settle_the_search() -> None:
    calls: list[float] = []
    cap = find_capacity(
        threshold_run(1000.0, calls), TARGETS, start_tok_per_s=900.0, tokens_per_request=1.0, growth=1.2
    )
    assert calls[1] == pytest.approx(1080.0)
    assert cap.rate_tok_per_s <= 1000.0 < cap.first_failing.rate_tok_per_s  # type: ignore[union-attr]
    calls.clear()
    below = find_capacity(
        threshold_run(1000.0, calls),
        TARGETS,
        start_tok_per_s=1100.0,
        tokens_per_request=1.0,
        stop_if_start_fails=True,
    )
    assert calls == [1100.0] and below.rate_tok_per_s == 0.0 and below.at is None
    assert below.first_failing is not None and below.first_failing.rate_tok_per_s == 1100.0


def test_should_stop_ends_the_search_after_the_first_run_and_is_not_capped() -> None:
    calls: list[float] = []
    cap = find_capacity(
        threshold_run(1000.0, calls),
        TARGETS,
        start_tok_per_s=100.0,
        tokens_per_request=1.0,
        should_stop=lambda: True,
    )
    assert calls == [100.0] and cap.rate_tok_per_s == 100.0
    assert cap.first_failing is None and not cap.capped
    with pytest.raises(InvalidInput):
        find_capacity(
            threshold_run(1000.0, []), TARGETS, start_tok_per_s=1.0, tokens_per_request=1.0, growth=1.0
        )
