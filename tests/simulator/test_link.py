import pytest

from planner.errors import InvalidInput
from simulator.link import SimLink


def test_one_message_at_a_time_then_latency() -> None:
    link = SimLink("a", "b", bandwidth_bytes_per_s=1000.0, latency_s=0.5, bytes_per_token=10.0)
    # 100 tokens x 10 B = 1 s on the wire, then 0.5 s in flight.
    assert link.send(0.0, 100) == pytest.approx(1.5)
    # Sent at 0.2 but the link is busy until 1.0: FIFO, serialisation after the first.
    assert link.send(0.2, 100) == pytest.approx(2.5)
    # An idle link starts at once.
    assert link.send(10.0, 1) == pytest.approx(10.51)
    assert link.free_at == pytest.approx(10.01)


def test_bad_bandwidth() -> None:
    with pytest.raises(InvalidInput):
        SimLink("a", "b", 0.0, 0.0, 1.0)
