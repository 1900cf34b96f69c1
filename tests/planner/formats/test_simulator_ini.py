"""The paper's simulator_cluster.ini: directed links and per-node KV capacity."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner import bundled
from planner.cluster import SINK, SOURCE
from planner.errors import InvalidInput
from planner.formats.simulator_ini import load_simulator_cluster_ini

FOLDER = bundled.LAYOUTS_DIR / "llama2-70b" / "cluster24"


def test_homogeneous_pipeline_file() -> None:
    sim = bundled.layout_simulator_cluster("homogeneous", "cluster24", "llama2-70b")
    assert len(sim.cluster.nodes) == 9
    # a single pipeline: source -> first -> ... -> last -> sink
    assert len(sim.cluster.links) == 10
    assert len(sim.cluster.out_links(SOURCE)) == 1 and len(sim.cluster.in_links(SINK)) == 1
    assert set(sim.kv_capacity) == set(sim.cluster.node_names)
    assert set(bundled.layout("homogeneous", "cluster24", "llama2-70b")) == set(sim.cluster.node_names)


def test_ilp_file_matches_the_layout_and_profiles() -> None:
    sim = load_simulator_cluster_ini(FOLDER / "ilp_simulator_cluster.ini")
    placement = bundled.layout("ilp", "cluster24", "llama2-70b")
    profiles = bundled.profiles("llama2-70b")
    cluster = bundled.cluster("cluster24")
    for name in sim.cluster.node_names:
        node = sim.cluster.node(name)
        assert node.gpu_type == cluster.node(name).gpu_type
        held = placement.get(name)
        assert held is not None
        # the stored KV capacity is the profile's for the number of layers the node holds
        assert sim.kv_capacity[name] == profiles.get(node.gpu_type).kv_capacity_for(held.size)


def test_missing_machine_type_is_named(tmp_path: Path) -> None:
    text = (FOLDER / "homogeneous_simulator_cluster.ini").read_text().replace('machine_type="A100"', "", 1)
    f = tmp_path / "simulator_cluster.ini"
    f.write_text(text)
    with pytest.raises(InvalidInput, match="missing key 'machine_type'") as err:
        load_simulator_cluster_ini(f)
    assert err.value.source == str(f) and (err.value.field or "").endswith("machine_type")
