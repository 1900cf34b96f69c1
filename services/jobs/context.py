"""What a job function sees in its worker process: report progress, notice cancellation, save artifacts.

A job function has the signature `fn(request: Mapping, ctx: JobContext) -> Mapping` (JSON-able in and
out). It may call `ctx.report(...)` as often as it likes: writes are throttled, and every report is also
the place where a cancel request stops the job (JobCancelled is raised from inside `report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from services.jobs.store import JobStore


class JobCancelled(Exception):
    """Raised inside a job when its cancel flag is up; the runner records the job as cancelled."""


class JobContext:
    def __init__(
        self,
        store: JobStore,
        job_id: str,
        *,
        min_interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self._clock = clock
        self._min_interval_s = min_interval_s
        self._started = clock()
        self._last_write = float("-inf")
        self._last_check = float("-inf")
        self._pending: dict[str, Any] | None = None
        self._cancelled = False

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def report(
        self,
        progress: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
        check_cancel: bool = True,
        **fields: Any,
    ) -> None:
        """Record the latest progress (e.g. incumbent, bound, gap) and, with `check_cancel`, stop here if
        cancelled. Code that must not raise from a callback (a solver's) passes False and polls `cancelled`."""
        merged = {**(progress or {}), **fields}
        merged.setdefault("elapsed_s", round(self.elapsed_s, 3))
        self._pending = merged
        now = self._clock()
        if force or now - self._last_write >= self._min_interval_s:
            self.flush()
        if check_cancel:
            self.check_cancelled()

    def flush(self) -> None:
        if self._pending is not None:
            self.store.set_progress(self.job_id, self._pending)
            self._pending = None
            self._last_write = self._clock()

    def cancelled(self) -> bool:
        """Whether a cancel was requested (the store is read at most every `min_interval_s`; sticky)."""
        if self._cancelled:
            return True
        now = self._clock()
        if now - self._last_check >= self._min_interval_s:
            self._last_check = now
            self._cancelled = self.store.cancel_requested(self.job_id)
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled(self.job_id)

    def put_artifact(self, name: str, content_type: str, data: bytes) -> None:
        self.store.put_artifact(self.job_id, name, content_type, data)
