import pytest

from planner.errors import InvalidInput
from simulator.engine import EventLoop


def test_events_run_in_time_order_and_equal_times_in_creation_order() -> None:
    loop = EventLoop()
    seen: list[str] = []
    loop.schedule(2.0, seen.append, "late")
    for name in ("a", "b", "c"):
        loop.schedule(1.0, seen.append, name)
    loop.schedule(0.5, seen.append, "early")
    loop.run()
    assert seen == ["early", "a", "b", "c", "late"]
    assert loop.now == 2.0 and loop.handled == 5


def test_handlers_can_schedule_and_run_stops_at_until() -> None:
    loop = EventLoop()
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(loop.now)
        loop.schedule(loop.now + 1.0, tick)

    loop.schedule(0.0, tick)
    loop.run(3.5)
    assert ticks == [0.0, 1.0, 2.0, 3.0]
    assert loop.now == 3.5 and loop.pending() == 1


def test_scheduling_into_the_past_is_an_error() -> None:
    loop = EventLoop(10.0)
    with pytest.raises(InvalidInput):
        loop.schedule(9.0, lambda: None)


def test_stop_condition() -> None:
    loop = EventLoop()
    count = []
    for i in range(10):
        loop.schedule(float(i), count.append, i)
    loop.run(stop=lambda: len(count) == 3)
    assert count == [0, 1, 2] and loop.pending() == 7
