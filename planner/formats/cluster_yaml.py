"""The BRL cluster YAML: node groups (count, GPU type, region) and link classes instead of one line per link.

    name: cluster24                      # optional; defaults to the file's stem
    coordinator: {region: us-east, nic_bytes_per_s: 1.0e10}
    node_groups:                         # nodes are numbered in file order: n0, n1, ...
      - {gpu_type: A100, count: 4, region: us-east}
      - {gpu_type: T4, count: 2, region: eu-west, name_prefix: t4-}   # → t4-0, t4-1
      - {gpu_type: L4, count: 2, region: eu-west, names: [edge-a, edge-b]}
    links:                               # complete graph; each link's class follows its regions
      intra_region: {bandwidth_bytes_per_s: 1.0e9, latency_ms: 1}      # inside any region
      inter_region: {bandwidth_bytes_per_s: 1.25e7, latency_ms: 50}    # between any two regions
      regions: {eu-west: {bandwidth_bytes_per_s: 2.0e9, latency_ms: 1}}  # one region's own links
      region_pairs: [{regions: [us-east, eu-west], bandwidth_bytes_per_s: 1.0e8, latency_ms: 20}]
      overrides:                         # per link; both directions unless directed: true
        - {nodes: [n0, t4-1], bandwidth_bytes_per_s: 5.0e8, latency_ms: 2}
        - {nodes: [source, n1], absent: true}          # no link from the coordinator to n1

Units are in the key names. Bandwidth is bytes per second, exactly as the planner divides it by bytes
per token; to match the Helix paper, its "1000 * mbps" links are written 1.0e9 here (the paper does not
divide by 8). Latency is `latency_ms` (milliseconds) or `latency_s` (seconds), one of the two. Links to
and from the coordinator ("source" sends prompts, "sink" receives tokens) take the class of the pair
(coordinator region, node region).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.errors import InvalidInput, UnknownName
from planner.formats import read_text, with_source
from planner.formats.cluster_schema import (
    DEFAULT_NIC_BYTES_PER_S,
    MS,
    NAME_PATTERN,
    ClusterFile,
    LinkClass,
)
from planner.formats.profiles import validation_error

# ------------------------------------------------------------------------------------------- load


def _canonical_pairs(nodes: tuple[Node, ...]) -> Iterator[tuple[str, str]]:
    """Every link of a complete fleet, in the order the paper's cluster files list them: coordinator
    out-links, coordinator in-links, then each pair i < j as i→j and j→i."""
    for n in nodes:
        yield SOURCE, n.name
    for n in nodes:
        yield n.name, SINK
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            yield a.name, b.name
            yield b.name, a.name


def cluster_from_dict(
    data: Any,
    *,
    source: str = "cluster",
    name: str | None = None,
    known_gpu_types: Collection[str] | None = None,
) -> Cluster:
    if data is None:
        raise InvalidInput(
            "file is empty; expected a cluster mapping with node_groups and links", source=source
        )
    if not isinstance(data, dict):
        raise InvalidInput(f"expected a mapping at the top level, got {type(data).__name__}", source=source)
    try:
        spec = ClusterFile.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source) from None

    nodes: list[Node] = []
    group_of: dict[str, int] = {}
    for g, group in enumerate(spec.node_groups):
        field = f"node_groups.{g}"
        if known_gpu_types is not None and group.gpu_type not in known_gpu_types:
            raise UnknownName(
                "GPU type", group.gpu_type, tuple(known_gpu_types), source=source, field=f"{field}.gpu_type"
            )
        for j in range(group.count):
            if group.names is not None:
                node_name = group.names[j]
            elif group.name_prefix is not None:
                node_name = f"{group.name_prefix}{j}"
            else:
                node_name = f"n{len(nodes)}"
            if node_name in group_of:
                raise InvalidInput(
                    f"duplicate node {node_name!r} (also made by node_groups.{group_of[node_name]})",
                    source=source,
                    field=field,
                )
            if node_name in (SOURCE, SINK):
                raise InvalidInput(
                    f"node name {node_name!r} is reserved for the coordinator", source=source, field=field
                )
            group_of[node_name] = g
            nodes.append(
                Node(
                    node_name,
                    group.gpu_type,
                    group.region,
                    group.nic_in_bytes_per_s,
                    group.nic_out_bytes_per_s,
                )
            )
    fleet = tuple(nodes)
    regions = {n.region for n in fleet} | {spec.coordinator.region}
    for r in spec.links.regions:
        if r not in regions:
            raise UnknownName("region", r, sorted(regions), source=source, field=f"links.regions.{r}")
    pair_class: dict[frozenset[str], LinkClass] = {}
    for k, pair in enumerate(spec.links.region_pairs):
        for r in pair.regions:
            if r not in regions:
                raise UnknownName(
                    "region", r, sorted(regions), source=source, field=f"links.region_pairs.{k}.regions"
                )
        if pair.regions[0] == pair.regions[1]:
            raise InvalidInput(
                "a region pair needs two different regions (use links.regions for one region)",
                source=source,
                field=f"links.region_pairs.{k}.regions",
            )
        key = frozenset(pair.regions)
        if key in pair_class:
            raise InvalidInput(
                f"regions {sorted(key)} are given twice",
                source=source,
                field=f"links.region_pairs.{k}.regions",
            )
        pair_class[key] = LinkClass(
            bandwidth_bytes_per_s=pair.bandwidth_bytes_per_s,
            latency_ms=pair.latency_ms,
            latency_s=pair.latency_s,
        )

    def class_for(ra: str, rb: str) -> LinkClass:
        if ra == rb:
            found = spec.links.regions.get(ra) or spec.links.intra_region
            hint = f"links.intra_region or links.regions.{ra}"
        else:
            found = pair_class.get(frozenset((ra, rb))) or spec.links.inter_region
            hint = f"links.inter_region or a links.region_pairs entry for [{ra}, {rb}]"
        if found is None:
            raise InvalidInput(
                f"no link class for links between regions {ra!r} and {rb!r}; add {hint}",
                source=source,
                field="links",
            )
        return found

    by_name = {n.name: n for n in fleet}
    overrides: dict[tuple[str, str], LinkClass | None] = {}
    for k, ov in enumerate(spec.links.overrides):
        field = f"links.overrides.{k}.nodes"
        a, b = ov.nodes
        for end in (a, b):
            if end not in by_name and end not in (SOURCE, SINK):
                raise UnknownName("node", end, sorted(by_name) + [SOURCE, SINK], source=source, field=field)
        if a == b:
            raise InvalidInput("a node cannot link to itself", source=source, field=field)
        if ov.directed:
            if a == SINK or b == SOURCE:
                raise InvalidInput("nothing leaves the sink or enters the source", source=source, field=field)
            edges = [(a, b)]
        elif {a, b} == {SOURCE, SINK}:
            raise InvalidInput(
                "source and sink are the coordinator; they do not link to each other",
                source=source,
                field=field,
            )
        elif SOURCE in (a, b):
            edges = [(SOURCE, b if a == SOURCE else a)]
        elif SINK in (a, b):
            edges = [(a if b == SINK else b, SINK)]
        else:
            edges = [(a, b), (b, a)]
        for edge in edges:
            if edge in overrides:
                raise InvalidInput(
                    f"link {edge[0]}->{edge[1]} is overridden twice", source=source, field=field
                )
            overrides[edge] = None if ov.absent else ov.as_class()

    coord = spec.coordinator.region
    links: list[Link] = []
    for src, dst in _canonical_pairs(fleet):
        if (src, dst) in overrides:
            cls = overrides[(src, dst)]
            if cls is None:
                continue
        else:
            ra = coord if src == SOURCE else by_name[src].region
            rb = coord if dst == SINK else by_name[dst].region
            cls = class_for(ra, rb)
        links.append(Link(src, dst, cls.bandwidth_bytes_per_s, cls.seconds()))
    try:
        return Cluster(
            nodes=fleet,
            links=tuple(links),
            name=name or spec.name or "cluster",
            coordinator_region=coord,
            coordinator_nic_bytes_per_s=spec.coordinator.nic_bytes_per_s,
            meta={"source": source, "format": "brl-yaml"},
        )
    except InvalidInput as exc:
        raise with_source(exc, source) from None


def load_cluster_yaml(
    path: str | Path, *, name: str | None = None, known_gpu_types: Collection[str] | None = None
) -> Cluster:
    """Read a cluster YAML. `known_gpu_types`, when given, rejects GPU types outside it."""
    source = str(path)
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"not valid YAML: {problem}", source=source, field=where) from None
    stem = Path(path).stem
    has_name = isinstance(data, dict) and data.get("name")
    return cluster_from_dict(
        data, source=source, name=name or (None if has_name else stem), known_gpu_types=known_gpu_types
    )


# ------------------------------------------------------------------------------------------- save


def _latency_fields(latency_s: float) -> dict[str, float | int]:
    """latency_ms when it reads back to the very same float, else latency_s (exact round trip)."""
    ms = round(latency_s / MS, 9)
    ms_value: float | int = int(ms) if ms == int(ms) else ms
    if ms_value * MS == latency_s:
        return {"latency_ms": ms_value}
    return {"latency_s": latency_s}


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)


def _class_dict(value: tuple[float, float]) -> dict[str, float | int]:
    return {"bandwidth_bytes_per_s": _num(value[0]), **_latency_fields(value[1])}


def _groups(cluster: Cluster) -> list[dict[str, Any]]:
    """Consecutive nodes with the same type, region and NICs form a group, so node order survives."""
    groups: list[dict[str, Any]] = []
    runs: list[list[tuple[int, Node]]] = []

    def key(m: Node) -> tuple[str, str, float, float]:
        return (m.gpu_type, m.region, m.nic_in_bytes_per_s, m.nic_out_bytes_per_s)

    for i, n in enumerate(cluster.nodes):
        if runs and key(runs[-1][-1][1]) == key(n):
            runs[-1].append((i, n))
        else:
            runs.append([(i, n)])
    for run in runs:
        first = run[0][1]
        group: dict[str, Any] = {"gpu_type": first.gpu_type, "count": len(run), "region": first.region}
        names = [n.name for _, n in run]
        if names != [f"n{i}" for i, _ in run]:
            prefix = re.sub(r"\d+$", "", names[0])
            if (
                prefix
                and re.match(NAME_PATTERN, prefix)
                and names == [f"{prefix}{j}" for j in range(len(names))]
            ):
                group["name_prefix"] = prefix
            else:
                group["names"] = names
        if first.nic_in_bytes_per_s != DEFAULT_NIC_BYTES_PER_S:
            group["nic_in_bytes_per_s"] = _num(first.nic_in_bytes_per_s)
        if first.nic_out_bytes_per_s != DEFAULT_NIC_BYTES_PER_S:
            group["nic_out_bytes_per_s"] = _num(first.nic_out_bytes_per_s)
        groups.append(group)
    return groups


_PLACEHOLDER = (1.0e9, 1.0e-3)


def _most_common(values: list[tuple[float, float]]) -> tuple[float, float]:
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)  # ties: the first seen, so output is deterministic


def cluster_to_dict(cluster: Cluster) -> dict[str, Any]:
    """The most common link value of each region pair becomes its class; other links become overrides."""
    by_name = {n.name: n for n in cluster.nodes}
    coord = cluster.coordinator_region
    expected = list(_canonical_pairs(cluster.nodes))
    expected_set = set(expected)
    for lk in cluster.links:
        if (lk.src, lk.dst) not in expected_set:
            raise InvalidInput(f"link {lk.src}->{lk.dst} cannot be written as cluster YAML")

    def region_key(src: str, dst: str) -> frozenset[str]:
        ra = coord if src == SOURCE else by_name[src].region
        rb = coord if dst == SINK else by_name[dst].region
        return frozenset((ra, rb))

    values: dict[frozenset[str], list[tuple[float, float]]] = {}
    for lk in cluster.links:
        values.setdefault(region_key(lk.src, lk.dst), []).append((lk.bandwidth_bytes_per_s, lk.latency_s))
    class_value = {k: _most_common(v) for k, v in values.items()}
    intra = [class_value[k] for k in class_value if len(k) == 1]
    inter = [class_value[k] for k in class_value if len(k) == 2]
    links: dict[str, Any] = {}
    # A class every link of which is absent still needs a value to be absent from: a placeholder.
    needed = {region_key(a, b) for a, b in expected}
    generic_intra = (
        _most_common(intra) if intra else (_PLACEHOLDER if any(len(k) == 1 for k in needed) else None)
    )
    generic_inter = (
        _most_common(inter) if inter else (_PLACEHOLDER if any(len(k) == 2 for k in needed) else None)
    )
    if generic_intra is not None:
        links["intra_region"] = _class_dict(generic_intra)
    if generic_inter is not None:
        links["inter_region"] = _class_dict(generic_inter)
    own = {
        next(iter(k)): _class_dict(v) for k, v in class_value.items() if len(k) == 1 and v != generic_intra
    }
    if own:
        links["regions"] = dict(sorted(own.items()))
    pairs = [
        {"regions": sorted(k), **_class_dict(v)}
        for k, v in sorted(class_value.items(), key=lambda kv: sorted(kv[0]))
        if len(k) == 2 and v != generic_inter
    ]
    if pairs:
        links["region_pairs"] = pairs

    def default_for(src: str, dst: str) -> tuple[float, float] | None:
        k = region_key(src, dst)
        if k in class_value:
            return class_value[k]
        return generic_intra if len(k) == 1 else generic_inter

    actual: dict[tuple[str, str], tuple[float, float] | None] = {
        (lk.src, lk.dst): (lk.bandwidth_bytes_per_s, lk.latency_s) for lk in cluster.links
    }
    overrides: list[dict[str, Any]] = []
    done: set[tuple[str, str]] = set()

    def entry(a: str, b: str, value: tuple[float, float] | None, directed: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"nodes": [a, b]}
        if directed:
            out["directed"] = True
        if value is None:
            out["absent"] = True
        else:
            out.update(_class_dict(value))
        return out

    for src, dst in expected:
        if (src, dst) in done:
            continue
        done.add((src, dst))
        value = actual.get((src, dst))
        if value == default_for(src, dst):
            continue
        if SOURCE in (src, dst) or SINK in (src, dst):
            overrides.append(entry(src, dst, value, False))
            continue
        back = actual.get((dst, src))
        done.add((dst, src))
        if back == value:
            overrides.append(entry(src, dst, value, False))
        else:
            overrides.append(entry(src, dst, value, True))
            if back != default_for(dst, src):
                overrides.append(entry(dst, src, back, True))
    if overrides:
        links["overrides"] = overrides
    coordinator: dict[str, Any] = {"region": coord}
    if cluster.coordinator_nic_bytes_per_s != DEFAULT_NIC_BYTES_PER_S:
        coordinator["nic_bytes_per_s"] = _num(cluster.coordinator_nic_bytes_per_s)
    return {"name": cluster.name, "coordinator": coordinator, "node_groups": _groups(cluster), "links": links}


_HEADER = (
    "# BRL cluster. Units: bandwidth in bytes/s (the Helix paper's '1000 * mbps' = 1.0e9 here, no /8);\n"
    "# latency_ms in milliseconds or latency_s in seconds. Nodes are numbered in file order unless named.\n"
)


def cluster_to_yaml(cluster: Cluster) -> str:
    return _HEADER + yaml.safe_dump(
        cluster_to_dict(cluster), sort_keys=False, default_flow_style=None, width=110
    )


def save_cluster_yaml(cluster: Cluster, path: str | Path) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cluster_to_yaml(cluster), encoding="utf-8")
