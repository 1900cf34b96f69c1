"""services/discovery/kube_nodes.py against recorded Node lists (fixtures/*.json, as `kubectl get nodes
-o json` prints them). No Kubernetes API server can run on these machines, so the API path is exercised
with a stand-in HTTP server on 127.0.0.1 that answers GET /api/v1/nodes with a recorded list.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from planner.cluster import SINK, SOURCE
from planner.errors import InvalidInput, Unavailable
from services.discovery.kube_nodes import (
    LinkDefaults,
    canonical_gpu_type,
    cluster_from_node_list,
    discover_cluster,
    load_node_list,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    ("product", "count", "expected"),
    [
        ("NVIDIA-A100-SXM4-40GB", 1, "A100"),
        ("NVIDIA-A100-SXM4-80GB", 8, "A100x8"),
        ("NVIDIA-L4", 2, "L4x2"),
        ("Tesla-T4", 4, "T4x4"),
        ("Tesla-V100-SXM2-16GB", 1, "V100"),
        ("NVIDIA-L40S", 1, "L40S"),
        ("NVIDIA-A10G", 1, "A10G"),
        ("NVIDIA-H100-80GB-HBM3", 1, "H100"),
        ("NVIDIA-RTX-A6000", 1, "RTX-A6000"),
    ],
)
def test_canonical_gpu_type(product: str, count: int, expected: str) -> None:
    assert canonical_gpu_type(product, count) == expected


def test_single_region_fleet_from_gke_nodes() -> None:
    cluster = discover_cluster(node_list_json=FIXTURES / "gke-three-pools.json")
    assert cluster.gpu_counts() == {"A100": 4, "L4": 8, "T4": 12}
    assert cluster.regions() == ("us-central1",)
    assert cluster.coordinator_region == "us-central1"
    assert cluster.name == "gke-three-pools"
    # Numbered names sort as numbers: node i of a pool is replica i of its StatefulSet.
    assert [n.name for n in cluster.nodes if n.gpu_type == "T4"] == [f"gke-brl-t4-{i}" for i in range(12)]
    skipped = cluster.meta["skipped"]
    assert isinstance(skipped, dict)
    assert set(skipped) == {"gke-brl-system-0", "gke-brl-t4-cordoned", "gke-brl-l4-notready"}
    assert "cordoned" in skipped["gke-brl-t4-cordoned"] and "Ready" in skipped["gke-brl-l4-notready"]
    # Full mesh both ways plus source -> every node -> sink.
    n = len(cluster.nodes)
    assert len(cluster.links) == n * (n - 1) + 2 * n
    link = cluster.link("gke-brl-a100-0", "gke-brl-t4-3")
    assert (
        link is not None and link.bandwidth_bytes_per_s == LinkDefaults().intra_region_bandwidth_bytes_per_s
    )
    assert cluster.link(SOURCE, "gke-brl-l4-0") is not None and cluster.link("gke-brl-l4-0", SINK) is not None
    zones = cluster.meta["zones"]
    assert isinstance(zones, dict) and zones["gke-brl-l4-0"] == "us-central1-b"


def test_three_regions_links_are_slow_across_regions() -> None:
    links = LinkDefaults(inter_region_bandwidth_bytes_per_s=2e7, inter_region_latency_s=0.07)
    cluster = discover_cluster(node_list_json=FIXTURES / "gke-three-regions.json", links=links)
    assert cluster.regions() == ("europe-west4", "us-central1", "us-east1")
    by_region: dict[str, dict[str, int]] = {}
    for node in cluster.nodes:
        counts = by_region.setdefault(node.region, {})
        counts[node.gpu_type] = counts.get(node.gpu_type, 0) + 1
    assert by_region == {
        "us-central1": {"A100": 4},
        "us-east1": {"L4": 2, "T4": 8},
        "europe-west4": {"L4": 6, "T4": 4},
    }
    # The coordinator goes where most nodes are; us-east1 and europe-west4 tie at 10: first by name.
    assert cluster.coordinator_region == "europe-west4"
    cross = cluster.link("a100-usc1-0", "t4-euw4-1")
    same = cluster.link("l4-euw4-0", "t4-euw4-1")
    assert cross is not None and (cross.bandwidth_bytes_per_s, cross.latency_s) == (2e7, 0.07)
    assert same is not None and same.bandwidth_bytes_per_s == links.intra_region_bandwidth_bytes_per_s
    to_coord = cluster.link(SOURCE, "a100-usc1-0")
    assert to_coord is not None and to_coord.latency_s == 0.07
    from_coord = cluster.link("t4-euw4-0", SINK)
    assert from_coord is not None and from_coord.latency_s == links.intra_region_latency_s
    pinned = discover_cluster(
        node_list_json=FIXTURES / "gke-three-regions.json", coordinator_region="us-central1"
    )
    pinned_link = pinned.link(SOURCE, "a100-usc1-0")
    assert pinned_link is not None and pinned_link.latency_s == LinkDefaults().intra_region_latency_s


def test_multi_gpu_nodes_allocatable_first_and_beta_labels() -> None:
    cluster = discover_cluster(node_list_json=FIXTURES / "eks-multi-gpu.json")
    types = {n.name: n.gpu_type for n in cluster.nodes}
    assert types == {
        "ip-10-0-1-10.ec2.internal": "L4x2",
        "ip-10-0-1-11.ec2.internal": "T4x4",
        "ip-10-0-1-12.ec2.internal": "V100",
        # Two of its four T4s are unhealthy: allocatable (2) wins over the label (4).
        "ip-10-0-1-13.ec2.internal": "T4x2",
        "ip-10-0-1-14.ec2.internal": "A10G",
        "ip-10-0-1-15.ec2.internal": "L40S",
        "ip-10-0-1-16.ec2.internal": "H100",
    }
    assert cluster.node("ip-10-0-1-12.ec2.internal").region == "us-east-1"  # failure-domain.beta label
    assert cluster.node("ip-10-0-1-16.ec2.internal").region == "default"  # no topology labels at all
    skipped = cluster.meta["skipped"]
    assert isinstance(skipped, dict)
    assert "gpu.product" in skipped["ip-10-0-1-18.ec2.internal"]
    assert skipped["ip-10-0-1-17.ec2.internal"] == "no nvidia.com/gpu"


def test_node_order_does_not_change_the_fleet() -> None:
    data = load_node_list(FIXTURES / "gke-three-regions.json")
    reversed_data = {**data, "items": list(reversed(data["items"]))}
    assert cluster_from_node_list(data) == cluster_from_node_list(reversed_data)


def test_bad_inputs_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no usable GPU node"):
        cluster_from_node_list({"kind": "NodeList", "items": []})
    with pytest.raises(InvalidInput, match="items"):
        cluster_from_node_list({"kind": "NodeList"})
    broken = tmp_path / "nodes.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidInput, match="not JSON"):
        discover_cluster(node_list_json=broken)
    bad_count = {
        "items": [
            {
                "metadata": {"name": "x", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
                "status": {"allocatable": {"nvidia.com/gpu": "two"}},
            }
        ]
    }
    with pytest.raises(InvalidInput, match="whole number"):
        cluster_from_node_list(bad_count)


class _NodesHandler(BaseHTTPRequestHandler):
    body = b""
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).paths.append(self.path)
        if self.path.split("?")[0] != "/api/v1/nodes":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_api_server() -> Iterator[str]:
    _NodesHandler.body = (FIXTURES / "gke-three-pools.json").read_bytes()
    _NodesHandler.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NodesHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "fake-ctx", "context": {"cluster": "fake", "user": "u"}}],
        "current-context": "fake-ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


def test_discover_through_the_kubernetes_client(tmp_path: Path, fake_api_server: str) -> None:
    kubeconfig = _kubeconfig(tmp_path, fake_api_server)
    cluster = discover_cluster(kubeconfig=str(kubeconfig), context="fake-ctx")
    assert _NodesHandler.paths and _NodesHandler.paths[0].startswith("/api/v1/nodes")
    assert cluster.name == "fake-ctx"
    assert (
        cluster.gpu_counts()
        == discover_cluster(node_list_json=FIXTURES / "gke-three-pools.json").gpu_counts()
    )


def test_unreachable_api_server_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="cannot load kubeconfig"):
        discover_cluster(kubeconfig=str(tmp_path / "missing"))
    # A loopback port that was free a moment ago: nothing listens, the connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = _kubeconfig(tmp_path, f"http://127.0.0.1:{port}")
    with pytest.raises(Unavailable, match="listing nodes failed"):
        discover_cluster(kubeconfig=str(kubeconfig))
