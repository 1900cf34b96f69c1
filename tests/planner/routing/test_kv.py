import random

import pytest

from planner.errors import InvalidInput, NoRoute, UnknownName
from planner.placement import LayerRange
from planner.routing import OFFLINE_KV, ONLINE_KV, Hop, KVBook, RouteRequest, without_nodes
from tests.planner.routing.fleets import diamond


def chain2(node: str = "b") -> tuple[Hop, ...]:
    return (Hop("a", LayerRange(0, 2)), Hop(node, LayerRange(2, 4)))


def test_paper_defaults() -> None:
    book = KVBook({"a": 100})
    assert (
        (book.high_water, book.output_ratio) == (ONLINE_KV.high_water, ONLINE_KV.output_ratio) == (0.9, 0.6)
    )
    assert (OFFLINE_KV.high_water, OFFLINE_KV.output_ratio) == (0.85, 1.0)
    with pytest.raises(InvalidInput):
        KVBook({"a": 100}, high_water=1.5)


def test_expected_use_is_charged_per_hop_and_layer() -> None:
    book = KVBook({"a": 10_000, "b": 10_000}, output_ratio=0.5)
    r = RouteRequest("x", 100, 240)
    assert book.expected_tokens(r) == 220
    book.charge(chain2(), r)
    assert book.used("a") == book.used("b") == 440


def test_fail_kv_uses_high_water_and_the_whole_layer_count() -> None:
    ranges = {"a": LayerRange(0, 2), "b": LayerRange(2, 6)}
    book = KVBook({"a": 1000, "b": 1000}, high_water=0.5, output_ratio=0.0, ranges=ranges)
    r = RouteRequest("x", 100, 0)
    # b holds 4 layers: 400 entries fit under 500, a second request would not.
    assert book.node_fits("b", r, 2)
    book.charge((Hop("b", LayerRange(2, 6)),), r)
    assert not book.node_fits("b", RouteRequest("y", 100, 0), 1)
    assert book.fits(chain2("a")[:1], RouteRequest("y", 100, 0))


def test_release_returns_books_to_zero_and_never_negative() -> None:
    rng = random.Random(3)
    book = KVBook({"a": 1e9, "b": 1e9, "c": 1e9})
    live = []
    for i in range(300):
        r = RouteRequest(f"r{i}", rng.randint(1, 2000), rng.randint(0, 500))
        book.charge(chain2(rng.choice("bc")), r)
        live.append(r.request_id)
        if rng.random() < 0.4:
            book.release(live.pop(rng.randrange(len(live))))
        assert all(book.used(n) >= 0 for n in "abc")
    for rid in live:
        assert book.release(rid)
    assert not book.release(live[0])
    assert [book.used(n) for n in "abc"] == [0, 0, 0] and book.total_used() == 0


def test_correction_by_real_usage_tightens_admission() -> None:
    book = KVBook({"a": 1000}, high_water=0.9, output_ratio=0.0)
    r = RouteRequest("x", 100, 0)
    assert book.node_fits("a", r)
    book.correct("a", 850)
    assert not book.node_fits("a", r)
    book.forget_node("a")
    assert book.node_fits("a", r)
    with pytest.raises(UnknownName):
        book.correct("zz", 1)


def test_bottleneck_usage_is_the_fullest_layer() -> None:
    ranges = {"a": LayerRange(0, 2), "b": LayerRange(2, 4), "c": LayerRange(2, 4)}
    book = KVBook({"a": 1000, "b": 1000, "c": 1000}, output_ratio=0.0, ranges=ranges)
    book.charge((Hop("a", LayerRange(0, 2)),), RouteRequest("x", 200, 0))
    assert book.bottleneck_usage() == pytest.approx(0.4)
    book.charge((Hop("b", LayerRange(2, 4)),), RouteRequest("y", 400, 0))
    assert book.bottleneck_usage() == pytest.approx(0.4)


def test_bottleneck_usage_kept_as_running_sums_equals_a_fresh_scan() -> None:
    """The running sums the feeder reads agree with the holder-by-holder scan (given the same books as an
    explicit mapping) after every charge, release, re-charge and node removal of a random sequence."""
    rng = random.Random(11)
    ranges: dict[str, LayerRange] = {}
    for i in range(30):
        start = rng.randrange(0, 36)
        ranges[f"n{i}"] = LayerRange(start, min(40, start + rng.randint(1, 12)))
    caps = {n: rng.choice([0, 5_000, 80_000, 1_000_000]) for n in ranges}
    book = KVBook(caps, output_ratio=1.0, ranges=ranges)
    assert book.bottleneck_usage() == 0.0
    live: list[str] = []
    peak = 0.0
    for i in range(600):
        action = rng.random()
        if action < 0.55 or not live:
            nodes = rng.sample(sorted(book.nodes()), rng.randint(1, 4))
            chain = tuple(Hop(n, ranges[n]) for n in nodes)
            rid = rng.choice(live) if live and action < 0.1 else f"r{i}"  # sometimes a re-route
            book.charge(chain, RouteRequest(rid, rng.randint(1, 900), rng.randint(0, 300)))
            if rid not in live:
                live.append(rid)
        elif action < 0.98:
            book.release(live.pop(rng.randrange(len(live))))
        else:
            gone = rng.choice(sorted(book.nodes()))
            for rid in list(live):
                if any(node == gone for node, _ in book.charged(rid)):
                    book.release(rid)
                    live.remove(rid)
            book.remove_node(gone)
        fresh = book.bottleneck_usage({n: book.used(n) for n in book.nodes()})
        assert book.bottleneck_usage() == pytest.approx(fresh, rel=1e-12, abs=1e-15)
        peak = max(peak, fresh)
    assert peak > 0.5  # the books were really filled
    for rid in live:
        book.release(rid)
    assert book.bottleneck_usage() == 0.0


def test_without_nodes_drops_flows_and_detects_lost_layers() -> None:
    plan, _ = diamond()
    reduced = without_nodes(plan, ["b"])
    assert "b" not in reduced.placement.ranges and reduced.flow("a", "b") == 0.0
    assert reduced.flow("a", "c") == 25.0
    with pytest.raises(NoRoute):
        without_nodes(plan, ["b", "c"])


def test_replan_without_recomputes_flows_on_the_reduced_fleet() -> None:
    from planner import bundled
    from planner.flow import plan_from_placement
    from planner.routing import replan_without

    model = bundled.model("llama2-70b")
    cluster = bundled.cluster("cluster24")
    profiles = bundled.profiles(model)
    settings = bundled.helix_settings(model)
    placement = bundled.layout("petals", cluster, model)
    plan = plan_from_placement(cluster, model, profiles, placement, method="petals", settings=settings)
    # Lose one node that carries flow but whose layers are held elsewhere too.
    coverage = placement.layer_coverage()
    victim = next(
        n
        for n, r in placement.ranges.items()
        if plan.out_flows(n) and all(coverage[i] > 1 for i in range(r.start, r.end))
    )
    reduced = replan_without(plan, cluster, model, profiles, [victim], settings=settings)
    assert victim not in reduced.placement.ranges
    assert all(victim not in edge for edge in reduced.edge_flows)
    assert 0 < reduced.objective_tok_per_s <= plan.objective_tok_per_s
    assert victim in reduced.provenance["without_nodes"]
