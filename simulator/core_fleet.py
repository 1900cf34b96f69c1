"""The simulated fleet inside the compiled engine (simulator.fast_engine): the coordinator's workers and links
entered into the core once, each admitted query handed to it, and what the core counted copied back for the
reports. The Python objects (SimWorker, SimLink, Query) stay the coordinator's; the core holds the state that
changes on every token."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from planner.cluster import SINK, SOURCE
from planner.routing.base import Chain, RoutingPolicy
from planner.routing.maxflow import MaxFlowPolicy
from simulator.link import SimLink
from simulator.request import Query
from simulator.worker import SimWorker

if TYPE_CHECKING:
    # What one decode adds to an IWRR table (MaxFlowPolicy.decode_steps): the loads, an index, 1 / weight.
    DecodeSteps = list[tuple[array[float], int, float]]


def decode_steps_in_core(policy: RoutingPolicy, chain: Chain) -> DecodeSteps | None:
    """The max-flow policy's per-decode accounting, which the core runs itself (None: another policy, whose
    accounting the core calls)."""
    if (
        not isinstance(policy, MaxFlowPolicy)
        or type(policy).decode_accounting is not MaxFlowPolicy.decode_accounting
    ):
        return None
    return policy.decode_steps(chain)


class CoreFleet:
    """The coordinator's workers and links, entered into `core` (a simulator._fastcore.Core)."""

    def __init__(
        self,
        core: Any,
        workers: Mapping[str, SimWorker],
        links: Mapping[tuple[str, str], SimLink],
        on_finish: Callable[[Query, float], None],
        on_prompt_done: Callable[[float], None],
    ) -> None:
        self.core = core
        self.worker_index: dict[str, int] = {}
        self.link_index: dict[tuple[str, str], int] = {}
        # Step times depend on the profile (and the head) only: one set of tables per GPU type.
        tables: dict[tuple[int, bool], int] = {}
        for name, w in workers.items():
            key = (id(w.profile), w.head is None)
            if key not in tables:
                lone = w.profile.lone_decode_batch
                decode = w.profile.decode_s_per_layer
                tables[key] = core.add_tables(
                    w.profile.prompt_s_per_layer,
                    lambda n, decode=decode, lone=lone: decode(lone if n == 1 else n),
                    None if w.head is None else w.head.seconds,
                )
            self.worker_index[name] = core.add_worker(
                w.seg_layers,
                (w.prompt_max_requests, w.prompt_max_tokens, w.decode_max_seqs, w.decode_max_context),
                w.cpu_s_per_token,
                w.step_overhead_s,
                w.kv_real,
                tables[key],
            )
        for hop, link in links.items():
            self.link_index[hop] = core.add_link(link.s_per_token, link.latency_s, link.free_at)
        core.set_callbacks(on_finish, on_prompt_done)

    def admit(self, q: Query, progress: int, issue_s: float, steps: DecodeSteps | None) -> None:
        """Hand over an admitted query (its chain and stages set) and issue its iteration: now, or at `issue_s`
        for a warm start `progress` decodes in (its KV is then added on its chain)."""
        prev = SOURCE
        route = []
        for hop, (_, entry, _) in zip(q.chain, q.route, strict=True):
            route.append(
                (self.worker_index[hop.node], entry, self.link_index[(prev, hop.node)], hop.layers.size)
            )
            prev = hop.node
        q.slot = self.core.add_query(
            q,
            q.qid,
            q.input_len,
            q.output_len,
            max(0, progress),
            q.t_arrive,
            tuple(route),
            self.link_index[(prev, SINK)],
            steps or (),
            q.on_decode,
        )
        if progress <= 0:
            self.core.issue(q.slot)
        else:
            self.core.issue_at(q.slot, issue_s)

    def set_arrive(self, q: Query, arrive_s: float) -> None:
        self.core.set_arrive(q.slot, arrive_s)

    def queued(self, node: str) -> int:
        return int(self.core.queued(self.worker_index[node]))

    def kv_real(self, node: str) -> int:
        return int(self.core.worker(self.worker_index[node])["kv_real"])

    def sync(self, workers: Mapping[str, SimWorker], links: Mapping[tuple[str, str], SimLink]) -> None:
        """Copy the per-worker counters and the link clocks into the Python objects the reports read."""
        for name, i in self.worker_index.items():
            w = workers[name]
            for field, value in self.core.worker(i).items():
                setattr(w, field, value)
        for hop, i in self.link_index.items():
            links[hop].free_at = self.core.link_free_at(i)
