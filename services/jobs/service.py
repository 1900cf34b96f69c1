"""What every job service (planner, simulator) does the same way around its own submit: open the store
under its lock, fail jobs a previous process left running, run jobs in the pool, and get, list and cancel
jobs of its kind."""

from __future__ import annotations

from collections.abc import Sequence

from planner.errors import InvalidInput
from services.errors_table import NotFound
from services.jobs.runner import JobRunner
from services.jobs.settings import JobServiceSettings
from services.jobs.store import STATUSES, Job, JobStore, StoreLock


class JobService:
    """`kind` is the store's job kind and the noun of a NotFound ("no plan with id ...")."""

    kind: str

    def __init__(self, settings: JobServiceSettings, *, warm_modules: Sequence[str]) -> None:
        self.settings = settings
        self._lock = StoreLock(settings.db_path)
        self.store = JobStore(settings.db_path)
        # Jobs left active by a previous process were cut off: say so before anything new starts.
        self.interrupted = self.store.fail_interrupted()
        self.runner = JobRunner(
            self.store,
            max_workers=settings.max_workers,
            max_queued=settings.max_queued,
            cancel_grace_s=settings.cancel_grace_s,
            warm_modules=tuple(warm_modules),
        )

    def close(self) -> None:
        self.runner.close()
        self._lock.release()

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id, kind=self.kind)
        if job is None:
            raise NotFound(self.kind, job_id)
        return job

    def list_jobs(self, *, status: str | None, limit: int, offset: int) -> list[Job]:
        if status is not None and status not in STATUSES:
            raise InvalidInput(
                f"unknown status {status!r}; expected one of {', '.join(STATUSES)}", field="status"
            )
        if limit > self.settings.list_limit:
            raise InvalidInput(f"at most {self.settings.list_limit} per page", field="limit")
        return self.store.list_jobs(self.kind, status=status, limit=limit, offset=offset)

    def cancel(self, job_id: str) -> Job:
        self.get(job_id)
        job = self.runner.cancel(job_id)
        if job is None:  # pragma: no cover - the store never deletes
            raise NotFound(self.kind, job_id)
        return job
