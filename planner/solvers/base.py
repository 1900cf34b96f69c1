"""What every placement method receives and returns, and the registry keyed by the CLI's `--method` names."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from planner.cluster import Cluster
from planner.errors import InfeasiblePlan, UnknownName
from planner.model import ModelSpec
from planner.placement import Placement
from planner.profile import ProfileSet
from planner.throughput import ThroughputTable


@dataclass(frozen=True)
class Progress:
    """One progress report from a long solve: best objective so far, best proven bound, gap, elapsed time."""

    incumbent_tok_per_s: float
    bound_tok_per_s: float | None
    elapsed_s: float
    note: str = ""

    @property
    def gap(self) -> float | None:
        if self.bound_tok_per_s is None or self.incumbent_tok_per_s <= 0:
            return None
        return max(0.0, self.bound_tok_per_s / self.incumbent_tok_per_s - 1.0)


LOGICAL_TICK_S = 1e-3


@dataclass(frozen=True)
class SolveContext:
    """Inputs of one solve. Time comes from `clock` (injected: the core never reads a clock itself) and
    randomness from `rng`; `should_stop` lets a caller end a solve early (first Ctrl+C) and still get the
    best placement found; `progress` receives incumbent/bound/gap/elapsed reports."""

    cluster: Cluster
    model: ModelSpec
    profiles: ProfileSet
    throughput: ThroughputTable
    rng: random.Random
    seed: int = 0
    time_limit_s: float = 30.0
    clock: Callable[[], float] | None = None
    progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    # A scorer for serving-aware methods: placement -> (score, details); None when no simulator is wired.
    scorer: Callable[[Placement], tuple[float, Mapping[str, Any]]] | None = None

    # Without an injected clock, time is logical: every now() call advances it by LOGICAL_TICK_S, so a time
    # limit still ends every loop that polls it and the solve is reproducible (same seed -> same plan).
    _ticks: list[int] = field(default_factory=lambda: [0], repr=False, compare=False)

    def now(self) -> float:
        if self.clock is not None:
            return self.clock()
        self._ticks[0] += 1
        return self._ticks[0] * LOGICAL_TICK_S

    def stopped(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def report(self, incumbent: float, bound: float | None, started: float, note: str = "") -> None:
        if self.progress is not None:
            self.progress(Progress(incumbent, bound, self.now() - started, note))


@dataclass(frozen=True)
class SolveResult:
    """A placement, whether partial-overlap arcs are part of its routing (petals), solver statistics, and
    the flow split its plan should carry."""

    placement: Placement
    partial: bool = True
    stats: Mapping[str, Any] = field(default_factory=dict)
    # How the plan's edge flows (the router's weights) are split: "preflow" or "balanced" (planner.flow).
    split: str = "preflow"
    # Route only inside lanes (planner.flow_split: region -> "region" or "type"), for layouts planned one
    # region at a time; None: over any link.
    lanes: Mapping[str, str] | None = None


class Solver(Protocol):
    def __call__(self, ctx: SolveContext) -> SolveResult: ...


_REGISTRY: dict[str, Solver] = {}


def register(name: str) -> Callable[[Solver], Solver]:
    def wrap(fn: Solver) -> Solver:
        _REGISTRY[name] = fn
        return fn

    return wrap


def get_solver(name: str) -> Solver:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownName("placement method", name, sorted(_REGISTRY), field="method") from None


def method_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def check_placement(
    cluster: Cluster, throughput: ThroughputTable, placement: Placement, *, partial: bool = True
) -> None:
    """Raise InfeasiblePlan unless every node holds at most its max layers and some chain covers [0, L)."""
    for name, rng in placement.ranges.items():
        gpu = cluster.node(name).gpu_type
        if rng.size > throughput.max_layers(gpu):
            raise InfeasiblePlan(
                f"node {name} ({gpu}) holds {rng.size} layers; at most {throughput.max_layers(gpu)} fit"
            )
    if not covers(placement, partial=partial):
        raise InfeasiblePlan(
            f"no chain covers layers [0, {placement.num_layers}); uncovered: "
            f"{placement.uncovered() or 'none, but ranges do not join'}"
        )


def covers(placement: Placement, *, partial: bool = True) -> bool:
    """Some chain reaches layer L: exact joins, or (partial) a next range that starts at or before the end."""
    if not partial:
        return placement.has_full_chain()
    reach = 0
    # With partial joins the reachable frontier is the furthest end of any range starting within it.
    changed = True
    while changed:
        changed = False
        for rng in placement.ranges.values():
            if rng.start <= reach < rng.end:
                reach = rng.end
                changed = True
    return reach >= placement.num_layers
