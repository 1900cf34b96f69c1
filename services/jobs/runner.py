"""Runs jobs outside the request handler: one single-process pool (spawn) per slot, a FIFO queue in front.

Why a pool per slot rather than one shared pool: cancelling a job that does not co-operate (a CBC solve
deep in C code) means killing its process, and a killed worker breaks the whole pool it belongs to. With
one process per slot, a kill costs that job only; the slot gets a fresh pool and the others run on. The
processes are reused between jobs, so imports are paid once per slot, not once per job.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from planner.errors import CapacityExceeded
from services.errors_table import INTERNAL, error_id, kind_of
from services.jobs.context import JobCancelled, JobContext
from services.jobs.store import CANCELLED, FAILED, SUCCEEDED, Job, JobStore

log = logging.getLogger(__name__)

JobFn = Callable[[Mapping[str, Any], JobContext], Mapping[str, Any]]
# Key of an internal error's traceback in a child's failure record: the parent logs it and drops it.
TRACEBACK_KEY = "_traceback"


def error_record(exc: BaseException) -> dict[str, Any]:
    """A JSON-able description of a failure that a client may read. A typed error keeps its message and
    what the error table needs (type, field): it tells the caller what to fix. Anything else is an internal
    error: a generic message and an id; the traceback travels under TRACEBACK_KEY to be logged, not stored."""
    if kind_of(exc) is INTERNAL:
        eid = error_id(exc)
        return {
            "type": "InternalError",
            "message": f"the job failed on an internal error (error id {eid}); the service log has the details",
            "error_id": eid,
            TRACEBACK_KEY: "".join(traceback.format_exception(exc)),
        }
    record: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}
    for attr in ("field", "retry_after_s"):
        value = getattr(exc, attr, None)
        if value is not None:
            record[attr] = value
    return record


def log_and_strip(job_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """Log an internal error's traceback (in the service process, where logging is set up) and return the
    record without it, ready to store."""
    trace = record.pop(TRACEBACK_KEY, None)
    if trace is not None:
        log.error("job %s failed (error id %s):\n%s", job_id, record.get("error_id"), trace)
    return record


def _resolve(target: str) -> JobFn:
    module_name, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    return fn  # type: ignore[no-any-return]


def _child_init(parent_pid: int) -> None:
    """In each worker process: exit when the service process is gone (killed without a chance to clean up),
    so no orphaned solver keeps burning CPU."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm(modules: tuple[str, ...]) -> int:
    for name in modules:
        importlib.import_module(name)
    return os.getpid()


def run_in_child(
    db_path: str, job_id: str, target: str, request: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Entry point in the worker process. Never raises: exceptions are returned as records, because many
    exception classes do not survive pickling back to the parent."""
    store = JobStore(db_path)
    ctx = JobContext(store, job_id)
    try:
        if store.cancel_requested(job_id):
            return CANCELLED, {"type": "Cancelled", "message": "cancelled before it started"}
        store.mark_running(job_id, os.getpid())
        result = _resolve(target)(request, ctx)
        ctx.flush()
        return SUCCEEDED, dict(result)
    except JobCancelled:
        ctx.flush()
        return CANCELLED, {"type": "Cancelled", "message": "cancelled while running"}
    except Exception as exc:  # a bug in a job must fail that job, not the service
        return FAILED, error_record(exc)


@dataclass
class _Pending:
    job_id: str
    target: str
    request: Mapping[str, Any]
    hard_limit_s: float | None
    expected_s: float | None = None


@dataclass
class _Slot:
    pool: ProcessPoolExecutor
    job: _Pending | None = None
    future: Future[tuple[str, dict[str, Any]]] | None = None
    started: float = 0.0
    kill_at: float | None = None
    kill_reason: dict[str, Any] | None = None
    generation: int = 0


class JobRunner:
    """Submit, cancel and watch jobs. `max_workers` jobs run at once and `max_queued` more may wait;
    beyond that `submit` raises CapacityExceeded with a retry-after estimate (→ HTTP 429)."""

    def __init__(
        self,
        store: JobStore,
        *,
        max_workers: int = 2,
        max_queued: int = 4,
        cancel_grace_s: float = 3.0,
        warm_modules: tuple[str, ...] = (),
        watch_interval_s: float = 0.1,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.store = store
        self.max_workers = max_workers
        self.max_queued = max_queued
        self.cancel_grace_s = cancel_grace_s
        self._warm_modules = warm_modules
        self._mp = multiprocessing.get_context("spawn")
        self._lock = threading.RLock()
        self._queue: deque[_Pending] = deque()
        self._slots = [self._new_slot() for _ in range(max_workers)]
        self._closed = False
        self._mean_wall_s = 10.0
        self._stop = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch, args=(watch_interval_s,), name="job-watch", daemon=True
        )
        self._watcher.start()

    def _new_slot(self, generation: int = 0) -> _Slot:
        pool = ProcessPoolExecutor(
            max_workers=1, mp_context=self._mp, initializer=_child_init, initargs=(os.getpid(),)
        )
        if self._warm_modules:
            pool.submit(_warm, self._warm_modules)
        return _Slot(pool=pool, generation=generation)

    # -- public API ------------------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        target: str,
        request: Mapping[str, Any],
        *,
        hard_limit_s: float | None = None,
        expected_s: float | None = None,
    ) -> Job:
        """Queue `target` ("module:function") on `request`; `hard_limit_s` kills it if it runs longer;
        `expected_s` (e.g. a solver's time limit) feeds the Retry-After estimate."""
        with self._lock:
            if self._closed:
                raise CapacityExceeded("the job runner is shutting down", retry_after_s=5.0)
            busy = sum(1 for s in self._slots if s.job is not None)
            if busy + len(self._queue) >= self.max_workers + self.max_queued:
                raise CapacityExceeded(
                    f"{busy} jobs running and {len(self._queue)} queued (limit {self.max_workers} running + "
                    f"{self.max_queued} queued); retry later",
                    retry_after_s=self.retry_after_s(),
                )
            job = self.store.create(kind, request)
            self._queue.append(_Pending(job.id, target, dict(request), hard_limit_s, expected_s))
            self._dispatch()
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop: a queued one is dropped at once, a running one is told through its cancel
        flag and killed if it has not stopped within `cancel_grace_s`. Finished jobs are left alone."""
        job = self.store.get(job_id)
        if job is None or not job.active:
            return job
        self.store.request_cancel(job_id)
        with self._lock:
            for pending in list(self._queue):
                if pending.job_id == job_id:
                    self._queue.remove(pending)
                    self.store.finish(
                        job_id, CANCELLED, error={"type": "Cancelled", "message": "cancelled while queued"}
                    )
            for slot in self._slots:
                if slot.job is not None and slot.job.job_id == job_id and slot.kill_at is None:
                    slot.kill_at = time.monotonic() + self.cancel_grace_s
        return self.store.get(job_id)

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the soonest expected end among running jobs, within [1, 300].
        A job's expected length is what the caller said (a solver's time limit) or else the running mean of
        recent jobs' wall times."""
        now = time.monotonic()
        with self._lock:
            ends = []
            for s in self._slots:
                if s.job is None:
                    continue
                span = s.job.expected_s if s.job.expected_s is not None else self._mean_wall_s
                if s.job.hard_limit_s is not None:
                    span = min(span, s.job.hard_limit_s)
                ends.append(s.started + span - now)
        if not ends:
            return 1
        return int(min(300, max(1, math.ceil(min(ends)))))

    def running(self) -> list[str]:
        with self._lock:
            return [s.job.job_id for s in self._slots if s.job is not None]

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(
        self, *, reason: str = "the service stopped while this job was active; submit it again"
    ) -> None:
        """Stop everything: queued and running jobs are marked failed with `reason`, processes are ended."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pids: list[int] = []
            for pending in self._queue:
                self.store.finish(pending.job_id, FAILED, error={"type": "Interrupted", "message": reason})
            self._queue.clear()
            for slot in self._slots:
                if slot.job is not None:
                    self.store.finish(
                        slot.job.job_id, FAILED, error={"type": "Interrupted", "message": reason}
                    )
                    job = self.store.get(slot.job.job_id)
                    if job is not None and job.pid:
                        pids.append(job.pid)
        self._stop.set()
        self._watcher.join(timeout=5)
        for pid in pids:
            _kill(pid)
        # Side by side: an idle worker may still be importing its warm modules, and each waits for that.
        closers = [
            threading.Thread(target=s.pool.shutdown, kwargs={"wait": True, "cancel_futures": True})
            for s in self._slots
        ]
        for t in closers:
            t.start()
        for t in closers:
            t.join()

    # -- internals -------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start queued jobs on free slots (called with the lock held)."""
        for index, slot in enumerate(self._slots):
            if not self._queue or self._closed:
                return
            if slot.job is not None:
                continue
            pending = self._queue.popleft()
            slot.job, slot.started, slot.kill_at, slot.kill_reason = pending, time.monotonic(), None, None
            try:
                future = slot.pool.submit(
                    run_in_child, str(self.store.path), pending.job_id, pending.target, pending.request
                )
            except BrokenProcessPool:
                slot.pool.shutdown(wait=False, cancel_futures=True)
                self._slots[index] = slot = self._new_slot(slot.generation + 1)
                slot.job, slot.started = pending, time.monotonic()
                future = slot.pool.submit(
                    run_in_child, str(self.store.path), pending.job_id, pending.target, pending.request
                )
            slot.future = future
            future.add_done_callback(functools.partial(self._on_done, index, slot.generation))

    def _on_done(self, index: int, generation: int, future: Future[tuple[str, dict[str, Any]]]) -> None:
        with self._lock:
            slot = self._slots[index]
            if slot.generation != generation or slot.job is None:
                return
            job_id, kill_reason = slot.job.job_id, slot.kill_reason
            try:
                status, payload = future.result()
            except BrokenProcessPool:
                # The worker died: killed by us (cancel / hard limit) or by the OS (e.g. out of memory).
                if self.store.cancel_requested(job_id) and kill_reason is None:
                    status, payload = (
                        CANCELLED,
                        {"type": "Cancelled", "message": "cancelled while running (killed)"},
                    )
                else:
                    status, payload = (
                        FAILED,
                        kill_reason
                        or {"type": "WorkerDied", "message": "the worker process died (out of memory?)"},
                    )
                slot.pool.shutdown(wait=False, cancel_futures=True)
                if not self._closed:
                    self._slots[index] = self._new_slot(generation + 1)
            except Exception as exc:  # pickling or executor failure: the job fails, the runner lives
                status, payload = FAILED, error_record(exc)
            # Exponential mean of wall times: the Retry-After estimate for jobs with no stated length.
            self._mean_wall_s = 0.8 * self._mean_wall_s + 0.2 * (time.monotonic() - slot.started)
            if status == SUCCEEDED:
                self.store.finish(job_id, SUCCEEDED, result=payload)
            else:
                self.store.finish(job_id, status, error=log_and_strip(job_id, payload))
            if self._slots[index] is slot:
                slot.job = slot.future = None
            self._dispatch()

    def _watch(self, interval_s: float) -> None:
        """Enforce cancel grace periods and hard time limits by killing the slot's process."""
        while not self._stop.wait(interval_s):
            now = time.monotonic()
            with self._lock:
                targets: list[int] = []
                for slot in self._slots:
                    if slot.job is None:
                        continue
                    limit = slot.job.hard_limit_s
                    if limit is not None and now - slot.started > limit and slot.kill_reason is None:
                        slot.kill_reason = {
                            "type": "TimedOut",
                            "message": f"stopped after its hard limit of {limit:.0f} s",
                        }
                        slot.kill_at = now
                    if slot.kill_at is not None and now >= slot.kill_at:
                        job = self.store.get(slot.job.job_id)
                        if job is not None and job.pid:
                            targets.append(job.pid)
                            slot.kill_at = now + 1.0  # try again shortly if the process lingers
            for pid in targets:
                _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
