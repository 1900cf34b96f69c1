"""What one simulation run is asked to do: mode, policy, workload, window, KV parameters, injected failures,
and what the deployment adds to the profiles (throttles, per-step work, shared hosts, coordinator CPU).
Defaults follow the paper; `resolved()` fills in the ones that depend on mode and policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from planner.errors import InvalidInput
from planner.routing.kv import OFFLINE_KV, ONLINE_KV, PAPER_EXPECTED_OUTPUT_LEN
from planner.routing.maxflow import DEAD_END_RULES, DEFAULT_DEAD_END
from planner.routing.registry import policy_names
from simulator.fast_engine import ENGINES
from simulator.host import HostSpec
from simulator.transition import DEFAULT_COMPUTE_S, DEFAULT_DETECT_S, DEFAULT_LOAD_BYTES_PER_S

MODES = ("offline", "online")


@dataclass(frozen=True)
class SimConfig:
    """Defaults follow the paper's examples: offline = 60-s warm-up + 600-s window, 20 initial queries for
    max-flow (KV-gated refills) and 180 in flight for the baselines; online = 1800 s at 700 tokens/s for
    max-flow and 400 for the baselines. KV parameters default to (0.85, 1.0) offline and (0.9, 0.6) online."""

    mode: str = "offline"
    policy: str = "maxflow"
    lengths: str = "azure-conv"
    arrivals: str = "azure-conv"
    duration_s: float | None = None
    warmup_s: float | None = None
    seed: int = 0
    initial_queries: int | None = None
    feed_high_water: float = 0.8
    kv_high_water: float | None = None
    kv_output_ratio: float | None = None
    expected_output_len: int = PAPER_EXPECTED_OUTPUT_LEN
    target_tok_per_s: float | None = None
    load_time_s: float | None = None
    watch_interval_s: float = 10.0
    kv_capacity: Mapping[str, int] | None = None
    drain: bool = False
    max_drain_s: float = 3600.0
    # Offline only: start from a steady-state-like fleet instead of ramping up (used by fast scoring).
    warm_start: bool = False
    # Warm start only: the fill holds the queries a fleet fed for this long holds (an age drawn uniformly
    # from the range, seconds; simulator.warm_fill); None = the long-run steady state. A score sets it
    # from the window of the full run it predicts (simulator.score.full_run_ages).
    warm_ages_s: tuple[float, float] | None = None
    # Offline only: hold `initial_queries` in flight whatever the policy (a closed loop of clients, as a
    # bench drives a live fleet); by default max-flow refills by its KV gate instead.
    fixed_concurrency: bool = False
    # Feed real KV use back into the book every this many seconds, as workers report it to the real
    # coordinator (0 = never, the paper's behaviour: admission sees the expected use only).
    kv_correct_interval_s: float = 0.0
    # Worker failures to inject: (node, seconds after serving starts). The flow is re-planned without the
    # node and its queries are re-run from prompt + generated tokens on new chains.
    failures: tuple[tuple[str, float], ...] = ()
    # What a real deployment adds to the profiles' compute (all measured, none by default: the paper's runs):
    # nodes throttled to a declared speed F in (0, 1] (`brl worker --speed-factor`: a step sleeps until it
    # lasted compute / F), machines whose cores several nodes share (simulator.host), and the coordinator's
    # CPU seconds per iteration (one event loop: iterations take turns, simulator.coordinator).
    throttle: Mapping[str, float] | None = None
    # CPU seconds a node's worker spends on each step besides the profile's compute (serialisation, hand-off).
    step_overhead_s: Mapping[str, float] | None = None
    hosts: tuple[HostSpec, ...] = ()
    coordinator_cpu_s_per_iteration: float = 0.0
    # BRL's coordinator: each chain steps its ready requests together, one message a hop, decodes and
    # prompts apart, at most this many steps of each in flight and one per stage
    # (services/coordinator/chain_runner.py; simulator.chain_steps). None: the paper's, every query on its own.
    pipeline_depth: int | None = None
    # Re-plan after each failure (simulator.transition): the coordinator notices the loss after its
    # heartbeat timeout (`replan_detect_s`), plans (`replan_compute_s`), then the nodes that must load new
    # layers read them at `load_bandwidth_bytes_per_s` (the paper's disk speed) before the plan switch.
    replan: bool = False
    replan_detect_s: float = DEFAULT_DETECT_S
    replan_compute_s: float = DEFAULT_COMPUTE_S
    load_bandwidth_bytes_per_s: float = DEFAULT_LOAD_BYTES_PER_S
    # Max-flow routing only: what a dead end does with the IWRR charges its walk made
    # (planner.routing.maxflow.DEAD_END_RULES; "rollback" is the paper's, the default is the coordinator's).
    dead_end: str = DEFAULT_DEAD_END
    # Which engine runs the events (simulator.fast_engine): "auto" takes the compiled one where it is built
    # and models the run (the same figures, bit for bit, many times faster), else Python; "compiled"
    # insists (an error says why it cannot); "python" never uses it.
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidInput(f"mode must be one of {MODES}, got {self.mode!r}", field="mode")
        if self.policy not in policy_names():
            from planner.errors import UnknownName

            raise UnknownName("routing policy", self.policy, policy_names(), field="policy")
        if self.duration_s is not None and self.duration_s <= 0:
            raise InvalidInput(f"duration must be > 0 s, got {self.duration_s}", field="duration_s")
        if self.warmup_s is not None and self.warmup_s < 0:
            raise InvalidInput(f"warm-up must be >= 0 s, got {self.warmup_s}", field="warmup_s")
        if self.warm_ages_s is not None and not 0 <= self.warm_ages_s[0] <= self.warm_ages_s[1]:
            raise InvalidInput(
                f"warm ages must be a range 0 <= low <= high seconds, got {self.warm_ages_s}",
                field="warm_ages_s",
            )
        for node, speed in (self.throttle or {}).items():
            if not 0 < speed <= 1:
                raise InvalidInput(
                    f"a throttle is a speed factor in (0, 1], got {speed} for {node!r}", field="throttle"
                )
        for node, seconds in (self.step_overhead_s or {}).items():
            if not seconds >= 0:
                raise InvalidInput(f"must be >= 0 s, got {seconds} for {node!r}", field="step_overhead_s")
        if not self.coordinator_cpu_s_per_iteration >= 0:
            raise InvalidInput(
                f"must be >= 0 s, got {self.coordinator_cpu_s_per_iteration}",
                field="coordinator_cpu_s_per_iteration",
            )
        if self.pipeline_depth is not None and not self.pipeline_depth >= 1:
            raise InvalidInput(
                f"must be >= 1 step in flight per chain, got {self.pipeline_depth}", field="pipeline_depth"
            )
        for name in ("replan_detect_s", "replan_compute_s"):
            if not getattr(self, name) >= 0:
                raise InvalidInput(f"must be >= 0 s, got {getattr(self, name)}", field=name)
        if not self.load_bandwidth_bytes_per_s > 0:
            raise InvalidInput(
                f"must be > 0 bytes/s, got {self.load_bandwidth_bytes_per_s}",
                field="load_bandwidth_bytes_per_s",
            )
        if self.dead_end not in DEAD_END_RULES:
            from planner.errors import UnknownName

            raise UnknownName("dead-end rule", self.dead_end, DEAD_END_RULES, field="dead_end")
        if self.engine not in ENGINES:
            from planner.errors import UnknownName

            raise UnknownName("simulation engine", self.engine, ENGINES, field="engine")
        placed = [n for h in self.hosts for n in h.nodes]
        twice = sorted({n for n in placed if placed.count(n) > 1})
        if twice:
            raise InvalidInput(f"nodes on more than one host: {', '.join(twice)}", field="hosts")
        if sum(h.coordinator for h in self.hosts) > 1:
            raise InvalidInput("the coordinator is on more than one host", field="hosts")

    def resolved(self) -> SimConfig:
        """Every default filled in for this mode and policy."""
        offline = self.mode == "offline"
        kv = OFFLINE_KV if offline else ONLINE_KV
        duration = self.duration_s if self.duration_s is not None else (660.0 if offline else 1800.0)
        warmup = self.warmup_s if self.warmup_s is not None else (min(60.0, duration / 2) if offline else 0.0)
        if warmup >= duration:
            raise InvalidInput(
                f"warm-up {warmup} s must be shorter than the duration {duration} s", field="warmup_s"
            )
        maxflow = self.policy == "maxflow"
        return replace(
            self,
            duration_s=duration,
            warmup_s=warmup,
            initial_queries=self.initial_queries
            if self.initial_queries is not None
            else (20 if maxflow else 180),
            kv_high_water=self.kv_high_water if self.kv_high_water is not None else kv.high_water,
            kv_output_ratio=self.kv_output_ratio if self.kv_output_ratio is not None else kv.output_ratio,
            target_tok_per_s=self.target_tok_per_s
            if self.target_tok_per_s is not None
            else (700.0 if maxflow else 400.0),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kv_capacity"] = dict(self.kv_capacity) if self.kv_capacity else None
        d["failures"] = [list(f) for f in self.failures]
        d["warm_ages_s"] = list(self.warm_ages_s) if self.warm_ages_s else None
        d["throttle"] = dict(self.throttle) if self.throttle else None
        d["step_overhead_s"] = dict(self.step_overhead_s) if self.step_overhead_s else None
        d["hosts"] = [{**asdict(h), "nodes": list(h.nodes)} for h in self.hosts]
        return d
