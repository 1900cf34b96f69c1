"""SQLite store of jobs (request, status, progress, result, error) and their artifacts (PNG plots).

Both the service process and the worker processes open the same file: the parent writes the job's life
cycle, children write progress and artifacts. WAL mode and a busy timeout make that safe at the low
write rates involved. Every call opens its own short connection, so the store is thread- and fork-safe.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import Unavailable

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
STATUSES = ACTIVE + FINISHED

INTERRUPTED_REASON = (
    "interrupted: the service stopped or restarted while this job was {status}; submit it again"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    progress TEXT,
    result TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_kind_created ON jobs(kind, created_at);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, name)
);
"""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    request: Mapping[str, Any]
    progress: Mapping[str, Any] | None
    result: Mapping[str, Any] | None
    error: Mapping[str, Any] | None
    cancel_requested: bool
    pid: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass(frozen=True)
class Artifact:
    name: str
    content_type: str
    data: bytes


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        request=json.loads(row["request"]),
        progress=_loads(row["progress"]),
        result=_loads(row["result"]),
        error=_loads(row["error"]),
        cancel_requested=bool(row["cancel_requested"]),
        pid=row["pid"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class JobStore:
    """Jobs of any kind ("plan", "simulation") in one SQLite file; the path may be ':memory:'-free only
    (worker processes must reach the same file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    # -- the parent's side: life cycle -------------------------------------------------------------------

    def create(self, kind: str, request: Mapping[str, Any], *, now: float | None = None) -> Job:
        job_id = uuid.uuid4().hex
        with self._connect() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, status, request, created_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, kind, QUEUED, json.dumps(request), time.time() if now is None else now),
            )
        job = self.get(job_id)
        if job is None:  # pragma: no cover - the row was just written
            raise RuntimeError(f"job {job_id} vanished")
        return job

    def get(self, job_id: str, *, kind: str | None = None) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (kind is not None and row["kind"] != kind):
            return None
        return _row_to_job(row)

    def list_jobs(
        self, kind: str, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        query = "SELECT * FROM jobs WHERE kind = ?"
        args: list[Any] = [kind]
        if status is not None:
            query += " AND status = ?"
            args.append(status)
        query += " ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self._connect() as db:
            return [_row_to_job(r) for r in db.execute(query, args).fetchall()]

    def count_active(self, kind: str | None = None) -> int:
        query = "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)"
        args: list[Any] = list(ACTIVE)
        if kind is not None:
            query += " AND kind = ?"
            args.append(kind)
        with self._connect() as db:
            return int(db.execute(query, args).fetchone()[0])

    def counts(self, kind: str) -> dict[str, int]:
        """Jobs of `kind` by status (every status present, zeros included)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE kind = ? GROUP BY status", (kind,)
            ).fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """Move an active job to a final state; False when it had already finished (first writer wins)."""
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status}")
        with self._connect() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ? "
                "WHERE id = ? AND status IN (?, ?)",
                (
                    status,
                    None if result is None else json.dumps(result),
                    None if error is None else json.dumps(error),
                    time.time() if now is None else now,
                    job_id,
                    *ACTIVE,
                ),
            )
            return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        """Raise the cooperative cancel flag; False when the job is not active."""
        with self._connect() as db:
            cur = db.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status IN (?, ?)", (job_id, *ACTIVE)
            )
            return cur.rowcount == 1

    def fail_interrupted(self) -> list[str]:
        """At start-up: every job still queued or running was cut off by a stop; mark it failed, saying why."""
        with self._connect() as db:
            rows = db.execute("SELECT id, status FROM jobs WHERE status IN (?, ?)", ACTIVE).fetchall()
            for row in rows:
                error = {"type": "Interrupted", "message": INTERRUPTED_REASON.format(status=row["status"])}
                db.execute(
                    "UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                    (FAILED, json.dumps(error), time.time(), row["id"]),
                )
        return [r["id"] for r in rows]

    def delete(self, job_id: str) -> bool:
        """Remove a finished job and its artifacts; False when there is none or it is still active (a running
        job's worker would go on writing progress and artifacts for a row that is gone)."""
        with self._connect() as db:
            cur = db.execute("DELETE FROM jobs WHERE id = ? AND status IN (?, ?, ?)", (job_id, *FINISHED))
            return cur.rowcount == 1

    def prune(self, kind: str, *, finished_before: float | None = None, keep: int | None = None) -> int:
        """Retention: delete finished jobs of `kind` (artifacts too) that ended before `finished_before`
        (epoch seconds), then all but the newest `keep` finished ones. Queued and running jobs are never
        touched. Returns how many were deleted."""
        deleted = 0
        with self._connect() as db:
            if finished_before is not None:
                cur = db.execute(
                    "DELETE FROM jobs WHERE kind = ? AND status IN (?, ?, ?) AND finished_at < ?",
                    (kind, *FINISHED, finished_before),
                )
                deleted += cur.rowcount
            if keep is not None:
                cur = db.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE kind = ? AND status IN (?, ?, ?) "
                    "ORDER BY finished_at DESC, created_at DESC, id LIMIT -1 OFFSET ?)",
                    (kind, *FINISHED, max(0, keep)),
                )
                deleted += cur.rowcount
        return deleted

    # -- the child's side: start, progress, artifacts ----------------------------------------------------

    def mark_running(self, job_id: str, pid: int) -> bool:
        with self._connect() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, pid = ?, started_at = ? WHERE id = ? AND status = ?",
                (RUNNING, pid, time.time(), job_id, QUEUED),
            )
            return cur.rowcount == 1

    def set_progress(self, job_id: str, progress: Mapping[str, Any]) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def put_artifact(self, job_id: str, name: str, content_type: str, data: bytes) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO artifacts (job_id, name, content_type, data) VALUES (?, ?, ?, ?)",
                (job_id, name, content_type, data),
            )

    def artifact(self, job_id: str, name: str) -> Artifact | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT name, content_type, data FROM artifacts WHERE job_id = ? AND name = ?", (job_id, name)
            ).fetchone()
        return None if row is None else Artifact(row["name"], row["content_type"], bytes(row["data"]))

    def artifact_names(self, job_id: str) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT name FROM artifacts WHERE job_id = ? ORDER BY name", (job_id,)
            ).fetchall()
        return [r[0] for r in rows]


class StoreLock:
    """One service process per store: `fail_interrupted` at start-up would otherwise fail the live jobs of
    another process using the same file (two replicas on one volume, a restart overlapping the old pod)."""

    def __init__(self, db_path: str | Path) -> None:
        import fcntl

        self.path = Path(f"{db_path}.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise Unavailable(
                f"another service process is using the job store {db_path}; run one replica per store"
            ) from None

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()  # closing the file drops the lock
