"""Next-token sampling on the last hop: greedy, temperature, top-k, top-p, with a per-request generator.

A request with a seed gets its own torch.Generator, so its tokens do not depend on what it is batched
with or on the order other requests arrive in.
"""

from __future__ import annotations

import math

import torch

from services.worker.records import Sampling


def check(s: Sampling) -> str | None:
    """Why these parameters are invalid, or None."""
    if not math.isfinite(s.temperature) or s.temperature < 0:
        return f"temperature must be >= 0, got {s.temperature}"
    if not math.isfinite(s.top_p) or not 0 < s.top_p <= 1:
        return f"top_p must be in (0, 1], got {s.top_p}"
    if s.top_k < 0:
        return f"top_k must be >= 0, got {s.top_k}"
    if s.seed is not None and not 0 <= s.seed < 2**63:
        return f"seed must be in [0, 2**63), got {s.seed}"
    return None


def make_generator(s: Sampling) -> torch.Generator | None:
    if s.temperature == 0:
        return None
    generator = torch.Generator()
    if s.seed is not None:
        generator.manual_seed(s.seed)
    else:
        generator.seed()
    return generator


def sample(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None) -> tuple[int, float]:
    """(token id, its log-probability under the distribution sampled from) for 1-D logits."""
    logits = logits.float()
    if s.temperature == 0:
        token = int(torch.argmax(logits))
        return token, float(torch.log_softmax(logits, dim=-1)[token])
    scaled = logits / s.temperature
    if s.top_k > 0 and s.top_k < scaled.numel():
        kth = torch.topk(scaled, s.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if s.top_p < 1:
        sorted_logits, order = torch.sort(scaled, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= s.top_p
        scaled = scaled.scatter(0, order[drop], float("-inf"))
    log_probs = torch.log_softmax(scaled, dim=-1)
    token = int(torch.multinomial(log_probs.exp(), 1, generator=generator))
    return token, float(log_probs[token])
