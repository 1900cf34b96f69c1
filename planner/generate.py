"""Seeded fleet generators in the manner of the Helix paper's two: one region (FakeClusterGenerator) and
several regions (PartitionedClusterGenerator). Pure: the caller passes the random.Random to draw from.

Link values are drawn uniformly from [mean - spread, mean + spread] (bandwidth, then latency), one pair
of draws per undirected link in the paper's file order (coordinator out-links, coordinator in-links,
then pairs i < j). With `paper_rounding` the values are cut the way the paper's generator writes them
(bandwidth in mbps truncated to an int above 100, rounded to one decimal above 1, else three decimals;
latency truncated to whole ms), so a Helix `.ini` written from the result loads back as the same
Cluster, and `multi_region` with the paper's regions and random.Random(0) gives 3cluster24.ini exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput

_MBPS = 1e6
_MS = 1e-3


@dataclass(frozen=True)
class Uniform:
    """U(mean - spread, mean + spread); spread 0 gives the mean exactly."""

    mean: float
    spread: float = 0.0

    def __post_init__(self) -> None:
        if self.spread < 0:
            raise InvalidInput(f"spread must be >= 0, got {self.spread}")

    def sample(self, rng: random.Random) -> float:
        # Always one draw, even when spread is 0: the paper's generator does, and matching its draw
        # sequence reproduces its 3cluster24.ini from seed 0.
        value = rng.uniform(self.mean - self.spread, self.mean + self.spread)
        return self.mean if self.spread == 0 else value


@dataclass(frozen=True)
class LinkDist:
    """How one class of links is drawn: bandwidth in bytes/s (paper convention: 1000 mbps = 1e9 B/s)
    and latency in seconds."""

    bandwidth_bytes_per_s: Uniform
    latency_s: Uniform

    def __post_init__(self) -> None:
        if self.bandwidth_bytes_per_s.mean - self.bandwidth_bytes_per_s.spread <= 0:
            raise InvalidInput("bandwidth must stay > 0: mean - spread must be > 0", field="bandwidth")
        if self.latency_s.mean - self.latency_s.spread < 0:
            raise InvalidInput("latency must stay >= 0: mean - spread must be >= 0", field="latency")

    def draw(self, rng: random.Random, paper_rounding: bool) -> tuple[float, float]:
        bw = self.bandwidth_bytes_per_s.sample(rng)
        lat = self.latency_s.sample(rng)
        if paper_rounding:
            mbps = bw / _MBPS
            if mbps > 100:
                bw = int(mbps) * _MBPS
            elif mbps > 1:
                bw = round(mbps, 1) * _MBPS
            else:
                bw = max(round(mbps, 3), 0.001) * _MBPS
            lat = int(lat / _MS) * _MS
        return bw, lat


# The paper's single-region fleets: every link 1000 mbps (1e9 B/s here) and 1 ms.
PAPER_LAN = LinkDist(Uniform(1e9), Uniform(1e-3))
# The paper's three-region fleet: 1250 ± 125 mbps / 1 ms inside a region, 12.5 ± 2.5 mbps / 50 ± 10 ms across.
PAPER_INTRA_REGION = LinkDist(Uniform(1.25e9, 1.25e8), Uniform(1e-3))
PAPER_INTER_REGION = LinkDist(Uniform(1.25e7, 2.5e6), Uniform(5e-2, 1e-2))


def _check_counts(counts: Mapping[str, int], field: str) -> None:
    if not counts:
        raise InvalidInput("expected at least one GPU type with a count", field=field)
    for gpu, n in counts.items():
        if not gpu:
            raise InvalidInput("empty GPU type name", field=field)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(
                f"count of {gpu} must be a positive integer, got {n!r}", field=f"{field}.{gpu}"
            )


def _links(
    nodes: Sequence[Node],
    rng: random.Random,
    dist_for: dict[tuple[str, str], LinkDist],
    coordinator_region: str,
    present: set[frozenset[str]] | None,
    coordinator_nodes: set[str] | None,
    paper_rounding: bool,
) -> tuple[Link, ...]:
    def dist(a: str, b: str) -> LinkDist:
        return dist_for[(a, b)] if (a, b) in dist_for else dist_for[(b, a)]

    links: list[Link] = []
    for n in nodes:
        if coordinator_nodes is None or n.name in coordinator_nodes:
            bw, lat = dist(coordinator_region, n.region).draw(rng, paper_rounding)
            links.append(Link(SOURCE, n.name, bw, lat))
    for n in nodes:
        if coordinator_nodes is None or n.name in coordinator_nodes:
            bw, lat = dist(n.region, coordinator_region).draw(rng, paper_rounding)
            links.append(Link(n.name, SINK, bw, lat))
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            if present is not None and frozenset((a.name, b.name)) not in present:
                continue
            bw, lat = dist(a.region, b.region).draw(rng, paper_rounding)
            links.append(Link(a.name, b.name, bw, lat))
            links.append(Link(b.name, a.name, bw, lat))
    return tuple(links)


def single_region(
    counts: Mapping[str, int],
    rng: random.Random,
    *,
    link: LinkDist = PAPER_LAN,
    avg_degree: int | None = None,
    slow_link: LinkDist | None = None,
    coordinator_degree: int | None = None,
    name: str = "generated",
    region: str = "default",
    paper_rounding: bool = True,
) -> Cluster:
    """`counts` GPUs of each type in one region, node types shuffled. By default the graph is complete;
    with `avg_degree` only that many links per node (on average) are drawn from `link`, the other pairs
    get `slow_link` (the paper's fill_with_slow_link) or no link. `coordinator_degree` limits how many
    nodes the coordinator reaches directly (default all)."""
    _check_counts(counts, "counts")
    types = [gpu for gpu, n in counts.items() for _ in range(n)]
    rng.shuffle(types)
    nodes = [Node(f"n{i}", t, region) for i, t in enumerate(types)]
    total = len(nodes)
    pairs = [frozenset((a.name, b.name)) for i, a in enumerate(nodes) for b in nodes[i + 1 :]]
    fast: set[frozenset[str]] | None = None
    if avg_degree is not None:
        if not 1 <= avg_degree <= max(total - 1, 1):
            raise InvalidInput(
                f"avg_degree must be in 1..{max(total - 1, 1)}, got {avg_degree}", field="avg_degree"
            )
        fast = set(rng.sample(pairs, min(len(pairs), total * avg_degree // 2)))
    coord_nodes: set[str] | None = None
    if coordinator_degree is not None:
        if not 1 <= coordinator_degree <= total:
            raise InvalidInput(
                f"coordinator_degree must be in 1..{total}, got {coordinator_degree}",
                field="coordinator_degree",
            )
        coord_nodes = {n.name for n in rng.sample(nodes, coordinator_degree)}
    dist_for = {(region, region): link}
    links = list(_links(nodes, rng, dist_for, region, fast, coord_nodes, paper_rounding))
    if fast is not None and slow_link is not None:
        # Fill the pairs left out with slow links, keeping the paper's file order (pairs i < j).
        slow = set(pairs) - fast
        filled = _links(nodes, rng, {(region, region): slow_link}, region, slow, set(), paper_rounding)
        links = _in_file_order(nodes, links + list(filled))
    return Cluster(
        tuple(nodes), tuple(links), name=name, coordinator_region=region, meta={"generator": "single_region"}
    )


def _in_file_order(nodes: Sequence[Node], links: list[Link]) -> list[Link]:
    index = {n.name: i for i, n in enumerate(nodes)}
    total = len(nodes)

    def key(lk: Link) -> tuple[int, int, int]:
        if lk.src == SOURCE:
            return (0, index[lk.dst], 0)
        if lk.dst == SINK:
            return (1, index[lk.src], 0)
        a, b = index[lk.src], index[lk.dst]
        return (2, min(a, b) * total + max(a, b), 0 if a < b else 1)

    return sorted(links, key=key)


def multi_region(
    regions: Mapping[str, Mapping[str, int]],
    rng: random.Random,
    *,
    intra: LinkDist = PAPER_INTRA_REGION,
    inter: LinkDist = PAPER_INTER_REGION,
    coordinator_region: str | None = None,
    name: str = "generated",
    paper_rounding: bool = True,
) -> Cluster:
    """Regions of GPUs (`{"us-east": {"A100": 4}, ...}`), nodes numbered region by region with types in
    the order given. Links inside a region are drawn from `intra`, between regions from `inter`. The
    coordinator sits in its own region "coordinator" by default, so its links follow `inter` (as in the
    paper); name one of the regions to put it there instead."""
    if not regions:
        raise InvalidInput("expected at least one region", field="regions")
    nodes: list[Node] = []
    for region, counts in regions.items():
        _check_counts(counts, f"regions.{region}")
        for gpu, n in counts.items():
            base = len(nodes)
            nodes.extend([Node(f"n{base + j}", gpu, region) for j in range(n)])
    coord = coordinator_region or "coordinator"
    if coordinator_region is not None and coordinator_region not in regions:
        raise InvalidInput(
            f"coordinator region {coordinator_region!r} is not one of {sorted(regions)}",
            field="coordinator_region",
        )
    all_regions = list(regions) + ([coord] if coord not in regions else [])
    dist_for = {(a, b): (intra if a == b else inter) for a in all_regions for b in all_regions}
    links = _links(nodes, rng, dist_for, coord, None, None, paper_rounding)
    return Cluster(
        tuple(nodes), links, name=name, coordinator_region=coord, meta={"generator": "multi_region"}
    )
