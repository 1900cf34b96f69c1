"""Fleet changes and layer moves for re-planning: what changed (lost, joined, slowed nodes), the fleet after
it, new nodes from a "TYPE:COUNT" spec, and what a switch between two placements loads and how long it
takes. Pure: values in, values out.

Load time of a move: bytes_to_load / min(disk_bytes_per_s[gpu], node.nic_in_bytes_per_s): a node reads its
new layers from its own copy of the checkpoint on disk, and no faster than its NIC could bring them if the
checkpoint lives on shared storage. The paper's machine profile gives every GPU type 1e9 bytes/s of disk
(DEFAULT_DISK_BYTES_PER_S when a type is not given), so a LLaMA-2 70B layer (1.53 GB) takes 1.53 s."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from planner.cluster import ENDPOINTS, SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput, UnknownName
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.solvers.search import from_placement

# The paper's machine profile: every GPU type reads its disk at "1 gbps", i.e. 1e9 bytes/s (its unit quirk).
DEFAULT_DISK_BYTES_PER_S = 1e9

_JOIN_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*[:=]\s*(\d+)\s*$")


# ----------------------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class FleetChange:
    """What happened to the fleet: node names gone, new nodes (their links are copied on apply), and
    nodes running slower (speed factor in (0, 1], scaling their compute capacity)."""

    lost: tuple[str, ...] = ()
    joined: tuple[Node, ...] = ()
    slowed: Mapping[str, float] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.lost or self.joined or self.slowed)


def check_change(cluster: Cluster, change: FleetChange) -> None:
    """InvalidInput/UnknownName naming the field (lost, joined, slowed) for a change that does not fit."""
    names = set(cluster.node_names)
    for name in change.lost:
        if name not in names:
            raise UnknownName("node", name, sorted(names), field="lost")
    if len(set(change.lost)) != len(change.lost):
        raise InvalidInput("a node is lost twice", field="lost")
    for node in change.joined:
        if node.name in names:
            raise InvalidInput(f"joining node {node.name!r} is already in the fleet", field="joined")
    if len({n.name for n in change.joined}) != len(change.joined):
        raise InvalidInput("two joining nodes share a name", field="joined")
    for name, factor in change.slowed.items():
        if name not in names:
            raise UnknownName("node", name, sorted(names), field="slowed")
        if name in change.lost:
            raise InvalidInput(f"node {name!r} is both lost and slowed", field="slowed")
        if not (isinstance(factor, int | float) and 0 < factor <= 1):
            raise InvalidInput(
                f"node {name!r}: speed factor must be in (0, 1], got {factor!r}", field="slowed"
            )
    if len(names) - len(change.lost) + len(change.joined) < 1:
        raise InvalidInput("the change leaves no compute node", field="lost")


def _like_node(cluster: Cluster, new: Node, link_like: str | None) -> Node | None:
    if link_like is not None:
        return cluster.node(link_like)
    same_region = [n for n in cluster.nodes if n.region == new.region]
    same_type = [n for n in same_region if n.gpu_type == new.gpu_type]
    picks = same_type or same_region
    return picks[0] if picks else None


def apply_change(cluster: Cluster, change: FleetChange, *, link_like: str | None = None) -> Cluster:
    """The fleet after `change`: lost nodes and their links removed; each joined node gets copies of the
    links of an existing node in its region (`link_like`, else the first of its GPU type there, else the
    region's first node), and joined nodes link to each other like that node links to its region peers.
    Slowed nodes are unchanged here (a Cluster has no speed; the search scales their capacity)."""
    check_change(cluster, change)
    if link_like is not None and not cluster.has_node(link_like):
        raise UnknownName("node", link_like, list(cluster.node_names), field="link_like")
    left = cluster.without(change.lost)
    links: list[Link] = list(left.links)
    joined_names = {n.name for n in change.joined}
    for new in change.joined:
        like = _like_node(cluster, new, link_like)
        if like is None:
            # A region with no node yet: coordinator links like the fleet's first node, nothing else.
            like = cluster.nodes[0]
        for lk in cluster.links:
            if lk.src == like.name and (lk.dst in (SINK,) or left.has_node(lk.dst)):
                links.append(Link(new.name, lk.dst, lk.bandwidth_bytes_per_s, lk.latency_s))
            elif lk.dst == like.name and (lk.src == SOURCE or left.has_node(lk.src)):
                links.append(Link(lk.src, new.name, lk.bandwidth_bytes_per_s, lk.latency_s))
        peer = next(
            (lk for lk in cluster.out_links(like.name) if lk.dst not in ENDPOINTS),
            None,
        )
        if peer is not None:
            for other in joined_names - {new.name}:
                links.append(Link(new.name, other, peer.bandwidth_bytes_per_s, peer.latency_s))
    return Cluster(
        nodes=left.nodes + tuple(change.joined),
        links=tuple(links),
        name=cluster.name,
        coordinator_region=cluster.coordinator_region,
        coordinator_nic_bytes_per_s=cluster.coordinator_nic_bytes_per_s,
        meta=dict(cluster.meta),
    )


def join_nodes(
    cluster: Cluster,
    spec: str,
    *,
    gpu_types: Sequence[str] | None = None,
    region: str | None = None,
    taken: Sequence[str] = (),
) -> tuple[Node, ...]:
    """New nodes from a spec: "a100:2" or "A100=2" -> two nodes of that GPU type (matched case-insensitively against
    `gpu_types`, default the fleet's own types), named `<type>-join<i>` with i the first free numbers
    (avoiding the fleet's names and `taken`). Region and NIC speeds come from a node of the same type
    (else the fleet's first node) unless `region` is given."""
    m = _JOIN_SPEC.match(spec)
    if not m:
        raise InvalidInput(f"expected TYPE:COUNT (e.g. a100:2), got {spec!r}", field="join")
    wanted, count = m.group(1), int(m.group(2))
    if count < 1:
        raise InvalidInput(f"count must be >= 1, got {count}", field="join")
    valid = list(gpu_types) if gpu_types is not None else sorted(cluster.gpu_counts())
    by_lower = {t.lower(): t for t in valid}
    gpu = by_lower.get(wanted.lower())
    if gpu is None:
        raise UnknownName("GPU type", wanted, valid, field="join")
    like = next((n for n in cluster.nodes if n.gpu_type == gpu), cluster.nodes[0] if cluster.nodes else None)
    used = set(cluster.node_names) | set(taken)
    out: list[Node] = []
    i = 0
    while len(out) < count:
        i += 1
        name = f"{gpu.lower()}-join{i}"
        if name in used:
            continue
        used.add(name)
        out.append(
            Node(
                name,
                gpu,
                region=region or (like.region if like else "default"),
                nic_in_bytes_per_s=like.nic_in_bytes_per_s if like else 10e9,
                nic_out_bytes_per_s=like.nic_out_bytes_per_s if like else 10e9,
            )
        )
    return tuple(out)


# ------------------------------------------------------------------------------------------- moves


@dataclass(frozen=True)
class LayerMove:
    """One node's range change. `layers_to_load` are the layers of `after` it did not hold `before`;
    `load_s` = bytes_to_load / min(disk, NIC-in bytes/s) (see the module docstring)."""

    node: str
    before: LayerRange | None
    after: LayerRange | None
    layers_to_load: int
    bytes_to_load: int
    load_s: float


def range_loads(after: tuple[int, int] | None, before: tuple[int, int] | None) -> int:
    """Layers of `after` (start, size) that `before` does not hold."""
    if after is None:
        return 0
    s, k = after
    if before is None:
        return k
    bs, bk = before
    overlap = max(0, min(s + k, bs + bk) - max(s, bs))
    return k - overlap


def layers_loaded(layout: Mapping[str, tuple[int, int]], base: Mapping[str, tuple[int, int]]) -> int:
    return sum(range_loads(sk, base.get(n)) for n, sk in layout.items())


def moved_against(fresh: Placement, current: Placement) -> int:
    """Layers a switch from `current` to `fresh` loads: per node, the layers of its new range it did not
    hold (nodes that drop layers load nothing). moved_share = replan's layers_moved / this."""
    return layers_loaded(from_placement(fresh), from_placement(current))


def layer_moves(
    cluster: Cluster,
    model: ModelSpec,
    before: Placement,
    after: Placement,
    *,
    disk_bytes_per_s: Mapping[str, float] | None = None,
) -> tuple[LayerMove, ...]:
    """The moves from `before` to `after` for every node of `cluster` whose range changes, in fleet order."""
    disk = disk_bytes_per_s or {}
    out: list[LayerMove] = []
    for node in cluster.nodes:
        b, a = before.get(node.name), after.get(node.name)
        if a == b:
            continue
        layers = range_loads((a.start, a.size) if a else None, (b.start, b.size) if b else None)
        nbytes = layers * model.bytes_per_layer
        rate = min(disk.get(node.gpu_type, DEFAULT_DISK_BYTES_PER_S), node.nic_in_bytes_per_s)
        out.append(LayerMove(node.name, b, a, layers, nbytes, nbytes / rate))
    return tuple(out)
