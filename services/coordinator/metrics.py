"""Prometheus metrics of the coordinator: vLLM's names where the meaning matches, `brl_*` for routing.

One `Metrics` object per coordinator, on its own registry, so several coordinators (tests) never clash.
"""

from __future__ import annotations

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


class Metrics:
    def __init__(self, model_name: str) -> None:
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

    def route(self, nodes: list[str], prompt_tokens: int) -> None:
        """A request took this path (source, nodes..., sink) and sends its prompt along it."""
        path = ["source", *nodes, "sink"]
        for src, dst in zip(path, path[1:], strict=False):
            self.edge_requests.labels(src, dst).inc()
            self.edge_tokens.labels(src, dst).inc(prompt_tokens)

    def decode_tokens(self, nodes: list[str], tokens: int) -> None:
        path = ["source", *nodes, "sink"]
        for src, dst in zip(path, path[1:], strict=False):
            self.edge_tokens.labels(src, dst).inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
