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


def _launched_after_warm_fill(room: int, seed: int) -> list[tuple[int, int]]:
    """The lengths an offline feeder launches after a warm fill into caches with room for `room` queries."""
    from simulator.workload import OfflineFeeder

    loop = EventLoop()
    launched: list[tuple[int, int]] = []
    admitted: list[int] = []

    def warm(i: int, o: int, progress: int, issue_s: float) -> object:
        if len(admitted) >= room:
            return None  # Fail-KV: the fill stops after its misses in a row
        admitted.append(i)
        return object()

    def submit(i: int, o: int) -> object:
        launched.append((i, o))
        return object()

    feeder = OfflineFeeder(
        loop,
        submit,
        load_lengths("azure-conv"),
        random.Random(seed),
        start_s=0.0,
        end_s=100.0,
        initial=20,
        kv_gate=lambda: 0.0,
        warm=warm,
    )
    loop.run(1.0)
    assert feeder.warm_started == len(admitted) == room
    for k in range(12):
        feeder.on_query_done(1.0 + k)
    loop.run(50.0)
    return launched


def test_warm_fill_leaves_the_launched_queries_the_same_for_every_plan() -> None:
    # Common random numbers: two plans scored on one seed whose caches take 25 and 33 warm queries then
    # receive the same queries. With one stream for both, the fill's draws (how many a plan's caches took)
    # shifted every later query: cluster10's dense chain and swarm's layout were scored on different
    # queries, and seed 0 ranked them the wrong way round.
    for seed in (0, 1):
        small, large = _launched_after_warm_fill(25, seed), _launched_after_warm_fill(33, seed)
        assert len(small) == 12 and small == large
    assert _launched_after_warm_fill(25, 0) != _launched_after_warm_fill(25, 1)
