"""Prometheus metrics of the coordinator: vLLM's names where the meaning matches, `brl_*` for routing.

One `Metrics` object per coordinator, on its own registry, so several coordinators (tests) never clash.
Per-edge traffic is also kept for the last minutes (`EdgeWindow`), for the dashboard's real flow per edge.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST
# How far back the per-edge rates look: long enough to smooth single requests, short enough to show a
# worker loss within seconds.
EDGE_WINDOW_S = 30.0
Edge = tuple[str, str]


class EdgeWindow:
    """Requests and tokens sent over each edge in the last `window_s` seconds (clock passed in)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = EDGE_WINDOW_S) -> None:
        self.clock = clock
        self.window_s = window_s
        self._events: deque[tuple[float, Edge, int, int]] = deque()
        self.started_s = clock()

    def add(self, edge: Edge, requests: int, tokens: int) -> None:
        self._events.append((self.clock(), edge, requests, tokens))
        self._prune()

    def _prune(self) -> None:
        cutoff = self.clock() - self.window_s
        while self._events and self._events[0][0] < cutoff:
            self._events.popleft()

    def rates(self) -> dict[Edge, tuple[float, float]]:
        """edge -> (requests/s, tokens/s) over the window (or over the time since start, if shorter)."""
        self._prune()
        span_s = max(1e-9, min(self.window_s, self.clock() - self.started_s))
        sums: dict[Edge, list[int]] = {}
        for _, edge, requests, tokens in self._events:
            acc = sums.setdefault(edge, [0, 0])
            acc[0] += requests
            acc[1] += tokens
        return {edge: (r / span_s, t / span_s) for edge, (r, t) in sums.items()}


class Metrics:
    def __init__(self, model_name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.edge_window = EdgeWindow(clock)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        m = ["model_name"]
        self.model_name = model_name
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            m,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Time between consecutive output tokens.",
            m,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Arrival to last token.",
            m,
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.running = Gauge("vllm:num_requests_running", "Requests routed and generating.", m, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests in the admission queue.", m, registry=r)
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV cache usage of the fullest live worker, 0..1 (real, as reported).",
            m,
            registry=r,
        )
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", m, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", m, registry=r)
        self.request_success = Counter(
            "vllm:request_success", "Finished requests by finish reason.", [*m, "finished_reason"], registry=r
        )
        # BRL routing.
        self.edge_requests = Counter(
            "brl_edge_requests",
            "Requests routed over each edge of the flow graph.",
            ["src", "dst"],
            registry=r,
        )
        self.edge_tokens = Counter(
            "brl_edge_tokens", "Tokens (prompt + decode) sent over each edge.", ["src", "dst"], registry=r
        )
        self.fail_kv = Counter(
            "brl_fail_kv", "Routing attempts with no chain whose KV cache fits (Fail-KV).", registry=r
        )
        self.rejected = Counter(
            "brl_requests_rejected", "Requests refused before routing, by reason.", ["reason"], registry=r
        )
        self.reroutes = Counter(
            "brl_request_reroutes", "Requests moved to a new chain after a worker loss.", registry=r
        )
        self.workers_alive = Gauge(
            "brl_workers_alive", "Registered workers with a recent heartbeat.", registry=r
        )
        self.worker_lost = Counter("brl_workers_lost", "Workers declared lost.", registry=r)
        self.plan_swaps = Counter(
            "brl_plan_swaps", "Plans loaded while serving (POST /v1/admin/plan).", registry=r
        )
        self.steps = Counter("brl_chain_steps", "Steps driven along chains.", registry=r)
        self.step_latency = Histogram(
            "brl_chain_step_seconds",
            "Duration of one step along a whole chain.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )

        # Labelled children resolved once: `.labels(...)` per token was the coordinator's largest own cost
        # after gRPC writes (bench/coordinator.py profile: 18,731 calls, 1.5 s of CPU in one run).
        self.ttft_m = self.ttft.labels(model_name)
        self.itl_m = self.itl.labels(model_name)
        self.e2e_m = self.e2e.labels(model_name)
        self.running_m = self.running.labels(model_name)
        self.waiting_m = self.waiting.labels(model_name)
        self.kv_usage_m = self.kv_usage.labels(model_name)
        self.prompt_tokens_m = self.prompt_tokens.labels(model_name)
        self.generation_tokens_m = self.generation_tokens.labels(model_name)
        self._edge_children: dict[Edge, tuple[Any, Any]] = {}

    def _edge(self, src: str, dst: str) -> tuple[Any, Any]:
        children = self._edge_children.get((src, dst))
        if children is None:
            children = (self.edge_requests.labels(src, dst), self.edge_tokens.labels(src, dst))
            self._edge_children[(src, dst)] = children
        return children

    def route(self, nodes: list[str], prompt_tokens: int) -> None:
        """A request took this path (source, nodes..., sink) and sends its prompt along it."""
        path = ["source", *nodes, "sink"]
        for src, dst in zip(path, path[1:], strict=False):
            requests, tokens = self._edge(src, dst)
            requests.inc()
            tokens.inc(prompt_tokens)
            self.edge_window.add((src, dst), 1, prompt_tokens)

    def decode_tokens(self, nodes: list[str], tokens: int) -> None:
        path = ["source", *nodes, "sink"]
        for src, dst in zip(path, path[1:], strict=False):
            self._edge(src, dst)[1].inc(tokens)
            self.edge_window.add((src, dst), 0, tokens)

    def edge_totals(self) -> dict[Edge, tuple[float, float]]:
        """edge -> (requests, tokens) since start: the `brl_edge_*_total` samples /metrics shows."""
        out: dict[Edge, list[float]] = {}
        for i, counter in enumerate((self.edge_requests, self.edge_tokens)):
            for family in counter.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        edge = (sample.labels["src"], sample.labels["dst"])
                        out.setdefault(edge, [0.0, 0.0])[i] = sample.value
        return {edge: (r, t) for edge, (r, t) in out.items()}

    def render(self) -> bytes:
        return generate_latest(self.registry)
