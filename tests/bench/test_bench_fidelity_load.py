"""bench/fidelity_load.py: competing load counted as the kernel shares the cores. With autogroup each session
takes one share whatever its thread count, so a session of several busy processes is one competitor; our own
processes are never competitors."""

import os
import signal
import subprocess
import sys
import threading
import time

from bench.fidelity_load import (
    Count,
    LoadSampler,
    Task,
    autogroup_enabled,
    core_shares,
    count,
    runnable_tasks,
    sched_times_ns,
)

SPIN = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass\n"


def test_count_shares_per_session_or_per_thread_and_leaves_ours_out() -> None:
    tasks = [
        Task(10, 10, 7),  # a tenant's session 7: two processes, three runnable threads
        Task(10, 11, 7),
        Task(12, 12, 7),
        Task(20, 20, 9),  # another tenant
        Task(2, 2, 0),  # a kernel thread: a share of its own
        Task(30, 30, 30),  # ours: one worker with two runnable threads
        Task(30, 31, 30),
        Task(40, 40, 40),  # ours: the coordinator
    ]
    assert count(tasks, {30, 40}, by_session=True) == Count(competitors=3, ours=2, threads=5)
    assert count(tasks, {30, 40}, by_session=False) == Count(competitors=5, ours=2, threads=5)
    assert count(tasks, set(), by_session=True) == Count(competitors=5, ours=0, threads=8)
    assert count([], {30}, by_session=True) == Count(0, 0, 0)


def test_a_session_of_busy_processes_is_runnable_with_one_session_id() -> None:
    # Three spinning processes in one new session (bash's children inherit it).
    # One line (bash would pass SPIN's newlines as backslash-n); 20 s, killed as a group at the end.
    spin = "import time; t = time.time(); [0 for _ in iter(lambda: time.time() - t < 20, False)]"
    cmd = " & ".join([f'{sys.executable} -c "{spin}"'] * 3) + " & wait"
    proc = subprocess.Popen(["bash", "-c", cmd], start_new_session=True)
    try:
        seen: list[Task] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = [t for t in runnable_tasks() if t.session == proc.pid]
            if len({t.pid for t in seen}) == 3:
                break
            time.sleep(0.05)
        assert len({t.pid for t in seen}) == 3, seen  # runnable: running or waiting for a core
        mine = threading.get_native_id()
        assert all(t.tid != mine for t in runnable_tasks(skip_tid=mine))
        spinners = {t.pid for t in seen}
        assert count(seen, set(), by_session=True).competitors == 1
        assert count(seen, set(), by_session=False).competitors == 3
        assert count(seen, spinners, by_session=True) == Count(0, 3, 0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sampler_counts_a_spinning_session_once_when_the_kernel_shares_per_session() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(s=4)], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(t.pid == proc.pid for t in runnable_tasks()):
            time.sleep(0.05)
        with LoadSampler([os.getpid()], interval_s=0.05) as ours_only:
            time.sleep(1.0)
        with LoadSampler([os.getpid(), proc.pid], interval_s=0.05) as with_spinner:
            time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
    assert ours_only.by_session == autogroup_enabled()
    assert len(ours_only.samples) >= 5 and len(with_spinner.samples) >= 3
    # The spinner is runnable throughout: a competitor until it is named ours, then one of our processes.
    assert min(ours_only.samples) >= 1
    assert min(with_spinner.ours) >= 1


def test_core_share_of_a_process_is_its_time_on_a_core_over_its_time_runnable() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SPIN.format(s=1.5)], start_new_session=True)
    try:
        time.sleep(0.2)
        first = {"spinner": sched_times_ns(proc.pid)}
        time.sleep(0.8)
        last = {"spinner": sched_times_ns(proc.pid)}
    finally:
        proc.kill()
        proc.wait()
    assert last["spinner"][0] > first["spinner"][0] > 0  # it ran
    share = core_shares(first, last)["spinner"]
    assert 0 < share <= 1
    # The arithmetic: 3 ms on a core while runnable 4 ms is 0.75; a process that did not run is left out.
    assert core_shares({"a": (1_000_000, 0), "b": (5, 5)}, {"a": (4_000_000, 1_000_000), "b": (5, 5)}) == {
        "a": 0.75
    }
    assert sched_times_ns(2**22 + 12345) == (0, 0)  # no such process


def test_effective_background_slows_our_jobs_as_the_sampled_load_did() -> None:
    steady = LoadSampler([])
    steady.samples, steady.ours = [3.0] * 10, [1.0] * 10
    assert abs(steady.effective(2.0) - 3.0) < 1e-6  # a steady load is its own mean
    # A load that comes and goes (0 then 6 others, one job of ours): our job runs at 1 then 2/7, a mean of
    # 9/14; a steady load of B gives 2 / (1 + B), so B = 2 * 14 / 9 - 1 = 19/9, below the mean of 3.
    bursty = LoadSampler([])
    bursty.samples, bursty.ours = [0.0, 6.0] * 5, [1.0] * 10
    assert abs(bursty.effective(2.0) - 19 / 9) < 1e-6
    # Samples where none of ours ran do not slow us; none at all leaves the mean.
    idle = LoadSampler([])
    idle.samples, idle.ours = [0.0, 6.0], [1.0, 0.0]
    assert idle.effective(2.0) < 1e-6
    none = LoadSampler([])
    none.samples, none.ours = [2.0, 4.0], [0.0, 0.0]
    assert none.effective(2.0) == 3.0
