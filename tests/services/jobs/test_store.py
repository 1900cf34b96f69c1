"""The job store: life cycle, first-writer-wins finishes, listing, counts, artifacts, restart recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.db")


def test_life_cycle_and_first_finish_wins(store: JobStore) -> None:
    job = store.create("plan", {"method": "petals"})
    assert job.status == QUEUED and job.request == {"method": "petals"}
    assert store.mark_running(job.id, pid=123)
    assert not store.mark_running(job.id, pid=456)  # only a queued job starts
    store.set_progress(job.id, {"gap": 0.5})
    assert store.finish(job.id, SUCCEEDED, result={"plan": 1})
    assert not store.finish(job.id, FAILED, error={"type": "x", "message": "late"})
    done = store.get(job.id)
    assert done is not None and done.status == SUCCEEDED and done.result == {"plan": 1} and done.error is None
    assert done.pid == 123 and done.progress == {"gap": 0.5}
    assert not store.request_cancel(job.id)  # finished jobs cannot be cancelled
    with pytest.raises(ValueError):
        store.finish(job.id, RUNNING)


def test_list_filters_by_kind_and_status_newest_first(store: JobStore) -> None:
    first = store.create("plan", {"i": 1}, now=1.0)
    second = store.create("plan", {"i": 2}, now=2.0)
    store.create("simulation", {"i": 3}, now=3.0)
    store.finish(first.id, CANCELLED)
    assert [j.id for j in store.list_jobs("plan")] == [second.id, first.id]
    assert [j.id for j in store.list_jobs("plan", status=CANCELLED)] == [first.id]
    assert [j.id for j in store.list_jobs("plan", limit=1, offset=1)] == [first.id]
    assert store.get(second.id, kind="simulation") is None
    counts = store.counts("plan")
    assert counts[QUEUED] == 1 and counts[CANCELLED] == 1 and counts[SUCCEEDED] == 0
    assert store.count_active() == 2 and store.count_active("plan") == 1


def test_artifacts(store: JobStore) -> None:
    job = store.create("simulation", {})
    store.put_artifact(job.id, "b.png", "image/png", b"\x89PNG")
    store.put_artifact(job.id, "a.png", "image/png", b"1")
    store.put_artifact(job.id, "a.png", "image/png", b"2")
    assert store.artifact_names(job.id) == ["a.png", "b.png"]
    art = store.artifact(job.id, "a.png")
    assert art is not None and art.data == b"2" and art.content_type == "image/png"
    assert store.artifact(job.id, "c.png") is None


def test_restart_marks_active_jobs_failed_with_reason(tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    first = JobStore(path)
    finished = first.create("test", {"a": 1})
    first.finish(finished.id, SUCCEEDED, result={"ok": True})
    interrupted = first.create("test", {"a": 2})
    first.mark_running(interrupted.id, pid=1)
    # A crash leaves the rows as they were; a new process opens the same file.
    second = JobStore(path)
    assert second.fail_interrupted() == [interrupted.id]
    again = second.get(interrupted.id)
    assert again is not None and again.status == FAILED
    assert again.error is not None and "restart" in again.error["message"]
    kept = second.get(finished.id)
    assert kept is not None and kept.status == SUCCEEDED and kept.result == {"ok": True}


def _finished(store: JobStore, kind: str, at: float, status: str = SUCCEEDED) -> str:
    job = store.create(kind, {"at": at}, now=at)
    store.finish(job.id, status, result={"ok": True}, now=at)
    store.put_artifact(job.id, "plot.png", "image/png", b"png")
    return job.id


def test_delete_removes_a_finished_job_and_its_artifacts(store: JobStore) -> None:
    done = _finished(store, "simulation", 1.0)
    active = store.create("simulation", {})
    store.put_artifact(active.id, "partial.png", "image/png", b"x")
    assert not store.delete(active.id)  # a live job keeps its row for its worker
    assert store.get(active.id) is not None
    assert store.delete(done)
    assert store.get(done) is None and store.artifact(done, "plot.png") is None
    assert not store.delete(done)


def test_prune_by_age_and_count_never_touches_active_jobs(store: JobStore) -> None:
    old = [_finished(store, "plan", at) for at in (10.0, 20.0)]
    new = [
        _finished(store, "plan", at, status)
        for at, status in ((30.0, FAILED), (40.0, CANCELLED), (50.0, SUCCEEDED))
    ]
    other_kind = _finished(store, "simulation", 1.0)
    queued = store.create("plan", {}, now=0.0)
    running = store.create("plan", {}, now=0.0)
    store.mark_running(running.id, pid=1)
    assert store.prune("plan", finished_before=25.0) == 2
    assert all(store.get(i) is None for i in old) and store.artifact(old[0], "plot.png") is None
    assert store.prune("plan", keep=2) == 1  # the oldest finished one goes
    assert store.get(new[0]) is None and store.get(new[1]) is not None and store.get(new[2]) is not None
    assert store.prune("plan", finished_before=1e12, keep=0) == 2
    # Other kinds and live jobs are never pruned, however old.
    assert store.get(other_kind) is not None
    assert {store.get(queued.id).status, store.get(running.id).status} == {QUEUED, RUNNING}  # type: ignore[union-attr]
