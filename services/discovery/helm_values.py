"""Helm values for charts/brl from a fleet: one worker pool per (GPU type, region) group of nodes.

`values_from_cluster` is pure (a Cluster, and optionally a Plan, in; a values dict out) so the chart can be
rendered from any fleet the planner understands, including one `discover_cluster` found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from planner.cluster import SINK, SOURCE, Cluster, Node
from planner.errors import InvalidInput
from planner.plan import Plan

# nodeSelector values for the canonical types when the fleet does not say which product a node has
# (a Helix .ini or YAML fleet): the products the paper's fleets used, as GPU feature discovery labels them.
DEFAULT_GPU_PRODUCTS: Mapping[str, str] = {
    "A100": "NVIDIA-A100-SXM4-40GB",
    "V100": "Tesla-V100-SXM2-16GB",
    "L4": "NVIDIA-L4",
    "T4": "Tesla-T4",
    "H100": "NVIDIA-H100-80GB-HBM3",
}
REGION_LABEL = "topology.kubernetes.io/region"
PRODUCT_LABEL = "nvidia.com/gpu.product"
_MULTI = re.compile(r"^(?P<base>.+?)x(?P<count>\d+)$")


def gpus_per_node(gpu_type: str) -> tuple[str, int]:
    """ "L4x2" -> ("L4", 2); "A100" -> ("A100", 1)."""
    match = _MULTI.match(gpu_type)
    if match:
        return match["base"], int(match["count"])
    return gpu_type, 1


def pool_name(gpu_type: str, region: str, multi_region: bool) -> str:
    """A DNS-1123 label: the StatefulSet, Service and worker names are built from it."""
    raw = f"{gpu_type}-{region}" if multi_region else gpu_type
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    return name[:30].rstrip("-") or "pool"


def _groups(cluster: Cluster) -> dict[tuple[str, str], list[Node]]:
    groups: dict[tuple[str, str], list[Node]] = {}
    for node in cluster.nodes:
        groups.setdefault((node.gpu_type, node.region), []).append(node)
    return groups


def _link_defaults(cluster: Cluster) -> dict[str, dict[str, float]]:
    """The chart describes links by two classes; take the slowest link of each class so the fleet
    ConfigMap never promises more bandwidth than the real fleet has."""
    region = {n.name: n.region for n in cluster.nodes}
    region[SOURCE] = region[SINK] = cluster.coordinator_region
    intra = [lk for lk in cluster.links if region[lk.src] == region[lk.dst]]
    inter = [lk for lk in cluster.links if region[lk.src] != region[lk.dst]]
    out: dict[str, dict[str, float]] = {}
    for key, links in (("intraRegion", intra), ("interRegion", inter)):
        if links:
            out[key] = {
                "bandwidthBytesPerS": min(lk.bandwidth_bytes_per_s for lk in links),
                "latencyS": max(lk.latency_s for lk in links),
            }
    return out


def values_from_cluster(
    cluster: Cluster, plan: Plan | None = None, *, backend: str = "vllm"
) -> dict[str, Any]:
    """Values that give one worker StatefulSet per (GPU type, region) with one replica per node.

    With a plan, nodes the plan leaves idle get no replica, and each pool's `layers` lists the range the plan
    gave each replica's node (replica i <-> the i-th node of the group in fleet order). The chart bakes those
    ranges into the pods only in static mode (controller.enabled=false); with the controller (the default)
    workers start without a range and the coordinator assigns ranges at run time. Workers register under
    the names `<pool>-<ordinal>`; `nodeNames` in each pool records which fleet node each replica stands for.
    """
    multi_region = len(cluster.regions()) > 1
    products = cluster.meta.get("gpu_products") if isinstance(cluster.meta, Mapping) else None
    product_of: Mapping[str, str] = products if isinstance(products, Mapping) else {}
    pools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for (gpu_type, region), members in _groups(cluster).items():
        if plan is not None:
            members = [n for n in members if plan.placement.get(n.name) is not None]
            if not members:
                continue
        name = pool_name(gpu_type, region, multi_region)
        if name in seen:
            raise InvalidInput(f"two node groups map to the same pool name {name!r}", source="cluster")
        seen.add(name)
        base, count = gpus_per_node(gpu_type)
        product = product_of.get(members[0].name) or DEFAULT_GPU_PRODUCTS.get(base, base)
        selector = {PRODUCT_LABEL: product}
        if multi_region or region != "default":
            selector[REGION_LABEL] = region
        pool: dict[str, Any] = {
            "name": name,
            "gpuType": gpu_type,
            "region": region,
            "replicaCount": len(members),
            "requestGPU": count,
            "nodeSelector": selector,
            "backend": backend,
            "nodeNames": [n.name for n in members],
        }
        if plan is not None:
            ranges = [plan.placement.get(n.name) for n in members]
            pool["layers"] = [f"{r.start}:{r.end}" for r in ranges if r is not None]
        pools.append(pool)
    if not pools:
        raise InvalidInput("the plan places layers on none of the fleet's nodes", source="plan")
    values: dict[str, Any] = {
        "fleet": {"name": cluster.name, "coordinatorRegion": cluster.coordinator_region},
        "servingEngineSpec": {"gpuPools": pools},
    }
    links = _link_defaults(cluster)
    if links:
        values["fleet"]["links"] = links
    if plan is not None:
        values["model"] = {"numLayers": plan.placement.num_layers}
    return values
