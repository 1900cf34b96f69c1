import random
from collections import Counter

from planner.routing import RouteRequest, StaticView, make_policy
from tests.planner.routing.fleets import diamond


def req(i: int) -> RouteRequest:
    return RouteRequest(f"r{i}", 100, 240)


def test_random_uses_every_successor_and_is_seeded() -> None:
    plan, cluster = diamond()
    runs = []
    for _ in range(2):
        policy = make_policy("random", plan, cluster, rng=random.Random(7))
        runs.append([policy.choose(req(i), StaticView()) for i in range(100)])
    assert runs[0] == runs[1]
    counts = Counter(c[1].node for c in runs[0] if c)
    assert set(counts) == {"b", "c"} and 30 < counts["b"] < 70


def test_shortest_queue_prefers_the_emptier_node() -> None:
    plan, cluster = diamond()
    policy = make_policy("shortest-queue", plan, cluster, rng=random.Random(0))
    for i in range(10):
        chain = policy.choose(req(i), StaticView(queues={"b": 5, "c": 1}))
        assert chain is not None and chain[1].node == "c"
    chain = policy.choose(req(11), StaticView(queues={"b": 0, "c": 3}))
    assert chain is not None and chain[1].node == "b"


def test_swarm_alternates_then_avoids_a_slow_successor() -> None:
    plan, cluster = diamond()
    policy = make_policy("swarm", plan, cluster)
    firsts = [policy.choose(req(i), StaticView()) for i in range(4)]
    assert [c[1].node for c in firsts if c] == ["b", "c", "b", "c"]
    policy.observe("a", "b", 5.0)
    policy.observe("a", "c", 0.01)
    picks = Counter(c[1].node for c in (policy.choose(req(i), StaticView()) for i in range(50)) if c)
    assert picks["c"] > 5 * picks["b"]


def test_baselines_ignore_kv_but_respect_dead_nodes() -> None:
    plan, cluster = diamond()
    for name in ("swarm", "random", "shortest-queue"):
        policy = make_policy(name, plan, cluster, rng=random.Random(0))
        for i in range(10):
            chain = policy.choose(req(i), StaticView(dead=frozenset({"c"})))
            assert chain is not None and chain[1].node == "b"
