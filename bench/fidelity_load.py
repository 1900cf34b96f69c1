"""What else wants this machine's cores while a deployment runs: the simulated host's `background`
(simulator.host), counted the way the kernel's scheduler shares the cores, sampled by a thread."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_enabled() -> bool:
    """Linux's autogroup (on by default on most distributions) gives each session (setsid) one fair share
    of the cores, split among that session's runnable threads, rather than one share per thread."""
    try:
        return AUTOGROUP.read_text().strip() == "1"
    except OSError:
        return False


@dataclass(frozen=True)
class Task:
    """One runnable thread: its process, its own id, and its session (0 for a kernel thread)."""

    pid: int
    tid: int
    session: int


def _read_stat(path: str) -> tuple[str, int] | None:
    """(state, session) of one task from its /proc stat line, or None when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            raw = os.read(fd, 512)
        finally:
            os.close(fd)
        fields = raw.rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


def runnable_tasks(*, skip_tid: int = 0) -> list[Task]:
    """Every thread on this machine in state R (running or waiting for a core) now, but `skip_tid`."""
    out = []
    for pid_name in os.listdir("/proc"):
        if not pid_name.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid_name}/task")
        except OSError:  # gone meanwhile
            continue
        for tid in tids:
            if int(tid) == skip_tid:
                continue
            st = _read_stat(f"/proc/{pid_name}/task/{tid}/stat")
            if st is not None and st[0] == "R":
                out.append(Task(int(pid_name), int(tid), st[1]))
    return out


@dataclass(frozen=True)
class Count:
    """One look at the runnable tasks: competitors for the cores, our processes with a runnable thread,
    and the other runnable threads (the count a per-thread scheduler would share by)."""

    competitors: int
    ours: int
    threads: int


def count(tasks: list[Task], ours: set[int], *, by_session: bool) -> Count:
    """A competitor is what the scheduler gives a share to: a session with a runnable thread when
    `by_session` (autogroup), else each runnable thread; a kernel thread (session 0) counts one either way.
    A process of `ours` counts once however many of its threads run (the host model runs one job per
    process), and never as a competitor."""
    shares: set[tuple[str, int]] = set()
    busy: set[int] = set()
    threads = 0
    for t in tasks:
        if t.pid in ours:
            busy.add(t.pid)
            continue
        threads += 1
        shares.add(("session", t.session) if by_session and t.session else ("thread", t.tid))
    return Count(len(shares), len(busy), threads)


class LoadSampler:
    """Runnable competitors that are not the deployment's (coordinator and workers, `pids`), every
    `interval_s`: other tenants, the load client, anything else. Counted per session where the kernel
    shares the cores per session (autogroup): a tenant's job of eight threads takes one share of the
    cores, as the deployment's single-session workers each take one. `mean` is the simulated host's
    `background`, measured as a link's bandwidth would be; `threads_mean` keeps the per-thread count."""

    def __init__(self, pids: list[int], *, interval_s: float = 0.2) -> None:
        self.pids = set(pids)
        self.interval_s = interval_s
        self.by_session = autogroup_enabled()
        self.samples: list[float] = []
        self.ours: list[float] = []
        self.threads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load sampler", daemon=True)

    def _run(self) -> None:
        me = threading.get_native_id()  # the sampler is runnable while it reads: not load
        if not Path("/proc/self/task").is_dir():  # not Linux: no load to count
            return
        while not self._stop.wait(self.interval_s):
            c = count(runnable_tasks(skip_tid=me), self.pids, by_session=self.by_session)
            self.samples.append(float(c.competitors))
            self.ours.append(float(c.ours))
            self.threads.append(float(c.threads))

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return _mean(self.samples)

    @property
    def ours_mean(self) -> float:
        return _mean(self.ours)

    @property
    def threads_mean(self) -> float:
        return _mean(self.threads)

    def effective(self, cores: float) -> float:
        """The steady background that slows our jobs as much as the sampled, fluctuating one did: where n
        of ours and B others are runnable each of ours runs at min(1, cores / (n + B)), and that is convex
        in B, so a mean B overstates the slowdown of a load that comes and goes. Solved over the samples
        where some job of ours was runnable (bisection); the mean where there were none."""
        pairs = [(n, b) for n, b in zip(self.ours, self.samples, strict=True) if n >= 1]
        if not pairs:
            return self.mean

        def rate(n: float, b: float) -> float:
            return min(1.0, cores / (n + b))

        target = sum(rate(n, b) for n, b in pairs) / len(pairs)
        lo, hi = 0.0, max(b for _, b in pairs)
        for _ in range(50):  # the mean rate falls as the steady background grows
            mid = (lo + hi) / 2
            if sum(rate(n, mid) for n, _ in pairs) / len(pairs) >= target:
                lo = mid
            else:
                hi = mid
        # Where our jobs never waited (rate 1 throughout) any small background fits: the largest does, but
        # never above the sampled mean (convexity puts the answer at or below it).
        return min((lo + hi) / 2, sum(b for _, b in pairs) / len(pairs))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def sched_times_ns(pid: int) -> tuple[int, int]:
    """(on a core, runnable but waiting for one) nanoseconds, summed over a process's threads so far
    (/proc/<pid>/task/*/schedstat); (0, 0) where it is gone or the kernel keeps no such figures."""
    run = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return run, wait


def core_shares(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Per process, the share of a core its runnable threads had between two sched_times_ns readings:
    time on a core over time runnable. A process that did not run meanwhile is left out."""
    out = {}
    for name, (run1, wait1) in after.items():
        run0, wait0 = before.get(name, (0, 0))
        run, wait = run1 - run0, wait1 - wait0
        if run > 0 and wait >= 0:
            out[name] = run / (run + wait)
    return out
