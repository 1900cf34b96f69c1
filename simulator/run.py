"""`simulate(cluster, model, profiles, plan, config)`: build the simulated fleet for a plan, feed it a
workload, run the event loop, and return a frozen SimResult (metrics, watch lines, series for plots)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from planner.cluster import Cluster
from planner.errors import InvalidInput, NoRoute
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.routing.base import RoutingPolicy
from planner.routing.kv import KVBook
from planner.routing.registry import make_policy, policy_options
from planner.routing.reroute import replan_without, without_nodes
from simulator.config import SimConfig
from simulator.coordinator import SimCoordinator
from simulator.engine import EventLoop
from simulator.fast_engine import FastLoop, which_engine
from simulator.host import SimHost
from simulator.kv_capacity import kv_capacities
from simulator.metrics import Metrics
from simulator.result import SimResult, WatchLine
from simulator.transition import Replanner, TransitionController, planner_replanner
from simulator.warm_fill import FillShape
from simulator.workload import OfflineFeeder, OnlineFeeder, load_arrivals, load_lengths

# The paper's disk speed ("1000 * mbps" read as bytes/s): loading the largest holding sets the start time.
DISK_BYTES_PER_S = 1e9

__all__ = ["DISK_BYTES_PER_S", "SimConfig", "SimResult", "WatchLine", "load_time_s", "simulate"]


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
    replanner: Replanner | None = None,
) -> SimResult:
    """Run one simulation of `plan` on `cluster` (a planner.cluster.Cluster). Deterministic for config.seed.
    With `config.replan`, each failure is followed by a transition to the plan `replanner` returns (default:
    planner.replan, incremental re-planning) as simulator.transition models it."""
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
    caps = kv_capacities(cluster, profiles, plan, cfg.kv_capacity)
    kv = KVBook(
        caps, high_water=cfg.kv_high_water, output_ratio=cfg.kv_output_ratio, ranges=plan.placement.ranges
    )
    prompt_limits = {
        n: profiles.get(cluster.node(n).gpu_type).prompt_max_tokens for n in plan.placement.ranges
    }
    policy_rng = random.Random(cfg.seed * 7919 + 1)
    options = policy_options(cfg.policy, dead_end=cfg.dead_end)
    policy = make_policy(
        cfg.policy, plan, cluster, rng=policy_rng, prompt_max_tokens=prompt_limits, **options
    )
    window = (start + cfg.warmup_s, end) if cfg.mode == "offline" else (start, end)
    metrics = Metrics(*window)
    engine = which_engine(cfg, policy, on_iteration is not None)
    loop = FastLoop(start, metrics) if engine == "compiled" else EventLoop(start)
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
        pipeline_depth=cfg.pipeline_depth,
    )
    lengths = load_lengths(cfg.lengths)
    rng = random.Random(cfg.seed)
    feeder: OfflineFeeder | OnlineFeeder
    if cfg.mode == "offline":
        # The book in force (a plan switch replaces it), not the first one.
        gate = (
            (lambda: coord.kv.bottleneck_usage())
            if cfg.policy == "maxflow" and not cfg.fixed_concurrency
            else None
        )
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
            fill_shape=FillShape(
                ages_s=cfg.warm_ages_s,
                # Little's law's decode rate: the plan's max-flow (all tokens) times the decode share.
                decode_tok_per_s=plan.objective_tok_per_s * lengths.mean_output / lengths.mean_total,
            ),
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
        return make_policy(
            cfg.policy, fresh, cluster, rng=policy_rng, prompt_max_tokens=prompt_limits, **options
        )

    def make_kv(fresh: Plan) -> tuple[KVBook, Mapping[str, int]]:
        # A declared capacity holds for the range it was declared for; a moved node gets its profile's.
        kept = {
            n: c
            for n, c in (cfg.kv_capacity or {}).items()
            if fresh.placement.ranges.get(n) == plan.placement.ranges.get(n)
        }
        fresh_caps = kv_capacities(cluster, profiles, fresh, kept)
        book = KVBook(
            fresh_caps,
            high_water=kv.high_water,
            output_ratio=kv.output_ratio,
            ranges=fresh.placement.ranges,
        )
        return book, fresh_caps

    coord.make_kv = make_kv
    coord.make_policy = rebuild
    controller: TransitionController | None = None
    if cfg.replan and cfg.failures:
        controller = TransitionController(
            loop,
            coord,
            replanner or planner_replanner(cluster, model, profiles, settings=settings, seed=cfg.seed),
            cluster,
            model,
            profiles,
            detect_s=cfg.replan_detect_s,
            compute_s=cfg.replan_compute_s,
            load_bytes_per_s=cfg.load_bandwidth_bytes_per_s,
        )
        coord.on_chain_done = controller.chain_done
        coord.on_switch = feeder.resume

    def fail(node: str) -> None:
        coord.fail_node(node, replan, rebuild)
        if controller is not None:
            controller.lost(node)

    for node, at_s in cfg.failures:
        cluster.node(node)
        loop.schedule(start + at_s, fail, node)

    watch: list[WatchLine] = []

    def snapshot() -> None:
        real = coord.real_kv()
        book = coord.kv
        line = WatchLine(
            loop.now,
            coord.active,
            coord.finished,
            book.bottleneck_usage(real),
            book.bottleneck_usage(),
            tuple((n, real[n], book.used(n), w.kv_capacity) for n, w in coord.workers.items()),
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
            coord.kv.correct(node, used)
        loop.schedule(loop.now + cfg.kv_correct_interval_s, correct)

    if cfg.kv_correct_interval_s > 0:
        loop.schedule(start, correct)
    loop.run(end)
    if cfg.mode == "online" or cfg.drain:

        def drained() -> bool:
            return coord.active == 0 and not feeder.backlog

        if not drained():
            loop.run(end + cfg.max_drain_s, stop=drained)
    coord.sync_from_core()
    # A node whose range a plan switch changed ran as two workers: its report adds them up.
    earlier: dict[str, list[Any]] = {}
    for w in coord.retired_workers:
        earlier.setdefault(w.name, []).append(w)
    nodes = {}
    for n, w in coord.all_workers.items():
        ran = [*earlier.get(n, []), w]
        busy = sum(x.busy_s for x in ran)
        nodes[n] = {
            "steps": sum(x.steps for x in ran),
            "busy_s": round(busy, 6),
            "utilisation": round(busy / max(1e-9, loop.now - start), 4),
            "decode_seqs": sum(x.decode_seqs for x in ran),
            "prompt_tokens": sum(x.prompt_tokens for x in ran),
            "kv_real_peak": max(x.kv_real_peak for x in ran),
            "kv_capacity": w.kv_capacity,
            "failed": w.failed,
            "gpu_type": w.profile.gpu_type,
        }
        if ran[0].layers != w.layers:
            nodes[n]["layers_before"] = [ran[0].layers.start, ran[0].layers.end]
            nodes[n]["layers"] = [w.layers.start, w.layers.end]
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
        kv_expected_left=coord.kv.total_used() + sum(book.total_used() for book, _ in coord.retired),
        kv_real_left=sum(coord.real_kv().values()) + sum(w.kv_real for w in coord.retired_workers),
        # The config as run: `engine` names the engine that ran ("auto" resolved).
        config=replace(cfg, engine=engine).to_dict(),
        plan={
            "cluster": plan.cluster_name,
            "model": plan.model_name,
            "method": plan.method,
            "objective_tok_per_s": plan.objective_tok_per_s,
            "placement": {n: [r.start, r.end] for n, r in plan.placement.ranges.items()},
            **(
                {"placement_after": {n: [r.start, r.end] for n, r in coord.plan.placement.ranges.items()}}
                if controller is not None and any(t.switched_s is not None for t in controller.reports)
                else {}
            ),
        },
        throughput_series=tuple(metrics.series),
        decode_series=tuple(metrics.decode_series),
        prompt_cdf=tuple(metrics.prompt.cdf()),
        decode_cdf=tuple(metrics.decode.cdf()),
        watch=tuple(watch),
        nodes=nodes,
        failed_nodes=tuple(coord.failed_nodes),
        aborted=coord.aborted,
        # Only aborted queries still waiting count as lost: an online backlog also holds plain arrivals.
        rerun=coord.aborted - coord.lost - feeder.requeued_waiting,
        lost=coord.lost + feeder.requeued_waiting,
        kv_overflows=tuple(
            dict.fromkeys(
                w.name
                for w in [*coord.all_workers.values(), *coord.retired_workers]
                if w.kv_real_peak > w.kv_capacity
            )
        ),
        transitions=tuple(r.to_dict() for r in controller.reports) if controller is not None else (),
        ttft_s=metrics.ttft.stats(),
        # Online every arrival falls in the window; offline the feeder keeps no one waiting for admission.
        unserved=max(0, feeder.issued - metrics.ttft.n) if isinstance(feeder, OnlineFeeder) else 0,
    )
