"""Routing over the live workers: the loaded plan while the fleet matches it, flows recomputed on the
reduced fleet after a loss, a clear no-route reason when layers are gone, and KV charges kept across."""

from __future__ import annotations

import time

import pytest

from planner import bundled
from planner.errors import NoRoute
from planner.routing import RouteRequest
from services.cli.run import plan_local
from services.coordinator.fleet import Fleet
from services.coordinator.registry import Registry, WorkerInfo


@pytest.fixture(scope="module")
def local_plan():  # type: ignore[no-untyped-def]
    return plan_local(method="separate")


def make(local_plan, **options) -> Fleet:  # type: ignore[no-untyped-def]
    plan, specs = local_plan
    model = bundled.model("smollm2-135m")
    registry = Registry(time.monotonic, expiry_s=60, num_layers=model.num_layers)
    for w in specs:
        registry.register(
            WorkerInfo(
                w.name, f"127.0.0.1:{1000 + len(w.name)}", plan.placement.ranges[w.name], w.gpu_type, 20_000
            )
        )
    return Fleet(
        registry,
        model,
        plan=plan,
        cluster=bundled.cluster("local-cpu"),
        profiles=bundled.profiles(model),
        **options,
    )


def test_uses_loaded_plan_then_replans_after_loss(local_plan) -> None:  # type: ignore[no-untyped-def]
    plan, _ = local_plan
    fleet = make(local_plan)
    assert fleet.plan is plan and fleet.routable
    chain = fleet.choose(RouteRequest("r1", 100, 50))
    assert chain is not None and chain[0].layers.start == 0 and chain[-1].layers.end == 30
    assert fleet.kv.total_used() > 0
    victim = next(n for n in plan.placement.ranges if n != chain[0].node and n not in {h.node for h in chain})
    fleet.registry.remove(victim)
    fleet.rebuild()
    assert fleet.plan.method == "live" and fleet.routable
    assert victim not in fleet.plan.placement.ranges
    assert fleet.kv.charged("r1")  # the request on a surviving chain keeps its charge
    fleet.release("r1")
    assert fleet.kv.total_used() == 0


def test_no_route_reason_names_missing_layers(local_plan) -> None:  # type: ignore[no-untyped-def]
    plan, _ = local_plan
    fleet = make(local_plan)
    tail = [n for n, r in plan.placement.ranges.items() if r.end == 30 and r.start > 0]
    full = [n for n, r in plan.placement.ranges.items() if r.end == 30 and r.start == 0]
    for name in tail + full:
        fleet.registry.remove(name)
    with pytest.raises(NoRoute) as err:
        fleet.choose(RouteRequest("r2", 10, 10))
    lo = min(plan.placement.ranges[n].start for n in tail) if tail else 0
    assert f"[{lo},30)" in str(err.value)
    assert err.value.uncovered == ((lo, 30),)


def test_kv_admission_refuses_when_full(local_plan) -> None:  # type: ignore[no-untyped-def]
    fleet = make(local_plan)
    admitted = 0
    for i in range(1000):
        if fleet.choose(RouteRequest(f"r{i}", 1000, 1000)) is None:
            break
        admitted += 1
    assert 0 < admitted < 1000  # Fail-KV eventually
    assert fleet.never_fits(RouteRequest("huge", 19_000, 5_000)) is not None
    assert fleet.never_fits(RouteRequest("ok", 100, 100)) is None


def test_dead_end_rule_reaches_the_router_and_survives_a_rebuild(local_plan) -> None:  # type: ignore[no-untyped-def]
    fleet = make(local_plan, dead_end="rollback")
    assert fleet.policy.dead_end == "rollback"  # type: ignore[attr-defined]
    first = next(iter(fleet.registry.names()))
    fleet.registry.remove(first)
    fleet.rebuild()
    assert fleet.policy.dead_end == "rollback"  # type: ignore[attr-defined]
    assert make(local_plan).policy.dead_end == "keep-entry"  # type: ignore[attr-defined]
