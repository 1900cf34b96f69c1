"""The transition to a re-planned plan after a failure: detection, planning, loading (beside the old range or
paused), the routing switch, and the figures the run reports."""

import math

import pytest

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InfeasiblePlan, InvalidInput
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from simulator.config import SimConfig
from simulator.run import simulate
from simulator.transition import covered_at, plan_moves, planner_replanner, window_rate
from tests.simulator.fleets import profiles, toy_model

LAYER_LOAD_S = toy_model().bytes_per_layer / 1e9  # 1.53 s per layer at the default 1e9 bytes/s


def mesh(gpus: dict[str, str]) -> Cluster:
    """Every node linked to every other and to the coordinator (1e9 B/s, 1 ms), so any plan can route."""
    names = list(gpus)
    pairs = [(SOURCE, n) for n in names] + [(n, SINK) for n in names]
    pairs += [(u, v) for u in names for v in names if u != v]
    return Cluster(
        tuple(Node(n, g) for n, g in gpus.items()), tuple(Link(u, v, 1e9, 0.001) for u, v in pairs)
    )


def plan_of(ranges: dict[str, tuple[int, int]], flows: dict[tuple[str, str], float], name: str) -> Plan:
    placement = Placement(8, {n: LayerRange(*r) for n, r in ranges.items()})
    return Plan("mesh", "toy-8", name, placement, flows, objective_tok_per_s=flows_total(flows))


def flows_total(flows: dict[tuple[str, str], float]) -> float:
    return sum(f for (u, _), f in flows.items() if u == SOURCE)


def trio() -> tuple[Cluster, Plan]:
    """a (A100) holds [0,4) alone; b (L4) and c (T4) both hold [4,8)."""
    cluster = mesh({"a": "A100", "b": "L4", "c": "T4"})
    flows = {(SOURCE, "a"): 100.0, ("a", "b"): 70.0, ("a", "c"): 30.0, ("b", SINK): 70.0, ("c", SINK): 30.0}
    return cluster, plan_of({"a": (0, 4), "b": (4, 8), "c": (4, 8)}, flows, "before")


def after_losing_a(plan: Plan, lost: tuple[str, ...]) -> Plan:
    """c takes over [0,4): a T4 cannot hold its old and new layers together, so it pauses to load."""
    assert lost == ("a",) and "a" in plan.placement.ranges
    flows = {(SOURCE, "c"): 30.0, ("c", "b"): 30.0, ("b", SINK): 30.0}
    return plan_of({"c": (0, 4), "b": (4, 8)}, flows, "after")


@pytest.fixture
def short_lengths(tmp_path) -> str:
    """Short queries, so a paused node drains in a few seconds."""
    path = tmp_path / "short.csv"
    path.write_text("input_len,output_len\n" + "".join(f"{40 + 7 * i},{8 + i}\n" for i in range(10)))
    return str(path)


def run(cluster, plan, replanner=None, **kw):
    cfg = SimConfig(duration_s=60, warmup_s=5, drain=True, initial_queries=20, **kw)
    return simulate(cluster, toy_model(), profiles(), plan, cfg, replanner=replanner)


def test_losing_the_only_holder_serves_nothing_until_the_new_plan_is_loaded() -> None:
    cluster, plan = trio()
    fail_at = 15.0
    without = run(cluster, plan, failures=(("a", fail_at),))
    with_replan = run(cluster, plan, after_losing_a, failures=(("a", fail_at),), replan=True)
    failure_s = without.start_s + fail_at
    # Without re-planning nothing serves layers [0,4) again: every aborted query is lost.
    assert without.lost == without.aborted > 0
    assert sum(without.decode_series[math.ceil(failure_s) :]) == 0
    # With it: detection (2 s) + planning (1 s) + c loading 4 layers (6.12 s), then service resumes.
    (t,) = with_replan.transitions
    expected = 2.0 + 1.0 + 4 * LAYER_LOAD_S
    assert t["recover_s"] == pytest.approx(expected, abs=1e-6)
    assert t["full_service_s"] == pytest.approx(expected, abs=1e-6)
    assert t["transition_s"] == pytest.approx(4 * LAYER_LOAD_S, abs=1e-6)
    assert t["layers_moved"] == 4 and t["bytes_moved"] == 4 * toy_model().bytes_per_layer
    (move,) = t["moves"]
    assert move["node"] == "c" and move["before"] == [4, 8] and move["after"] == [0, 4]
    assert move["serves_old_while_loading"] is False
    switch = failure_s + expected
    series = with_replan.decode_series
    assert sum(series[math.ceil(failure_s) : math.floor(switch)]) == 0
    assert window_rate(series, switch, switch + 20) > 0
    # Nothing aborted is lost: every query waited for the new plan and finished on it.
    assert with_replan.aborted > 0 and with_replan.lost == 0
    assert with_replan.finished + with_replan.aborted == with_replan.admitted
    assert (
        with_replan.active_at_end == 0 and with_replan.kv_expected_left == 0 and with_replan.kv_real_left == 0
    )
    assert with_replan.plan["placement_after"] == {"c": [0, 4], "b": [4, 8]}
    assert with_replan.nodes["c"]["layers_before"] == [4, 8] and with_replan.nodes["c"]["layers"] == [0, 4]


def quad() -> tuple[Cluster, Plan]:
    """a (A100) and d (T4) hold [0,4); b and c (L4) hold [4,8)."""
    cluster = mesh({"a": "A100", "d": "T4", "b": "L4", "c": "L4"})
    flows = {
        (SOURCE, "a"): 60.0,
        (SOURCE, "d"): 40.0,
        ("a", "b"): 30.0,
        ("a", "c"): 30.0,
        ("d", "b"): 20.0,
        ("d", "c"): 20.0,
        ("b", SINK): 50.0,
        ("c", SINK): 50.0,
    }
    return cluster, plan_of({"a": (0, 4), "d": (0, 4), "b": (4, 8), "c": (4, 8)}, flows, "before")


def after_losing_b(plan: Plan, lost: tuple[str, ...]) -> Plan:
    """a stretches to [0,5) (one layer, loaded beside its own); d moves to [4,8) (a T4: it pauses)."""
    flows = {(SOURCE, "a"): 100.0, ("a", "c"): 60.0, ("a", "d"): 40.0, ("c", SINK): 60.0, ("d", SINK): 40.0}
    return plan_of({"a": (0, 5), "d": (4, 8), "c": (4, 8)}, flows, "after")


def test_a_node_loads_beside_its_range_when_it_fits_and_pauses_when_not(short_lengths) -> None:
    cluster, plan = quad()
    r = run(
        cluster,
        plan,
        after_losing_b,
        failures=(("b", 10.0),),
        replan=True,
        lengths=short_lengths,
        watch_interval_s=0.5,
    )
    (t,) = r.transitions
    moves = {m["node"]: m for m in t["moves"]}
    assert set(moves) == {"a", "d"}
    a, d = moves["a"], moves["d"]
    planned = t["planned_s"]
    assert a["serves_old_while_loading"] and a["layers_to_load"] == 1 and a["load_start_s"] == planned
    assert a["ready_s"] == pytest.approx(planned + LAYER_LOAD_S)
    # d waits for its requests to drain, then loads 4 layers; the switch waits for the last load.
    assert not d["serves_old_while_loading"] and d["load_start_s"] > planned
    assert d["ready_s"] == pytest.approx(d["load_start_s"] + 4 * LAYER_LOAD_S)
    assert t["switched_s"] == pytest.approx(max(a["ready_s"], d["ready_s"]))
    # c kept [4,8): every layer stayed covered, so recovery took nothing.
    assert t["recover_s"] == 0.0
    during = [w for w in r.watch if d["load_start_s"] <= w.time_s < t["switched_s"]]
    before = [w for w in r.watch if w.time_s < t["failure_s"]]
    assert during and before

    def kv(line, node: str) -> int:
        return next(real for name, real, _, _ in line.nodes if name == node)

    # The paused node holds no request while it loads (capacity lost); it did before the failure.
    assert all(kv(w, "d") == 0 for w in during) and any(kv(w, "d") > 0 for w in before)
    # a keeps serving its old range while it loads the new layer.
    loading_a = [w for w in r.watch if a["load_start_s"] <= w.time_s < a["ready_s"]]
    assert loading_a and any(kv(w, "a") > 0 for w in loading_a)
    # Both served after the switch, on the new ranges.
    assert r.nodes["d"]["layers"] == [4, 8] and r.nodes["a"]["layers"] == [0, 5]
    assert r.lost == 0 and r.active_at_end == 0 and r.kv_expected_left == 0 and r.kv_real_left == 0
    assert window_rate(r.decode_series, t["switched_s"] + 1, t["switched_s"] + 20) > 0


def test_same_seed_same_transition() -> None:
    cluster, plan = trio()
    kw = {"failures": (("a", 12.0),), "replan": True, "seed": 5}
    first = run(cluster, plan, after_losing_a, **kw).to_dict()
    second = run(cluster, plan, after_losing_a, **kw).to_dict()
    assert first == second and first["transitions"]


def test_detection_planning_and_bandwidth_come_from_the_config() -> None:
    cluster, plan = trio()
    r = run(
        cluster,
        plan,
        after_losing_a,
        failures=(("a", 12.0),),
        replan=True,
        replan_detect_s=5.0,
        replan_compute_s=0.5,
        load_bandwidth_bytes_per_s=2e9,
    )
    (t,) = r.transitions
    assert t["recover_s"] == pytest.approx(5.0 + 0.5 + 4 * LAYER_LOAD_S / 2, abs=1e-6)
    assert r.config["replan"] is True and r.config["load_bandwidth_bytes_per_s"] == 2e9


@pytest.mark.parametrize(
    ("field", "value"),
    [("replan_detect_s", -1.0), ("replan_compute_s", -0.1), ("load_bandwidth_bytes_per_s", 0.0)],
)
def test_bad_transition_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(InvalidInput) as err:
        SimConfig(**{field: value})  # type: ignore[arg-type]
    assert err.value.field == field


def test_plan_moves_counts_the_new_layers_and_whether_they_fit_beside() -> None:
    cluster, plan = quad()
    moves = plan_moves(plan, after_losing_b(plan, ("b",)), cluster, toy_model(), profiles(), lost=("b",))
    by = {m.node: m for m in moves}
    assert set(by) == {"a", "d"}  # c keeps its range; b is gone
    assert (by["a"].layers_to_load, by["a"].serves_old_while_loading) == (1, True)
    assert (by["d"].layers_to_load, by["d"].serves_old_while_loading) == (4, False)
    assert by["d"].load_s == pytest.approx(4 * LAYER_LOAD_S)
    assert by["d"].bytes_to_load == 4 * toy_model().bytes_per_layer


def test_covered_at_is_the_last_layer_to_get_a_holder() -> None:
    r = LayerRange
    assert covered_at(4, {"x": (r(0, 2), 1.0, None, math.inf), "y": (None, math.inf, r(2, 4), 7.5)}) == 7.5
    assert covered_at(4, {"x": (r(0, 2), 1.0, r(0, 4), 3.0)}) == 3.0
    assert math.isinf(covered_at(4, {"x": (r(0, 2), 0.0, None, math.inf)}))


def test_a_replanner_that_finds_nothing_leaves_the_fleet_routing_around_the_loss() -> None:
    def nothing(plan: Plan, lost: tuple[str, ...]) -> Plan:
        raise InfeasiblePlan("no placement fits the fleet that is left")

    cluster, plan = trio()
    r = run(cluster, plan, nothing, failures=(("a", 12.0),), replan=True)
    (t,) = r.transitions
    assert "no placement fits" in t["error"] and t["switched_s"] is None and t["recover_s"] is None
    assert r.lost == r.aborted > 0 and "placement_after" not in r.plan


def test_the_planners_incremental_replan_restores_service() -> None:
    cluster, plan = trio()
    replanner = planner_replanner(cluster, toy_model(), profiles(), max_iters=50)
    r = run(cluster, plan, replanner, failures=(("a", 12.0),), replan=True)
    (t,) = r.transitions
    assert t["recover_s"] is not None and t["recover_s"] >= 3.0 and t["layers_moved"] >= 4
    assert r.lost == 0 and window_rate(r.decode_series, t["switched_s"] + 1, r.end_s) > 0
