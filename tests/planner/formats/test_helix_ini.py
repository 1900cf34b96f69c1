"""Helix .ini files: the paper's clusters, placements and machine profile load; writers round-trip;
malformed files fail naming the file, the section/key and what was expected."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE
from planner.errors import InvalidInput
from planner.formats.helix_ini import (
    load_cluster_ini,
    load_machine_profile_ini,
    load_solution_ini,
    save_cluster_ini,
    save_solution_ini,
)
from planner.generate import multi_region, single_region

CLUSTERS = bundled.CLUSTERS_DIR

TINY = """\
[NodeNames]
total_compute_nodes=2

[SourceNode]
connected_nodes=[0, 1]

[SinkNode]
connected_nodes=[0, 1]

[ComputeNode-0]
type=L4
connected_nodes=['source', 1, 'sink']

[ComputeNode-1]
type=T4
connected_nodes=['source', 0, 'sink']

[Link-source-0]
bandwidth=1000 * mbps
latency=1 * MilliSec

[Link-source-1]
bandwidth=1000 * mbps
latency=1 * MilliSec

[Link-0-sink]
bandwidth=1000 * mbps
latency=1 * MilliSec

[Link-1-sink]
bandwidth=1000 * mbps
latency=1 * MilliSec

[Link-0-1]
bandwidth=500 * mbps
latency=2 * MilliSec
"""


def test_cluster24_as_the_paper_describes() -> None:
    c = load_cluster_ini(CLUSTERS / "cluster24.ini")
    assert c.name == "cluster24"
    assert c.node_names == tuple(f"n{i}" for i in range(24))
    assert c.gpu_counts() == {"A100": 4, "L4": 8, "T4": 12}
    assert [c.node(f"n{i}").gpu_type for i in (0, 1, 6, 9)] == ["L4", "T4", "A100", "A100"]
    # complete graph: 24*23 directed compute links, 24 out of the source, 24 into the sink
    assert len(c.links) == 24 * 23 + 48
    link = c.link("n3", "n17")
    assert link is not None and link.bandwidth_bytes_per_s == 1e9 and link.latency_s == pytest.approx(1e-3)
    assert c.link(SOURCE, "n5") is not None and c.link("n5", SINK) is not None


def test_three_regions_from_the_generator_comment() -> None:
    c = load_cluster_ini(CLUSTERS / "3cluster24.ini")
    assert c.regions() == ("region-0", "region-1", "region-2")
    assert {c.node(f"n{i}").region for i in range(4)} == {"region-0"}
    assert c.coordinator_region == "coordinator"
    inside, across = c.link("n4", "n5"), c.link("n0", "n4")
    assert inside is not None and across is not None
    assert inside.bandwidth_bytes_per_s > 1e9 > 1e8 > across.bandwidth_bytes_per_s


def test_undirected_link_becomes_two_full_capacity_links(tmp_path: Path) -> None:
    f = tmp_path / "tiny.ini"
    f.write_text(TINY)
    c = load_cluster_ini(f)
    forward, back = c.link("n0", "n1"), c.link("n1", "n0")
    assert forward is not None and back is not None
    assert forward.bandwidth_bytes_per_s == back.bandwidth_bytes_per_s == 5e8
    assert c.link(SINK, "n0") is None and c.link("n0", SOURCE) is None


@pytest.mark.parametrize("name", ["cluster24", "3cluster24", "cluster10", "cluster24-t4"])
def test_cluster_ini_round_trip(name: str, tmp_path: Path) -> None:
    c = bundled.cluster(name)
    save_cluster_ini(c, tmp_path / f"{name}.ini")
    assert load_cluster_ini(tmp_path / f"{name}.ini") == c


def test_generated_clusters_round_trip_through_ini(tmp_path: Path) -> None:
    for c in (
        single_region({"L4": 3, "T4": 4}, random.Random(3), avg_degree=2, coordinator_degree=4),
        multi_region({"a": {"A100": 2}, "b": {"T4": 3}}, random.Random(4)),
    ):
        save_cluster_ini(c, tmp_path / "g.ini")
        assert load_cluster_ini(tmp_path / "g.ini", name=c.name) == c


def test_solution_ini_round_trip(tmp_path: Path) -> None:
    c = bundled.cluster("cluster24")
    original = load_solution_ini(bundled.LAYOUTS_DIR / "llama2-70b" / "cluster24" / "petals_sol.ini", c, 80)
    assert len(original) == 24
    save_solution_ini(original, c, tmp_path / "x_sol.ini")
    assert load_solution_ini(tmp_path / "x_sol.ini", c, 80) == original
    homogeneous = bundled.layout("homogeneous", c, "llama2-70b")
    save_solution_ini(homogeneous, c, tmp_path / "h_sol.ini")
    assert load_solution_ini(tmp_path / "h_sol.ini", c, 80) == homogeneous


def test_paper_ilp_layout_as_published() -> None:
    # The bundled file is byte-identical to the artifact's ilp_sol.ini (tests/test_reference_data.py).
    c = bundled.cluster("cluster24")
    ilp = load_solution_ini(bundled.LAYOUTS_DIR / "llama2-70b" / "cluster24" / "ilp_sol.ini", c, 80)
    assert ilp == bundled.layout("ilp", "cluster24", "llama2-70b")
    n15 = ilp.get("n15")
    assert n15 is not None and (n15.start, n15.end) == (0, 3)  # compute_node_17=[0, 1, 2]


def test_machine_profile() -> None:
    machines = load_machine_profile_ini(bundled.MACHINE_PROFILE)
    assert machines["T4x4"].vram_bytes == 64e9
    assert machines["A100"].nic_in_bytes_per_s == 10e9
    assert machines["SourceNode"].nic_in_bytes_per_s is None
    assert machines["SinkNode"].nic_in_bytes_per_s == 10e9


# ------------------------------------------------------------------------------------ malformed


def _cluster_case(tmp_path: Path, text: str) -> InvalidInput:
    f = tmp_path / "bad.ini"
    f.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_cluster_ini(f)
    assert err.value.source == str(f)
    assert str(f) in str(err.value)
    return err.value


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("", None, "empty"),
        ("total_compute_nodes=2\n" + TINY, None, "Section"),
        (TINY.replace("type=T4\n", ""), "[ComputeNode-1] type", "missing key"),
        (TINY.replace("bandwidth=500 * mbps", "bandwidth=-500 * mbps"), "[Link-0-1] bandwidth", "> 0"),
        (
            TINY.replace("bandwidth=500 * mbps", "bandwidth=fast * mbps"),
            "[Link-0-1] bandwidth",
            "unsupported",
        ),
        (TINY.replace("latency=2 * MilliSec", "latency='soon'"), "[Link-0-1] latency", "expected a number"),
        (TINY + "\n[Link-0-7]\nbandwidth=1 * mbps\nlatency=1 * MilliSec\n", "[Link-0-7]", "nodes 0..1"),
        (TINY + "\n[ComputeNode-1]\ntype=L4\n", None, "duplicate section"),
        (TINY.replace("[Link-0-1]", "[Link-zero-1]"), "[Link-zero-1]", "bad link section"),
        (
            TINY.replace("total_compute_nodes=2", "total_compute_nodes=0"),
            "[NodeNames] total_compute_nodes",
            "positive integer",
        ),
        (
            TINY.replace("[Link-0-1]\nbandwidth=500 * mbps\nlatency=2 * MilliSec\n", ""),
            "[ComputeNode-0] connected_nodes",
            "no [Link-",
        ),
        (TINY.replace("type=L4", "type=L4 GPU"), "[ComputeNode-0] type", "GPU type"),
    ],
    ids=[
        "empty",
        "no-header",
        "missing-type",
        "negative-bw",
        "non-numeric",
        "string-latency",
        "missing-node",
        "duplicate-node",
        "bad-link-name",
        "zero-nodes",
        "unlinked-neighbour",
        "bad-type-name",
    ],
)
def test_malformed_cluster_ini(tmp_path: Path, text: str, field: str | None, expected: str) -> None:
    err = _cluster_case(tmp_path, text)
    assert expected in str(err)
    if field is not None:
        assert err.field == field


SOL = "[Settings]\noffset=2\n\n[Solution]\ncompute_node_2=[0, 1, 2]\ncompute_node_3=[3, 4]\n"


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        (SOL.replace("[3, 4]", "[3, 5]"), "[Solution] compute_node_3", "contiguous"),
        (SOL.replace("[3, 4]", "[3, 4, 5, 6]"), "[Solution] compute_node_3", "out of bounds"),
        (SOL.replace("compute_node_3", "compute_node_9"), "[Solution] compute_node_9", "not in cluster"),
        (SOL.replace("offset=2", "offset=0"), "[Settings] offset", "offset=2"),
        (SOL.replace("[3, 4]", "[3, 'x']"), "[Solution] compute_node_3", "list of layer ids"),
        (SOL.replace("compute_node_3", "gpu_3"), "[Solution] gpu_3", "compute_node_"),
        (SOL + "compute_node_2=[0]\n", None, "duplicate key"),
    ],
    ids=[
        "non-contiguous",
        "out-of-bounds",
        "unknown-node",
        "bad-offset",
        "non-int-layer",
        "bad-key",
        "dup-key",
    ],
)
def test_malformed_solution_ini(tmp_path: Path, text: str, field: str | None, expected: str) -> None:
    tiny = tmp_path / "tiny.ini"
    tiny.write_text(TINY)
    cluster = load_cluster_ini(tiny)
    f = tmp_path / "bad_sol.ini"
    f.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_solution_ini(f, cluster, 5)
    assert err.value.source == str(f)
    assert expected in str(err.value)
    if field is not None:
        assert err.value.field == field


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="file not found") as err:
        load_cluster_ini(tmp_path / "nope.ini")
    assert err.value.source == str(tmp_path / "nope.ini")


def test_asymmetric_links_cannot_be_written_as_ini(tmp_path: Path) -> None:
    import dataclasses

    from planner.cluster import Link

    f = tmp_path / "tiny.ini"
    f.write_text(TINY)
    c = load_cluster_ini(f)
    links = tuple(lk if (lk.src, lk.dst) != ("n0", "n1") else Link("n0", "n1", 7e8, 0.002) for lk in c.links)
    with pytest.raises(InvalidInput, match="YAML"):
        save_cluster_ini(dataclasses.replace(c, links=links), tmp_path / "out.ini")
