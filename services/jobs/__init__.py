"""Jobs shared by the planner and simulator services: a SQLite store and a process-pool runner."""

from services.jobs.context import JobCancelled, JobContext
from services.jobs.runner import JobRunner, error_record
from services.jobs.store import (
    ACTIVE,
    CANCELLED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    Job,
    JobStore,
)

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "SUCCEEDED",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobRunner",
    "JobStore",
    "error_record",
]
