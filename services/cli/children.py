"""The processes `brl run` starts: a child that dies with its parent, and the wait for its first line (the
address it serves on). No subcommand of its own."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import Unavailable

# prctl option: deliver a signal to this process when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: own process group, and SIGTERM when the parent dies (Linux)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    first_line: str = ""
    log_path: Path | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start_reader(self) -> None:
        def read() -> None:
            assert self.proc.stdout is not None  # we created it with stdout=PIPE
            for i, line in enumerate(self.proc.stdout):
                if i == 0:
                    self.first_line = line.strip()
                    self._ready.set()
            self._ready.set()

        threading.Thread(target=read, name=f"read {self.name}", daemon=True).start()

    def wait_first_line(self, timeout_s: float, cancel: threading.Event | None = None) -> str:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.2):
            if cancel is not None and cancel.is_set():
                raise Interrupted("start-up interrupted")
            if time.monotonic() > deadline:
                break
        if not self.first_line:
            raise Unavailable(f"{self.name} did not start within {timeout_s:.0f} s; see {self.log_path}")
        return self.first_line


class Interrupted(Unavailable):
    """Ctrl+C / SIGTERM arrived while the deployment was starting."""
