"""Build a fleet (`planner.cluster.Cluster`) from a Kubernetes cluster's Node objects.

`cluster_from_node_list` is the pure part (a Node-list dict, as `kubectl get nodes -o json` prints it, in,
a Cluster out); `fetch_node_list` is the only code that talks to an API server; `discover_cluster` joins
them and is what `brl cluster discover` calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput, Unavailable

# Labels written by NVIDIA's GPU feature discovery (part of the GPU operator) and by every cloud provider.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
GPU_RESOURCE = "nvidia.com/gpu"
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
DEFAULT_REGION = "default"

# Product label (e.g. "NVIDIA-A100-SXM4-40GB", "Tesla-T4", "NVIDIA-L4") -> the paper's canonical type.
# Order matters: "L40S" and "L40" must be tried before "L4", "A100" before "A10".
_PRODUCT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name)
    for pattern, name in (
        (r"H200", "H200"),
        (r"H100", "H100"),
        (r"A100", "A100"),
        (r"A10G", "A10G"),
        (r"A10(?!\d)", "A10"),
        (r"L40S", "L40S"),
        (r"L40(?!\d)", "L40"),
        (r"(?<![A-Z0-9])L4(?!\d)", "L4"),
        (r"V100", "V100"),
        (r"(?<![A-Z0-9])T4(?!\d)", "T4"),
        (r"P100", "P100"),
    )
)


@dataclass(frozen=True)
class LinkDefaults:
    """Links a Node list cannot tell us. Defaults are the paper's distributed fleet (3cluster24.ini):
    ~1250 mbps / 1 ms inside a region and ~12.5 mbps / 50 ms across regions, in the paper's bytes/s
    convention (a "1250 mbps" link moves 1.25e9 bytes/s). The coordinator (source and sink) sits in
    `coordinator_region`; links to it count as intra- or inter-region like any other."""

    intra_region_bandwidth_bytes_per_s: float = 1.25e9
    intra_region_latency_s: float = 0.001
    inter_region_bandwidth_bytes_per_s: float = 1.25e7
    inter_region_latency_s: float = 0.05


def canonical_gpu_type(product: str, count: int) -> str:
    """ "NVIDIA-L4" with 2 GPUs -> "L4x2"; an unknown product keeps its own name minus the vendor."""
    base = None
    for pattern, name in _PRODUCT_PATTERNS:
        if pattern.search(product):
            base = name
            break
    if base is None:
        base = re.sub(r"^(NVIDIA|Tesla)[-_ ]+", "", product.strip(), flags=re.IGNORECASE) or "GPU"
    return base if count == 1 else f"{base}x{count}"


def _quantity(value: object) -> int:
    """Extended resources such as nvidia.com/gpu are whole numbers; accept "4" and 4."""
    try:
        return int(str(value))
    except ValueError:
        raise InvalidInput(f"expected a whole number of GPUs, got {value!r}", field=GPU_RESOURCE) from None


def _first_label(labels: Mapping[str, str], keys: Iterable[str]) -> str | None:
    for key in keys:
        if labels.get(key):
            return labels[key]
    return None


def _is_ready(node: Mapping[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return str(cond.get("status")) == "True"
    # No Ready condition recorded (a hand-written fixture or a just-registered node): do not drop it.
    return True


def _gpu_count(node: Mapping[str, Any]) -> int:
    """Allocatable GPUs first (what the scheduler will hand out), then the GFD label, then capacity."""
    status = node.get("status", {})
    labels = node.get("metadata", {}).get("labels") or {}
    for mapping, key in (
        (status.get("allocatable") or {}, GPU_RESOURCE),
        (labels, GPU_COUNT_LABEL),
        (status.get("capacity") or {}, GPU_RESOURCE),
    ):
        if key in mapping:
            return _quantity(mapping[key])
    return 0


def cluster_from_node_list(
    node_list: Mapping[str, Any],
    *,
    name: str = "kubernetes",
    links: LinkDefaults | None = None,
    coordinator_region: str | None = None,
    include_unready: bool = False,
) -> Cluster:
    """A Node list (`kind: NodeList`, or a plain list of Node objects) -> a fully linked Cluster.

    Every schedulable, Ready node with GPUs becomes one BRL node named like the Kubernetes node; CPU-only,
    cordoned and NotReady nodes are skipped and listed in `meta["skipped"]` with the reason. Links join
    every pair of GPU nodes both ways and the coordinator to every node (see LinkDefaults).
    """
    link_defaults = links or LinkDefaults()
    items = node_list.get("items") if isinstance(node_list, Mapping) else node_list
    if not isinstance(items, list):
        raise InvalidInput("expected a NodeList with an 'items' list", source="node list", field="items")
    nodes: list[Node] = []
    zones: dict[str, str] = {}
    products: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for index, item in enumerate(items):
        meta = item.get("metadata") or {}
        node_name = meta.get("name")
        if not node_name:
            raise InvalidInput("node without metadata.name", source="node list", field=f"items[{index}]")
        labels = meta.get("labels") or {}
        count = _gpu_count(item)
        if count <= 0:
            skipped[node_name] = "no nvidia.com/gpu"
            continue
        if (item.get("spec") or {}).get("unschedulable"):
            skipped[node_name] = "cordoned (spec.unschedulable)"
            continue
        if not include_unready and not _is_ready(item):
            skipped[node_name] = "not Ready"
            continue
        product = labels.get(GPU_PRODUCT_LABEL)
        if not product:
            skipped[node_name] = f"GPUs but no {GPU_PRODUCT_LABEL} label (is GPU feature discovery running?)"
            continue
        region = _first_label(labels, REGION_LABELS) or DEFAULT_REGION
        zone = _first_label(labels, ZONE_LABELS)
        if zone:
            zones[node_name] = zone
        products[node_name] = product
        nodes.append(Node(name=node_name, gpu_type=canonical_gpu_type(product, count), region=region))
    if not nodes:
        raise InvalidInput(
            f"no usable GPU node among {len(items)} nodes ({len(skipped)} skipped: {skipped})",
            source="node list",
        )
    nodes.sort(key=lambda n: (n.region, n.gpu_type, _natural(n.name)))
    coord_region = coordinator_region or _busiest_region(nodes)
    return Cluster(
        nodes=tuple(nodes),
        links=tuple(_default_links(nodes, coord_region, link_defaults)),
        name=name,
        coordinator_region=coord_region,
        meta={"source": "kubernetes", "zones": zones, "gpu_products": products, "skipped": skipped},
    )


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """ "t4-2" before "t4-10": node i of a pool becomes replica i when the fleet is turned into values."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name))


def _busiest_region(nodes: list[Node]) -> str:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.region] = counts.get(node.region, 0) + 1
    # Most nodes wins; ties go to the alphabetically first region so the result is stable.
    return min(counts, key=lambda r: (-counts[r], r))


def _link(src: str, dst: str, same_region: bool, d: LinkDefaults) -> Link:
    if same_region:
        return Link(src, dst, d.intra_region_bandwidth_bytes_per_s, d.intra_region_latency_s)
    return Link(src, dst, d.inter_region_bandwidth_bytes_per_s, d.inter_region_latency_s)


def _default_links(nodes: list[Node], coordinator_region: str, d: LinkDefaults) -> list[Link]:
    out: list[Link] = []
    for node in nodes:
        out.append(_link(SOURCE, node.name, node.region == coordinator_region, d))
    for a in nodes:
        for b in nodes:
            if a.name != b.name:
                out.append(_link(a.name, b.name, a.region == b.region, d))
    for node in nodes:
        out.append(_link(node.name, SINK, node.region == coordinator_region, d))
    return out


def load_node_list(path: str | Path) -> dict[str, Any]:
    """A saved `kubectl get nodes -o json` file."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not JSON: {exc.msg} (line {exc.lineno})", source=str(path)) from None
    if not isinstance(data, dict):
        raise InvalidInput("expected a JSON object (kind: NodeList)", source=str(path))
    return data


def fetch_node_list(kubeconfig: str | None = None, context: str | None = None) -> dict[str, Any]:
    """GET /api/v1/nodes with the official client: kubeconfig (or $KUBECONFIG / ~/.kube/config), else
    the in-cluster service account. Returns the same JSON shape kubectl prints."""
    from kubernetes import client, config  # the only import of the client: keeps it off the pure path
    from kubernetes.config.config_exception import ConfigException

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError) as exc:
        if kubeconfig or context:
            raise Unavailable(f"cannot load kubeconfig {kubeconfig or '(default)'}: {exc}") from None
        try:
            config.load_incluster_config()
        except ConfigException:
            raise Unavailable(f"no kubeconfig and not running in a pod: {exc}") from None
        api_client = client.ApiClient()
    try:
        # Raw JSON, not the client's typed models: the same shape as `kubectl get nodes -o json`, and no
        # failure when a server omits a field the models insist on.
        response: Any = client.CoreV1Api(api_client).list_node(_preload_content=False)  # urllib3 response
        data = json.loads(response.data)
    except Exception as exc:  # urllib3/ApiException/bad JSON: the API server failed, not our input
        raise Unavailable(f"listing nodes failed: {exc}") from None
    finally:
        api_client.close()
    if not isinstance(data, dict):
        raise Unavailable("listing nodes failed: the API server did not return a NodeList object")
    return data


def discover_cluster(
    kubeconfig: str | None = None,
    context: str | None = None,
    node_list_json: str | Path | None = None,
    *,
    links: LinkDefaults | None = None,
    coordinator_region: str | None = None,
) -> Cluster:
    """The fleet of a live cluster, or of a saved `kubectl get nodes -o json` when `node_list_json` is given."""
    if node_list_json is not None:
        data = load_node_list(node_list_json)
        name = Path(node_list_json).stem
    else:
        data = fetch_node_list(kubeconfig, context)
        name = context or "kubernetes"
    return cluster_from_node_list(data, name=name, links=links, coordinator_region=coordinator_region)
