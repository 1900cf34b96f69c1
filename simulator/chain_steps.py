"""BRL's coordinator steps a chain's requests together (services/coordinator/chain_runner.py): every request
routed over one chain whose last token is out goes into that chain's next step, the step travels as one
message from hop to hop, and at most `depth` steps of a chain are in flight (one per stage at most); a
step's requests are ready again once the whole step's results are through the coordinator. Decodes and
prompts go in steps of their own, each kind with `depth` slots: a decode riding with a prompt would pay
the prompt's compute at every stage, and a prompt waiting for a decode's slot would wait a whole round.

Optional (SimConfig.pipeline_depth): the paper's coordinator issues every query on its own, one message
each, and its figures stay as they were. Without this, a closed loop on a BRL fleet is simulated as
queries trickling in one by one, so an idle first stage starts a step for the first arrival alone: the
simulated workers took 1.7 tokens per step where the live ones took 3.0 (bench/replan_live.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.engine import EventLoop
    from simulator.request import Query, Stage


DECODE, PROMPT = 0, 1
KINDS = (DECODE, PROMPT)


class _Chain:
    __slots__ = ("ready", "inflight", "due", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        # By kind, [decodes, prompts]: the queries ready for the next step and the steps in flight; each
        # kind has the depth to itself.
        self.ready: list[list[Query]] = [[], []]
        self.inflight = [0, 0]
        # A launch is scheduled for this instant: everything that gets ready before it runs joins it, as
        # the live runner takes every request made ready in one turn of its event loop.
        self.due = False


class Step:
    """The requests one launch sent; the chain's slot frees when the last of them is back (or dropped)."""

    __slots__ = ("chain", "left", "kind")

    def __init__(self, chain: _Chain, size: int, kind: int) -> None:
        self.chain = chain
        self.left = size
        self.kind = kind


def send(step: list[Query], now: float) -> None:
    """A chain's step leaves as one message: its queries reach the first stage together."""
    w, entry, link = step[0].route[0]
    free = link.free_at
    free = link.free_at = (free if free > now else now) + sum(q.seq_len for q in step) * link.s_per_token
    for q in step:
        q.t_left = now
        q.hop_i = 0
        w.arrive(free + link.latency_s, q, entry)


class ChainSteps:
    """Per chain (a query's route: the same workers, entries and links), the ready queries and the steps
    in flight. `send(queries, now)` puts a launched step on its chain's first link."""

    def __init__(
        self, loop: EventLoop, depth: int, send: Callable[[list[Query], float], None] = send
    ) -> None:
        if depth < 1:
            raise ValueError(f"pipeline depth must be >= 1, got {depth}")
        self.loop = loop
        self.depth = depth
        self.send = send
        self.chains: dict[tuple[Stage, ...], _Chain] = {}

    def ready(self, q: Query) -> None:
        """`q`'s next iteration waits for its chain's next step."""
        c = self.chains.get(q.route)
        if c is None:
            # At most one step per stage, as the live runner (a one-worker chain steps all its queries).
            c = self.chains[q.route] = _Chain(min(self.depth, len(q.route)))
        c.ready[PROMPT if q.iteration == 0 else DECODE].append(q)
        self._wake(c)

    def done(self, q: Query) -> None:
        """`q`'s iteration is through the coordinator (or `q` was dropped): once its whole step is, the
        chain may launch another."""
        step = q.step
        if step is None:
            return
        q.step = None
        step.left -= 1
        if step.left == 0:
            step.chain.inflight[step.kind] -= 1
            self._wake(step.chain)

    def _wake(self, c: _Chain) -> None:
        if not c.due and any(c.ready[k] and c.inflight[k] < c.depth for k in KINDS):
            c.due = True
            self.loop.schedule(self.loop.now, self._launch, c)

    def _launch(self, c: _Chain) -> None:
        # Prompts and decodes go out in steps of their own, as the live runner sends them (a decode riding
        # with a prompt would pay the prompt's compute at every stage).
        c.due = False
        for kind in KINDS:
            batch = c.ready[kind]
            if not batch or c.inflight[kind] >= c.depth:
                continue
            c.ready[kind] = []
            c.inflight[kind] += 1
            step = Step(c, len(batch), kind)
            for q in batch:
                q.step = step
            self.send(batch, self.loop.now)
