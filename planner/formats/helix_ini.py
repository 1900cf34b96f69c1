"""The Helix artifact's `.ini` files: cluster topology, machine profile and `*_sol.ini` placements
(`simulator_cluster.ini` lives in planner.formats.simulator_ini and is re-exported here).

Units follow the paper on purpose: `mbps = 1e6` and bandwidths are used as bytes/s (a "1000 * mbps"
link moves 1e9 bytes/s, no /8), so the published max-flow numbers reproduce.
"""

from __future__ import annotations

import configparser
import json
import re
from dataclasses import dataclass
from pathlib import Path

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput
from planner.formats import with_source
from planner.formats.ini_values import UNITS, parse_value
from planner.formats.ini_values import get_text as _get_text
from planner.formats.ini_values import get_value as _get
from planner.formats.ini_values import number as _number
from planner.formats.ini_values import read_ini as _read_ini
from planner.formats.simulator_ini import (
    SOLUTION_OFFSET,
    SimulatorClusterFile,
    load_simulator_cluster_ini,
    node_name,
)
from planner.placement import LayerRange, Placement

__all__ = [
    "UNITS",
    "SOLUTION_OFFSET",
    "MachineProfile",
    "SimulatorClusterFile",
    "load_cluster_ini",
    "load_machine_profile_ini",
    "load_simulator_cluster_ini",
    "load_solution_ini",
    "node_name",
    "parse_value",
    "save_cluster_ini",
    "save_solution_ini",
]

# --------------------------------------------------------------------------------------- clusters

_LINK_SECTION = re.compile(r"^Link-(source|\d+)-(\d+|sink)$")
_PARTITION_COMMENT = re.compile(r"^#\s*partition-(\d+):\s*(\[.*\])\s*$")
_REGIONS_COMMENT = re.compile(r"^#\s*brl-regions:\s*(\{.*\})\s*$")
_COORD_COMMENT = re.compile(r"^#\s*brl-coordinator-region:\s*(\S+)\s*$")


def _regions_from_comments(text: str, types: list[str], source: str) -> tuple[list[str], str]:
    """Regions are not part of the Helix format; its multi-region generator records them in the header
    comment as `partition-k: [types]` (consecutive blocks of nodes). BRL's writer adds `brl-regions`."""
    n = len(types)
    for line in text.splitlines():
        m = _REGIONS_COMMENT.match(line.strip())
        if m:
            try:
                mapping = json.loads(m.group(1))
                regions = ["default"] * n
                for region, indices in mapping.items():
                    for i in indices:
                        regions[int(i)] = str(region)
            except (ValueError, TypeError, IndexError, AttributeError):
                raise InvalidInput(
                    "bad brl-regions comment; expected a JSON object region -> node indices", source=source
                ) from None
            coord = "default"
            for line2 in text.splitlines():
                m2 = _COORD_COMMENT.match(line2.strip())
                if m2:
                    coord = m2.group(1)
            return regions, coord
    partitions: list[tuple[int, list[object]]] = []
    for line in text.splitlines():
        m = _PARTITION_COMMENT.match(line.strip())
        if m:
            value = parse_value(m.group(2), source=source, field=f"# partition-{m.group(1)}")
            partitions.append((int(m.group(1)), value if isinstance(value, list) else []))
    if partitions:
        regions = []
        for k, members in sorted(partitions):
            regions.extend([f"region-{k}"] * len(members))
        # Trust the comment only when it describes exactly these nodes.
        flat = [t for _, members in sorted(partitions) for t in members]
        if len(regions) == n and flat == types:
            # The generator draws source/sink links from the cross-region distribution: the coordinator
            # sits in a region of its own.
            return regions, "coordinator"
    return ["default"] * n, "default"


def load_cluster_ini(path: str | Path, *, name: str | None = None) -> Cluster:
    """A Helix cluster file → Cluster. Node i → "n{i}"; an undirected `[Link-i-j]` becomes two directed
    links, each with the full capacity (the paper's directions do not share bandwidth)."""
    parser, source, text = _read_ini(path)
    total = _get(parser, "NodeNames", "total_compute_nodes", source)
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise InvalidInput(
            f"expected a positive integer, got {total!r}",
            source=source,
            field="[NodeNames] total_compute_nodes",
        )
    types: list[str] = []
    for i in range(total):
        gpu = _get_text(parser, f"ComputeNode-{i}", "type", source)
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", gpu):
            raise InvalidInput(
                f"expected a GPU type name, got {gpu!r}", source=source, field=f"[ComputeNode-{i}] type"
            )
        types.append(gpu)
    for section in parser.sections():
        m = re.match(r"^ComputeNode-(\d+)$", section)
        if m and int(m.group(1)) >= total:
            raise InvalidInput(
                f"node index {m.group(1)} is out of range for total_compute_nodes={total}",
                source=source,
                field=f"[{section}]",
            )
    regions, coord_region = _regions_from_comments(text, types, source)
    nodes = tuple(Node(node_name(i), types[i], regions[i]) for i in range(total))

    def endpoint(token: str, section: str) -> str:
        if token in (SOURCE, SINK):
            return token
        index = int(token)
        if index >= total:
            raise InvalidInput(
                f"link names node {index} but the cluster has nodes 0..{total - 1}",
                source=source,
                field=f"[{section}]",
            )
        return node_name(index)

    links: list[Link] = []
    present: set[tuple[str, str]] = set()
    for section in parser.sections():
        if not section.startswith("Link-"):
            continue
        m = _LINK_SECTION.match(section)
        if not m:
            raise InvalidInput(
                "bad link section name; expected [Link-source-i], [Link-i-sink] or [Link-i-j]",
                source=source,
                field=f"[{section}]",
            )
        a, b = endpoint(m.group(1), section), endpoint(m.group(2), section)
        bw = _number(
            _get(parser, section, "bandwidth", source), source=source, field=f"[{section}] bandwidth"
        )
        lat = _number(_get(parser, section, "latency", source), source=source, field=f"[{section}] latency")
        if bw <= 0:
            raise InvalidInput(
                f"bandwidth must be > 0, got {bw}", source=source, field=f"[{section}] bandwidth"
            )
        if lat < 0:
            raise InvalidInput(
                f"latency must be >= 0, got {lat}", source=source, field=f"[{section}] latency"
            )
        if a == b:
            raise InvalidInput("a node cannot link to itself", source=source, field=f"[{section}]")
        pairs = [(a, b)] if SOURCE in (a, b) or SINK in (a, b) else [(a, b), (b, a)]
        for src, dst in pairs:
            if (src, dst) in present:
                raise InvalidInput(f"duplicate link {src}->{dst}", source=source, field=f"[{section}]")
            present.add((src, dst))
            links.append(Link(src, dst, bw, lat))
    _check_connected_nodes(parser, total, present, source)
    try:
        return Cluster(
            nodes=nodes,
            links=tuple(links),
            name=name or Path(path).stem,
            coordinator_region=coord_region,
            meta={"source": source, "format": "helix-ini"},
        )
    except InvalidInput as exc:
        raise with_source(exc, source) from None


def _check_connected_nodes(
    parser: configparser.ConfigParser, total: int, present: set[tuple[str, str]], source: str
) -> None:
    """Every neighbour a node lists must have its [Link-…] section (the paper's loader relies on it)."""
    for section, me in [("SourceNode", SOURCE), ("SinkNode", SINK)] + [
        (f"ComputeNode-{i}", node_name(i)) for i in range(total)
    ]:
        if not parser.has_option(section, "connected_nodes"):
            if section in ("SourceNode", "SinkNode"):
                raise InvalidInput(
                    "missing key 'connected_nodes'", source=source, field=f"[{section}] connected_nodes"
                )
            continue
        field = f"[{section}] connected_nodes"
        listed = parse_value(parser.get(section, "connected_nodes"), source=source, field=field)
        if not isinstance(listed, list):
            raise InvalidInput(f"expected a list, got {listed!r}", source=source, field=field)
        for other in listed:
            if other in (SOURCE, SINK):
                peer = str(other)
            elif isinstance(other, int) and not isinstance(other, bool) and 0 <= other < total:
                peer = node_name(other)
            else:
                raise InvalidInput(
                    f"unknown neighbour {other!r}; expected 'source', 'sink' or 0..{total - 1}",
                    source=source,
                    field=field,
                )
            if (me, peer) not in present and (peer, me) not in present:
                raise InvalidInput(
                    f"lists neighbour {other!r} but no [Link-…] section joins them",
                    source=source,
                    field=field,
                )


def _fmt_bw(bw: float) -> str:
    mbps = bw / UNITS["mbps"]
    if mbps == int(mbps):
        return f"{int(mbps)} * mbps"
    return f"{mbps!r} * mbps"


def _fmt_lat(lat: float) -> str:
    ms = lat / UNITS["MilliSec"]
    r = round(ms, 9)
    if r == int(r) and int(r) * UNITS["MilliSec"] == lat:
        return f"{int(r)} * MilliSec"
    return f"{ms!r} * MilliSec"


def _index_of(cluster: Cluster) -> dict[str, int]:
    return {n.name: i for i, n in enumerate(cluster.nodes)}


def save_cluster_ini(cluster: Cluster, path: str | Path) -> None:
    """Write a Cluster as a Helix cluster file (node order = index). Undirected sections need both
    directions with equal values; asymmetric links cannot be written in this format."""
    idx = _index_of(cluster)

    def key(name: str) -> str:
        return name if name in (SOURCE, SINK) else str(idx[name])

    lines = ["# Cluster written by BRL (Helix cluster format)."]
    regions: dict[str, list[int]] = {}
    for i, n in enumerate(cluster.nodes):
        regions.setdefault(n.region, []).append(i)
    lines.append(f"# brl-regions: {json.dumps(regions)}")
    lines.append(f"# brl-coordinator-region: {cluster.coordinator_region}")
    n_total = len(cluster.nodes)
    lines += ["", "[NodeNames]", f"total_compute_nodes={n_total}", ""]
    src_peers = [idx[lk.dst] for lk in cluster.out_links(SOURCE)]
    sink_peers = [idx[lk.src] for lk in cluster.in_links(SINK)]
    lines += ["[SourceNode]", f"connected_nodes={sorted(src_peers)}", ""]
    lines += ["[SinkNode]", f"connected_nodes={sorted(sink_peers)}", ""]
    sections: list[tuple[str, Link]] = []
    for i, n in enumerate(cluster.nodes):
        peers: set[int | str] = set()
        for lk in cluster.out_links(n.name) + cluster.in_links(n.name):
            other = lk.dst if lk.src == n.name else lk.src
            peers.add(other if other in (SOURCE, SINK) else idx[other])
        ordered: list[int | str] = (
            ([SOURCE] if SOURCE in peers else [])
            + sorted(p for p in peers if isinstance(p, int))
            + ([SINK] if SINK in peers else [])
        )
        lines += [f"[ComputeNode-{i}]", f"type={n.gpu_type}", f"connected_nodes={ordered!r}", ""]
    # Section order as the paper's generator writes it: source links, sink links, then pairs i < j.
    for lk in cluster.out_links(SOURCE):
        sections.append((f"Link-source-{key(lk.dst)}", lk))
    for lk in cluster.in_links(SINK):
        sections.append((f"Link-{key(lk.src)}-sink", lk))
    for lk in cluster.links:
        if SOURCE in (lk.src, lk.dst) or SINK in (lk.src, lk.dst):
            continue
        i, j = idx[lk.src], idx[lk.dst]
        back = cluster.link(lk.dst, lk.src)
        if back is None or (back.bandwidth_bytes_per_s, back.latency_s) != (
            lk.bandwidth_bytes_per_s,
            lk.latency_s,
        ):
            raise InvalidInput(
                f"link {lk.src}->{lk.dst} has no equal reverse link; the Helix ini format only holds "
                "undirected links (save as YAML instead)",
                source=str(path),
            )
        if i < j:
            sections.append((f"Link-{i}-{j}", lk))
    for section, lk in sections:
        lines += [
            f"[{section}]",
            f"bandwidth={_fmt_bw(lk.bandwidth_bytes_per_s)}",
            f"latency={_fmt_lat(lk.latency_s)}",
            "",
        ]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------------- machine profile


@dataclass(frozen=True)
class MachineProfile:
    """One `[Type]` section of the machine profile; None where the file says -1 (not applicable)."""

    name: str
    nic_in_bytes_per_s: float | None
    nic_out_bytes_per_s: float | None
    disk_bytes_per_s: float | None
    vram_bytes: int | None


def load_machine_profile_ini(path: str | Path) -> dict[str, MachineProfile]:
    parser, source, text = _read_ini(path)
    out: dict[str, MachineProfile] = {}
    for section in parser.sections():
        values: list[float | None] = []
        for key in ("inbound_nic_speed", "outbound_nic_speed", "disk_speed", "vram_size"):
            v = _number(_get(parser, section, key, source), source=source, field=f"[{section}] {key}")
            if v < 0 and v != -1:
                raise InvalidInput(
                    f"expected >= 0 or -1 (not applicable), got {v}",
                    source=source,
                    field=f"[{section}] {key}",
                )
            values.append(None if v == -1 else v)
        vram = values[3]
        out[section] = MachineProfile(
            section, values[0], values[1], values[2], None if vram is None else int(vram)
        )
    if not out:
        raise InvalidInput("no machine sections found", source=source)
    return out


# -------------------------------------------------------------------------------------- solutions

_SOL_KEY = re.compile(r"^compute_node_(\d+)$")


def load_solution_ini(path: str | Path, cluster: Cluster, num_layers: int) -> Placement:
    """A `*_sol.ini` → Placement. `compute_node_<i+2>` is node i of the cluster (cluster.nodes[i], named
    "n{i}" for Helix clusters); an empty list means the node is unused."""
    parser, source, text = _read_ini(path)
    offset = _get(parser, "Settings", "offset", source)
    if offset != SOLUTION_OFFSET:
        raise InvalidInput(
            f"expected offset={SOLUTION_OFFSET}, got {offset!r}", source=source, field="[Settings] offset"
        )
    if not parser.has_section("Solution"):
        raise InvalidInput("missing section [Solution]", source=source, field="[Solution]")
    ranges: dict[str, LayerRange] = {}
    for key in parser.options("Solution"):
        field = f"[Solution] {key}"
        m = _SOL_KEY.match(key)
        if not m:
            raise InvalidInput("expected keys compute_node_<i+2>", source=source, field=field)
        index = int(m.group(1)) - SOLUTION_OFFSET
        if not 0 <= index < len(cluster.nodes):
            raise InvalidInput(
                f"node index {index} is not in cluster {cluster.name!r} (nodes 0..{len(cluster.nodes) - 1})",
                source=source,
                field=field,
            )
        layers = parse_value(parser.get("Solution", key), source=source, field=field)
        if not isinstance(layers, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in layers
        ):
            raise InvalidInput(f"expected a list of layer ids, got {layers!r}", source=source, field=field)
        if not layers:
            continue
        ints = [int(x) for x in layers]  # type: ignore[call-overload]
        if ints != list(range(ints[0], ints[0] + len(ints))):
            raise InvalidInput(
                f"layers must be contiguous and ascending, got {ints}", source=source, field=field
            )
        if ints[0] < 0 or ints[-1] >= num_layers:
            raise InvalidInput(
                f"layers {ints[0]}..{ints[-1]} are out of bounds for a {num_layers}-layer model",
                source=source,
                field=field,
            )
        ranges[cluster.nodes[index].name] = LayerRange(ints[0], ints[-1] + 1)
    return Placement(num_layers, ranges)


def save_solution_ini(placement: Placement, cluster: Cluster, path: str | Path) -> None:
    """Write a Placement in the paper's `*_sol.ini` format (every cluster node listed, idle ones empty)."""
    for name in placement:
        if not cluster.has_node(name):
            raise InvalidInput(
                f"placement names node {name!r} which is not in cluster {cluster.name!r}", source=str(path)
            )
    lines = ["[Settings]", f"offset={SOLUTION_OFFSET}", "", "[Solution]"]
    for i, n in enumerate(cluster.nodes):
        rng = placement.get(n.name)
        layers = list(range(rng.start, rng.end)) if rng else []
        lines.append(f"compute_node_{i + SOLUTION_OFFSET}={layers}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
