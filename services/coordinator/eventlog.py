"""JSON-lines logs of a coordinator run, read back by `brl analyze`: one file of per-iteration (step)
events and one of per-request routes and timings. Files are opened only by `open_event_log`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

ITERATIONS_FILE = "iterations.jsonl"
REQUESTS_FILE = "requests.jsonl"


class EventLog:
    """Appends one JSON object per line; a no-op when built without files."""

    def __init__(self, iterations: IO[str] | None = None, requests: IO[str] | None = None) -> None:
        self._iterations = iterations
        self._requests = requests

    @property
    def enabled(self) -> bool:
        return self._iterations is not None

    def iteration(self, **event: Any) -> None:
        if self._iterations is not None:
            self._iterations.write(json.dumps(event, separators=(",", ":")) + "\n")

    def request(self, **event: Any) -> None:
        if self._requests is not None:
            self._requests.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._requests.flush()

    def flush(self) -> None:
        for f in (self._iterations, self._requests):
            if f is not None:
                f.flush()

    def close(self) -> None:
        for f in (self._iterations, self._requests):
            if f is not None:
                f.close()
        self._iterations = self._requests = None


def open_event_log(log_dir: Path | None) -> EventLog:
    if log_dir is None:
        return EventLog()
    log_dir.mkdir(parents=True, exist_ok=True)
    return EventLog(
        open(log_dir / ITERATIONS_FILE, "a", encoding="utf-8"),  # noqa: SIM115 - closed by close()
        open(log_dir / REQUESTS_FILE, "a", encoding="utf-8"),
    )  # noqa: SIM115


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows
