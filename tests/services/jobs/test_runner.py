"""The job runner: results, errors, cancellation (co-operative and by kill), limits, crashes, restarts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from planner.errors import CapacityExceeded
from services.jobs import CANCELLED, FAILED, SUCCEEDED, Job, JobRunner, JobStore

FNS = "tests.services.jobs.jobfns"


def wait_for(store: JobStore, job_id: str, statuses: tuple[str, ...], timeout_s: float = 30.0) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.get(job_id)
        assert job is not None
        if job.status in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}: {store.get(job_id)}")


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.db")


@pytest.fixture
def runner(store: JobStore) -> Iterator[JobRunner]:
    r = JobRunner(store, max_workers=2, max_queued=1, cancel_grace_s=0.5)
    yield r
    r.close()


def test_result_progress_and_artifact_come_back(store: JobStore, runner: JobRunner) -> None:
    job = runner.submit("test", f"{FNS}:echo", {"x": 1})
    done = wait_for(store, job.id, (SUCCEEDED, FAILED))
    assert done.status == SUCCEEDED, done.error
    assert done.result is not None and done.result["echo"] == {"x": 1}
    assert done.progress is not None and done.progress["step"] == 1
    assert done.started_at is not None and done.finished_at is not None
    art = store.artifact(job.id, "hello.txt")
    assert art is not None and art.data == b"hi"


def test_typed_error_keeps_its_field(store: JobStore, runner: JobRunner) -> None:
    job = runner.submit("test", f"{FNS}:bad_input", {})
    done = wait_for(store, job.id, (SUCCEEDED, FAILED))
    assert done.status == FAILED
    assert done.error is not None and done.error["type"] == "InvalidInput"
    assert done.error["field"] == "time_limit_s"


def test_cooperative_cancel(store: JobStore, runner: JobRunner) -> None:
    job = runner.submit("test", f"{FNS}:cooperative", {"seconds": 60})
    running = wait_for(store, job.id, ("running",))
    assert running.pid is not None
    runner.cancel(job.id)
    done = wait_for(store, job.id, (SUCCEEDED, FAILED, CANCELLED))
    assert done.status == CANCELLED


def test_stubborn_job_is_killed_and_slot_recovers(store: JobStore, runner: JobRunner) -> None:
    job = runner.submit("test", f"{FNS}:stubborn", {"seconds": 120})
    wait_for(store, job.id, ("running",))
    runner.cancel(job.id)
    done = wait_for(store, job.id, (SUCCEEDED, FAILED, CANCELLED))
    assert done.status == CANCELLED
    # Both slots still work afterwards.
    jobs = [runner.submit("test", f"{FNS}:echo", {"i": i}) for i in range(2)]
    for j in jobs:
        assert wait_for(store, j.id, (SUCCEEDED, FAILED)).status == SUCCEEDED


def test_hard_limit_kills(store: JobStore, runner: JobRunner) -> None:
    job = runner.submit("test", f"{FNS}:stubborn", {"seconds": 120}, hard_limit_s=0.5)
    done = wait_for(store, job.id, (SUCCEEDED, FAILED, CANCELLED))
    assert done.status == FAILED
    assert done.error is not None and done.error["type"] == "TimedOut"


def test_crashing_worker_fails_only_its_job(store: JobStore, runner: JobRunner) -> None:
    other = runner.submit("test", f"{FNS}:cooperative", {"seconds": 1.0})
    job = runner.submit("test", f"{FNS}:crash", {})
    done = wait_for(store, job.id, (SUCCEEDED, FAILED))
    assert done.status == FAILED and done.error is not None and done.error["type"] == "WorkerDied"
    assert wait_for(store, other.id, (SUCCEEDED, FAILED)).status == SUCCEEDED


def test_limit_raises_with_retry_after_and_queue_drains(store: JobStore, runner: JobRunner) -> None:
    jobs = [runner.submit("test", f"{FNS}:cooperative", {"seconds": 0.5}, hard_limit_s=30) for _ in range(3)]
    with pytest.raises(CapacityExceeded) as info:
        runner.submit("test", f"{FNS}:echo", {})
    assert info.value.retry_after_s is not None and 1 <= info.value.retry_after_s <= 300
    for j in jobs:
        assert wait_for(store, j.id, (SUCCEEDED, FAILED)).status == SUCCEEDED


def test_cancel_queued_job(store: JobStore, runner: JobRunner) -> None:
    blockers = [runner.submit("test", f"{FNS}:cooperative", {"seconds": 30}) for _ in range(2)]
    queued = runner.submit("test", f"{FNS}:echo", {})
    cancelled = runner.cancel(queued.id)
    assert cancelled is not None and cancelled.status == CANCELLED
    for b in blockers:
        runner.cancel(b.id)
        assert wait_for(store, b.id, (SUCCEEDED, FAILED, CANCELLED)).status == CANCELLED


def test_workers_exit_when_the_service_process_dies(tmp_path: Path) -> None:
    """A service killed with SIGKILL leaves no worker behind (they watch their parent)."""
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from services.jobs import JobRunner, JobStore\n"
        "if __name__ == '__main__':\n"
        "    store = JobStore(sys.argv[1])\n"
        "    runner = JobRunner(store, max_workers=1, max_queued=0)\n"
        "    job = runner.submit('test', 'tests.services.jobs.jobfns:stubborn', {'seconds': 120})\n"
        "    while (store.get(job.id).pid or 0) == 0:\n"
        "        time.sleep(0.05)\n"
        "    print(store.get(job.id).pid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "orphan.db")],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    worker_pid = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        raise AssertionError("the worker outlived its service process")


def test_internal_error_is_stored_generic_and_logged_with_its_id(
    store: JobStore, runner: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="services.jobs.runner"):
        job = runner.submit("test", f"{FNS}:leaky", {})
        done = wait_for(store, job.id, (SUCCEEDED, FAILED))
        deadline = time.monotonic() + 10
        while "sk-12345" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert done.status == FAILED and done.error is not None
    error = dict(done.error)
    assert error["type"] == "InternalError" and len(error["error_id"]) == 16
    assert error["error_id"] in error["message"]
    assert "secret" not in json.dumps(error) and "sk-12345" not in json.dumps(error)
    # The details are in the service's log, under the same id, with the traceback.
    assert error["error_id"] in caplog.text and "sk-12345" in caplog.text and "Traceback" in caplog.text
