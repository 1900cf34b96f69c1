"""What every job service (planner, simulator) does the same way around its own submit: open the store
under its lock, fail jobs a previous process left running, run jobs in the pool, get, list, cancel and
delete jobs of its kind, and apply the retention rules (at start and every `retention_interval_s`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from planner.errors import InvalidInput
from services.errors_table import Conflict, NotFound
from services.jobs.runner import JobRunner
from services.jobs.settings import JobServiceSettings
from services.jobs.store import STATUSES, Job, JobStore, StoreLock

log = logging.getLogger(__name__)


class JobService:
    """`kind` is the store's job kind and the noun of a NotFound ("no plan with id ...")."""

    kind: str
    # Further job kinds this service runs in the same store (the planner's "replan"): retention covers them.
    extra_kinds: tuple[str, ...] = ()

    def __init__(
        self,
        settings: JobServiceSettings,
        *,
        warm_modules: Sequence[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = StoreLock(settings.db_path)
        self.store = JobStore(settings.db_path)
        # Jobs left active by a previous process were cut off: say so before anything new starts.
        self.interrupted = self.store.fail_interrupted()
        self.prune()
        self._stop_pruning = threading.Event()
        self._pruner = threading.Thread(target=self._prune_periodically, name="job-retention", daemon=True)
        self._pruner.start()
        self.runner = JobRunner(
            self.store,
            max_workers=settings.max_workers,
            max_queued=settings.max_queued,
            cancel_grace_s=settings.cancel_grace_s,
            warm_modules=tuple(warm_modules),
        )

    def close(self) -> None:
        self._stop_pruning.set()
        self._pruner.join(timeout=5)
        self.runner.close()
        self._lock.release()

    def prune(self) -> int:
        """Apply the retention rules now (BRL_<SERVICE>_RETENTION_DAYS, _MAX_JOBS); returns jobs deleted."""
        days, keep = self.settings.retention_days, self.settings.max_jobs
        deleted = sum(
            self.store.prune(
                kind,
                finished_before=self._clock() - days * 86_400 if days > 0 else None,
                keep=keep if keep > 0 else None,
            )
            for kind in (self.kind, *self.extra_kinds)
        )
        if deleted:
            log.info("retention: deleted %d finished %s job(s)", deleted, self.kind)
        return deleted

    def _prune_periodically(self) -> None:
        while not self._stop_pruning.wait(self.settings.retention_interval_s):
            try:
                self.prune()
            except Exception:  # a locked or full disk must not end the thread: the next round retries
                log.exception("retention: pruning %s jobs failed", self.kind)

    def get(self, job_id: str, *, kind: str | None = None) -> Job:
        job = self.store.get(job_id, kind=kind or self.kind)
        if job is None:
            raise NotFound(kind or self.kind, job_id)
        return job

    def list_jobs(self, *, status: str | None, limit: int, offset: int, kind: str | None = None) -> list[Job]:
        if status is not None and status not in STATUSES:
            raise InvalidInput(
                f"unknown status {status!r}; expected one of {', '.join(STATUSES)}", field="status"
            )
        if limit > self.settings.list_limit:
            raise InvalidInput(f"at most {self.settings.list_limit} per page", field="limit")
        return self.store.list_jobs(kind or self.kind, status=status, limit=limit, offset=offset)

    def cancel(self, job_id: str, *, kind: str | None = None) -> Job:
        self.get(job_id, kind=kind)
        job = self.runner.cancel(job_id)
        if job is None:  # deleted between the two reads
            raise NotFound(kind or self.kind, job_id)
        return job

    def delete(self, job_id: str, *, kind: str | None = None) -> None:
        """Remove a finished job and its artifacts. An active one is refused (409), not cancelled on the way:
        a cancel takes effect asynchronously (a co-operative stop, then a kill), and DELETE should neither
        block on that nor answer before the job has really ended. Cancel first, then delete."""
        job = self.get(job_id, kind=kind)
        if job.active:
            raise Conflict(
                f"{job.kind} {job_id} is {job.status}; cancel it first (POST .../{job_id}/cancel), "
                "then delete it once it has finished"
            )
        if not self.store.delete(job_id):  # another call deleted it meanwhile
            raise NotFound(job.kind, job_id)
