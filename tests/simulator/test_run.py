from collections import Counter

import pytest

from planner.errors import InvalidInput, UnknownName
from simulator import coordinator as coord_mod
from simulator.run import SimConfig, simulate
from tests.simulator.fleets import chain, diamond, profiles, toy_model

POLICIES = ("maxflow", "swarm", "random", "shortest-queue")


def run(cluster, plan, **kw):
    return simulate(cluster, toy_model(), profiles(), plan, SimConfig(**kw))


# Swarm learns from every hop's time: only the Python engine runs it (tests/simulator/test_fast_engine.py).
@pytest.mark.parametrize(
    ("policy", "engine"),
    [(p, e) for p in POLICIES for e in ("python", "compiled") if (p, e) != ("swarm", "compiled")],
)
def test_every_admitted_query_finishes_exactly_once_and_books_return_to_zero(
    policy, engine, monkeypatch
) -> None:
    finished: list[int] = []
    # Both engines hand every finished query to _forget once (the compiled one frees the workers' KV itself).
    original = coord_mod.SimCoordinator._forget

    def spy(self, q):
        finished.append(q.qid)
        original(self, q)

    monkeypatch.setattr(coord_mod.SimCoordinator, "_forget", spy)
    cluster, plan = diamond()
    kv = {"a": 400_000, "b": 200_000, "c": 120_000}  # small caches: a few dozen queries in flight
    r = run(
        cluster,
        plan,
        policy=policy,
        duration_s=40,
        warmup_s=10,
        drain=True,
        initial_queries=30,
        kv_capacity=kv,
        engine=engine,
    )
    assert r.admitted > 30 and r.finished == r.admitted and r.active_at_end == 0
    counts = Counter(finished)
    assert len(counts) == r.admitted and set(counts.values()) == {1}
    assert r.kv_expected_left == 0 and r.kv_real_left == 0
    assert r.decode_tok_per_s > 0 and r.decode_latency_s.count > 0


def test_online_mode_drains_every_query() -> None:
    cluster, plan = diamond()
    r = run(cluster, plan, mode="online", duration_s=60, target_tok_per_s=300)
    assert r.admitted > 5 and r.finished == r.admitted and r.kv_expected_left == 0 and r.kv_real_left == 0


def test_same_seed_same_result_other_seed_differs() -> None:
    cluster, plan = diamond()
    a = run(cluster, plan, duration_s=30, warmup_s=10, seed=3).to_dict()
    b = run(cluster, plan, duration_s=30, warmup_s=10, seed=3).to_dict()
    c = run(cluster, plan, duration_s=30, warmup_s=10, seed=4).to_dict()
    assert a == b
    assert a["throughput_series"] != c["throughput_series"]


def test_maxflow_routes_in_flow_proportion() -> None:
    cluster, plan = diamond()
    r = run(cluster, plan, duration_s=60, warmup_s=10)
    # b carries 70% of the planned flow, c 30%: the node that got more prompt tokens is b.
    assert r.nodes["b"]["prompt_tokens"] > 1.5 * r.nodes["c"]["prompt_tokens"]


def test_link_bound_case_network_latency_dominates() -> None:
    fast_cluster, fast_plan = chain(latency_s=0.001)
    slow_cluster, slow_plan = chain(latency_s=0.5)
    fast = run(fast_cluster, fast_plan, duration_s=60, warmup_s=20, policy="random", initial_queries=10)
    slow = run(slow_cluster, slow_plan, duration_s=60, warmup_s=20, policy="random", initial_queries=10)
    hops = 5  # source -> 4 nodes -> sink
    # Each decode token crosses every link: at least hops x latency, and latency is most of it.
    assert slow.decode_latency_s.mean >= hops * 0.5
    assert slow.decode_latency_s.mean - hops * 0.5 < 0.5 * slow.decode_latency_s.mean
    # With 10 queries in flight, throughput is bounded by latency (Little's law), so it collapses.
    assert slow.decode_tok_per_s < fast.decode_tok_per_s / 3
    assert slow.decode_tok_per_s <= 10 / (hops * 0.5) * 1.01


def test_watch_lines_report_kv() -> None:
    cluster, plan = diamond()
    r = run(
        cluster,
        plan,
        duration_s=30,
        warmup_s=10,
        watch_interval_s=5,
        kv_capacity={"a": 400_000, "b": 200_000, "c": 120_000},
    )
    assert [w.time_s for w in r.watch] == [r.start_s + 5 * i for i in range(6)]
    assert any(w.active > 0 and w.expected_bottleneck > 0 for w in r.watch)
    assert "a:" in r.watch[-1].format()


def test_bad_config() -> None:
    with pytest.raises(InvalidInput):
        SimConfig(mode="sideways")
    with pytest.raises(UnknownName):
        SimConfig(policy="fastest")
    with pytest.raises(InvalidInput):
        SimConfig(duration_s=10, warmup_s=20).resolved()


def test_real_kv_correction_tightens_admission() -> None:
    cluster, plan = diamond()
    kv = {"a": 300_000, "b": 150_000, "c": 100_000}
    common = dict(duration_s=120, warmup_s=20, kv_output_ratio=0.0, kv_capacity=kv)
    loose = run(cluster, plan, **common)
    tight = run(cluster, plan, kv_correct_interval_s=0.5, **common)

    def peak(r):
        return max(v["kv_real_peak"] / v["kv_capacity"] for v in r.nodes.values())

    # Planning for no output at all overfills the caches; feeding real use back keeps them fuller-aware.
    assert loose.kv_overflows and peak(tight) < peak(loose)
    assert tight.rejected > loose.rejected


def test_maxflow_needs_edge_flows() -> None:
    from dataclasses import replace

    cluster, plan = diamond()
    with pytest.raises(InvalidInput, match="edge flows"):
        run(cluster, replace(plan, edge_flows={}), duration_s=10, warmup_s=1)
    r = run(
        cluster, replace(plan, edge_flows={}), policy="random", duration_s=10, warmup_s=1, initial_queries=5
    )
    assert r.admitted >= 5 and r.decode_tok_per_s > 0
