"""The Helix artifact's `simulator_cluster.ini`: the directed links the paper's scheduler may use and, per
node, its machine type, VRAM and KV capacity for the layers it holds
(see docs/placement-and-routing.md §5)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput
from planner.formats import with_source
from planner.formats.ini_values import get_text as _get_text
from planner.formats.ini_values import get_value as _get
from planner.formats.ini_values import number as _number
from planner.formats.ini_values import read_ini as _read_ini

SOLUTION_OFFSET = 2  # the paper's simulator gives uid 0 to the source and 1 to the sink
_SIM_KEY = re.compile(r"^compute_node_(\d+)$")


def node_name(index: int) -> str:
    """Cluster-file node i is called n{i} everywhere in BRL."""
    return f"n{index}"


@dataclass(frozen=True)
class SimulatorClusterFile:
    """What `simulator_cluster.ini` holds: the directed links the paper's scheduler may use, and per
    node its machine type, VRAM and KV capacity (token x layer entries) for its layer count."""

    cluster: Cluster
    kv_capacity: Mapping[str, int]
    vram_bytes: Mapping[str, int]


def _sim_name(raw: str, source: str, field: str) -> str:
    if raw in (SOURCE, SINK):
        return raw
    m = _SIM_KEY.match(raw)
    if not m:
        raise InvalidInput(
            f"expected 'source', 'sink' or compute_node_<k>, got {raw!r}", source=source, field=field
        )
    return node_name(int(m.group(1)) - SOLUTION_OFFSET)


def load_simulator_cluster_ini(path: str | Path, *, name: str | None = None) -> SimulatorClusterFile:
    parser, source, text = _read_ini(path)
    names = _get(parser, "ComputeNodes", "names", source)
    if not isinstance(names, list):
        raise InvalidInput("expected a list of node names", source=source, field="[ComputeNodes] names")
    nodes: list[Node] = []
    kv: dict[str, int] = {}
    vram: dict[str, int] = {}
    for raw in names:
        sec = str(raw)
        node = _sim_name(sec, source, "[ComputeNodes] names")
        gpu = _get_text(parser, sec, "machine_type", source)
        nic_in = _number(
            _get(parser, sec, "inbound_nic_speed", source), source=source, field=f"[{sec}] inbound_nic_speed"
        )
        nic_out = _number(
            _get(parser, sec, "outbound_nic_speed", source),
            source=source,
            field=f"[{sec}] outbound_nic_speed",
        )
        nodes.append(Node(node, gpu, "default", nic_in, nic_out))
        kv[node] = int(
            _number(
                _get(parser, sec, "kv_cache_capacity", source),
                source=source,
                field=f"[{sec}] kv_cache_capacity",
            )
        )
        vram[node] = int(
            _number(_get(parser, sec, "vram_size", source), source=source, field=f"[{sec}] vram_size")
        )
    link_names = _get(parser, "Links", "names", source)
    if not isinstance(link_names, list):
        raise InvalidInput("expected a list of link names", source=source, field="[Links] names")
    links: list[Link] = []
    for raw in link_names:
        sec = str(raw)
        # `in` / `out` are written unquoted (in=compute_node_2), so they are read as raw text.
        for key in ("in", "out"):
            if not parser.has_option(sec, key):
                raise InvalidInput(f"missing key {key!r}", source=source, field=f"[{sec}] {key}")
        a_raw, b_raw = parser.get(sec, "in").strip().strip("'\""), parser.get(sec, "out").strip().strip("'\"")
        bw = _number(_get(parser, sec, "bandwidth", source), source=source, field=f"[{sec}] bandwidth")
        lat = _number(_get(parser, sec, "latency", source), source=source, field=f"[{sec}] latency")
        links.append(
            Link(_sim_name(a_raw, source, f"[{sec}] in"), _sim_name(b_raw, source, f"[{sec}] out"), bw, lat)
        )
    coord_nic = 10e9
    if parser.has_option("Coordinator", "outbound_nic_speed"):
        coord_nic = _number(
            _get(parser, "Coordinator", "outbound_nic_speed", source),
            source=source,
            field="[Coordinator] outbound_nic_speed",
        )
    try:
        cluster = Cluster(
            nodes=tuple(nodes),
            links=tuple(links),
            name=name or Path(path).stem,
            coordinator_nic_bytes_per_s=coord_nic,
            meta={"source": source, "format": "helix-simulator-ini"},
        )
    except InvalidInput as exc:
        raise with_source(exc, source) from None
    return SimulatorClusterFile(cluster, kv, vram)
