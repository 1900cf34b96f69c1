"""`brl cluster show|generate|convert|discover`: look at a fleet, make one, change its format, or read one
off a Kubernetes cluster."""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster
from planner.errors import InvalidInput
from planner.generate import (
    PAPER_INTER_REGION,
    PAPER_INTRA_REGION,
    PAPER_LAN,
    LinkDist,
    Uniform,
    multi_region,
    single_region,
)

_MS = 1e-3


# ------------------------------------------------------------------------------------------- show


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(c.rjust(w) if c[:1].isdigit() else c.ljust(w) for c, w in zip(row, widths, strict=True))
        )
    return "\n".join(lines)


def vram_by_type() -> dict[str, int]:
    """VRAM per GPU type: the bundled machine profile, then any bundled profile that states vram_bytes."""
    vram: dict[str, int] = {}
    for model in bundled.profile_names():
        for gpu, settings in bundled.helix_settings(model).get("gpus", {}).items():
            if settings.get("vram_bytes"):
                vram.setdefault(gpu, int(settings["vram_bytes"]))
    for gpu, machine in bundled.machine_profiles().items():
        if machine.vram_bytes is not None:
            vram[gpu] = machine.vram_bytes
    return vram


def _range(values: list[float], fmt: Callable[[float], str]) -> str:
    lo, hi = min(values), max(values)
    if lo == hi:
        return fmt(lo)
    return f"{fmt(lo)} .. {fmt(hi)} (mean {fmt(statistics.fmean(values))})"


def describe(cluster: Cluster) -> str:
    """The text `brl cluster show` prints: GPUs per type and region, VRAM, link classes."""
    vram = vram_by_type()
    out = [
        f"cluster {cluster.name}: {len(cluster.nodes)} nodes, {len(cluster.links)} directed links, "
        f"regions {', '.join(cluster.regions())}; coordinator in {cluster.coordinator_region}",
        "",
    ]
    groups: dict[tuple[str, str], int] = {}
    for n in cluster.nodes:
        groups[(n.region, n.gpu_type)] = groups.get((n.region, n.gpu_type), 0) + 1
    rows = []
    total_vram = 0
    unknown: set[str] = set()
    for (region, gpu), count in sorted(groups.items()):
        per = vram.get(gpu)
        if per is None:
            unknown.add(gpu)
        else:
            total_vram += per * count
        rows.append(
            [region, gpu, str(count), _si(per, "B") if per else "?", _si(per * count, "B") if per else "?"]
        )
    out.append(_table(["region", "gpu type", "count", "VRAM each", "VRAM total"], rows))
    by_type = cluster.gpu_counts()
    out.append("")
    out.append("GPUs: " + ", ".join(f"{count} x {gpu}" for gpu, count in sorted(by_type.items())))
    note = f" (unknown VRAM for {', '.join(sorted(unknown))})" if unknown else ""
    out.append(f"total VRAM: {_si(total_vram, 'B')}{note}")
    out.append("")
    classes: dict[str, list[tuple[float, float]]] = {}
    coord = cluster.coordinator_region
    for lk in cluster.links:
        if lk.src == SOURCE:
            key = f"coordinator -> {cluster.node(lk.dst).region}"
        elif lk.dst == SINK:
            key = f"{cluster.node(lk.src).region} -> coordinator"
        else:
            ra, rb = sorted((cluster.node(lk.src).region, cluster.node(lk.dst).region))
            key = f"inside {ra}" if ra == rb else f"{ra} <-> {rb}"
        classes.setdefault(key, []).append((lk.bandwidth_bytes_per_s, lk.latency_s))
    link_rows = [
        [
            key,
            str(len(vals)),
            _range([bw for bw, _ in vals], lambda v: _si(v, "B/s")),
            _range([lat / _MS for _, lat in vals], lambda v: f"{v:.3g} ms"),
        ]
        for key, vals in sorted(classes.items())
    ]
    out.append(
        f"links (coordinator in {coord}; bandwidth in bytes/s as the paper counts it, its 1000 mbps = 1 GB/s):"
    )
    out.append(_table(["class", "links", "bandwidth", "latency"], link_rows))
    return "\n".join(out)


def _show(args: argparse.Namespace) -> int:
    print(describe(bundled.cluster(args.cluster, check_gpu_types=False)))
    return 0


# ------------------------------------------------------------------------------------------ write


def write_cluster(cluster: Cluster, output: str | None) -> None:
    """YAML to stdout when no output is given; otherwise by suffix (.yaml/.yml or .ini)."""
    from planner.formats.cluster_yaml import cluster_to_yaml

    if output in (None, "-"):
        sys.stdout.write(cluster_to_yaml(cluster))
        return
    path = Path(str(output))
    if path.suffix not in (".yaml", ".yml", ".ini"):
        raise InvalidInput(
            f"unknown output type {path.suffix!r}; expected .yaml, .yml or .ini", source="--output"
        )
    try:
        if path.suffix == ".ini":
            from planner.formats.helix_ini import save_cluster_ini

            save_cluster_ini(cluster, path)
        else:
            path.write_text(cluster_to_yaml(cluster), encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write: {exc.strerror or exc}", source=str(path)) from None
    print(f"wrote {path} ({len(cluster.nodes)} nodes, {len(cluster.links)} links)", file=sys.stderr)


# --------------------------------------------------------------------------------------- generate

_COUNT = re.compile(r"^\s*([A-Za-z0-9_.+-]+)\s*[=:]\s*(-?\d+)\s*$")


def parse_counts(text: str, flag: str) -> dict[str, int]:
    """Parse TYPE=COUNT pairs: "A100=4,L4=8" → {"A100": 4, "L4": 8}."""
    counts: dict[str, int] = {}
    for part in text.split(","):
        m = _COUNT.match(part)
        if not m:
            raise InvalidInput(f"expected TYPE=COUNT[,TYPE=COUNT...], got {part.strip()!r}", source=flag)
        gpu, count = m.group(1), int(m.group(2))
        if count < 1:
            raise InvalidInput(f"count of {gpu} must be >= 1, got {count}", source=flag)
        if gpu in counts:
            raise InvalidInput(f"GPU type {gpu} is given twice", source=flag)
        counts[gpu] = count
    return counts


def parse_uniform(text: str, flag: str, scale: float = 1.0) -> Uniform:
    """Parse MEAN or MEAN+-SPREAD (uniform), e.g. "1.25e9" or "1.25e9+-1.25e8"."""
    parts = text.replace("±", "+-").split("+-")
    try:
        values = [float(p) * scale for p in parts]
    except ValueError:
        raise InvalidInput(f"expected a number or MEAN+-SPREAD, got {text!r}", source=flag) from None
    if len(values) > 2:
        raise InvalidInput(f"expected a number or MEAN+-SPREAD, got {text!r}", source=flag)
    return Uniform(values[0], values[1] if len(values) == 2 else 0.0)


def _link(bw: str | None, lat: str | None, default: LinkDist, flags: tuple[str, str]) -> LinkDist:
    try:
        return LinkDist(
            parse_uniform(bw, flags[0]) if bw is not None else default.bandwidth_bytes_per_s,
            parse_uniform(lat, flags[1], _MS) if lat is not None else default.latency_s,
        )
    except InvalidInput as exc:
        raise InvalidInput(
            exc.detail, source=exc.source or f"{flags[0]}/{flags[1]}", field=exc.field
        ) from None


def _generate(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    rounding = not args.exact
    if bool(args.gpus) == bool(args.region):
        raise InvalidInput(
            "give either --gpus (one region) or --region (one per region, repeated)",
            source="brl cluster generate",
        )
    if args.gpus:
        if args.inter_bandwidth or args.inter_latency_ms or args.coordinator_region:
            raise InvalidInput(
                "--inter-* and --coordinator-region need --region", source="brl cluster generate"
            )
        link = _link(args.bandwidth, args.latency_ms, PAPER_LAN, ("--bandwidth", "--latency-ms"))
        slow = None
        if args.slow_bandwidth or args.slow_latency_ms:
            slow = _link(
                args.slow_bandwidth,
                args.slow_latency_ms,
                PAPER_LAN,
                ("--slow-bandwidth", "--slow-latency-ms"),
            )
        cluster = single_region(
            parse_counts(args.gpus, "--gpus"),
            rng,
            link=link,
            avg_degree=args.avg_degree,
            slow_link=slow,
            coordinator_degree=args.coordinator_degree,
            name=args.name,
            paper_rounding=rounding,
        )
    else:
        if args.avg_degree or args.slow_bandwidth or args.slow_latency_ms or args.coordinator_degree:
            raise InvalidInput(
                "--avg-degree, --slow-* and --coordinator-degree need --gpus (one region)",
                source="brl cluster generate",
            )
        regions: dict[str, dict[str, int]] = {}
        for k, spec in enumerate(args.region):
            name, sep, counts = spec.partition(":")
            if not sep or not name.strip():
                raise InvalidInput(
                    f"expected NAME:TYPE=COUNT[,TYPE=COUNT...], got {spec!r}", source=f"--region #{k + 1}"
                )
            if name.strip() in regions:
                raise InvalidInput(f"region {name.strip()!r} is given twice", source=f"--region #{k + 1}")
            regions[name.strip()] = parse_counts(counts, f"--region {name.strip()}")
        intra = _link(args.bandwidth, args.latency_ms, PAPER_INTRA_REGION, ("--bandwidth", "--latency-ms"))
        inter = _link(
            args.inter_bandwidth,
            args.inter_latency_ms,
            PAPER_INTER_REGION,
            ("--inter-bandwidth", "--inter-latency-ms"),
        )
        cluster = multi_region(
            regions,
            rng,
            intra=intra,
            inter=inter,
            coordinator_region=args.coordinator_region,
            name=args.name,
            paper_rounding=rounding,
        )
    write_cluster(cluster, args.output)
    return 0


def _convert(args: argparse.Namespace) -> int:
    write_cluster(bundled.cluster(args.cluster, check_gpu_types=False), args.output)
    return 0


# --------------------------------------------------------------------------------------- discover


def _discover(args: argparse.Namespace) -> int:
    try:
        from services.discovery.kube_nodes import discover_cluster
    except ImportError as exc:
        print(
            f"brl: error: cluster discovery is not available ({exc}); it needs services.discovery.kube_nodes "
            "and the kubernetes package",
            file=sys.stderr,
        )
        return 2
    cluster = discover_cluster(
        kubeconfig=args.kubeconfig, context=args.context, node_list_json=args.node_list_json
    )
    write_cluster(cluster, args.output)
    return 0


# ------------------------------------------------------------------------------------------- wire


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="show, generate, convert or discover a fleet description",
        description="Fleet descriptions: cluster YAML or Helix .ini, by bundled "
        f"name ({', '.join(bundled.cluster_names())}) or path.",
    )
    sub = parser.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)

    show = sub.add_parser("show", help="print GPUs per type and region, total VRAM and link classes")
    show.add_argument("cluster", help="bundled cluster name or a .yaml/.yml/.ini file")
    show.set_defaults(func=_show)

    gen = sub.add_parser(
        "generate",
        help="make a seeded single- or multi-region fleet like the paper's generators",
        description="Single region: --gpus A100=4,L4=8,T4=12. Several regions: --region r0:A100=4 "
        "--region r1:L4=2,T4=8 ... Bandwidth is bytes/s as the paper uses it (its '1000 mbps' = 1e9); "
        "distributions are MEAN or MEAN+-SPREAD (uniform). Defaults are the paper's.",
    )
    gen.add_argument("--gpus", help="one region: TYPE=COUNT[,TYPE=COUNT...] (types are shuffled)")
    gen.add_argument(
        "--region",
        action="append",
        default=[],
        help="one region, repeatable: NAME:TYPE=COUNT[,TYPE=COUNT...]",
    )
    gen.add_argument(
        "--bandwidth",
        help="links inside a region, bytes/s: MEAN[+-SPREAD] (default 1e9, or 1.25e9+-1.25e8 with --region)",
    )
    gen.add_argument("--latency-ms", help="links inside a region, ms: MEAN[+-SPREAD] (default 1)")
    gen.add_argument(
        "--inter-bandwidth",
        help="links between regions and to the coordinator, bytes/s (default 1.25e7+-2.5e6)",
    )
    gen.add_argument("--inter-latency-ms", help="links between regions, ms (default 50+-10)")
    gen.add_argument("--coordinator-region", help="region of the coordinator (default: a region of its own)")
    gen.add_argument(
        "--avg-degree",
        type=int,
        help="one region: links per node drawn from --bandwidth (default: complete graph)",
    )
    gen.add_argument(
        "--slow-bandwidth", help="one region with --avg-degree: fill other pairs with these links"
    )
    gen.add_argument("--slow-latency-ms", help="latency of the slow fill links, ms")
    gen.add_argument(
        "--coordinator-degree", type=int, help="one region: nodes the coordinator links to (default all)"
    )
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--name", default="generated", help="cluster name (default 'generated')")
    gen.add_argument(
        "--exact", action="store_true", help="keep drawn values unrounded (default: round as the paper)"
    )
    gen.add_argument("-o", "--output", help="write .yaml/.yml or .ini (default: YAML to stdout)")
    gen.set_defaults(func=_generate)

    conv = sub.add_parser("convert", help="rewrite a fleet as cluster YAML or Helix .ini")
    conv.add_argument("cluster", help="bundled cluster name or a .yaml/.yml/.ini file")
    conv.add_argument("-o", "--output", help="write .yaml/.yml or .ini (default: YAML to stdout)")
    conv.set_defaults(func=_convert)

    disc = sub.add_parser("discover", help="read the GPU nodes of a Kubernetes cluster into cluster YAML")
    disc.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube/config)")
    disc.add_argument("--context", help="kubeconfig context")
    disc.add_argument("--node-list-json", help="use a saved `kubectl get nodes -o json` instead of the API")
    disc.add_argument("-o", "--output", help="write .yaml/.yml or .ini (default: YAML to stdout)")
    disc.set_defaults(func=_discover)
