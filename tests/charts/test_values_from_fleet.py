"""The chart rendered from a fleet: values_from_cluster (services/discovery/helm_values.py) on fleets
discovered from recorded Node lists must yield one worker StatefulSet per node group, sized like it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from planner import bundled
from planner.formats.cluster_yaml import load_cluster_yaml
from planner.placement import LayerRange, Placement
from planner.plan import Plan
from services.discovery.helm_values import values_from_cluster
from services.discovery.kube_nodes import discover_cluster
from tests.charts import helm as h

NODE_LISTS = Path(__file__).resolve().parents[1] / "services" / "discovery" / "fixtures"


@pytest.mark.parametrize("fixture", ["gke-three-pools", "gke-three-regions", "eks-multi-gpu"])
def test_rendered_pools_match_the_fleet_node_groups(helm_bin: Path, tmp_path: Path, fixture: str) -> None:
    cluster = discover_cluster(node_list_json=NODE_LISTS / f"{fixture}.json")
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values_from_cluster(cluster)))
    docs = h.documents(h.template(helm_bin, values_file).stdout)
    groups: dict[tuple[str, str], int] = {}
    for node in cluster.nodes:
        groups[(node.gpu_type, node.region)] = groups.get((node.gpu_type, node.region), 0) + 1
    rendered: dict[tuple[str, str], int] = {}
    for sts in h.by_kind(docs, "StatefulSet"):
        script = sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
        region = next(
            e["value"]
            for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"] == "BRL_REGION"
        )
        gpu_type = sts["metadata"]["labels"]["brl.io/gpu-type"]
        assert f"--gpu-type '{gpu_type}'" in script
        rendered[(gpu_type, region)] = sts["spec"]["replicas"]
    assert rendered == groups
    for obj in docs:
        kubernetes_validate.validate(obj, h.KUBE_VERSION, strict=True)
    fleet = next(c for c in h.by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-fleet"))
    (tmp_path / "cluster.yaml").write_text(fleet["data"]["cluster.yaml"])
    rendered_fleet = load_cluster_yaml(tmp_path / "cluster.yaml")
    assert rendered_fleet.gpu_counts() == cluster.gpu_counts()
    assert rendered_fleet.regions() == cluster.regions()
    assert rendered_fleet.coordinator_region == cluster.coordinator_region


def test_a_plan_puts_each_nodes_layers_on_its_replica(helm_bin: Path, tmp_path: Path) -> None:
    cluster = discover_cluster(node_list_json=NODE_LISTS / "gke-three-pools.json")
    # A toy 80-layer placement: A100s hold [0, 40) twice over, L4s [40, 60), T4s [60, 80); a few T4s idle.
    ranges: dict[str, LayerRange] = {}
    for node in cluster.nodes:
        index = int(node.name.rsplit("-", 1)[1])
        if node.gpu_type == "A100":
            ranges[node.name] = LayerRange(0, 20) if index % 2 == 0 else LayerRange(20, 40)
        elif node.gpu_type == "L4":
            ranges[node.name] = LayerRange(40, 50 + index % 2 * 10) if index % 2 == 0 else LayerRange(50, 60)
        elif index < 9:
            ranges[node.name] = LayerRange(60, 80)
    plan = Plan(
        cluster_name=cluster.name,
        model_name="llama2-70b",
        method="manual",
        placement=Placement(num_layers=80, ranges=ranges),
    )
    values = values_from_cluster(cluster, plan)
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    for controller in ("true", "false"):
        rendered = h.template(helm_bin, values_file, sets=(f"controller.enabled={controller}",))
        docs = h.documents(rendered.stdout)
        workers = {s["metadata"]["labels"]["brl.io/pool"]: s for s in h.by_kind(docs, "StatefulSet")}
        assert {p: s["spec"]["replicas"] for p, s in workers.items()} == {"a100": 4, "l4": 8, "t4": 9}
        for pool in values["servingEngineSpec"]["gpuPools"]:
            script = workers[pool["name"]]["spec"]["template"]["spec"]["containers"][0]["args"][0]
            if controller == "true":  # ranges come at run time from the coordinator's controller
                assert "--layers" not in script
                continue
            for ordinal, node_name in enumerate(pool["nodeNames"]):
                r = ranges[node_name]
                assert f"{ordinal}) layers='{r.start}:{r.end}' ;;" in script


def test_three_pool_scenario_is_the_papers_ilp_layout_on_cluster24() -> None:
    """charts/brl/ci/three-pools-values.yaml (and so k8s/) holds the published ILP placement of LLaMA-2 70B
    on cluster24: values_from_cluster on the bundled fleet and layout gives the same pools and layers."""
    fleet = bundled.cluster("cluster24")
    placement = bundled.layout("ilp", fleet, "llama2-70b")
    plan = Plan(cluster_name=fleet.name, model_name="llama2-70b", method="ilp", placement=placement)
    generated = values_from_cluster(fleet, plan)
    scenario = yaml.safe_load(h.SCENARIOS["three-pools"].read_text())

    def pools(values: dict[str, Any]) -> dict[str, tuple[str, int, list[str]]]:
        return {
            p["name"]: (p["gpuType"], p["replicaCount"], p["layers"])
            for p in values["servingEngineSpec"]["gpuPools"]
        }

    assert pools(generated) == pools(scenario)
    assert generated["model"]["numLayers"] == scenario["model"]["numLayers"] == 80
