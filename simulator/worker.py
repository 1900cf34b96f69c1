"""A simulated GPU node: continuous batching at layer granularity, FCFS under the per-GPU limits on prompt
requests, prompt tokens, decode sequences and decode context; a layer step takes P(prompt tokens) +
D(decodes) from the interpolated profiles, one layer at a time, cycling over the layers it holds.

What a real worker adds to that compute, each optional so the paper's runs are unchanged:
- the LM head: the node holding the model's last layer turns every sampled sequence's activation into
  logits and a token. On a small model it is no small cost (SmolLM2's 49152-word head costs about eight of
  its 30 layers), it is paid per sampled sequence, and per-layer tables cannot carry it, because a node
  holding the last layer pays it and another holding as many layers does not;
- per-step serving work: a real worker's step also (de)serialises activations, hands the batch to its
  compute thread and forwards the results; a fixed CPU cost per step, measured (bench/fidelity.py probes it
  as a lone step's time over what the tables predict), not a factor on the tables: it does not grow with
  the batch;
- a throttle (`brl worker --speed-factor F`): after its compute, a step sleeps so it lasts compute / F;
- a host: workers placed on one machine share its CPU cores (simulator.host).
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from operator import attrgetter

from planner.placement import LayerRange
from planner.profile import GpuProfile, LatencyTable
from simulator.arrivals import Pending, drain, due, waiting
from simulator.engine import EventLoop
from simulator.forwarding import BY_LINK_FROM, forward_by_link, forward_each, forward_messages
from simulator.host import SimHost
from simulator.request import Query

# The paper's first-layer CPU cost per byte of buffered activations: concatenation, then host->device copy.
CPU_CONCAT_BYTES_PER_S = 4e9
CPU_COPY_BYTES_PER_S = 5e9
# decode_max_context = decode_max_tokens x this (the paper's DECODE_PER_TOKEN_MAX_CONTEXT).
DECODE_CONTEXT_PER_SEQ = 1000

# Read off a whole queue in C (map) when testing whether it joins a batch whole, for queues of at least
# WHOLE_FROM queries (below that the loop costs less than the test).
WHOLE_FROM = 8
_ITERATION = attrgetter("iteration")
_CONTEXT = attrgetter("context")

# Called when a request leaves its last stage (the coordinator sends it to the sink).
Depart = Callable[[Query, float], None]
# Called with a request whose chain lost a node and the model layer it had reached in this iteration.
Drop = Callable[[Query, int], None]


class SimWorker:
    """Layers [start, end) with request queues only in front of "entry" layers: the first layer and any
    layer where a predecessor's range ends inside this one (partial overlap). Between entry layers nothing
    can join a batch, so a batch runs each stretch of layers as one event; the timing equals the paper's
    layer-by-layer loop (each layer costs the same for the same batch)."""

    # Slots: a fleet has a thousand of these, read on every event.
    __slots__ = (
        "_dcache",
        "_finish_cb",
        "_hcache",
        "_lone_decode",
        "_pcache",
        "batch",
        "batch_ctx",
        "batch_np",
        "batch_pt",
        "batch_seg",
        "batch_tokens",
        "busy",
        "busy_s",
        "carried",
        "cpu_s_per_token",
        "cpu_tokens",
        "decode_max_context",
        "decode_max_seqs",
        "decode_seqs",
        "depart",
        "drop",
        "entries",
        "entry_index",
        "failed",
        "head",
        "host",
        "kv_capacity",
        "kv_real",
        "kv_real_peak",
        "layers",
        "loop",
        "name",
        "observer",
        "pending",
        "pointer",
        "profile",
        "prompt_max_requests",
        "prompt_max_tokens",
        "prompt_tokens",
        "queues",
        "reaping",
        "seg_layers",
        "speed",
        "step_overhead_s",
        "steps",
        "wake_at",
        "wake_cb",
        "messages",
    )

    def __init__(
        self,
        name: str,
        layers: LayerRange,
        profile: GpuProfile,
        loop: EventLoop,
        *,
        entry_layers: tuple[int, ...] = (),
        activation_bytes_per_token: int,
        kv_capacity: int,
        depart: Depart,
        head: LatencyTable | None = None,
        speed: float = 1.0,
        host: SimHost | None = None,
        step_overhead_s: float = 0.0,
    ) -> None:
        self.name = name
        self.layers = layers
        self.profile = profile
        self.loop = loop
        self.depart = depart
        k = min(layers.size, profile.max_layers)  # the paper clamps forced layer counts (allow_force_set)
        self.prompt_max_requests = profile.prompt_max_requests
        self.prompt_max_tokens = profile.prompt_max_tokens
        self.decode_max_seqs = profile.decode_max_for(k)
        self.decode_max_context = self.decode_max_seqs * DECODE_CONTEXT_PER_SEQ
        self.kv_capacity = kv_capacity
        self.cpu_s_per_token = activation_bytes_per_token * (
            1 / CPU_CONCAT_BYTES_PER_S + 1 / CPU_COPY_BYTES_PER_S
        )
        entries = sorted({layers.start, *(e for e in entry_layers if layers.start < e < layers.end)})
        self.entries = tuple(entries)
        self.entry_index = {layer: i for i, layer in enumerate(entries)}
        self.seg_layers = tuple(b - a for a, b in zip(entries, [*entries[1:], layers.end], strict=True))
        self.queues: list[list[Query]] = [[] for _ in entries]
        self.pointer = 0
        self.busy = False
        self.batch: list[Query] = []
        self.batch_seg = 0
        self.batch_tokens = 0
        self.batch_pt = 0
        self.batch_np = 0
        self.batch_ctx = 0
        # Queries at the head of the current queue that are the previous segment's batch (see _start).
        self.carried = 0
        # Queries on their way here: one entry per query, or per step and link (simulator.arrivals).
        self.pending: list[Pending] = []
        self.wake_at: float | None = None
        self.cpu_tokens = 0
        self.kv_real = 0
        self.kv_real_peak = 0
        self._pcache: dict[int, float] = {0: 0.0}
        self._dcache: dict[int, float] = {0: 0.0}
        self._lone_decode = profile.lone_decode_batch
        self.head = head
        self.step_overhead_s = step_overhead_s
        self.speed = speed
        self.host = host
        self._hcache: dict[int, float] = {0: 0.0}
        # Counters for reports (aggregates only): steps and tokens through the worker's whole range.
        self.steps = 0
        self.busy_s = 0.0
        self.decode_seqs = 0
        self.prompt_tokens = 0
        self.observer: Callable[[str, str, float], None] | None = None
        self.failed = False
        self.drop: Drop | None = None
        # Set once some query may be dead (a node failed): only then does an arrival need the check.
        self.reaping = False
        # Bound once: the hot paths schedule these on every step and every wake-up.
        self._finish_cb = self._finish
        self.wake_cb = self._wake
        # A step's queries go on as one message per link (BRL's workers; simulator.chain_steps).
        self.messages = False

    # -- arrivals ------------------------------------------------------------------------------------
    def arrive(self, t: float, q: Query, entry: int) -> None:
        if self.failed:
            if self.drop is not None:
                self.drop(q, self.entries[entry])
            return
        # A query is in one place at a time, so its id breaks arrival-time ties deterministically.
        heappush(self.pending, (t, q.qid, q, entry))
        if not self.busy and (self.wake_at is None or t < self.wake_at):
            self.wake_at = t
            self.loop.schedule(t, self._wake, t)

    def _wake(self, token: float) -> None:
        if self.wake_at != token or self.busy or self.failed:
            return
        self.wake_at = None
        self._start(self.loop.now)

    def queued(self, now: float) -> int:
        """Requests waiting here (arrived, not yet in a batch): what shortest-queue routing compares."""
        return sum(len(q) for q in self.queues) + due(self.pending, now)

    # -- execution -----------------------------------------------------------------------------------
    def _step_s(self, prompt_tokens: int, decodes: int) -> float:
        p = self._pcache.get(prompt_tokens)
        if p is None:
            p = self._pcache[prompt_tokens] = self.profile.prompt_s_per_layer(prompt_tokens)
        d = self._dcache.get(decodes)
        if d is None:
            # The decode tables start at (0,0) then bs=2: a lone decode costs the bs=2 time (paper quirk).
            d = self._dcache[decodes] = self.profile.decode_s_per_layer(
                self._lone_decode if decodes == 1 else decodes
            )
        return p + d

    def _head_s(self, sampled: int) -> float:
        """The LM head for `sampled` sequences (each decode, and each prompt once, samples a token)."""
        h = self._hcache.get(sampled)
        if h is None:
            assert self.head is not None
            h = self._hcache[sampled] = self.head.seconds(sampled)
        return h

    def _start(self, now: float) -> None:
        pending = self.pending
        queues = self.queues
        if pending and pending[0][0] <= now:
            if len(queues) == 1 and not self.reaping:
                # drain() inlined for the usual worker (one queue) while the entries are single queries.
                append = queues[0].append
                cpu_tokens = self.cpu_tokens
                while pending and pending[0][0] <= now:
                    q = pending[0][2]
                    if q is None:  # several queries from one step (simulator.arrivals): drain takes them
                        cpu_tokens += drain(pending, now, queues, None)
                        break
                    heappop(pending)
                    append(q)
                    cpu_tokens += q.seq_len
                self.cpu_tokens = cpu_tokens
            else:
                self.cpu_tokens += drain(pending, now, queues, self._reap if self.reaping else None)
        n = len(queues)
        p = self.pointer
        if not queues[p]:
            for _ in range(n - 1):
                p = p + 1 if p + 1 < n else 0
                if queues[p]:
                    break
            else:
                self.busy = False
                if pending and (self.wake_at is None or pending[0][0] < self.wake_at):
                    self.wake_at = pending[0][0]
                    self.loop.schedule(self.wake_at, self.wake_cb, self.wake_at)
                return
        self.pointer = p
        queue = queues[p]
        pmax_r, pmax_t = self.prompt_max_requests, self.prompt_max_tokens
        dmax_s, dmax_c = self.decode_max_seqs, self.decode_max_context
        carried = self.carried
        batch: list[Query]
        rest: list[Query]
        if carried:
            # The batch of the previous segment heads this queue (_finish found it empty): under the same
            # limits it is taken whole again, as the loop below would take it query by query.
            self.carried = 0
            np_, pt, ctx = self.batch_np, self.batch_pt, self.batch_ctx
            nd = self.batch_tokens - pt
            if len(queue) == carried:
                batch, rest = queue, []
            else:
                batch, rest = queue[:carried], queue[carried:]
        else:
            np_ = pt = nd = ctx = 0
            batch, rest = [], queue
        if len(rest) >= WHOLE_FROM and nd + len(rest) <= dmax_s and 0 not in map(_ITERATION, rest):
            # Decodes only, and all of them fit: the loop below would take each in turn (contexts are not
            # negative, so every running sum stays under the total), so take them at once.
            more = sum(map(_CONTEXT, rest))
            if ctx + more <= dmax_c:
                nd += len(rest)
                ctx += more
                if batch:
                    batch.extend(rest)
                else:
                    batch = rest
                rest = []
        left: list[Query] = []
        for q in rest:
            if q.iteration == 0:
                # A prompt longer than the limit still runs, alone, rather than waiting forever.
                if np_ < pmax_r and (pt + q.input_len <= pmax_t or (np_ == 0 and nd == 0 and not batch)):
                    np_ += 1
                    pt += q.input_len
                    batch.append(q)
                    continue
            elif nd < dmax_s and ctx + q.context <= dmax_c:
                nd += 1
                ctx += q.context
                batch.append(q)
                continue
            left.append(q)
        queues[p] = left
        layers = self.seg_layers[p]
        # The step-time caches inlined (_step_s fills them on a miss): once per step, a hot path too. A
        # decode-only step skips the prompt cache: its entry for 0 tokens is 0.0, and 0.0 + d is d exactly.
        d_s = self._dcache.get(nd)
        if pt:
            p_s = self._pcache.get(pt)
            duration = layers * (p_s + d_s if p_s is not None and d_s is not None else self._step_s(pt, nd))
        else:
            duration = layers * (d_s if d_s is not None else self._step_s(0, nd))
        if p == 0 and self.cpu_tokens:
            # First-layer CPU overhead charges every buffered arrival, batched or not (paper quirk).
            duration += self.cpu_tokens * self.cpu_s_per_token
            self.cpu_tokens = 0
        if p == n - 1:  # once per step, where the step leaves the worker
            if self.head is not None:
                duration += self._head_s(nd + np_)
            duration += self.step_overhead_s
        self.busy = True
        self.batch = batch
        self.batch_seg = p
        self.batch_tokens = pt + nd
        self.batch_pt = pt
        self.batch_np = np_
        self.batch_ctx = ctx
        if self.host is not None:
            self.host.run(duration, lambda: self._computed(now))
        elif self.speed != 1.0:
            self.busy_s += duration / self.speed
            self.loop.schedule(now + duration / self.speed, self._finish_cb)
        elif duration >= 0.0:
            self.busy_s += duration
            # EventLoop.schedule inlined (once per step): the same sequence number, the same heap entry.
            loop = self.loop
            seq = loop._seq = loop._seq + 1
            heappush(loop._heap, (now + duration, seq, self._finish_cb, ()))
        else:  # NaN or negative: schedule() raises
            self.loop.schedule(now + duration, self._finish_cb)

    def _computed(self, started: float) -> None:
        """The step's compute is through on a shared host; a throttled worker then sleeps as long again
        times (1/F - 1), off the CPU (it stretches what the compute took, shared host and all)."""
        now = self.loop.now
        hold = (now - started) * (1.0 / self.speed - 1.0)
        self.busy_s += now - started + hold
        if hold > 0:
            self.loop.schedule(now + hold, self._finish)
        else:
            self._finish()

    def _finish(self) -> None:
        if self.failed:
            return
        now = self.loop.now
        p = self.batch_seg
        batch = self.batch
        kv = self.kv_real = self.kv_real + self.seg_layers[p] * self.batch_tokens
        if kv > self.kv_real_peak:
            self.kv_real_peak = kv
        queues = self.queues
        if p + 1 < len(queues):
            following = queues[p + 1]
            if following:
                following.extend(batch)
            else:
                queues[p + 1] = batch
                self.carried = len(batch)
            self.pointer = p + 1
        else:
            # Every query leaves through the last segment, once per step: count steps and tokens here (a
            # worker entered partway runs one real step as several segment events).
            self.pointer = 0
            self.steps += 1
            self.prompt_tokens += self.batch_pt
            self.decode_seqs += self.batch_tokens - self.batch_pt
            observed = self.observer is not None
            if observed:
                self._observe(batch, now)
            if self.messages:
                forward_messages(batch, now, self.depart, observed)
            elif len(batch) < BY_LINK_FROM:
                forward_each(batch, now, self.depart, observed)
            else:
                forward_by_link(batch, now, self.depart, observed)
        self.batch = []
        self._start(now)

    def _observe(self, batch: list[Query], now: float) -> None:
        """Tell the routing policy each request's hop time (previous stage's departure to this one's)."""
        observer = self.observer
        assert observer is not None
        for q in batch:
            prev = q.route[q.hop_i - 1][0].name if q.hop_i else "source"
            observer(prev, self.name, now - q.t_left)

    def _reap(self, q: Query, entry: int) -> bool:
        """After a failure: drop `q` if it is dead (True), else keep it."""
        if q.dead and self.drop is not None:
            self.drop(q, self.entries[entry])
            return True
        return False

    def fail(self) -> list[tuple[Query, int]]:
        """Stop for good; returns every request held here with the layer it had reached."""
        self.failed = True
        held = [(q, self.entries[p]) for p, queue in enumerate(self.queues) for q in queue]
        held += [(q, self.entries[entry]) for _, _, q, entry in waiting(self.pending)]
        held += [(q, self.entries[self.batch_seg]) for q in self.batch]
        self.queues = [[] for _ in self.entries]
        self.pending = []
        self.batch = []
        self.carried = 0
        return held

    def release_kv(self, tokens: int, layers: int) -> None:
        self.kv_real = max(0, self.kv_real - tokens * layers)
