"""Checks one incoming segment against what this worker holds and what it has cached for the request.

Pure: returns the reason a segment is refused (error code + message) or None. Never trusts the peer.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.worker import sampling
from services.worker.backends.base import DTYPES, ModelShape
from services.worker.records import FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND, Segment, WireTensor


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


@dataclass(frozen=True)
class Cached:
    """What this worker remembers about a request between steps."""

    start_layer: int
    end_layer: int
    next_position: int


def check_segment(
    seg: Segment, shape: ModelShape, held: tuple[int, int], activation_dtype: str, cached: Cached | None
) -> Refusal | None:
    bad = _check_static(seg, shape, held, activation_dtype)
    if bad is not None:
        return bad
    if cached is None:
        if seg.position != 0:
            return Refusal(
                NOT_FOUND,
                f"unknown request {seg.request_id!r}: nothing cached on this worker "
                f"(position {seg.position}); start it from position 0",
            )
        return None
    if (cached.start_layer, cached.end_layer) != (seg.start_layer, seg.end_layer):
        return Refusal(
            FAILED_PRECONDITION,
            f"request {seg.request_id!r} runs layers [{cached.start_layer},"
            f"{cached.end_layer}) here, not [{seg.start_layer},{seg.end_layer})",
        )
    if seg.position != cached.next_position:
        return Refusal(
            FAILED_PRECONDITION,
            f"request {seg.request_id!r} has {cached.next_position} tokens "
            f"cached here; got position {seg.position}",
        )
    return None


def _check_static(seg: Segment, shape: ModelShape, held: tuple[int, int], dtype: str) -> Refusal | None:
    if not seg.request_id:
        return Refusal(INVALID_ARGUMENT, "empty request_id")
    start, end = held
    if not start <= seg.start_layer < seg.end_layer <= end:
        return Refusal(
            FAILED_PRECONDITION,
            f"layers [{seg.start_layer},{seg.end_layer}) are not within the "
            f"layers [{start},{end}) this worker holds",
        )
    if seg.num_tokens < 1:
        return Refusal(INVALID_ARGUMENT, f"num_tokens must be >= 1, got {seg.num_tokens}")
    if seg.position < 0 or seg.position + seg.num_tokens > shape.max_positions:
        return Refusal(
            INVALID_ARGUMENT,
            f"positions {seg.position}..{seg.position + seg.num_tokens} exceed the "
            f"model's {shape.max_positions}",
        )
    if seg.start_layer == 0:
        if len(seg.token_ids) != seg.num_tokens:
            return Refusal(
                INVALID_ARGUMENT, f"{len(seg.token_ids)} token ids for num_tokens {seg.num_tokens}"
            )
        if any(not 0 <= t < shape.vocab_size for t in seg.token_ids):
            return Refusal(INVALID_ARGUMENT, f"token ids must be in [0, {shape.vocab_size})")
    else:
        if seg.hidden is None:
            return Refusal(INVALID_ARGUMENT, f"layer {seg.start_layer} needs a hidden state, none was sent")
        for label, tensor in (("hidden", seg.hidden), ("residual", seg.residual)):
            if tensor is not None:
                bad = _check_tensor(label, tensor, (seg.num_tokens, shape.hidden_size), dtype)
                if bad is not None:
                    return bad
    last = seg.end_layer == shape.num_layers
    if last:
        if seg.route:
            return Refusal(INVALID_ARGUMENT, "the last hop got a route to more hops")
        why = sampling.check(seg.sampling)
        if why:
            return Refusal(INVALID_ARGUMENT, why)
    else:
        if not seg.route:
            return Refusal(
                INVALID_ARGUMENT,
                f"layers end at {seg.end_layer} of {shape.num_layers} but the route has no next hop",
            )
        nxt = seg.route[0]
        if nxt.start != seg.end_layer or not nxt.start < nxt.end <= shape.num_layers:
            return Refusal(
                INVALID_ARGUMENT,
                f"next hop {nxt.address} runs [{nxt.start},{nxt.end}); it must "
                f"start at layer {seg.end_layer}",
            )
    return None


def _check_tensor(label: str, t: WireTensor, shape: tuple[int, int], dtype: str) -> Refusal | None:
    if t.dtype != dtype:
        known = t.dtype in DTYPES
        why = "this worker's activation dtype is" if known else "unknown dtype; expected"
        return Refusal(INVALID_ARGUMENT, f"{label} dtype {t.dtype!r}: {why} {dtype!r}")
    if tuple(t.shape) != shape:
        return Refusal(
            INVALID_ARGUMENT,
            f"{label} shape {list(t.shape)}; expected {list(shape)} (num_tokens, hidden_size)",
        )
    expected = shape[0] * shape[1] * DTYPES[dtype].itemsize
    if len(t.data) != expected:
        return Refusal(
            INVALID_ARGUMENT, f"{label} holds {len(t.data)} bytes; {list(shape)} {dtype} is {expected}"
        )
    return None
