import random
from collections import Counter

import pytest

from planner.cluster import SINK, SOURCE
from planner.errors import UnknownName
from planner.placement import LayerRange
from planner.routing import KVBook, RouteRequest, StaticView, chain_nodes, make_policy, policy_names
from planner.routing.maxflow import Iwrr
from tests.planner.routing.fleets import diamond, line, two_lanes


def req(i: int, n: int = 100) -> RouteRequest:
    return RouteRequest(f"r{i}", n, 240)


def test_registry_lists_policies_and_rejects_unknown() -> None:
    assert set(policy_names()) == {"maxflow", "swarm", "random", "shortest-queue"}
    plan, cluster = diamond()
    with pytest.raises(UnknownName) as err:
        make_policy("fastest", plan, cluster)
    assert "maxflow" in str(err.value)


def test_chain_covers_all_layers_in_order() -> None:
    plan, cluster = diamond()
    chain = make_policy("maxflow", plan, cluster).choose(req(0), StaticView())
    assert chain is not None
    assert chain[0].node == "a" and chain[0].layers == LayerRange(0, 2)
    assert chain[1].layers == LayerRange(2, 4)


def test_iwrr_proportions_converge_to_flow_ratios() -> None:
    plan, cluster = diamond()
    policy = make_policy("maxflow", plan, cluster)
    counts = Counter()
    for i in range(400):
        chain = policy.choose(req(i), StaticView())
        assert chain is not None
        counts[chain[1].node] += 1
    assert counts["b"] / counts["c"] == pytest.approx(3.0, rel=0.02)


def test_iwrr_is_interleaved_not_bursty() -> None:
    table = Iwrr(("b", "c"), (75.0, 25.0))
    picks = [table.choose(1.0, {"b", "c"}) for _ in range(8)]
    # Within any 4 consecutive picks the 25% successor appears exactly once.
    assert all(picks[i : i + 4].count("c") == 1 for i in range(0, 8, 4))


def test_successor_under_five_percent_is_skipped() -> None:
    plan, cluster = diamond(extra=True)
    policy = make_policy("maxflow", plan, cluster)
    seen = {chain_nodes(policy.choose(req(i), StaticView()) or ())[1] for i in range(200)}
    assert "d" not in seen and seen == {"b", "c"}


def test_fail_length_masks_nodes_with_small_prompt_limit() -> None:
    plan, cluster = diamond()
    policy = make_policy("maxflow", plan, cluster, prompt_max_tokens={"b": 50})
    for i in range(10):
        chain = policy.choose(req(i, 80), StaticView())
        assert chain is not None and chain[1].node == "c"


def test_fail_kv_masks_full_nodes_and_a_dead_end_keeps_only_the_entry_charge() -> None:
    plan, cluster = diamond()
    ranges = plan.placement.ranges
    kv = KVBook({"a": 10_000, "b": 100, "c": 10_000}, high_water=0.9, output_ratio=1.0, ranges=ranges)
    policy = make_policy("maxflow", plan, cluster)  # the default dead-end rule: keep-entry
    chain = policy.choose(req(0), StaticView(kv=kv))
    assert chain is not None and chain[1].node == "c"
    tight = KVBook({"a": 10_000, "b": 100, "c": 100}, high_water=0.9, output_ratio=1.0, ranges=ranges)
    before = {at: list(t.loads) for at, t in policy.iwrr.items()}
    assert policy.choose(req(1), StaticView(kv=tight)) is None
    after = {at: list(t.loads) for at, t in policy.iwrr.items()}
    assert after[SOURCE] == [before[SOURCE][0] + 100 / 100.0]
    assert {at: v for at, v in after.items() if at != SOURCE} == {
        at: v for at, v in before.items() if at != SOURCE
    }


def _lane_one_full() -> KVBook:
    plan, _ = two_lanes()
    caps = {"a1": 10_000, "b1": 100, "a2": 10_000, "b2": 10_000}
    return KVBook(caps, high_water=0.9, output_ratio=1.0, ranges=plan.placement.ranges)


def test_paper_dead_end_gives_every_charge_back_so_a_full_lane_takes_every_offer() -> None:
    plan, cluster = two_lanes()
    policy = make_policy("maxflow", plan, cluster, dead_end="rollback")
    kv = _lane_one_full()
    before = [list(t.loads) for t in policy.iwrr.values()]
    # Lane 1's entry a1 is least-valued and admissible, b1 behind it is full: every request walks into it.
    assert [policy.choose(req(i), StaticView(kv=kv)) for i in range(5)] == [None] * 5
    assert [list(t.loads) for t in policy.iwrr.values()] == before


@pytest.mark.parametrize("rule", ["keep-entry", "keep-path"])
def test_kept_dead_end_charge_sends_the_next_request_into_the_other_lane(rule: str) -> None:
    plan, cluster = two_lanes()
    policy = make_policy("maxflow", plan, cluster, dead_end=rule)
    kv = _lane_one_full()
    assert policy.choose(req(0), StaticView(kv=kv)) is None
    # The source's charge for a1 stayed, so a2 is now the least-valued entry.
    assert list(policy.iwrr[SOURCE].loads) == [100 / 50.0, 0.0]
    chain = policy.choose(req(1), StaticView(kv=kv))
    assert chain is not None and chain_nodes(chain) == ("a2", "b2")


def test_keep_path_keeps_inner_charges_keep_entry_gives_them_back() -> None:
    plan, cluster = line()
    full = KVBook(
        {"a": 10_000, "b": 10_000, "c": 100}, high_water=0.9, output_ratio=1.0, ranges=plan.placement.ranges
    )
    loads = {}
    for rule in ("keep-entry", "keep-path"):
        policy = make_policy("maxflow", plan, cluster, dead_end=rule)
        assert policy.choose(req(0), StaticView(kv=full)) is None  # a, b taken; c is full
        loads[rule] = (list(policy.iwrr[SOURCE].loads), list(policy.iwrr["a"].loads))
    assert loads["keep-entry"] == ([100 / 50.0], [0.0])
    assert loads["keep-path"] == ([100 / 50.0], [100 / 50.0])


def test_unknown_dead_end_rule_is_named() -> None:
    plan, cluster = two_lanes()
    with pytest.raises(UnknownName, match="dead-end rule"):
        make_policy("maxflow", plan, cluster, dead_end="retry")


def test_dead_nodes_are_avoided() -> None:
    plan, cluster = diamond()
    policy = make_policy("maxflow", plan, cluster)
    for i in range(20):
        chain = policy.choose(req(i), StaticView(dead=frozenset({"b"})))
        assert chain is not None and "b" not in chain_nodes(chain)
    assert policy.choose(req(99), StaticView(dead=frozenset({"b", "c"}))) is None


def test_decode_accounting_shifts_iwrr() -> None:
    plan, cluster = diamond()
    policy = make_policy("maxflow", plan, cluster)
    first = policy.choose(req(0, 1), StaticView())
    assert first is not None and first[1].node == "b"
    # Many decodes along a->b make c the least-loaded successor for the next prompt.
    for _ in range(100):
        policy.on_decode(first)
    nxt = policy.choose(req(1, 1), StaticView())
    assert nxt is not None and nxt[1].node == "c"
    assert policy.iwrr[SOURCE].loads[0] > 0 and SINK in policy.iwrr["b"].names


def test_same_plan_same_choices() -> None:
    plan, cluster = diamond()
    a = make_policy("maxflow", plan, cluster, rng=random.Random(1))
    b = make_policy("maxflow", plan, cluster, rng=random.Random(2))
    assert [a.choose(req(i), StaticView()) for i in range(30)] == [
        b.choose(req(i), StaticView()) for i in range(30)
    ]


def test_prepared_decode_accounting_equals_on_decode() -> None:
    plan, cluster = diamond()
    a = make_policy("maxflow", plan, cluster)
    b = make_policy("maxflow", plan, cluster)
    chain = a.choose(req(0), StaticView())
    assert chain is not None and b.choose(req(0), StaticView()) == chain
    hook = b.decode_accounting(chain)
    assert hook is not None
    for _ in range(7):
        a.on_decode(chain)
        hook()
    assert [t.loads for t in a.iwrr.values()] == [t.loads for t in b.iwrr.values()]
    assert make_policy("random", plan, cluster).decode_accounting(chain) is None
