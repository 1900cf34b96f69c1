"""The dashboard's memory of the last minutes, on a hand-driven clock: percentiles, the event tee (the
engine's log files get exactly what they got before), the time series and the lost-worker book."""

from __future__ import annotations

import io
import json

import pytest

from planner.placement import LayerRange
from services.coordinator.dashboard_record import (
    BUCKET_S,
    HISTORY_S,
    RECENT_REQUESTS,
    NodeBook,
    Recorder,
    percentile,
)
from services.coordinator.eventlog import EventLog
from services.coordinator.registry import JOINED, LOST, WorkerInfo, WorkerState


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(list(reversed(values)), 100) == 100.0


def test_recorder_passes_events_through_and_keeps_the_last_minutes() -> None:
    iterations, requests = io.StringIO(), io.StringIO()
    clock = Clock()
    rec = Recorder(EventLog(iterations, requests), clock)
    assert rec.enabled
    rec.iteration(t=1.0, chain=["a"], requests=1, prompt_tokens=7, decode_tokens=0, step_s=0.1)
    rec.iteration(event="plan_swap")  # not a step: logged, not counted
    clock.t += 1
    rec.request(id="r1", route=["a[0,2)"], ttft_s=0.2, decode_latency_s=0.05, e2e_s=1.0, output_len=4)
    rec.flush()
    assert [json.loads(line) for line in iterations.getvalue().splitlines()][1] == {"event": "plan_swap"}
    assert json.loads(requests.getvalue())["id"] == "r1"
    assert len(rec.steps) == 1
    lat = rec.latency()
    assert lat["ttft_s"] == {"p50": 0.2, "p95": 0.2, "n": 1.0}
    series = rec.series()
    assert len(series["t"]) == 1  # one second since start: one bucket
    assert sum(series["prompt_tok_per_s"]) * BUCKET_S == pytest.approx(7)
    assert sum(series["requests_per_s"]) * BUCKET_S == pytest.approx(1)
    assert [v for v in series["ttft_p50_s"] if v is not None] == [0.2]
    # Past the history the steps go; the latest requests stay listed, though out of the percentiles.
    clock.t += HISTORY_S + 1
    rec.iteration(chain=["a"], prompt_tokens=0, decode_tokens=1, step_s=0.1)
    assert len(rec.steps) == 1 and rec.recent()[0]["id"] == "r1"
    assert len(rec.series()["t"]) == HISTORY_S // BUCKET_S
    assert rec.latency()["ttft_s"]["n"] == 0


def test_recorder_lists_newest_first_and_caps_the_list() -> None:
    clock = Clock()
    rec = Recorder(EventLog(), clock)
    assert not rec.enabled  # no files: the engine's log stays off
    for i in range(RECENT_REQUESTS + 10):
        clock.t += 1
        rec.request(id=f"r{i}")
    recent = rec.recent()
    assert len(recent) == RECENT_REQUESTS
    assert recent[0]["id"] == f"r{RECENT_REQUESTS + 9}"


def test_node_book_remembers_the_lost_until_they_return() -> None:
    clock = Clock(50.0)
    book = NodeBook(clock)
    state = WorkerState(WorkerInfo("b", "x:1", LayerRange(2, 4), "cpu", 100), 0.0, 0.0)
    book.on_event(LOST, state)
    assert book.lost["b"].lost_wall_s == 50.0 and book.lost["b"].state is state
    book.on_event(JOINED, state)
    assert book.lost == {}
