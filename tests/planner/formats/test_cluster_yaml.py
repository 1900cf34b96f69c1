"""Cluster YAML: defaults by region class, overrides, exact round trips, and named errors."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import yaml

from planner import bundled
from planner.cluster import SINK, SOURCE, Link
from planner.errors import InvalidInput, UnknownName
from planner.formats.cluster_yaml import (
    cluster_from_dict,
    cluster_to_yaml,
    load_cluster_yaml,
    save_cluster_yaml,
)
from planner.generate import multi_region, single_region

EXAMPLE = """\
name: demo
coordinator: {region: us}
node_groups:
  - {gpu_type: A100, count: 2, region: us}
  - {gpu_type: T4, count: 2, region: eu, name_prefix: t4-}
  - {gpu_type: L4, count: 1, region: eu, names: [edge]}
links:
  intra_region: {bandwidth_bytes_per_s: 1.0e9, latency_ms: 1}
  inter_region: {bandwidth_bytes_per_s: 1.25e7, latency_ms: 50}
  regions: {eu: {bandwidth_bytes_per_s: 2.0e9, latency_s: 0.0005}}
  overrides:
    - {nodes: [n0, t4-1], bandwidth_bytes_per_s: 5.0e8, latency_ms: 2}
    - {nodes: [source, edge], absent: true}
    - {nodes: [t4-0, n1], directed: true, bandwidth_bytes_per_s: 3.0e7, latency_ms: 40}
"""


def _load(tmp_path: Path, text: str, **kw: object) -> object:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return load_cluster_yaml(f, **kw)  # type: ignore[arg-type]


def test_example_builds_the_fleet(tmp_path: Path) -> None:
    c = _load(tmp_path, EXAMPLE)
    assert c.name == "demo"  # type: ignore[attr-defined]
    assert c.node_names == ("n0", "n1", "t4-0", "t4-1", "edge")  # type: ignore[attr-defined]
    link = c.link  # type: ignore[attr-defined]
    assert link("n0", "n1").bandwidth_bytes_per_s == 1e9  # inside us
    assert link("t4-0", "edge").bandwidth_bytes_per_s == 2e9 and link("t4-0", "edge").latency_s == 0.0005
    assert link("n1", "t4-0").latency_s == pytest.approx(0.05)  # between regions
    assert link("n0", "t4-1").bandwidth_bytes_per_s == link("t4-1", "n0").bandwidth_bytes_per_s == 5e8
    assert link(SOURCE, "edge") is None and link("edge", SINK) is not None
    assert (
        link("t4-0", "n1").bandwidth_bytes_per_s == 3e7 and link("n1", "t4-0").bandwidth_bytes_per_s == 1.25e7
    )
    assert link(SOURCE, "n0").bandwidth_bytes_per_s == 1e9  # coordinator is in us
    assert link(SOURCE, "t4-0").bandwidth_bytes_per_s == 1.25e7


def test_yaml_round_trip(tmp_path: Path) -> None:
    c = _load(tmp_path, EXAMPLE)
    save_cluster_yaml(c, tmp_path / "again.yaml")  # type: ignore[arg-type]
    assert load_cluster_yaml(tmp_path / "again.yaml") == c


@pytest.mark.parametrize("name", ["cluster24", "3cluster24", "cluster10", "cluster24-a100"])
def test_ini_to_yaml_round_trip(name: str, tmp_path: Path) -> None:
    c = bundled.cluster(name)
    save_cluster_yaml(c, tmp_path / f"{name}.yaml")
    back = load_cluster_yaml(tmp_path / f"{name}.yaml")
    assert back == c
    assert [lk for lk in back.links] == [lk for lk in c.links]  # order too: the flow graph is built in it


def test_single_region_yaml_is_short() -> None:
    text = cluster_to_yaml(bundled.cluster("cluster24"))
    data = yaml.safe_load(text)
    assert "overrides" not in data["links"]
    assert data["links"]["intra_region"] == {"bandwidth_bytes_per_s": 1000000000, "latency_ms": 1}
    assert sum(g["count"] for g in data["node_groups"]) == 24


def test_missing_links_and_asymmetry_round_trip() -> None:
    c = bundled.cluster("cluster10")
    links = tuple(
        Link(lk.src, lk.dst, 3e8, lk.latency_s) if (lk.src, lk.dst) == ("n1", "n2") else lk
        for lk in c.links
        if (lk.src, lk.dst) not in {("n3", "n4"), ("n4", "n3"), (SOURCE, "n0")}
    )
    changed = dataclasses.replace(c, links=links)
    back = cluster_from_dict(yaml.safe_load(cluster_to_yaml(changed)))
    assert back == changed


def test_generated_fleets_round_trip() -> None:
    for c in (
        single_region(
            {"A100": 2, "T4": 5}, random.Random(9), avg_degree=3, coordinator_degree=3, paper_rounding=False
        ),
        multi_region(
            {"x": {"L4": 3}, "y": {"T4": 2}, "z": {"A100": 1}}, random.Random(2), paper_rounding=False
        ),
    ):
        assert cluster_from_dict(yaml.safe_load(cluster_to_yaml(c))) == c


# ------------------------------------------------------------------------------------ malformed

BASE = """\
node_groups:
  - {gpu_type: A100, count: 2, region: us}
  - {gpu_type: T4, count: 1, region: eu}
links:
  intra_region: {bandwidth_bytes_per_s: 1.0e9, latency_ms: 1}
  inter_region: {bandwidth_bytes_per_s: 1.0e7, latency_ms: 50}
"""


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("", None, "empty"),
        ("node_groups: [\n  {gpu_type: A100, count: 2\nlinks: {}\n", "line", "not valid YAML"),
        ("- 1\n- 2\n", None, "mapping at the top level"),
        (BASE.replace("count: 2", "count: 0"), "node_groups.0.count", "greater than or equal to 1"),
        (BASE.replace("count: 2", "count: two"), "node_groups.0.count", "integer"),
        (BASE.replace("1.0e9", "-1.0e9"), "links.intra_region.bandwidth_bytes_per_s", "greater than 0"),
        (BASE.replace("gpu_type: T4", "gpu_type: H900"), "node_groups.1.gpu_type", "unknown GPU type 'H900'"),
        (BASE.replace(", count: 2", ""), "node_groups.0.count", "Field required"),
        (BASE.split("links:")[0], "links", "Field required"),
        (
            BASE.replace("latency_ms: 1}", "latency_ms: 1, latency_s: 0.001}"),
            "links.intra_region",
            "exactly one of latency_ms or latency_s",
        ),
        (
            BASE.replace("count: 2, region: us}", "count: 2, region: us, names: [a, a]}"),
            "node_groups.0",
            "duplicate node 'a'",
        ),
        (
            BASE.replace("count: 2, region: us}", "count: 2, region: us, names: [a]}"),
            "node_groups.0",
            "names lists 1 nodes",
        ),
        (
            BASE + "  overrides: [{nodes: [n0, n9], absent: true}]\n",
            "links.overrides.0.nodes",
            "unknown node 'n9'",
        ),
        (
            BASE + "  region_pairs: [{regions: [us, mars], bandwidth_bytes_per_s: 1, latency_ms: 1}]\n",
            "links.region_pairs.0.regions",
            "unknown region 'mars'",
        ),
        (
            BASE + "  regions: {moon: {bandwidth_bytes_per_s: 1, latency_ms: 1}}\n",
            "links.regions.moon",
            "unknown region 'moon'",
        ),
        (
            BASE.replace("  inter_region: {bandwidth_bytes_per_s: 1.0e7, latency_ms: 50}\n", ""),
            "links",
            "no link class",
        ),
        (BASE.replace("node_groups", "node_group"), "node_groups", "node_group: Extra inputs"),
        (BASE + "  overrides: [{nodes: [n0, n1]}]\n", "links.overrides.0", "bandwidth_bytes_per_s"),
        (
            BASE + "  overrides: [{nodes: [n0, n1], absent: true}, {nodes: [n1, n0], absent: true}]\n",
            "links.overrides.1.nodes",
            "overridden twice",
        ),
        (BASE.replace("region: eu", "region: 'e u'"), "node_groups.1.region", "pattern"),
    ],
    ids=[
        "empty",
        "bad-syntax",
        "not-mapping",
        "zero-count",
        "non-numeric-count",
        "negative-bandwidth",
        "unknown-gpu",
        "missing-count",
        "missing-links",
        "two-latencies",
        "duplicate-node",
        "names-count",
        "override-missing-node",
        "unknown-region-pair",
        "unknown-region",
        "missing-class",
        "typo-key",
        "override-without-values",
        "override-twice",
        "bad-region-name",
    ],
)
def test_malformed_yaml(tmp_path: Path, text: str, field: str | None, expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_cluster_yaml(f, known_gpu_types=bundled.known_gpu_types())
    assert err.value.source == str(f)
    assert str(f) in str(err.value)
    assert expected in str(err.value)
    if field == "line":
        assert (err.value.field or "").startswith("line ")
    elif field is not None:
        assert err.value.field == field


def test_unknown_gpu_lists_known_types(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BASE.replace("gpu_type: T4", "gpu_type: H900"))
    with pytest.raises(UnknownName) as err:
        load_cluster_yaml(f, known_gpu_types=("A100", "T4"))
    assert err.value.valid == ("A100", "T4")
    # without a list of known types any well-formed name is accepted
    assert load_cluster_yaml(f).gpu_counts() == {"A100": 2, "H900": 1}


@pytest.mark.parametrize("seed", range(6))
def test_random_fleets_round_trip(seed: int) -> None:
    """Random regions, names, missing and one-way links: YAML → Cluster gives back the same Cluster."""
    rng = random.Random(seed)
    regions = {
        f"r{k}": {rng.choice(["A100", "L4", "T4"]): rng.randint(1, 3)} for k in range(rng.randint(1, 3))
    }
    base = multi_region(
        regions, rng, coordinator_region=rng.choice([None, "r0"]), paper_rounding=rng.random() < 0.5
    )
    renamed = {n.name: (f"w{i}" if rng.random() < 0.3 else n.name) for i, n in enumerate(base.nodes)}
    nodes = tuple(dataclasses.replace(n, name=renamed[n.name]) for n in base.nodes)
    links = []
    for lk in base.links:
        src, dst = renamed.get(lk.src, lk.src), renamed.get(lk.dst, lk.dst)
        roll = rng.random()
        if roll < 0.1:
            continue  # missing link
        if roll < 0.2:
            lk = Link(src, dst, lk.bandwidth_bytes_per_s * 2, lk.latency_s + 0.003)  # one-way change
        links.append(Link(src, dst, lk.bandwidth_bytes_per_s, lk.latency_s))
    fleet = dataclasses.replace(base, nodes=nodes, links=tuple(links))
    assert cluster_from_dict(yaml.safe_load(cluster_to_yaml(fleet))) == fleet
