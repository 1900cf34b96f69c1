"""`simulate(cluster, model, profiles, plan, config)`: build the simulated fleet for a plan, feed it a
workload, run the event loop, and return a frozen SimResult (metrics, watch lines, series for plots)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput, NoRoute
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.routing.base import RoutingPolicy
from planner.routing.kv import KVBook
from planner.routing.registry import make_policy
from planner.routing.reroute import replan_without, without_nodes
from simulator.config import SimConfig
from simulator.coordinator import SimCoordinator, kv_capacities
from simulator.engine import EventLoop
from simulator.host import SimHost
from simulator.metrics import LatencyStats, Metrics
from simulator.workload import OfflineFeeder, OnlineFeeder, load_arrivals, load_lengths

# The paper's disk speed ("1000 * mbps" read as bytes/s): loading the largest holding sets the start time.
DISK_BYTES_PER_S = 1e9


@dataclass(frozen=True)
class WatchLine:
    time_s: float
    active: int
    finished: int
    real_bottleneck: float
    expected_bottleneck: float
    # (node, real used, expected used, capacity) in token x layer entries
    nodes: tuple[tuple[str, int, int, int], ...] = ()

    def format(self) -> str:
        lines = [
            f"t={self.time_s:8.2f}s active={self.active} finished={self.finished} "
            f"bottleneck real={self.real_bottleneck:.3f} expected={self.expected_bottleneck:.3f}"
        ]
        for name, real, exp, cap in self.nodes:
            lines.append(
                f"  {name}: real {real}/{cap} ({real / cap:.0%}) | expected {exp}/{cap} ({exp / cap:.0%})"
                f"{'' if exp >= real else '  expected<real'}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class SimResult:
    decode_tok_per_s: float
    all_tok_per_s: float
    prompt_latency_s: LatencyStats
    decode_latency_s: LatencyStats
    finished: int
    admitted: int
    rejected: int
    active_at_end: int
    max_flow_tok_per_s: float
    window_s: tuple[float, float]
    total_tokens: int
    last_finish_s: float
    start_s: float
    end_s: float
    events: int
    kv_expected_left: int
    kv_real_left: int
    config: Mapping[str, Any]
    plan: Mapping[str, Any]
    throughput_series: tuple[int, ...] = ()
    decode_series: tuple[int, ...] = ()
    prompt_cdf: tuple[tuple[float, float], ...] = ()
    decode_cdf: tuple[tuple[float, float], ...] = ()
    watch: tuple[WatchLine, ...] = ()
    nodes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Nodes whose real KV use went past their capacity at some point (the paper's simulator would stop
    # with "Exceed KV-cache capacity"; a real worker would preempt): raise the output ratio or lower the mark.
    kv_overflows: tuple[str, ...] = ()
    # Failure injection: nodes that failed, queries aborted by it, re-run on a new chain, and lost (no chain).
    failed_nodes: tuple[str, ...] = ()
    aborted: int = 0
    rerun: int = 0
    lost: int = 0

    @classmethod
    def empty(cls, plan: Plan, config: SimConfig) -> SimResult:
        """The result of a plan that cannot serve anything (no flow to route on)."""
        none = LatencyStats(0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            0.0,
            0.0,
            none,
            none,
            0,
            0,
            0,
            0,
            plan.objective_tok_per_s,
            (0.0, 0.0),
            0,
            0.0,
            0.0,
            0.0,
            0,
            0,
            0,
            config.to_dict(),
            {
                "cluster": plan.cluster_name,
                "model": plan.model_name,
                "method": plan.method,
                "objective_tok_per_s": plan.objective_tok_per_s,
            },
        )

    @property
    def flow_efficiency(self) -> float:
        """All tokens/s as a share of the max-flow bound."""
        return self.all_tok_per_s / self.max_flow_tok_per_s if self.max_flow_tok_per_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "decode_tok_per_s": round(self.decode_tok_per_s, 3),
            "all_tok_per_s": round(self.all_tok_per_s, 3),
            "max_flow_tok_per_s": round(self.max_flow_tok_per_s, 3),
            "flow_efficiency": round(self.flow_efficiency, 4),
            "prompt_latency_s": self.prompt_latency_s.to_dict(),
            "decode_latency_s": self.decode_latency_s.to_dict(),
            "finished": self.finished,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "events": self.events,
            "kv_overflows": list(self.kv_overflows),
            "failed_nodes": list(self.failed_nodes),
            "aborted": self.aborted,
            "rerun": self.rerun,
            "lost": self.lost,
        }

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d.update(
            {
                "active_at_end": self.active_at_end,
                "window_s": list(self.window_s),
                "total_tokens": self.total_tokens,
                "last_finish_s": self.last_finish_s,
                "start_s": self.start_s,
                "end_s": self.end_s,
                "kv_expected_left": self.kv_expected_left,
                "kv_real_left": self.kv_real_left,
                "config": dict(self.config),
                "plan": dict(self.plan),
                "throughput_series": list(self.throughput_series),
                "decode_series": list(self.decode_series),
                "prompt_cdf": [list(p) for p in self.prompt_cdf],
                "decode_cdf": [list(p) for p in self.decode_cdf],
                "watch": [asdict(w) for w in self.watch],
                "nodes": {k: dict(v) for k, v in self.nodes.items()},
            }
        )
        return d


def load_time_s(model: ModelSpec, plan: Plan) -> float:
    """Serving starts once the largest holding is loaded from disk: ceil(max load) + 1 s, as the paper."""
    biggest = max((r.size for r in plan.placement.ranges.values()), default=0)
    return float(math.ceil(biggest * model.bytes_per_layer / DISK_BYTES_PER_S) + 1)


# The key under which _hosts files the coordinator's host (no node can be named so: node names are
# checked against the plan).
COORDINATOR_HOST_KEY = "\0coordinator"


def _hosts(cfg: SimConfig, plan: Plan, loop: EventLoop) -> dict[str, SimHost]:
    """One SimHost per declared host, filed under each node it holds (and the coordinator's key)."""
    placed = plan.placement.ranges
    for field_name, names in (
        ("throttle", list(cfg.throttle or {})),
        ("step_overhead_s", list(cfg.step_overhead_s or {})),
        ("hosts", [n for h in cfg.hosts for n in h.nodes]),
    ):
        unknown = sorted(set(names) - set(placed))
        if unknown:
            raise InvalidInput(
                f"no such node in the plan: {', '.join(unknown)} (placed: {', '.join(placed)})",
                field=field_name,
            )
    out: dict[str, SimHost] = {}
    for spec in cfg.hosts:
        host = SimHost(spec, loop)
        out.update({n: host for n in spec.nodes})
        if spec.coordinator:
            out[COORDINATOR_HOST_KEY] = host
    return out


def simulate(
    cluster: Cluster,
    model: ModelSpec,
    profiles: ProfileSet,
    plan: Plan,
    config: SimConfig | None = None,
    *,
    on_watch: Callable[[WatchLine], None] | None = None,
    on_iteration: Callable[[tuple[str, ...], bool, float], None] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> SimResult:
    """Run one simulation of `plan` on `cluster` (a planner.cluster.Cluster). Deterministic for config.seed."""
    cfg = (config or SimConfig()).resolved()
    assert cfg.duration_s is not None and cfg.warmup_s is not None and cfg.initial_queries is not None
    assert (
        cfg.kv_high_water is not None and cfg.kv_output_ratio is not None and cfg.target_tok_per_s is not None
    )
    if not plan.placement.ranges:
        raise InvalidInput("the plan places no layers", field="placement")
    if cfg.policy == "maxflow" and not plan.edge_flows:
        raise InvalidInput(
            "max-flow routing needs the plan's edge flows and this plan has none; "
            "use a baseline policy (random, swarm, shortest-queue)",
            field="policy",
        )
    start = cfg.load_time_s if cfg.load_time_s is not None else load_time_s(model, plan)
    end = start + cfg.duration_s
    loop = EventLoop(start)
    caps = kv_capacities(cluster, profiles, plan, cfg.kv_capacity)
    kv = KVBook(
        caps, high_water=cfg.kv_high_water, output_ratio=cfg.kv_output_ratio, ranges=plan.placement.ranges
    )
    prompt_limits = {
        n: profiles.get(cluster.node(n).gpu_type).prompt_max_tokens for n in plan.placement.ranges
    }
    policy_rng = random.Random(cfg.seed * 7919 + 1)
    policy = make_policy(cfg.policy, plan, cluster, rng=policy_rng, prompt_max_tokens=prompt_limits)
    window = (start + cfg.warmup_s, end) if cfg.mode == "offline" else (start, end)
    metrics = Metrics(*window)
    hosts = _hosts(cfg, plan, loop)
    coord = SimCoordinator(
        loop,
        cluster,
        model,
        profiles,
        plan,
        policy,
        kv,
        metrics,
        expected_output_len=cfg.expected_output_len,
        kv_capacity=caps,
        speeds=cfg.throttle,
        step_overhead_s=cfg.step_overhead_s,
        hosts=hosts,
        cpu_s_per_iteration=cfg.coordinator_cpu_s_per_iteration,
        host=hosts.get(COORDINATOR_HOST_KEY),
    )
    lengths = load_lengths(cfg.lengths)
    rng = random.Random(cfg.seed)
    feeder: OfflineFeeder | OnlineFeeder
    if cfg.mode == "offline":
        gate = kv.bottleneck_usage if cfg.policy == "maxflow" else None
        feeder = OfflineFeeder(
            loop,
            coord.submit,
            lengths,
            rng,
            start_s=start,
            end_s=end,
            initial=cfg.initial_queries,
            kv_gate=gate,
            feed_high_water=cfg.feed_high_water,
            warm=coord.submit_warm if cfg.warm_start else None,
        )
    else:
        feeder = OnlineFeeder(
            loop,
            coord.submit,
            lengths,
            load_arrivals(cfg.arrivals),
            rng,
            start_s=start,
            duration_s=cfg.duration_s,
            target_tok_per_s=cfg.target_tok_per_s,
        )
    coord.on_iteration = on_iteration
    coord.on_prompt_done = feeder.on_prompt_done
    coord.on_query_done = feeder.on_query_done
    coord.on_requeue = feeder.requeue

    def replan(current: Plan, node: str) -> Plan | None:
        try:
            try:
                return replan_without(current, cluster, model, profiles, [node], settings=settings)
            except (InvalidInput, ArithmeticError):
                # No throughput model for the reduced fleet: keep the planned split minus the lost node.
                return without_nodes(current, [node])
        except NoRoute:
            return None  # layers lost: keep the old weights, the policy masks the dead node

    def rebuild(fresh: Plan) -> RoutingPolicy:
        return make_policy(cfg.policy, fresh, cluster, rng=policy_rng, prompt_max_tokens=prompt_limits)

    for node, at_s in cfg.failures:
        cluster.node(node)
        loop.schedule(start + at_s, coord.fail_node, node, replan, rebuild)

    watch: list[WatchLine] = []

    def snapshot() -> None:
        real = coord.real_kv()
        line = WatchLine(
            loop.now,
            coord.active,
            coord.finished,
            kv.bottleneck_usage(real),
            kv.bottleneck_usage(),
            tuple((n, real[n], kv.used(n), caps[n]) for n in plan.placement.ranges if n in real),
        )
        watch.append(line)
        if on_watch is not None:
            on_watch(line)
        if cfg.watch_interval_s > 0 and loop.now + cfg.watch_interval_s < end:
            loop.schedule(loop.now + cfg.watch_interval_s, snapshot)

    if cfg.watch_interval_s > 0:
        loop.schedule(start, snapshot)

    def correct() -> None:
        for node, used in coord.real_kv().items():
            kv.correct(node, used)
        loop.schedule(loop.now + cfg.kv_correct_interval_s, correct)

    if cfg.kv_correct_interval_s > 0:
        loop.schedule(start, correct)
    loop.run(end)
    if cfg.mode == "online" or cfg.drain:

        def drained() -> bool:
            return coord.active == 0 and not feeder.backlog

        if not drained():
            loop.run(end + cfg.max_drain_s, stop=drained)
    nodes = {
        n: {
            "steps": w.steps,
            "busy_s": round(w.busy_s, 6),
            "utilisation": round(w.busy_s / max(1e-9, loop.now - start), 4),
            "decode_seqs": w.decode_seqs,
            "prompt_tokens": w.prompt_tokens,
            "kv_real_peak": w.kv_real_peak,
            "kv_capacity": caps[n],
            "failed": w.failed,
            "gpu_type": w.profile.gpu_type,
        }
        for n, w in coord.all_workers.items()
    }
    return SimResult(
        decode_tok_per_s=metrics.decode_tok_per_s(),
        all_tok_per_s=metrics.all_tok_per_s(),
        prompt_latency_s=metrics.prompt.stats(),
        decode_latency_s=metrics.decode.stats(),
        finished=coord.finished,
        admitted=coord.admitted,
        rejected=coord.rejected,
        active_at_end=coord.active,
        max_flow_tok_per_s=plan.objective_tok_per_s,
        window_s=window,
        total_tokens=metrics.total_tokens,
        last_finish_s=metrics.last_finish_s,
        start_s=start,
        end_s=loop.now,
        events=loop.handled,
        kv_expected_left=kv.total_used(),
        kv_real_left=sum(coord.real_kv().values()),
        config=cfg.to_dict(),
        plan={
            "cluster": plan.cluster_name,
            "model": plan.model_name,
            "method": plan.method,
            "objective_tok_per_s": plan.objective_tok_per_s,
            "placement": {n: [r.start, r.end] for n, r in plan.placement.ranges.items()},
        },
        throughput_series=tuple(metrics.series),
        decode_series=tuple(metrics.decode_series),
        prompt_cdf=tuple(metrics.prompt.cdf()),
        decode_cdf=tuple(metrics.decode.cdf()),
        watch=tuple(watch),
        nodes=nodes,
        failed_nodes=tuple(coord.failed_nodes),
        aborted=coord.aborted,
        rerun=coord.aborted - coord.lost - len(feeder.backlog),
        lost=coord.lost + len(feeder.backlog),
        kv_overflows=tuple(n for n, w in coord.all_workers.items() if w.kv_real_peak > caps[n]),
    )
