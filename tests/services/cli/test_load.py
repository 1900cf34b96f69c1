"""`brl load` against a real coordinator HTTP server (fake fleet behind it): online arrivals follow the
rescaled trace, offline keeps N in flight, outputs have the trace's lengths, results feed `brl analyze`."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from planner.errors import InvalidInput
from services.cli.load import LoadConfig, arrival_times, run_load
from services.cli.main import main
from simulator.workload import load_arrivals
from tests.services.coordinator.fakeserver import serve_fake

LAYOUT = {"a": (0, 2), "b": (2, 4), "c": (2, 4)}


def test_arrival_times_follow_the_rate() -> None:
    bins = load_arrivals("azure-conv")
    times = arrival_times(bins, 5.0, 600.0, random.Random(0))
    assert times == sorted(times)
    assert all(0 <= t < 600 for t in times)
    assert 0.8 * 5.0 * 600 < len(times) < 1.2 * 5.0 * 600
    with pytest.raises(InvalidInput):
        arrival_times(bins, 0.0, 10.0, random.Random(0))


def test_online_and_offline_runs_complete(tmp_path: Path) -> None:
    with serve_fake(LAYOUT) as srv:
        online = LoadConfig(
            url=srv.base_url,
            mode="online",
            lengths="alpaca",
            rate=8.0,
            duration_s=3.0,
            max_input_len=16,
            max_output_len=6,
            seed=1,
        )
        summary = asyncio.run(run_load(online, tmp_path / "online"))
        expected = len(arrival_times(load_arrivals("azure-conv"), 8.0, 3.0, random.Random(1)))
        assert summary["requests"] == expected
        assert summary["completed"] == expected and summary["failed"] == 0
        rows = [json.loads(x) for x in (tmp_path / "online" / "requests.jsonl").read_text().splitlines()]
        assert len(rows) == expected
        assert all(r["output_len"] == r["expected_output_len"] for r in rows)
        assert all(r["ttft_s"] is not None for r in rows)

        offline = LoadConfig(
            url=srv.base_url,
            mode="offline",
            lengths="alpaca",
            concurrency=4,
            duration_s=1.0,
            max_input_len=16,
            max_output_len=4,
        )
        summary = asyncio.run(run_load(offline, tmp_path / "offline"))
        assert summary["completed"] >= 4 and summary["failed"] == 0
        assert summary["decode_tok_per_s"] > 0
    assert main(["analyze", str(tmp_path / "online"), "--no-plot"]) == 0


def test_cli_reports_bad_mode(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["load", "http://127.0.0.1:9/v1", "--mode", "sideways"])
