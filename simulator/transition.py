"""The move from one plan to a re-planned one after a node is lost, as the simulator models it: the
coordinator notices the loss after a heartbeat timeout, plans, then each node that must load layers loads
them (bytes / load bandwidth) while the fleet keeps serving on the old plan minus the dead node; once every
load is done, new requests route over the new plan's chains and the old chains drain.

A node loads beside the range it serves when both fit in its memory (old and new layers together at most
the profile's max layers); otherwise it stops taking new requests, lets its in-flight ones finish, and only
then loads: capacity lost for the load time. `plan_moves` and the figure helpers are pure; the
`TransitionController` drives the timeline on the event loop through the coordinator's public methods."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from planner.cluster import Cluster
from planner.errors import BrlError
from planner.model import ModelSpec
from planner.placement import LayerRange
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.routing.base import Chain
from simulator.engine import EventLoop

# The coordinator declares a worker dead after this many seconds without a heartbeat.
DEFAULT_DETECT_S = 2.0
# Planning time when the re-planner reports none: incremental re-planning on the paper's fleet takes
# about a second (a warm-started flow solve, not a fresh placement search).
DEFAULT_COMPUTE_S = 1.0
# Where layer weights come from on a node: its local disk, at the paper's disk speed ("1 gbps", read as
# 1e9 bytes/s like every bandwidth of the paper's machine profiles). A fleet reading from object storage
# over a slower NIC should pass its own figure.
DEFAULT_LOAD_BYTES_PER_S = 1e9

# (the plan in force when the nodes were lost, the lost node names) -> the plan to move to.
Replanner = Callable[[Plan, tuple[str, ...]], Plan]


@dataclass(frozen=True)
class NodeMove:
    """What one node does in a transition. `before`/`after` are its ranges in the old and new plan (None:
    not placed there); it loads `layers_to_load` layers (the new ones it does not hold yet)."""

    node: str
    before: LayerRange | None
    after: LayerRange | None
    layers_to_load: int
    bytes_to_load: int
    load_s: float
    # False: old and new layers do not fit together, so the node stops serving its old range to load.
    serves_old_while_loading: bool

    @property
    def changes(self) -> bool:
        return self.before != self.after


def plan_moves(
    before: Plan,
    after: Plan,
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    *,
    lost: Sequence[str] = (),
    load_bytes_per_s: float = DEFAULT_LOAD_BYTES_PER_S,
) -> tuple[NodeMove, ...]:
    """One move per surviving node placed in either plan whose range changes, sorted by node name."""
    gone = set(lost)
    old = before.placement.ranges
    new = after.placement.ranges
    moves: list[NodeMove] = []
    for name in sorted((set(old) | set(new)) - gone):
        b, a = old.get(name), new.get(name)
        if b == a:
            continue
        held = set(range(b.start, b.end)) if b is not None else set()
        wanted = set(range(a.start, a.end)) if a is not None else set()
        load = len(wanted - held)
        max_layers = profiles.get(cluster.node(name).gpu_type).max_layers
        moves.append(
            NodeMove(
                node=name,
                before=b,
                after=a,
                layers_to_load=load,
                bytes_to_load=load * model.bytes_per_layer,
                load_s=load * model.bytes_per_layer / load_bytes_per_s,
                serves_old_while_loading=b is None or load == 0 or len(held | wanted) <= max_layers,
            )
        )
    return tuple(moves)


def covered_at(
    num_layers: int,
    serving: Mapping[str, tuple[LayerRange | None, float, LayerRange | None, float]],
) -> float:
    """The earliest time every layer has a holder that can serve it. Per node: (a range and from when it
    is servable, a second range and from when); math.inf when some layer never is."""
    times = [math.inf] * num_layers
    for first, t1, second, t2 in serving.values():
        for rng, t in ((first, t1), (second, t2)):
            if rng is None:
                continue
            for layer in range(rng.start, rng.end):
                times[layer] = min(times[layer], t)
    return max(times, default=0.0)


def window_rate(series: Sequence[int], lo_s: float, hi_s: float) -> float:
    """Mean tokens/s of a per-second series over the whole seconds in [lo_s, hi_s)."""
    a, b = max(0, math.ceil(lo_s)), min(len(series), math.floor(hi_s))
    return sum(series[a:b]) / (b - a) if b > a else 0.0


@dataclass
class TransitionReport:
    """The timeline of one transition (absolute simulated seconds) and what moved."""

    lost: tuple[str, ...]
    failure_s: float
    detected_s: float
    planned_s: float
    moves: tuple[NodeMove, ...] = ()
    load_start_s: dict[str, float] = field(default_factory=dict)
    ready_s: dict[str, float] = field(default_factory=dict)
    switched_s: float | None = None
    covered_s: float | None = None
    # Why no new plan was found (the fleet keeps routing on what is left).
    error: str | None = None

    @property
    def layers_moved(self) -> int:
        return sum(m.layers_to_load for m in self.moves)

    @property
    def bytes_moved(self) -> int:
        return sum(m.bytes_to_load for m in self.moves)

    def to_dict(self) -> dict[str, Any]:
        def since_failure(t: float | None) -> float | None:
            return None if t is None or math.isinf(t) else round(t - self.failure_s, 6)

        return {
            "lost": list(self.lost),
            "failure_s": self.failure_s,
            "detected_s": self.detected_s,
            "planned_s": self.planned_s,
            "switched_s": self.switched_s,
            # death -> every layer servable again; death -> new requests on the new plan's chains
            "recover_s": since_failure(self.covered_s),
            "full_service_s": since_failure(self.switched_s),
            # plan known -> switch: the loading phase
            "transition_s": None if self.switched_s is None else round(self.switched_s - self.planned_s, 6),
            "layers_moved": self.layers_moved,
            "bytes_moved": self.bytes_moved,
            "error": self.error,
            "moves": [
                {
                    "node": m.node,
                    "before": None if m.before is None else [m.before.start, m.before.end],
                    "after": None if m.after is None else [m.after.start, m.after.end],
                    "layers_to_load": m.layers_to_load,
                    "load_s": round(m.load_s, 6),
                    "serves_old_while_loading": m.serves_old_while_loading,
                    "load_start_s": self.load_start_s.get(m.node),
                    "ready_s": self.ready_s.get(m.node),
                }
                for m in self.moves
            ],
        }


def planner_replanner(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    *,
    settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    **options: Any,
) -> Replanner:
    """planner.replan (incremental, warm-started from the plan in force) as a Replanner; `options` go to it
    (budget_layers, min_gain, time_limit_s, ...). Its logical clock keeps the run deterministic."""
    from planner.replan import FleetChange, replan

    def run(current: Plan, lost: tuple[str, ...]) -> Plan:
        # The fleet the plan in force was made for: after an earlier re-plan, the nodes lost then are gone
        # from it, so they can never be handed layers again.
        fleet = current.cluster if current.cluster is not None else cluster
        return replan(
            current, fleet, model, profiles, FleetChange(lost=lost), settings=settings, seed=seed, **options
        ).plan

    return run


class TransitionHost(Protocol):
    """What the controller needs from the simulated fleet (SimCoordinator implements it)."""

    plan: Plan

    def pause(self, node: str) -> None: ...

    def in_flight(self, node: str) -> int: ...

    def switch_plan(self, plan: Plan) -> None: ...


class TransitionController:
    """Drives transitions on the event loop: `lost(node)` at a failure; detection `detect_s` later, the
    re-planner is called with the plan in force before the loss; `compute_s` later the loads start. One
    transition at a time: nodes lost during one are re-planned once it is through."""

    def __init__(
        self,
        loop: EventLoop,
        coord: TransitionHost,
        replanner: Replanner,
        cluster: Cluster,
        model: ModelSpec,
        profiles: ProfileSet,
        *,
        detect_s: float = DEFAULT_DETECT_S,
        compute_s: float = DEFAULT_COMPUTE_S,
        load_bytes_per_s: float = DEFAULT_LOAD_BYTES_PER_S,
    ) -> None:
        self.loop = loop
        self.coord = coord
        self.replanner = replanner
        self.cluster = cluster
        self.model = model
        self.profiles = profiles
        self.detect_s = detect_s
        self.compute_s = compute_s
        self.load_bytes_per_s = load_bytes_per_s
        # The plan the fleet was built to (placement with the lost nodes still in it).
        self.base = coord.plan
        self.reports: list[TransitionReport] = []
        self._lost: list[str] = []
        self._failed_at: float | None = None
        self._busy: TransitionReport | None = None
        self._waiting: dict[str, NodeMove] = {}
        self._pending: set[str] = set()
        self._fresh = coord.plan

    def lost(self, node: str) -> None:
        """A node died now: the coordinator notices after the heartbeat timeout."""
        if node in self._lost or node not in self.base.placement.ranges:
            return
        self._lost.append(node)
        if self._failed_at is None:
            self._failed_at = self.loop.now
        self.loop.schedule(self.loop.now + self.detect_s, self._detected)

    def _detected(self) -> None:
        if self._busy is not None or not self._lost or self._failed_at is None:
            return
        lost = tuple(self._lost)
        report = TransitionReport(lost, self._failed_at, self.loop.now, self.loop.now + self.compute_s)
        self._busy = report
        self.reports.append(report)
        try:
            fresh = self.replanner(self.base, lost)
        except BrlError as exc:
            # No plan for what is left (say, too little memory for the model): keep routing around the loss.
            report.error = str(exc)
            self._busy = None
            self._lost = []
            self._failed_at = None
            return
        self.loop.schedule(report.planned_s, self._start, fresh)

    def _start(self, fresh: Plan) -> None:
        report = self._busy
        assert report is not None
        report.moves = plan_moves(
            self.base,
            fresh,
            self.cluster,
            self.model,
            self.profiles,
            lost=report.lost,
            load_bytes_per_s=self.load_bytes_per_s,
        )
        self._fresh = fresh
        self._pending = {m.node for m in report.moves if m.layers_to_load > 0}
        for m in report.moves:
            if m.layers_to_load == 0:
                continue
            if m.serves_old_while_loading:
                self._load(m)
            else:
                self.coord.pause(m.node)
                self._waiting[m.node] = m
        self.chain_done(())
        if not self._pending:
            self._switch()

    def chain_done(self, chain: Chain) -> None:
        """A query left the fleet (finished or aborted): a paused node whose requests drained loads now."""
        if not self._waiting:
            return
        for name in [n for n in self._waiting if not chain or any(h.node == n for h in chain)]:
            if self.coord.in_flight(name) == 0:
                self._load(self._waiting.pop(name))

    def _load(self, m: NodeMove) -> None:
        report = self._busy
        assert report is not None
        now = self.loop.now
        report.load_start_s[m.node] = now
        report.ready_s[m.node] = now + m.load_s
        self.loop.schedule(now + m.load_s, self._loaded, m.node)

    def _loaded(self, node: str) -> None:
        self._pending.discard(node)
        if not self._pending:
            self._switch()

    def _switch(self) -> None:
        report = self._busy
        assert report is not None
        now = self.loop.now
        report.switched_s = now
        report.covered_s = self._covered(report)
        self.coord.switch_plan(self._fresh)
        self.base = self._fresh
        self._lost = [n for n in self._lost if n not in report.lost]
        self._failed_at = now if self._lost else None
        self._busy = None
        if self._lost:
            self._detected()

    def _covered(self, report: TransitionReport) -> float:
        """When every layer had a live holder again: nodes keep serving their old ranges (unless paused to
        load) and serve their new ones from their ready time; a node that did not change serves throughout."""
        moved = {m.node: m for m in report.moves}
        serving: dict[str, tuple[LayerRange | None, float, LayerRange | None, float]] = {}
        for name, rng in self.base.placement.ranges.items():
            if name in report.lost:
                continue
            m = moved.get(name)
            if m is None:
                serving[name] = (rng, report.failure_s, None, math.inf)
                continue
            old_until = m.before if m.serves_old_while_loading else None
            serving[name] = (old_until, report.failure_s, m.after, report.ready_s.get(name, report.planned_s))
        for name, m in moved.items():
            if name not in serving:  # a node placed only in the new plan
                serving[name] = (None, math.inf, m.after, report.ready_s.get(name, report.planned_s))
        return max(report.failure_s, covered_at(self.base.placement.num_layers, serving))


def transition_figures(
    *,
    without: Sequence[int],
    with_replan: Sequence[int],
    window_start_s: float,
    end_s: float,
    transitions: Sequence[Mapping[str, Any]],
    failure_s: float,
    covered_without: bool,
) -> dict[str, Any]:
    """The headline figures of a failure run with and without re-planning (decode tokens/s from the
    per-second series of two runs with the same seed; the first transition's timeline)."""
    first = transitions[0] if transitions else {}
    switched = first.get("switched_s")
    return {
        "failure_s": failure_s,
        "decode_tok_per_s_before": round(window_rate(with_replan, window_start_s, failure_s), 3),
        "decode_tok_per_s_after_without_replan": round(window_rate(without, failure_s, end_s), 3),
        "decode_tok_per_s_after_with_replan": round(window_rate(with_replan, failure_s, end_s), 3),
        "decode_tok_per_s_after_switch": None
        if switched is None
        else round(window_rate(with_replan, switched, end_s), 3),
        # death -> every layer servable again: without re-planning never, unless survivors hold them all
        "recover_s_without_replan": 0.0 if covered_without else None,
        "recover_s": first.get("recover_s"),
        "full_service_s": first.get("full_service_s"),
        "transition_s": first.get("transition_s"),
        "layers_moved": sum(int(t.get("layers_moved", 0)) for t in transitions),
        "bytes_moved": sum(int(t.get("bytes_moved", 0)) for t in transitions),
    }
