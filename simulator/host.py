"""A machine whose CPU cores are shared by the processes placed on it (processor sharing): what slows
workers that are deployed side by side, as the local fleet's three workers and its coordinator are.

Each process runs one CPU job at a time (a worker's step, the coordinator's turn of an iteration). While n
jobs are runnable on a host of C cores, with B other competitors (runnable threads of other tenants, or their
sessions where the kernel shares per session, as Linux's autogroup does), each job progresses at
min(1, C / (n + B)) of its lone speed: the kernel's fair scheduler gives every competitor an equal
share, and a job never runs faster than on a core of its own. A GPU node has a host of its own in effect
(its kernels do not share a GPU with another worker), which is why hosts are optional.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner.errors import InvalidInput
from simulator.engine import EventLoop

# A job whose remaining work is under this is done: rounding in remaining -= dt x rate leaves crumbs.
_DONE_S = 1e-12


@dataclass(frozen=True)
class HostSpec:
    """Nodes (and maybe the coordinator) on one machine of `cores` CPU cores; `background` is the mean
    number of other competitors for its cores, measured (each takes a share like one of our jobs does)."""

    name: str
    cores: float
    nodes: tuple[str, ...] = ()
    coordinator: bool = False
    background: float = 0.0

    def __post_init__(self) -> None:
        if not self.cores > 0:
            raise InvalidInput(
                f"host {self.name!r}: cores must be > 0, got {self.cores}", field="hosts.cores"
            )
        if self.background < 0:
            raise InvalidInput(
                f"host {self.name!r}: background must be >= 0, got {self.background}",
                field="hosts.background",
            )


@dataclass(slots=True)
class _Job:
    remaining_s: float
    done: Callable[[], None]


class SimHost:
    """Processor sharing among the jobs started with `run`; each job's `done` is called when its work is
    through. Rates change only when a job starts or ends, so one pending event (the earliest finish) is
    enough; a stale event is recognised by its version and ignored."""

    def __init__(self, spec: HostSpec, loop: EventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self._jobs: dict[int, _Job] = {}
        self._next_id = 0
        self._last = loop.now
        self._rate = 1.0
        self._version = 0
        # Reports: time-weighted runnable jobs (ours), to compare with a measured load average.
        self.runnable_s = 0.0

    @property
    def rate(self) -> float:
        """Speed of each running job now, as a fraction of its lone speed."""
        return self._rate

    def run(self, work_s: float, done: Callable[[], None]) -> None:
        now = self.loop.now
        self._advance(now)
        self._next_id += 1
        self._jobs[self._next_id] = _Job(max(0.0, work_s), done)
        self._reschedule(now)

    def _advance(self, now: float) -> None:
        dt = now - self._last
        if dt > 0 and self._jobs:
            step = dt * self._rate
            for job in self._jobs.values():
                job.remaining_s -= step
            self.runnable_s += dt * len(self._jobs)
        self._last = now

    def _reschedule(self, now: float) -> None:
        n = len(self._jobs)
        self._rate = min(1.0, self.spec.cores / (n + self.spec.background)) if n else 1.0
        self._version += 1
        if n:
            first = min(job.remaining_s for job in self._jobs.values())
            self.loop.schedule(now + max(0.0, first) / self._rate, self._tick, self._version)

    def _tick(self, version: int) -> None:
        if version != self._version:
            return
        now = self.loop.now
        self._advance(now)
        done = [k for k, job in self._jobs.items() if job.remaining_s <= _DONE_S]
        callbacks = [self._jobs.pop(k).done for k in done]
        self._reschedule(now)
        for cb in callbacks:
            cb()
