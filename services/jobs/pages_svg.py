"""Server-drawn SVG for the job pages: layer bars over [0, L), the flow graph with per-edge flow and the
min cut marked, and small line/bar charts. Values in, markup out; every shape carries `data-*` attributes
with the numbers it draws so tests (and curious operators) can read them back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from planner.cluster import SINK, SOURCE

# Colours: one per GPU type in order of first appearance; red for uncovered layers and cut edges.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac")
RED = "#d62728"
SERIES = ("#1f77b4", "#ff7f0e")


@dataclass(frozen=True)
class Bar:
    node: str
    gpu_type: str
    region: str
    start: int
    end: int


@dataclass(frozen=True)
class GraphEdge:
    src: str
    dst: str
    flow_tok_per_s: float
    capacity_tok_per_s: float | None
    cut: bool = False


def _a(value: object) -> str:
    return escape(str(value), quote=True)


def _num(x: float) -> str:
    return f"{x:,.1f}" if abs(x) < 1e5 else f"{x:,.0f}"


def gpu_colours(bars: Sequence[Bar]) -> dict[str, str]:
    colours: dict[str, str] = {}
    for bar in bars:
        colours.setdefault(bar.gpu_type, PALETTE[len(colours) % len(PALETTE)])
    return colours


def uncovered(bars: Sequence[Bar], num_layers: int) -> list[tuple[int, int]]:
    """Maximal runs of layers no node holds, as [start, end) pairs."""
    held = [False] * num_layers
    for bar in bars:
        for i in range(max(0, bar.start), min(num_layers, bar.end)):
            held[i] = True
    runs: list[tuple[int, int]] = []
    for i, h in enumerate(held):
        if h:
            continue
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def placement_svg(bars: Sequence[Bar], num_layers: int, *, width: int = 600, row_px: int = 16) -> Markup:
    """One row per node: its layer range as a bar over [0, L); a top strip marks uncovered layers red."""
    label_px, pad = 130, 40  # room for names on the left and the range's numbers on the right
    plot_px = width - label_px - pad
    colours = gpu_colours(bars)
    height = (len(bars) + 2) * row_px + 18

    def x(layer: float) -> float:
        return label_px + plot_px * layer / max(1, num_layers)

    parts = [
        f'<svg class="placement" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'data-num-layers="{num_layers}" aria-label="layer placement">',
        f'<rect x="{label_px}" y="2" width="{plot_px}" height="{row_px - 6}" fill="#e8f0e8"/>',
        f'<text x="{label_px - 6}" y="{row_px - 5}" text-anchor="end" class="lbl">coverage</text>',
    ]
    for start, end in uncovered(bars, num_layers):
        parts.append(
            f'<rect class="uncovered" data-start="{start}" data-end="{end}" x="{x(start):.1f}" y="2" '
            f'width="{x(end) - x(start):.1f}" height="{row_px - 6}" fill="{RED}"><title>layers [{start}, '
            f"{end}) held by no node</title></rect>"
        )
    # Top to bottom in layer order, so a chain reads as a staircase.
    for i, bar in enumerate(sorted(bars, key=lambda b: (b.start, b.end, b.node))):
        y = (i + 1) * row_px + 2
        parts.append(
            f'<text x="{label_px - 6}" y="{y + row_px - 5}" text-anchor="end" class="lbl">'
            f"{_a(bar.node)} · {_a(bar.gpu_type)}</text>"
            f'<rect class="layer-bar" data-node="{_a(bar.node)}" data-gpu="{_a(bar.gpu_type)}" '
            f'data-start="{bar.start}" data-end="{bar.end}" x="{x(bar.start):.1f}" y="{y}" '
            f'width="{max(1.0, x(bar.end) - x(bar.start)):.1f}" height="{row_px - 4}" '
            f'fill="{colours[bar.gpu_type]}"><title>{_a(bar.node)}: layers [{bar.start}, {bar.end})'
            f"</title></rect>"
            f'<text x="{x(bar.end) + 3:.1f}" y="{y + row_px - 5}" class="tick">{bar.start}–{bar.end}</text>'
        )
    axis_y = (len(bars) + 1) * row_px + 6
    for k in range(5):
        layer = round(num_layers * k / 4)
        parts.append(
            f'<line x1="{x(layer):.1f}" x2="{x(layer):.1f}" y1="2" y2="{axis_y}" class="grid"/>'
            f'<text x="{x(layer):.1f}" y="{axis_y + 12}" text-anchor="middle" class="tick">{layer}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _columns(bars: Sequence[Bar]) -> list[list[Bar]]:
    """Nodes grouped by the layer they start at, left to right; a column lists its nodes by end, then name."""
    starts = sorted({b.start for b in bars})
    return [sorted((b for b in bars if b.start == s), key=lambda b: (b.end, b.node)) for s in starts]


def flow_graph_svg(
    bars: Sequence[Bar],
    edges: Sequence[GraphEdge],
    node_flow: dict[str, float],
    node_capacity: dict[str, float],
    cut_nodes: set[str],
    *,
    width: int = 1200,
) -> Markup:
    """Source on the left, sink on the right, nodes in columns by the layer they start at. Edge width grows
    with flow; every edge with flow shows it; cut edges and cut GPUs are red."""
    columns = _columns(bars)
    box_w, box_h, gap_y, margin = 100, 46, 12, 70
    rows = max((len(c) for c in columns), default=1)
    height = max(120, rows * (box_h + gap_y) + 30)
    # Columns never overlap: a long chain makes the graph wider (its panel scrolls) rather than unreadable.
    step = max((width - 2 * margin) / max(1, len(columns)), box_w + 36)
    width = max(width, int(2 * margin + step * len(columns)))
    pos: dict[str, tuple[float, float]] = {SOURCE: (35.0, height / 2), SINK: (width - 35.0, height / 2)}
    for ci, column in enumerate(columns):
        top = (height - len(column) * (box_h + gap_y)) / 2
        for ri, bar in enumerate(column):
            pos[bar.node] = (margin + step * (ci + 0.5), top + ri * (box_h + gap_y) + box_h / 2)
    biggest = max((e.flow_tok_per_s for e in edges), default=0.0) or 1.0
    parts = [
        f'<svg class="flowgraph" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        'aria-label="flow graph">',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="6" markerHeight="6" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#777"/></marker></defs>',
    ]
    for e in edges:
        if e.src not in pos or e.dst not in pos:
            continue
        (x1, y1), (x2, y2) = pos[e.src], pos[e.dst]
        x1 += 0 if e.src == SOURCE else box_w / 2
        x2 -= 0 if e.dst == SINK else box_w / 2
        stroke = RED if e.cut else "#777"
        w = 0.8 + 5 * e.flow_tok_per_s / biggest
        cap_attr = "" if e.capacity_tok_per_s is None else f"{e.capacity_tok_per_s:.3f}"
        dash = ' stroke-dasharray="6 3"' if e.cut else ""
        parts.append(
            f'<g class="edge" data-src="{_a(e.src)}" data-dst="{_a(e.dst)}" '
            f'data-flow="{e.flow_tok_per_s:.3f}" data-capacity="{cap_attr}" data-cut="{str(e.cut).lower()}">'
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
            f'stroke-width="{w:.2f}" opacity="0.75" marker-end="url(#arrow)"{dash}/>'
            f"<title>{_a(e.src)} → {_a(e.dst)}: {_num(e.flow_tok_per_s)} tok/s</title>"
        )
        if e.flow_tok_per_s > 0:
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            parts.append(
                f'<text x="{mx:.1f}" y="{my - 3:.1f}" text-anchor="middle" class="flow">'
                f"{_num(e.flow_tok_per_s)}</text>"
            )
        parts.append("</g>")
    colours = gpu_colours(bars)
    for bar in bars:
        cx, cy = pos[bar.node]
        cut = bar.node in cut_nodes
        flow, cap = node_flow.get(bar.node, 0.0), node_capacity.get(bar.node, 0.0)
        parts.append(
            f'<g class="gnode" data-node="{_a(bar.node)}" data-flow="{flow:.3f}" data-capacity="{cap:.3f}" '
            f'data-cut="{str(cut).lower()}">'
            f'<rect x="{cx - box_w / 2:.1f}" y="{cy - box_h / 2:.1f}" width="{box_w}" height="{box_h}" rx="5" '
            f'fill="#fff" stroke="{RED if cut else colours[bar.gpu_type]}" stroke-width="{3 if cut else 2}"/>'
            f'<text x="{cx:.1f}" y="{cy - 9:.1f}" text-anchor="middle" class="nname">{_a(bar.node)}</text>'
            f'<text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle" class="nsub">{_a(bar.gpu_type)} '
            f"[{bar.start},{bar.end})</text>"
            f'<text x="{cx:.1f}" y="{cy + 17:.1f}" text-anchor="middle" class="nsub">{_num(flow)} / {_num(cap)}</text></g>'
        )
    for name, label in ((SOURCE, "source"), (SINK, "sink")):
        cx, cy = pos[name]
        parts.append(
            f'<g class="gnode endpoint" data-node="{name}"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="18" '
            f'fill="#333"/><text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle" fill="#fff" '
            f'class="nsub">{label}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def lines_svg(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    x_label: str,
    y_label: str,
    width: int = 600,
    height: int = 190,
) -> Markup:
    """Up to a few named (x, y) series on shared axes from 0, each a polyline with a legend entry."""
    pad_l, pad_b, pad_t, pad_r = 52, 30, 10, 10
    xs = [x for _, pts in series for x, _ in pts] or [1.0]
    ys = [y for _, pts in series for _, y in pts] or [1.0]
    x_max, y_max = max(max(xs), 1e-9), max(max(ys), 1e-9)
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def px(x: float, y: float) -> str:
        return f"{pad_l + pw * x / x_max:.1f},{pad_t + ph * (1 - y / y_max):.1f}"

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{_a(y_label)}">',
        f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" class="axis"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" class="axis"/>',
        f'<text x="{pad_l + pw / 2}" y="{height - 4}" text-anchor="middle" class="tick">{_a(x_label)}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" class="tick">{_num(y_max)}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + ph}" text-anchor="end" class="tick">0</text>',
        f'<text x="{pad_l + pw}" y="{pad_t + ph + 12}" text-anchor="end" class="tick">{_num(x_max)}</text>',
        f'<text x="{pad_l + 4}" y="{pad_t + 8}" class="tick">{_a(y_label)}</text>',
    ]
    for i, (name, pts) in enumerate(series):
        colour = SERIES[i % len(SERIES)]
        if pts:
            points = " ".join(px(x, y) for x, y in pts)
            parts.append(
                f'<polyline class="series" data-name="{_a(name)}" points="{points}" fill="none" '
                f'stroke="{colour}" stroke-width="1.8"/>'
            )
        parts.append(
            f'<rect x="{pad_l + pw - 150}" y="{pad_t + 4 + 14 * i}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{pad_l + pw - 136}" y="{pad_t + 13 + 14 * i}" class="tick">{_a(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
