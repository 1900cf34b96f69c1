"""The simulated coordinator: admits queries with the planner.routing policy objects and KV book (the same
code the real coordinator runs), issues each iteration along the chosen chain, and collects it at the sink.

A real coordinator also spends CPU on every iteration between a chain's result and the next step (apply
the token, stream it, build the next step), in one event loop: one iteration at a time. Given that cost
(`cpu_s_per_iteration`, measured), iterations reaching the sink queue for it, FIFO, and a token counts as
emitted when its turn is through; on a shared host the turn takes its share of the cores like a worker."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from heapq import heappush

from planner.cluster import SINK, SOURCE, Cluster
from planner.model import ModelSpec
from planner.plan import Plan
from planner.profile import ProfileSet
from planner.routing.base import Hop, RouteRequest, RoutingPolicy, successors
from planner.routing.kv import KVBook
from planner.routing.maxflow import MaxFlowPolicy
from simulator.chain_steps import ChainSteps
from simulator.core_fleet import CoreFleet, decode_steps_in_core
from simulator.engine import EventLoop
from simulator.host import HostSpec, SimHost
from simulator.link_bandwidth import build_links
from simulator.metrics import Metrics
from simulator.policy_view import SimView
from simulator.request import Query
from simulator.worker import SimWorker


class SimCoordinator:
    def __init__(
        self,
        loop: EventLoop,
        cluster: Cluster,
        model: ModelSpec,
        profiles: ProfileSet,
        plan: Plan,
        policy: RoutingPolicy,
        kv: KVBook,
        metrics: Metrics,
        *,
        expected_output_len: int,
        kv_capacity: Mapping[str, int],
        speeds: Mapping[str, float] | None = None,
        step_overhead_s: Mapping[str, float] | None = None,
        hosts: Mapping[str, SimHost] | None = None,
        cpu_s_per_iteration: float = 0.0,
        host: SimHost | None = None,
        pipeline_depth: int | None = None,
    ) -> None:
        self.loop = loop
        self.cluster = cluster
        self.model = model
        self.plan = plan
        self.policy = policy
        self.kv = kv
        self.metrics = metrics
        self.expected_output_len = expected_output_len
        self.view = SimView(self)
        self.on_prompt_done: Callable[[float], None] | None = None
        self.on_query_done: Callable[[float], None] | None = None
        # Called with (the chain's node names, prompt?, seconds since the iteration was issued) per token.
        self.on_iteration: Callable[[tuple[str, ...], bool, float], None] | None = None
        self.active = 0
        self.admitted = 0
        self.rejected = 0
        self.finished = 0
        self.aborted = 0
        self.rerun = 0
        self.lost = 0
        self.failed_nodes: list[str] = []
        self.on_requeue: Callable[[int, int], None] | None = None
        # Live queries by id (one entry per query, not per event): what a failure must find.
        self.live: dict[int, Query] = {}
        self._next_qid = 0
        self.cpu_s_per_iteration = cpu_s_per_iteration
        self.host = host
        self._turns: deque[Query] = deque()
        self._at_sink_cb = self._at_sink
        self._turn_busy = False
        self.profiles = profiles
        self.speeds = dict(speeds or {})
        self.step_overheads = dict(step_overhead_s or {})
        self.hosts = dict(hosts or {})
        # A transition (simulator.transition): nodes paused to load, the KV books and policies of earlier
        # plans (their requests drain on the old chains), workers replaced by a plan switch, and a callback
        # with the chain of every query that leaves the fleet.
        self.paused: set[str] = set()
        self.retired: list[tuple[KVBook, RoutingPolicy]] = []
        self.retired_workers: list[SimWorker] = []
        self.on_chain_done: Callable[[tuple[Hop, ...]], None] | None = None
        self.make_kv: Callable[[Plan], tuple[KVBook, Mapping[str, int]]] | None = None
        self.make_policy: Callable[[Plan], RoutingPolicy] | None = None
        # Called once new requests route over a switched plan (the feeder re-runs what waited for it).
        self.on_switch: Callable[[], None] | None = None
        # BRL's chain runners (None: the paper's coordinator, every query issued on its own).
        self.chain_steps = ChainSteps(loop, pipeline_depth) if pipeline_depth else None
        self.workers: dict[str, SimWorker] = {}
        succ = self._place(plan, kv_capacity)
        # Every worker ever started, failed ones included (for reports); `workers` holds the live ones.
        self.all_workers = dict(self.workers)
        self.links = build_links(plan, cluster, model, succ, by_flow=isinstance(policy, MaxFlowPolicy))
        # The compiled engine's loop (simulator.fast_engine) holds the per-token state (simulator.core_fleet).
        core = getattr(loop, "core", None)
        done, prompt_done = self._core_finished, self._core_prompt_done
        self.core_fleet = (
            None if core is None else CoreFleet(core, self.workers, self.links, done, prompt_done)
        )

    def _place(self, plan: Plan, kv_capacity: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
        """Workers for `plan` (a worker whose range, entries and cache are unchanged is kept); returns the
        successors of every node."""
        placement = plan.placement
        succ = {u: successors(plan, self.cluster, u) for u in (SOURCE, *placement.ranges)}
        entries: dict[str, set[int]] = {n: set() for n in placement.ranges}
        for u, vs in succ.items():
            for v in vs:
                if v != SINK and u != SOURCE:
                    entries[v].add(max(placement.ranges[u].end, placement.ranges[v].start))
        workers: dict[str, SimWorker] = {}
        for name, rng in placement.ranges.items():
            profile = self.profiles.get(self.cluster.node(name).gpu_type)
            w = SimWorker(
                name,
                rng,
                profile,
                self.loop,
                entry_layers=tuple(sorted(entries[name])),
                activation_bytes_per_token=self.model.activation_bytes_per_token,
                kv_capacity=int(kv_capacity[name]),
                depart=self._depart,
                head=profile.lm_head if rng.end == self.model.num_layers else None,
                speed=self.speeds.get(name, 1.0),
                step_overhead_s=self.step_overheads.get(name, 0.0),
                host=self.hosts.get(name),
            )
            old = self.workers.get(name)
            if old is not None and (old.layers, old.entries, old.kv_capacity) == (
                w.layers,
                w.entries,
                w.kv_capacity,
            ):
                w = old
            w.drop = self._drop
            w.messages = self.chain_steps is not None
            workers[name] = w
        self.workers = workers
        observer = self.policy.observe if type(self.policy).observe is not RoutingPolicy.observe else None
        for w in workers.values():
            w.observer = observer
        return succ

    def _core_prompt_done(self, now: float) -> None:
        if self.on_prompt_done is not None:
            self.on_prompt_done(now)

    def _core_finished(self, q: Query, now: float) -> None:
        """The compiled engine finished `q` (it freed the workers' KV): the Python half of _finish."""
        self._forget(q)
        if self.on_query_done is not None:
            self.on_query_done(now)

    def sync_from_core(self) -> None:
        """The compiled engine's counters and link clocks into the Python objects the reports read."""
        if self.core_fleet is not None:
            self.core_fleet.sync(self.all_workers, self.links)

    def queued(self, node: str) -> int:
        """Requests waiting at `node` (arrived, not yet in a batch); 0 for a node not serving."""
        w = self.workers.get(node)
        if w is None:
            return 0
        if self.core_fleet is not None:
            return self.core_fleet.queued(node)
        return w.queued(self.loop.now)

    # -- admission -----------------------------------------------------------------------------------
    def submit(self, input_len: int, output_len: int, arrive_s: float | None = None) -> Query | None:
        """Route a new query now; None when the policy finds no admissible chain (Fail-KV / Fail-Flow).
        `arrive_s`: when it arrived, if it waited for admission (time to first token counts from there)."""
        q = self._admit(input_len, output_len, 0, self.loop.now)
        if q is not None and arrive_s is not None:
            q.t_arrive = arrive_s
            if self.core_fleet is not None:
                self.core_fleet.set_arrive(q, arrive_s)
        return q

    def submit_warm(self, input_len: int, output_len: int, progress: int, issue_s: float) -> Query | None:
        """Admit a query that is already `progress` decode iterations in (its prompt and earlier tokens are
        in the KV caches of its chain) and issue its next iteration at `issue_s`: a warm start that skips
        the offline ramp-up for short scoring runs."""
        return self._admit(input_len, output_len, progress, issue_s)

    def _admit(self, input_len: int, output_len: int, progress: int, issue_s: float) -> Query | None:
        now = self.loop.now
        self._next_qid += 1
        q = Query(self._next_qid, input_len, output_len, now)
        req = RouteRequest(q.rid, input_len, self.expected_output_len)
        chain = self.policy.choose(req, self.view)
        if chain is None:
            self.rejected += 1
            return None
        self.kv.charge(chain, req)
        prev = SOURCE
        stages = []
        for hop in chain:
            w = self.workers[hop.node]
            stages.append((w, w.entry_index[hop.layers.start], self.links[(prev, hop.node)]))
            prev = hop.node
        q.chain = chain
        steps = None if self.core_fleet is None else decode_steps_in_core(self.policy, chain)
        q.on_decode = None if steps is not None else self.policy.decode_accounting(chain)
        if (
            steps is None
            and q.on_decode is None
            and type(self.policy).on_decode is not RoutingPolicy.on_decode
        ):
            q.on_decode = partial(self.policy.on_decode, chain)
        q.route = tuple(stages)
        q.sink_link = self.links[(prev, SINK)]
        self.admitted += 1
        self.active += 1
        self.live[q.qid] = q
        if self.core_fleet is not None:
            self.core_fleet.admit(q, progress, issue_s, steps)
            return q
        if progress <= 0:
            self._issue(q, now)
            return q
        q.advance_to(progress)
        for hop, (w, _, _) in zip(chain, q.route, strict=True):
            w.kv_real += q.context * hop.layers.size
        self.loop.schedule(issue_s, self._issue_at, q)
        return q

    def _issue_at(self, q: Query) -> None:
        self._issue(q, self.loop.now)

    def _issue(self, q: Query, now: float) -> None:
        q.t_issue = now
        if self.chain_steps is not None:
            self.chain_steps.ready(q)
            return
        q.t_left = now
        q.hop_i = 0
        w, entry, link = q.route[0]
        # SimLink.send inlined (once per token).
        free = link.free_at
        free = link.free_at = (free if free > now else now) + q.seq_len * link.s_per_token
        w.arrive(free + link.latency_s, q, entry)

    def _depart(self, q: Query, now: float) -> None:
        """The last stage is done (the worker already advanced hop_i): over the link to the sink."""
        # SimLink.send and EventLoop.schedule inlined (once per token): the same arithmetic, the same entry.
        link = q.sink_link
        assert link is not None
        free = link.free_at
        free = link.free_at = (free if free > now else now) + q.seq_len * link.s_per_token
        t = free + link.latency_s
        loop = self.loop
        if t >= now:
            seq = loop._seq = loop._seq + 1
            heappush(loop._heap, (t, seq, self._at_sink_cb, (q,)))
        else:  # a negative latency (or NaN): schedule() raises
            loop.schedule(t, self._at_sink, q)

    def _at_sink(self, q: Query) -> None:
        if self.cpu_s_per_iteration <= 0:
            self._emit(q)
            return
        self._turns.append(q)
        if not self._turn_busy:
            self._next_turn()

    def _next_turn(self) -> None:
        if not self._turns:
            self._turn_busy = False
            return
        self._turn_busy = True
        if self.host is not None:
            self.host.run(self.cpu_s_per_iteration, self._turn_done)
        else:
            self.loop.schedule(self.loop.now + self.cpu_s_per_iteration, self._turn_done)

    def _turn_done(self) -> None:
        self._emit(self._turns.popleft())
        self._next_turn()

    def _emit(self, q: Query) -> None:
        """The iteration's token is out: record it, then issue the next iteration or finish."""
        now = self.loop.now
        if self.chain_steps is not None:
            self.chain_steps.done(q)
        if q.dead:
            self._drop(q, self.plan.placement.num_layers)
            return
        prompt = q.iteration == 0
        self.metrics.record(prompt, now - q.t_issue, q.seq_len, now)
        if prompt:
            self.metrics.record_ttft(q.t_arrive, now - q.t_arrive)
        if self.on_iteration is not None:
            self.on_iteration(tuple(h.node for h in q.chain), prompt, now - q.t_issue)
        if q.iteration < q.output_len:
            q.advance()
            if q.on_decode is not None:
                q.on_decode()
            self._issue(q, now)
            if prompt and self.on_prompt_done is not None:
                self.on_prompt_done(now)
            return
        self._finish(q)
        if self.on_query_done is not None:
            self.on_query_done(now)

    def _finish(self, q: Query) -> None:
        total = q.input_len + q.output_len
        for hop, (w, _, _) in zip(q.chain, q.route, strict=True):
            w.release_kv(total, hop.layers.size)
        self._forget(q)

    def _forget(self, q: Query) -> None:
        """A finished query's books (both engines): its KV booking and policy state, the counts, the
        chain's end for a transition. The workers' real KV is freed before, by the engine that ran it."""
        self._release(q.rid)
        self.active -= 1
        self.finished += 1
        del self.live[q.qid]
        self.metrics.query_finished(q.input_len, q.output_len)
        if self.on_chain_done is not None:
            self.on_chain_done(q.chain)

    def _release(self, rid: str) -> None:
        """Free a request's KV booking and policy state, wherever the plan it was admitted under keeps them."""
        if not self.kv.release(rid):
            for book, _ in self.retired:
                if book.release(rid):
                    break
        self.policy.release(rid)
        for _, policy in self.retired:
            policy.release(rid)

    # -- failures ------------------------------------------------------------------------------------
    def fail_node(
        self,
        name: str,
        replan: Callable[[Plan, str], Plan | None],
        make_policy: Callable[[Plan], RoutingPolicy],
    ) -> None:
        """A worker dies: every query whose chain uses it is aborted (its KV freed on every hop) and re-run
        from its prompt plus the tokens already generated, on a chain of the re-planned flow, as the real
        coordinator does. `replan` returns the plan without the node (None: keep routing around it)."""
        worker = self.workers.pop(name, None)
        if worker is None:
            return
        self.failed_nodes.append(name)
        # Queries on chains through it die; every worker that may hold one checks arrivals from now on.
        for w in (*self.workers.values(), *self.all_workers.values(), *self.retired_workers):
            w.reaping = True
        for q in self.live.values():
            if any(h.node == name for h in q.chain):
                q.dead = True
                self._release(q.rid)
        held = worker.fail()
        fresh = replan(self.plan, name)
        self.kv.remove_node(name)
        for book, _ in self.retired:
            book.remove_node(name)
        if fresh is not None:
            self.plan = fresh
            self.policy = make_policy(fresh)
            observer = self.policy.observe if type(self.policy).observe is not RoutingPolicy.observe else None
            for w in self.workers.values():
                w.observer = observer
        for q, layer in held:
            self._drop(q, layer)

    def _drop(self, q: Query, layer: int) -> None:
        """Free what an aborted query holds on the live hops of its chain (every layer below `layer` has
        run the current iteration) and re-run it; if no chain admits it, hand it back to the feeder."""
        if self.chain_steps is not None:
            self.chain_steps.done(q)
        if q.qid not in self.live:
            return
        del self.live[q.qid]
        done_tokens = q.context + q.seq_len
        for hop, (w, _, _) in zip(q.chain, q.route, strict=True):
            if w.failed:
                continue
            done = min(max(layer - hop.layers.start, 0), hop.layers.size)
            w.kv_real = max(0, w.kv_real - done_tokens * done - q.context * (hop.layers.size - done))
        self.active -= 1
        self.aborted += 1
        if self.on_chain_done is not None:
            self.on_chain_done(q.chain)
        generated = max(0, q.iteration - 1)
        again = self._admit(q.input_len + generated, q.output_len - generated, 0, self.loop.now)
        if again is not None:
            self.rerun += 1
        elif self.on_requeue is not None:
            self.on_requeue(q.input_len + generated, q.output_len - generated)
        else:
            self.lost += 1

    # -- transitions (simulator.transition) ----------------------------------------------------------
    def pause(self, node: str) -> None:
        """`node` takes no new requests (it must drain to load a range that does not fit beside its own)."""
        self.paused.add(node)

    def in_flight(self, node: str) -> int:
        """Live queries whose chain runs through `node`."""
        return sum(1 for q in self.live.values() if any(h.node == node for h in q.chain))

    def switch_plan(self, plan: Plan) -> None:
        """New requests route over `plan`'s chains from now on. Queries in flight keep their chains (and
        their old workers, KV books and policy state) until they finish. A node that holds a new range
        while its old one drains runs both on one GPU: their steps share it (a one-core host)."""
        assert self.make_kv is not None and self.make_policy is not None
        self.retired.append((self.kv, self.policy))
        before = dict(self.workers)
        self.plan = plan
        self.policy = self.make_policy(plan)
        self.kv, caps = self.make_kv(plan)
        self.paused.clear()
        succ = self._place(plan, caps)
        self.links = build_links(
            plan, self.cluster, self.model, succ, by_flow=isinstance(self.policy, MaxFlowPolicy)
        )
        for name, old in before.items():
            new = self.workers.get(name)
            if new is old:
                continue
            self.retired_workers.append(old)
            if new is not None and new.host is None and self.in_flight(name):
                shared = SimHost(HostSpec(f"gpu:{name}", 1.0, (name,)), self.loop)
                old.host = new.host = shared
            if new is not None:
                self.all_workers[name] = new
        if self.on_switch is not None:
            self.on_switch()

    # -- reading -------------------------------------------------------------------------------------
    def real_kv(self) -> dict[str, int]:
        if self.core_fleet is not None:
            return {n: self.core_fleet.kv_real(n) for n in self.workers}
        return {n: w.kv_real for n, w in self.workers.items()}
