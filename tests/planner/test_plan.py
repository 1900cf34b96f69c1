"""Plan accessors."""

from __future__ import annotations

from planner.placement import LayerRange, Placement
from planner.plan import Plan


def test_flows_by_edge() -> None:
    placement = Placement(4, {"a": LayerRange(0, 2), "b": LayerRange(2, 4)})
    plan = Plan("c", "m", "test", placement, {("source", "a"): 5.0, ("a", "b"): 5.0, ("b", "sink"): 5.0}, 5.0)
    assert plan.flow("a", "b") == 5.0
    assert plan.flow("b", "a") == 0.0
    assert plan.out_flows("source") == {"a": 5.0}
    assert plan.out_flows("sink") == {}
