import random

import pytest

from planner.errors import UnknownName
from simulator.engine import EventLoop
from simulator.workload import ARRIVAL_BIN_S, LENGTH_FILES, OnlineFeeder, load_arrivals, load_lengths


def test_bundled_length_tables_match_the_published_means() -> None:
    # Means from the paper's trace statistics (docs/simulator.md §13).
    expected = {
        "azure-conv": (763.1, 232.4),
        "azure-code": (1379.1, 27.5),
        "alpaca": (13.9, 48.3),
        "sharegpt": (74.1, 228.6),
    }
    assert set(LENGTH_FILES) == set(expected)
    for name, (mean_in, mean_out) in expected.items():
        table = load_lengths(name)
        assert table.mean_input == pytest.approx(mean_in, abs=0.1)
        assert table.mean_output == pytest.approx(mean_out, abs=0.1)


def test_arrival_traces() -> None:
    assert len(load_arrivals("azure-conv")) == 1200 and sum(load_arrivals("azure-conv")) == 16657
    assert sum(load_arrivals("azure-code")) == 7574
    with pytest.raises(UnknownName):
        load_arrivals("poisson")
    with pytest.raises(UnknownName):
        load_lengths("nope")


def test_sampling_keeps_row_pairs() -> None:
    table = load_lengths("azure-conv")
    pairs = set(table.pairs)
    rng = random.Random(0)
    assert all(table.sample(rng) in pairs for _ in range(100))


def test_online_feeder_hits_the_target_token_rate() -> None:
    loop = EventLoop()
    got: list[tuple[int, int]] = []
    lengths = load_lengths("azure-conv")

    def submit(i: int, o: int) -> object:
        got.append((i, o))
        return object()

    duration = 1800.0
    OnlineFeeder(
        loop,
        submit,
        lengths,
        load_arrivals("azure-conv"),
        random.Random(0),
        start_s=0.0,
        duration_s=duration,
        target_tok_per_s=700.0,
    )
    loop.run()
    rate = sum(i + o for i, o in got) / duration
    assert rate == pytest.approx(700.0, rel=0.06)
    assert loop.now < duration and int(duration // ARRIVAL_BIN_S) == 600


def test_online_feeder_backlogs_what_cannot_be_admitted() -> None:
    loop = EventLoop()
    admitted: list[tuple[int, int]] = []
    open_ = [False]

    def submit(i: int, o: int, arrive_s: float | None = None) -> object | None:
        if not open_[0]:
            return None
        admitted.append((i, o))
        return object()

    feeder = OnlineFeeder(
        loop,
        submit,
        load_lengths("alpaca"),
        load_arrivals("azure-conv"),
        random.Random(1),
        start_s=0.0,
        duration_s=30.0,
        target_tok_per_s=200.0,
    )
    loop.run()
    waiting = len(feeder.backlog)
    assert waiting > 0 and not admitted
    open_[0] = True
    feeder.on_query_done(loop.now)
    assert len(admitted) == waiting and not feeder.backlog
