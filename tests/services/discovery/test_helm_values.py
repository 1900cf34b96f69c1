"""services/discovery/helm_values.py: fleets (and plans) -> chart values, without rendering (the chart
tests render them: tests/charts/test_values_from_fleet.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.cluster import Cluster, Node
from planner.errors import InvalidInput
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from services.discovery.helm_values import gpus_per_node, pool_name, values_from_cluster
from services.discovery.kube_nodes import discover_cluster

FIXTURES = Path(__file__).parent / "fixtures"


def test_gpus_per_node_and_pool_names() -> None:
    assert gpus_per_node("T4x4") == ("T4", 4)
    assert gpus_per_node("A100") == ("A100", 1)
    assert pool_name("L4x2", "us-east1", multi_region=False) == "l4x2"
    assert pool_name("L4x2", "europe-west4", multi_region=True) == "l4x2-europe-west4"
    assert pool_name("RTX_A6000", "a" * 40, multi_region=True).startswith("rtx-a6000-")
    assert len(pool_name("RTX_A6000", "a" * 40, multi_region=True)) <= 30


def test_one_pool_per_gpu_type_and_region() -> None:
    cluster = discover_cluster(node_list_json=FIXTURES / "gke-three-regions.json")
    values = values_from_cluster(cluster)
    pools = {p["name"]: p for p in values["servingEngineSpec"]["gpuPools"]}
    assert {name: p["replicaCount"] for name, p in pools.items()} == {
        "a100-us-central1": 4,
        "l4-us-east1": 2,
        "t4-us-east1": 8,
        "l4-europe-west4": 6,
        "t4-europe-west4": 4,
    }
    assert sum(p["replicaCount"] for p in pools.values()) == len(cluster.nodes)
    t4 = pools["t4-europe-west4"]
    assert t4["nodeSelector"] == {
        "nvidia.com/gpu.product": "Tesla-T4",
        "topology.kubernetes.io/region": "europe-west4",
    }
    assert t4["nodeNames"] == [f"t4-euw4-{i}" for i in range(4)]
    assert "layers" not in t4
    assert values["fleet"]["coordinatorRegion"] == cluster.coordinator_region
    assert values["fleet"]["links"]["interRegion"]["latencyS"] == 0.05


def test_multi_gpu_nodes_request_every_gpu() -> None:
    values = values_from_cluster(discover_cluster(node_list_json=FIXTURES / "eks-multi-gpu.json"))
    pools = {p["gpuType"]: p for p in values["servingEngineSpec"]["gpuPools"]}
    assert pools["T4x4"]["requestGPU"] == 4 and pools["T4x2"]["requestGPU"] == 2
    assert pools["L4x2"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4"


def test_plan_gives_layers_and_drops_idle_nodes() -> None:
    nodes = tuple(Node(f"n{i}", t) for i, t in enumerate(["A100", "T4", "T4", "T4"]))
    cluster = Cluster(nodes=nodes, links=(), name="tiny")
    placement = Placement(
        num_layers=32, ranges={"n0": LayerRange(0, 20), "n1": LayerRange(20, 32), "n3": LayerRange(20, 32)}
    )
    plan = Plan(cluster_name="tiny", model_name="m", method="manual", placement=placement)
    values = values_from_cluster(cluster, plan, backend="torch")
    pools = {p["name"]: p for p in values["servingEngineSpec"]["gpuPools"]}
    assert pools["a100"]["layers"] == ["0:20"]
    assert pools["t4"] == {
        **pools["t4"],
        "replicaCount": 2,
        "layers": ["20:32", "20:32"],
        "nodeNames": ["n1", "n3"],
        "backend": "torch",
    }
    # A fleet file without product labels falls back to the paper's GPUs; one region: no region selector.
    assert pools["t4"]["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert values["model"] == {"numLayers": 32}
    empty = Plan(cluster_name="tiny", model_name="m", method="manual", placement=Placement(num_layers=32))
    with pytest.raises(InvalidInput, match="none of the fleet"):
        values_from_cluster(cluster, empty)
