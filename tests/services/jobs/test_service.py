"""What every job service does alike: retention (at start-up and on its timer; finished jobs only) and
DELETE (finished jobs only: a live one is a Conflict, not a silent cancel)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.errors_table import Conflict, NotFound
from services.jobs import FAILED, SUCCEEDED, JobStore
from services.jobs.service import JobService
from services.jobs.settings import JobServiceSettings

DAY_S = 86_400.0
NOW = 100 * DAY_S


class _Service(JobService):
    kind = "test"


def _settings(db: Path, **overrides: object) -> JobServiceSettings:
    return JobServiceSettings.model_validate({"db_path": str(db), "max_workers": 1, **overrides})


def _finished(store: JobStore, age_days: float) -> str:
    at = NOW - age_days * DAY_S
    job = store.create("test", {}, now=at)
    store.finish(job.id, SUCCEEDED, result={}, now=at)
    return job.id


def test_retention_at_start_and_on_the_timer(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    store = JobStore(db)
    old = _finished(store, 40)
    recent = [_finished(store, age) for age in (3, 2, 1)]
    settings = _settings(db, retention_days=30, max_jobs=2, retention_interval_s=0.1)
    clock = [NOW]
    service = _Service(settings, warm_modules=(), clock=lambda: clock[0])
    try:
        # At start: the 40-day-old job by age, the oldest of the rest by count.
        assert store.get(old) is None and store.get(recent[0]) is None
        assert store.get(recent[1]) is not None and store.get(recent[2]) is not None
        live = store.create("test", {}, now=0.0)  # older than anything, but queued: never pruned
        # Two newer jobs finish: the timer's next round keeps only them (the count rule).
        clock[0] = NOW + 3 * DAY_S
        newer = [_finished(store, -2), _finished(store, -2.4)]
        deadline = time.monotonic() + 10
        while any(store.get(i) is not None for i in recent[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(recent[1]) is None and store.get(recent[2]) is None
        assert all(store.get(i) is not None for i in newer)
        assert store.get(live.id) is not None
    finally:
        service.close()


def test_zero_turns_a_rule_off(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    store = JobStore(db)
    ancient = _finished(store, 10_000)
    service = _Service(_settings(db, retention_days=0, max_jobs=0), warm_modules=(), clock=lambda: NOW)
    try:
        assert service.prune() == 0 and store.get(ancient) is not None
    finally:
        service.close()


def test_delete_refuses_live_jobs(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    service = _Service(_settings(db), warm_modules=(), clock=lambda: NOW)
    try:
        live = service.store.create("test", {})
        with pytest.raises(Conflict, match="cancel it first"):
            service.delete(live.id)
        service.store.finish(live.id, FAILED, error={"type": "x", "message": "y"})
        service.delete(live.id)
        with pytest.raises(NotFound):
            service.delete(live.id)
        with pytest.raises(NotFound):
            service.get(live.id)
    finally:
        service.close()
