"""The fleet and model a plan embeds: exact round trips through JSON text, and errors naming the field."""

from __future__ import annotations

import json

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput
from planner.formats.fleet_json import cluster_from_plain, cluster_to_plain, model_from_plain, model_to_plain


def _through_json(value: object) -> object:
    return json.loads(json.dumps(value, allow_nan=False))


def _odd_cluster() -> Cluster:
    """Asymmetric, missing and oddly valued links in a non-canonical order; NICs and regions per node."""
    nodes = (
        Node("gpu-b", "A100", "eu", 3.3e9, 1 / 3),
        Node("a", "T4", "us"),
        Node("z9", "L4", "ap", 0.1 + 0.2, 7e10),
    )
    links = (
        Link("z9", SINK, 1.0e9, 0.1 + 0.2),
        Link("a", "gpu-b", 12_500_000.0, 0.050),
        Link(SOURCE, "a", 1e9 / 3, 1e-3),
        Link("gpu-b", "a", 9.99e8, 0.0),
        Link(SOURCE, "gpu-b", 2.0e9, 0.02),
        Link("gpu-b", "z9", 5.5e8, 1.7e-4),
        Link("a", SINK, 1.25e7, 0.123456789),
    )
    return Cluster(nodes, links, name="odd", coordinator_region="us", coordinator_nic_bytes_per_s=2.5e10)


@pytest.mark.parametrize("name", bundled.cluster_names())
def test_every_bundled_cluster_round_trips_exactly(name: str) -> None:
    cluster = bundled.cluster(name)
    back = cluster_from_plain(_through_json(cluster_to_plain(cluster)), name=name, source="t")
    assert back == cluster
    assert back.nodes == cluster.nodes and back.links == cluster.links


def test_an_irregular_cluster_round_trips_exactly() -> None:
    cluster = _odd_cluster()
    back = cluster_from_plain(_through_json(cluster_to_plain(cluster)), name="odd", source="t")
    assert back.nodes == cluster.nodes
    assert back.links == cluster.links  # same order, same floats bit for bit
    assert (back.name, back.coordinator_region, back.coordinator_nic_bytes_per_s) == ("odd", "us", 2.5e10)
    assert back.meta["format"] == "plan-embedded"


@pytest.mark.parametrize("name", ["llama2-70b", "llama1-30b", "smollm2-135m"])
def test_models_round_trip_with_their_overrides(name: str) -> None:
    spec = bundled.model(name)
    back = model_from_plain(_through_json(model_to_plain(spec)), name=name, source="t")
    assert back == spec
    assert back.bytes_per_layer == spec.bytes_per_layer


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (
            lambda d: d["nodes"][1].update({"nic_in_bytes_per_s": 0}),
            "cluster.nodes.1.nic_in_bytes_per_s",
            "greater than 0",
        ),
        (
            lambda d: d["links"][0].update({"latency_s": -1}),
            "cluster.links.0.latency_s",
            "greater than or equal",
        ),
        (lambda d: d["links"][2].update({"bandwith": 1}), "cluster.links.2.bandwith", "Extra inputs"),
        (lambda d: d["nodes"].append(dict(d["nodes"][0])), "cluster", "duplicate node 'gpu-b'"),
        (lambda d: d["links"].append({**d["links"][0], "dst": "ghost"}), "cluster", "missing node 'ghost'"),
        (lambda d: d["links"][1].update({"dst": "a"}), "cluster.links.1", "cannot link to itself"),
        (lambda d: d.update({"nodes": []}), "cluster.nodes", "at least 1"),
    ],
    ids=["zero-nic", "negative-latency", "typo", "duplicate-node", "dangling-link", "self-link", "no-nodes"],
)
def test_a_bad_cluster_names_the_field(mutate: object, field: str, expected: str) -> None:
    data = cluster_to_plain(_odd_cluster())
    mutate(data)  # type: ignore[operator]
    with pytest.raises(InvalidInput) as err:
        cluster_from_plain(data, name="odd", source="plan.json")
    assert (err.value.source, err.value.field) == ("plan.json", field)
    assert expected in str(err.value)


def test_a_bad_model_names_the_field() -> None:
    data = model_to_plain(bundled.model("smollm2-135m"))
    with pytest.raises(InvalidInput) as err:
        model_from_plain({**data, "hidden_size": "wide"}, name="m", source="plan.json")
    assert err.value.field == "model.hidden_size"
    with pytest.raises(InvalidInput) as err:
        model_from_plain({**data, "num_kv_heads": 7}, name="m", source="plan.json")
    assert err.value.field == "model.num_heads"
    with pytest.raises(InvalidInput, match="expected an object"):
        model_from_plain([1], name="m", source="plan.json")
