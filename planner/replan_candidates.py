"""Candidate placements for re-planning: the coverage repair, from-scratch layouts re-dealt to reuse what nodes hold, trimming a new shape back toward
the current one, and rebuilding one window of layers. Pure: values in, values out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from planner.cluster import Cluster
from planner.errors import InfeasiblePlan
from planner.replan_moves import layers_loaded, range_loads
from planner.solvers.search import Layout, lane_layout, to_placement
from planner.throughput import ThroughputTable

# ------------------------------------------------------------------------------------------ repair


def _coverage(layout: Mapping[str, tuple[int, int]], num_layers: int) -> list[int]:
    counts = [0] * num_layers
    for s, k in layout.values():
        for layer in range(s, s + k):
            counts[layer] += 1
    return counts


def _first_gap(layout: Mapping[str, tuple[int, int]], num_layers: int) -> tuple[int, int] | None:
    runs = to_placement(layout, num_layers).uncovered()
    return runs[0] if runs else None


def repair(
    layout: Layout,
    names: Sequence[str],
    kmax: Mapping[str, int],
    num_layers: int,
    value: Callable[[Layout], float],
) -> Layout:
    """Cover every uncovered layer, loading exactly the uncovered layers where the fleet allows. Each step
    fills the front of the first gap with the option that covers the most of it: an idle node, a spare
    holder (moved; every layer it held has another holder), or a neighbour stretched into the gap; ties go
    to the higher max-flow, then fleet order. InfeasiblePlan when nothing can cover a gap."""
    layout = dict(layout)
    order = {n: i for i, n in enumerate(names)}
    while (gap := _first_gap(layout, num_layers)) is not None:
        a, b = gap
        need = b - a
        options: list[tuple[int, str, Layout]] = []
        counts = _coverage(layout, num_layers)
        for name in names:
            here = layout.get(name)
            spare = here is not None and all(counts[i] >= 2 for i in range(here[0], here[0] + here[1]))
            if here is None or spare:
                size = min(kmax[name], need)
                options.append((size, name, {**layout, name: (a, size)}))
            if here is not None:
                s, k = here
                slack = kmax[name] - k
                if slack > 0 and s + k == a:
                    grow = min(slack, need)
                    options.append((grow, name, {**layout, name: (s, k + grow)}))
                elif slack > 0 and s == b:
                    grow = min(slack, need)
                    options.append((grow, name, {**layout, name: (s - grow, k + grow)}))
        if not options:
            raise InfeasiblePlan(
                f"no node can cover layers [{a}, {b}) after the change: every node is at its max layers "
                "and holds the only copy of some layer"
            )
        best = max(options, key=lambda o: (o[0], value(o[2]) if o[0] == need else 0.0, -order[o[1]]))
        layout = best[2]
    return layout


# --------------------------------------------------------------------------------------- relabel


def relabel(
    candidate: Mapping[str, tuple[int, int]], current: Mapping[str, tuple[int, int]], cluster: Cluster
) -> Layout:
    """`candidate` with its ranges dealt among interchangeable nodes (same GPU type and region) so that
    as few layers as possible are loaded relative to `current`: greedy by overlap, then pairwise swaps
    until none helps. A from-scratch layout keeps its shape but reuses what nodes already hold."""
    groups: dict[tuple[str, str], list[str]] = {}
    for node in cluster.nodes:
        groups.setdefault((node.gpu_type, node.region), []).append(node.name)
    out: Layout = {}
    for names in groups.values():
        slots = [candidate.get(n) for n in names]
        if all(sl is None for sl in slots):
            continue
        for i, j in _deal(names, slots, current).items():
            slot = slots[j]
            if slot is not None:
                out[names[i]] = slot
    return out


def _deal(
    names: Sequence[str],
    slots: Sequence[tuple[int, int] | None],
    current: Mapping[str, tuple[int, int]],
) -> dict[int, int]:
    """node index -> slot index, fewest layers loaded: greedy by overlap, then pairwise swaps."""

    def cost(i: int, j: int) -> int:
        return range_loads(slots[j], current.get(names[i]))

    ranked = sorted(
        (cost(i, j), -(slots[j] or (0, 0))[1], i != j, i, j)
        for i in range(len(names))
        for j in range(len(slots))
    )
    assign: dict[int, int] = {}
    used: set[int] = set()
    for *_, i, j in ranked:
        if i not in assign and j not in used:
            assign[i] = j
            used.add(j)
    improved = True
    while improved:
        improved = False
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                ja, jb = assign[a], assign[b]
                if cost(a, jb) + cost(b, ja) < cost(a, ja) + cost(b, jb):
                    assign[a], assign[b] = jb, ja
                    improved = True
    return assign


def trim(
    start: Layout,
    target: Layout,
    base: Mapping[str, tuple[int, int]],
    value: Callable[[Layout], float],
    *,
    deadline: Callable[[], bool] = lambda: False,
) -> list[Layout]:
    """Layouts from `start` back to `target`: each step gives one node back its `target` range (or idles
    it), the one whose return keeps the most value (ties: the most layers saved, then fleet order), until
    nothing loads more than `target` does or `deadline()` says stop. Loads are counted against `base`."""
    path: list[Layout] = []
    cur = dict(start)
    floor = layers_loaded(target, base)
    while layers_loaded(cur, base) > floor and not deadline():
        options: list[tuple[float, int, str, Layout]] = []
        for name in sorted(set(cur) | set(target)):
            if cur.get(name) == target.get(name):
                continue
            new = dict(cur)
            if name in target:
                new[name] = target[name]
            else:
                del new[name]
            saved = layers_loaded(cur, base) - layers_loaded(new, base)
            if saved > 0:
                options.append((value(new), saved, name, new))
        if not options:
            break
        cur = max(options, key=lambda o: (o[0], o[1], [-ord(c) for c in o[2]]))[3]
        path.append(cur)
    return path


MAX_WINDOW_SHARE = 0.5
WINDOW_LANES = (1, 2, 3)


def rebuild_windows(
    layout: Layout,
    cluster: Cluster,
    tp: ThroughputTable,
    num_layers: int,
    *,
    deadline: Callable[[], bool] = lambda: False,
) -> list[Layout]:
    """`layout` with one window of layers [x, y) rebuilt: the nodes whose ranges lie inside it, and the idle
    ones, re-dealt as 1-3 parallel lanes over the window (search.lane_layout on the window), the rest
    untouched. Windows run between range boundaries, up to half the model, smallest first, until
    `deadline()`: a loss hurts one part of the pipeline, and rebuilding only that part moves few layers."""
    bounds = sorted({0, num_layers} | {s for s, _ in layout.values()} | {s + k for s, k in layout.values()})
    spans = sorted(
        (y - x, x, y)
        for x in bounds
        for y in bounds
        if 0 < y - x <= max(1, int(MAX_WINDOW_SHARE * num_layers))
    )
    idle = [n for n in cluster.node_names if n not in layout]
    out: list[Layout] = []
    seen: set[frozenset[str]] = set()
    for _, x, y in spans:
        if deadline():
            break
        inside = [n for n, (s, k) in layout.items() if x <= s and s + k <= y]
        freed = frozenset(inside + idle)
        if not inside or (freed, x, y) in seen:  # type: ignore[comparison-overlap]
            continue
        seen.add(freed)
        sub = cluster.without(n for n in cluster.node_names if n not in freed)
        kept = {n: sk for n, sk in layout.items() if n not in freed}
        for lanes in WINDOW_LANES:
            if lanes > len(freed):
                break
            part = lane_layout(sub, tp, y - x, lanes)
            if not part:
                continue
            moved = relabel({n: (s + x, k) for n, (s, k) in part.items()}, layout, sub)
            out.append({**kept, **moved})
    return out
