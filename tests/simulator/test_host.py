"""Processor sharing on a simulated host: jobs slow each other only when they outnumber the cores."""

from __future__ import annotations

import pytest

from planner.errors import InvalidInput
from simulator.engine import EventLoop
from simulator.host import HostSpec, SimHost


def run_jobs(cores: float, jobs: list[tuple[float, float]], background: float = 0.0) -> list[float]:
    """Start each (at_s, work_s) job; returns each one's finish time."""
    loop = EventLoop()
    host = SimHost(HostSpec("h", cores, background=background), loop)
    done: list[float] = [0.0] * len(jobs)

    def start(i: int, work: float) -> None:
        host.run(work, lambda: done.__setitem__(i, loop.now))

    for i, (at, work) in enumerate(jobs):
        loop.schedule(at, start, i, work)
    loop.run()
    return done


def test_a_job_with_a_core_to_itself_runs_at_full_speed() -> None:
    assert run_jobs(2.0, [(0.0, 1.0)]) == [pytest.approx(1.0)]
    assert run_jobs(2.0, [(0.0, 1.0), (0.0, 0.5)]) == [pytest.approx(1.0), pytest.approx(0.5)]


def test_more_jobs_than_cores_share_them_equally() -> None:
    assert run_jobs(1.0, [(0.0, 1.0), (0.0, 1.0)]) == [pytest.approx(2.0)] * 2
    assert run_jobs(2.0, [(0.0, 1.0)] * 3) == [pytest.approx(1.5)] * 3


def test_rates_change_when_a_job_joins_or_leaves() -> None:
    # One core: A runs alone for 0.5 s, then both at half speed until A is through at 1.5 s; B has done
    # 0.5 s of work by then and finishes its last 0.5 s alone at 2.0 s.
    assert run_jobs(1.0, [(0.0, 1.0), (0.5, 1.0)]) == [pytest.approx(1.5), pytest.approx(2.0)]


def test_other_tenants_take_their_share() -> None:
    assert run_jobs(1.0, [(0.0, 1.0)], background=1.0) == [pytest.approx(2.0)]
    assert run_jobs(2.0, [(0.0, 1.0)], background=0.5) == [pytest.approx(1.0)]  # still a core free


def test_a_zero_job_finishes_at_once_and_keeps_the_rest_on_time() -> None:
    assert run_jobs(1.0, [(0.0, 1.0), (0.2, 0.0)]) == [pytest.approx(1.0), pytest.approx(0.2)]


@pytest.mark.parametrize(("cores", "background"), [(0.0, 0.0), (-1.0, 0.0), (1.0, -0.5)])
def test_bad_host_specs_name_the_field(cores: float, background: float) -> None:
    with pytest.raises(InvalidInput) as err:
        HostSpec("h", cores, background=background)
    assert err.value.field in {"hosts.cores", "hosts.background"}
