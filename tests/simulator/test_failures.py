from collections import Counter

import pytest

from planner.errors import UnknownName
from simulator import coordinator as coord_mod
from simulator.run import SimConfig, simulate
from tests.simulator.fleets import diamond, profiles, toy_model

KV = {"a": 400_000, "b": 200_000, "c": 120_000}


@pytest.mark.parametrize("policy", ["maxflow", "random"])
@pytest.mark.parametrize("depth", [None, 2])
def test_a_lost_worker_aborts_and_reruns_its_queries(policy, depth, monkeypatch) -> None:
    """Also with BRL's chain steps (`depth`): a dropped query frees its step's slot, nothing hangs."""
    finished: list[int] = []
    original = coord_mod.SimCoordinator._finish

    def spy(self, q):
        finished.append(q.qid)
        original(self, q)

    monkeypatch.setattr(coord_mod.SimCoordinator, "_finish", spy)
    cluster, plan = diamond()
    cfg = SimConfig(
        policy=policy,
        duration_s=60,
        warmup_s=10,
        drain=True,
        initial_queries=30,
        kv_capacity=KV,
        failures=(("b", 15.0),),
        pipeline_depth=depth,
    )
    r = simulate(cluster, toy_model(), profiles(), plan, cfg)
    assert r.failed_nodes == ("b",) and r.aborted > 0
    # Nothing is lost while c can still serve: each aborted query was re-run as a new one (at once, or
    # from the backlog when KV freed up).
    assert r.lost == 0 and r.rerun == r.aborted
    assert r.finished + r.aborted == r.admitted and r.active_at_end == 0
    assert set(Counter(finished).values()) == {1}
    # Books return to zero on the surviving nodes, and the dead node's book is gone.
    assert r.kv_expected_left == 0 and r.kv_real_left == 0
    # After the failure the survivor c does the work b did.
    assert r.nodes["c"]["decode_seqs"] > r.nodes["b"]["decode_seqs"]


def test_losing_the_only_holder_of_some_layers_loses_queries_offline() -> None:
    cluster, plan = diamond()
    cfg = SimConfig(
        duration_s=30, warmup_s=5, drain=True, initial_queries=10, kv_capacity=KV, failures=(("a", 12.0),)
    )
    r = simulate(cluster, toy_model(), profiles(), plan, cfg)
    assert r.aborted > 0 and r.lost == r.aborted and r.rerun == 0
    assert r.active_at_end == 0 and r.kv_real_left == 0


def test_unknown_failure_node() -> None:
    cluster, plan = diamond()
    with pytest.raises(UnknownName):
        simulate(cluster, toy_model(), profiles(), plan, SimConfig(duration_s=10, failures=(("zz", 1.0),)))


def test_an_overloaded_online_run_counts_only_aborted_queries_as_lost() -> None:
    """Online, the backlog also holds plain arrivals waiting for KV: they are neither re-runs nor losses.
    (This once reported a negative re-run count and every waiting arrival as lost.)"""
    cluster, plan = diamond()
    cfg = SimConfig(
        mode="online",
        duration_s=60,
        warmup_s=5,
        target_tok_per_s=50_000,
        max_drain_s=5,
        kv_capacity=KV,
        failures=(("b", 20.0),),
    )
    r = simulate(cluster, toy_model(), profiles(), plan, cfg)
    assert r.aborted > 0
    assert 0 <= r.lost <= r.aborted and r.rerun >= 0
    assert r.rerun + r.lost == r.aborted
