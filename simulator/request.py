"""One query in flight: its lengths, the chain it was routed on, and where its current iteration is.
Iteration 0 is the prompt (input_len tokens, no output token in the paper's accounting); iterations
1..output_len decode one token each along the same chain (the KV cache lives there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from planner.routing.base import Chain
    from simulator.chain_steps import Step
    from simulator.link import SimLink
    from simulator.worker import SimWorker

# (worker, index of the entry layer in the worker's segments, link the request arrives on)
Stage = tuple["SimWorker", int, "SimLink"]


class Query:
    __slots__ = (
        "qid",
        "rid",
        "input_len",
        "output_len",
        "iteration",
        "seq_len",
        "context",
        "route",
        "hop_i",
        "sink_link",
        "t_issue",
        "t_left",
        "chain",
        "created_s",
        "t_arrive",
        "on_decode",
        "dead",
        "step",
        "slot",
    )

    def __init__(self, qid: int, input_len: int, output_len: int, created_s: float) -> None:
        self.qid = qid
        self.rid = f"q{qid}"
        self.input_len = input_len
        self.output_len = output_len
        self.iteration = 0
        self.seq_len = input_len
        # Tokens already in the KV cache when this iteration runs (the paper's prev_num_tokens).
        self.context = 0
        self.route: tuple[Stage, ...] = ()
        self.hop_i = 0
        self.sink_link: SimLink | None = None
        self.t_issue = created_s
        self.t_left = created_s
        self.chain: Chain = ()
        self.created_s = created_s
        # When the query reached the coordinator (before any wait for admission): time to first token counts
        # from here.
        self.t_arrive = created_s
        # The routing policy's decode accounting for this chain, prepared once (None: nothing to do).
        self.on_decode: Callable[[], None] | None = None
        # Set when a node of its chain failed: it is dropped (and re-run) wherever it next shows up.
        self.dead = False
        # The chain step it travels in, when the coordinator steps chains (simulator.chain_steps).
        self.step: Step | None = None
        # Where the compiled engine (simulator.fast_engine) keeps it, when that engine runs.
        self.slot = -1

    @property
    def is_prompt(self) -> bool:
        return self.iteration == 0

    def advance(self) -> None:
        """Move to the next decode iteration."""
        self.iteration += 1
        self.seq_len = 1
        self.context = self.input_len + self.iteration - 1
        self.hop_i = 0

    def advance_to(self, iteration: int) -> None:
        """Jump to decode iteration `iteration` (a warm start), as that many `advance` calls would."""
        if iteration > self.iteration:
            self.iteration = iteration
            self.seq_len = 1
            self.context = self.input_len + iteration - 1
            self.hop_i = 0
