"""Small job functions the runner tests submit by name (imported again in the worker processes)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from planner.errors import InvalidInput
from services.jobs import JobContext


def echo(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    ctx.report(step=1, force=True)
    ctx.put_artifact("hello.txt", "text/plain", b"hi")
    return {"echo": dict(request), "pid": os.getpid()}


def cooperative(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    """Spins reporting progress until cancelled or `seconds` pass."""
    end = time.monotonic() + float(request.get("seconds", 30))
    step = 0
    while time.monotonic() < end:
        step += 1
        ctx.report(step=step)
        time.sleep(0.02)
    return {"steps": step}


def stubborn(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    """Never looks at its cancel flag: only a kill stops it."""
    time.sleep(float(request.get("seconds", 60)))
    return {"slept": True}


def bad_input(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    raise InvalidInput("must be positive", source="body", field="time_limit_s")


def crash(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    os._exit(3)


def leaky(request: Mapping[str, Any], ctx: JobContext) -> Mapping[str, Any]:
    """A bug whose message holds what no client should read."""
    raise RuntimeError("cannot open /srv/secret/path with key sk-12345")
