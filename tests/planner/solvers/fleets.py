"""Tiny synthetic fleets for solver tests: a few nodes, a short model, a hand-written tp table."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterator

from planner import bundled
from planner.cluster import SINK, SOURCE, Cluster, Link, Node
from planner.model import ModelSpec
from planner.placement import LayerRange, Placement
from planner.profile import ProfileSet
from planner.solvers.base import SolveContext
from planner.solvers.search import FlowOracle
from planner.throughput import ThroughputTable


def tiny_model(num_layers: int) -> ModelSpec:
    return dataclasses.replace(bundled.model("llama2-70b"), name=f"tiny-{num_layers}", num_layers=num_layers)


def profiles() -> ProfileSet:
    # Only the tp table matters to the solvers; profiles are carried along unused.
    return bundled.profiles("llama2-70b")


def complete_cluster(
    types: list[str],
    *,
    bandwidth: float = 1e9,
    slow: dict[tuple[int, int], float] | None = None,
    name: str = "tiny",
) -> Cluster:
    nodes = tuple(Node(f"n{i}", t) for i, t in enumerate(types))
    links: list[Link] = []
    for node in nodes:
        links.append(Link(SOURCE, node.name, bandwidth, 0.001))
    for i, j in itertools.permutations(range(len(nodes)), 2):
        bw = (slow or {}).get((min(i, j), max(i, j)), bandwidth)
        links.append(Link(f"n{i}", f"n{j}", bw, 0.001))
    for node in nodes:
        links.append(Link(node.name, SINK, bandwidth, 0.001))
    return Cluster(nodes, tuple(links), name=name)


def table(model: ModelSpec, rows: dict[str, list[float]]) -> ThroughputTable:
    return ThroughputTable(
        model_name=model.name, num_layers=model.num_layers, tp_by_type={t: tuple(r) for t, r in rows.items()}
    )


def context(
    cluster: Cluster,
    model: ModelSpec,
    tp: ThroughputTable,
    *,
    seed: int = 0,
    time_limit_s: float = 5.0,
    options: dict | None = None,
    clock=None,
) -> SolveContext:
    return SolveContext(
        cluster=cluster,
        model=model,
        profiles=profiles(),
        throughput=tp,
        rng=random.Random(seed),
        seed=seed,
        time_limit_s=time_limit_s,
        clock=clock,
        options=options or {},
    )


def all_layouts(
    cluster: Cluster, tp: ThroughputTable, num_layers: int
) -> Iterator[dict[str, tuple[int, int]]]:
    choices = []
    for node in cluster.nodes:
        opts: list[tuple[int, int] | None] = [None]
        for k in range(1, min(tp.max_layers(node.gpu_type), num_layers) + 1):
            opts += [(s, k) for s in range(num_layers - k + 1)]
        choices.append(opts)
    for combo in itertools.product(*choices):
        yield {n.name: c for n, c in zip(cluster.nodes, combo, strict=True) if c is not None}


def enumerate_optimum(
    cluster: Cluster, model: ModelSpec, tp: ThroughputTable, *, partial: bool = False
) -> float:
    oracle = FlowOracle(cluster, model, tp, partial=partial)
    return max(oracle.value(lay) for lay in all_layouts(cluster, tp, model.num_layers))


def valid(placement: Placement, cluster: Cluster, tp: ThroughputTable) -> bool:
    for name, rng in placement.ranges.items():
        assert isinstance(rng, LayerRange)
        if rng.size > tp.max_layers(cluster.node(name).gpu_type):
            return False
    return placement.has_full_chain() or _partial_chain(placement)


def _partial_chain(placement: Placement) -> bool:
    reach = 0
    grown = True
    while grown:
        grown = False
        for rng in placement.ranges.values():
            if rng.start <= reach < rng.end:
                reach, grown = rng.end, True
    return reach >= placement.num_layers
