"""planner.mincut: toy fleets whose bottleneck is known (a GPU, a link, parallel GPUs), and max-flow = min-cut
on the paper's fleet."""

from __future__ import annotations

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput
from planner.flow import build_flow_graph, plan_from_placement
from planner.mincut import min_cut, plan_min_cut
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from planner.throughput import ThroughputTable, typical_throughput

MODEL = ModelSpec(
    "toy", num_layers=4, hidden_size=64, num_heads=4, num_kv_heads=4, intermediate_size=128, vocab_size=100
)
# tokens/s a "G" GPU runs holding 1..4 layers.
TABLE = ThroughputTable("toy", 4, {"G": (100.0, 50.0, 30.0, 20.0)})
FAST = 1e12  # bytes/s: links that never bind


def _cluster(names: tuple[str, ...], links: tuple[tuple[str, str, float], ...]) -> Cluster:
    return Cluster(
        tuple(Node(n, "G", nic_in_bytes_per_s=FAST, nic_out_bytes_per_s=FAST) for n in names),
        tuple(Link(u, v, bw, 0.001) for u, v, bw in links),
        name="toy",
        coordinator_nic_bytes_per_s=FAST,
    )


def _cut(cluster: Cluster, ranges: dict[str, tuple[int, int]]):
    placement = Placement(4, {n: LayerRange(a, b) for n, (a, b) in ranges.items()})
    g, _ = build_flow_graph(cluster, MODEL, placement, TABLE, partial=False)
    return min_cut(g)


def test_two_stages_in_series_cut_at_the_first_full_gpu() -> None:
    cluster = _cluster(("a", "b"), ((SOURCE, "a", FAST), ("a", "b", FAST), ("b", SINK, FAST)))
    cut = _cut(cluster, {"a": (0, 2), "b": (2, 4)})
    assert cut.value_tok_per_s == pytest.approx(50.0)
    assert [e.label for e in cut.edges] == ["compute:a"]
    assert cut.capacity_tok_per_s == pytest.approx(cut.value_tok_per_s)
    assert cut.nodes("compute") == ("a",)


def test_a_slow_link_is_the_cut() -> None:
    per_token = MODEL.activation_bytes_per_token + MODEL.token_bytes
    cluster = _cluster(("a", "b"), ((SOURCE, "a", FAST), ("a", "b", 10.0 * per_token), ("b", SINK, FAST)))
    cut = _cut(cluster, {"a": (0, 2), "b": (2, 4)})
    assert cut.value_tok_per_s == pytest.approx(10.0)
    assert [e.label for e in cut.edges] == ["link:a->b"]
    assert cut.links() == (("a", "b"),)
    assert cut.edges[0].flow_tok_per_s == pytest.approx(cut.edges[0].capacity_tok_per_s)


def test_parallel_replicas_are_cut_together() -> None:
    links = ((SOURCE, "a", FAST), (SOURCE, "b", FAST), ("a", SINK, FAST), ("b", SINK, FAST))
    cut = _cut(_cluster(("a", "b"), links), {"a": (0, 4), "b": (0, 4)})
    assert cut.value_tok_per_s == pytest.approx(40.0)
    assert sorted(cut.nodes("compute")) == ["a", "b"]
    assert cut.capacity_tok_per_s == pytest.approx(40.0)


def test_no_route_has_an_empty_cut() -> None:
    cluster = _cluster(("a", "b"), ((SOURCE, "a", FAST), ("b", SINK, FAST)))
    cut = _cut(cluster, {"a": (0, 2), "b": (2, 4)})
    assert cut.value_tok_per_s == 0.0 and cut.edges == ()


@pytest.mark.parametrize("layout", ["petals", "swarm", "ilp"])
def test_paper_layouts_cut_capacity_equals_the_plan_objective(layout: str) -> None:
    cluster, model = bundled.cluster("cluster24"), bundled.model("llama2-70b")
    profiles = bundled.profiles(model)
    table = typical_throughput(cluster, model, profiles, bundled.helix_settings(model))
    plan = plan_from_placement(
        cluster,
        model,
        profiles,
        bundled.layout(layout, "cluster24", "llama2-70b"),
        method=layout,
        throughput=table,
    )
    cut = plan_min_cut(plan, table)
    assert cut.value_tok_per_s == pytest.approx(plan.objective_tok_per_s, rel=1e-9)
    assert cut.capacity_tok_per_s == pytest.approx(plan.objective_tok_per_s, rel=1e-6)
    assert {e.label.split(":")[0] for e in cut.edges} <= {
        "compute",
        "nic_in",
        "nic_out",
        "link",
        "coordinator",
    }


def test_a_plan_without_its_fleet_is_refused() -> None:
    plan = Plan("toy", "toy", "user", Placement(4, {"a": LayerRange(0, 4)}), model=MODEL)
    with pytest.raises(InvalidInput, match="embeds no cluster"):
        plan_min_cut(plan, TABLE)
