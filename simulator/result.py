"""What a simulation returns: the frozen SimResult (metrics, transitions, series for plots) and the lines
`--watch` prints. Kept apart from the run itself so readers of results (CLI, services, benches) need not
know how the fleet is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from planner.plan import Plan
from simulator.config import SimConfig
from simulator.metrics import LatencyStats


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
    # With SimConfig.replan: the timeline and moves of each transition (simulator.transition), in order.
    transitions: tuple[Mapping[str, Any], ...] = ()
    # Time to first token: arrival (before any wait for admission) to the prompt's output, for the queries
    # that arrived in the window; `unserved` of them got no first token before the run ended.
    ttft_s: LatencyStats = LatencyStats(0, 0.0, 0.0, 0.0, 0.0)
    unserved: int = 0

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
        """All tokens/s as a share of the plan's max-flow (an estimate at typical batches, not a ceiling)."""
        return self.all_tok_per_s / self.max_flow_tok_per_s if self.max_flow_tok_per_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "decode_tok_per_s": round(self.decode_tok_per_s, 3),
            "all_tok_per_s": round(self.all_tok_per_s, 3),
            "max_flow_tok_per_s": round(self.max_flow_tok_per_s, 3),
            "flow_efficiency": round(self.flow_efficiency, 4),
            "prompt_latency_s": self.prompt_latency_s.to_dict(),
            "decode_latency_s": self.decode_latency_s.to_dict(),
            "ttft_s": self.ttft_s.to_dict(),
            "unserved": self.unserved,
            "finished": self.finished,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "events": self.events,
            "kv_overflows": list(self.kv_overflows),
            "failed_nodes": list(self.failed_nodes),
            "aborted": self.aborted,
            "rerun": self.rerun,
            "lost": self.lost,
            "transitions": [dict(t) for t in self.transitions],
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
