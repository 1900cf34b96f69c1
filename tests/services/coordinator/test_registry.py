"""The registry's fleet events (what the rollout controller watches): a first registration is a join, a
removal or a heartbeat expiry is a loss carrying the worker's last state; a re-registration is neither."""

from __future__ import annotations

from planner.placement import LayerRange
from services.coordinator.registry import JOINED, LOST, IdleWorker, Registry, WorkerInfo, WorkerState


def test_joins_and_losses_reach_watchers_with_the_last_state() -> None:
    now = [0.0]
    registry = Registry(lambda: now[0], expiry_s=2.0, num_layers=4)
    seen: list[tuple[str, str, float]] = []

    def watch(kind: str, state: WorkerState) -> None:
        seen.append((kind, state.info.name, state.last_seen_s))

    registry.watch(watch)
    a = WorkerInfo("a", "addr-a", LayerRange(0, 4), "cpu", 64)
    registry.register(a)
    registry.register(WorkerInfo("b", "addr-b", LayerRange(0, 2), "cpu", 64))
    now[0] = 1.0
    registry.register(a)  # a refresh, not a join
    registry.register(WorkerInfo("a", "addr-a", LayerRange(0, 3), "cpu", 64))  # a new range, not a join
    now[0] = 1.5
    assert registry.heartbeat("b", kv_used_tokens=0)
    assert registry.remove("a") and not registry.remove("a")
    now[0] = 5.0
    assert registry.expire() == ["b"]
    assert seen == [(JOINED, "a", 0.0), (JOINED, "b", 0.0), (LOST, "a", 1.0), (LOST, "b", 1.5)]


def test_a_worker_holding_no_layers_is_idle_not_routed_and_expires_like_the_others() -> None:
    now = [0.0]
    registry = Registry(lambda: now[0], expiry_s=2.0, num_layers=4)
    seen: list[str] = []
    registry.watch(lambda kind, state: seen.append(kind))
    assert registry.register(IdleWorker("s", "addr-s", "a100"))
    assert registry.idle() == {"s": IdleWorker("s", "addr-s", "a100")} and registry.alive() == {}
    assert registry.uncovered() == [(0, 4)]  # an idle worker covers nothing
    now[0] = 1.5
    assert registry.heartbeat("s", kv_used_tokens=0)  # known: no re-registration loop
    registry.register(WorkerInfo("s", "addr-s", LayerRange(0, 4), "a100", 64))  # a Load gave it layers
    assert registry.idle() == {} and registry.get("s") is not None
    assert registry.register(IdleWorker("s", "addr-s", "a100"))  # unloaded: idle again, not lost
    assert registry.get("s") is None and "s" in registry.idle()
    now[0] = 4.0
    registry.expire()
    assert registry.idle() == {} and not registry.heartbeat("s", kv_used_tokens=0)
    assert seen == [JOINED]
