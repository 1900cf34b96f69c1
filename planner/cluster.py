"""A fleet: compute nodes (GPU type, region), directed links, and the coordinator as source and sink."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from planner.errors import InvalidInput, UnknownName

# The coordinator appears twice in the flow network: it sends prompts (source) and receives tokens (sink).
SOURCE = "source"
SINK = "sink"
ENDPOINTS = (SOURCE, SINK)


@dataclass(frozen=True)
class Node:
    name: str
    gpu_type: str
    region: str = "default"
    nic_in_bytes_per_s: float = 10e9
    nic_out_bytes_per_s: float = 10e9

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInput("a node needs a name")
        if not self.gpu_type:
            raise InvalidInput(f"node {self.name}: empty GPU type", field=self.name)
        if not (self.nic_in_bytes_per_s > 0 and self.nic_out_bytes_per_s > 0):
            raise InvalidInput(f"node {self.name}: NIC speeds must be > 0 bytes/s", field=self.name)


@dataclass(frozen=True)
class Link:
    """A directed link. The paper's quirk is kept on purpose: bandwidth is in bytes/s as written
    (a "1000 mbps" link moves 1e9 bytes/s); files say which unit they use."""

    src: str
    dst: str
    bandwidth_bytes_per_s: float
    latency_s: float

    def __post_init__(self) -> None:
        if not self.bandwidth_bytes_per_s > 0:
            raise InvalidInput(
                f"link {self.src}->{self.dst}: bandwidth must be > 0, got {self.bandwidth_bytes_per_s}"
            )
        if not 0 <= self.latency_s < math.inf:  # (NaN fails every comparison)
            raise InvalidInput(
                f"link {self.src}->{self.dst}: latency must be a finite number of seconds >= 0, got {self.latency_s}"
            )
        if self.src == self.dst:
            raise InvalidInput(f"link {self.src}->{self.dst}: a node cannot link to itself")


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    name: str = "cluster"
    coordinator_region: str = "default"
    coordinator_nic_bytes_per_s: float = 10e9
    # Where the cluster came from (file, format); not part of its identity.
    meta: Mapping[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in ENDPOINTS:
                raise InvalidInput(f"node name {node.name!r} is reserved for the coordinator")
            if node.name in seen:
                raise InvalidInput(f"duplicate node {node.name!r}")
            seen.add(node.name)
        pairs: set[tuple[str, str]] = set()
        for link in self.links:
            for end in (link.src, link.dst):
                if end not in seen and end not in ENDPOINTS:
                    raise InvalidInput(f"link {link.src}->{link.dst} names a missing node {end!r}")
            if link.src == SINK or link.dst == SOURCE:
                raise InvalidInput(
                    f"link {link.src}->{link.dst}: nothing leaves the sink or enters the source"
                )
            if (link.src, link.dst) in pairs:
                raise InvalidInput(f"duplicate link {link.src}->{link.dst}")
            pairs.add((link.src, link.dst))

    @cached_property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def _links(self) -> dict[tuple[str, str], Link]:
        return {(lk.src, lk.dst): lk for lk in self.links}

    @cached_property
    def _out(self) -> dict[str, tuple[Link, ...]]:
        out: dict[str, list[Link]] = {}
        for lk in self.links:
            out.setdefault(lk.src, []).append(lk)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _in(self) -> dict[str, tuple[Link, ...]]:
        into: dict[str, list[Link]] = {}
        for lk in self.links:
            into.setdefault(lk.dst, []).append(lk)
        return {k: tuple(v) for k, v in into.items()}

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownName("node", name, list(self._by_name)) from None

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    def link(self, src: str, dst: str) -> Link | None:
        return self._links.get((src, dst))

    def out_links(self, name: str) -> tuple[Link, ...]:
        return self._out.get(name, ())

    def in_links(self, name: str) -> tuple[Link, ...]:
        return self._in.get(name, ())

    def gpu_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.gpu_type] = counts.get(n.gpu_type, 0) + 1
        return counts

    def regions(self) -> tuple[str, ...]:
        return tuple(sorted({n.region for n in self.nodes}))

    def without(self, names: Iterable[str]) -> Cluster:
        """The same fleet minus some nodes (and their links): what is left after a failure."""
        gone = set(names)
        return Cluster(
            nodes=tuple(n for n in self.nodes if n.name not in gone),
            links=tuple(lk for lk in self.links if lk.src not in gone and lk.dst not in gone),
            name=self.name,
            coordinator_region=self.coordinator_region,
            coordinator_nic_bytes_per_s=self.coordinator_nic_bytes_per_s,
            meta=self.meta,
        )
