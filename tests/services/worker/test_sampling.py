"""Last-hop sampling: greedy, temperature, top-k, top-p and per-request seeds."""

from __future__ import annotations

import torch

from services.worker.records import Sampling
from services.worker.sampling import check, make_generator, sample


def _logits() -> torch.Tensor:
    return torch.tensor([0.1, 3.0, 2.9, -1.0, 0.5])


def test_greedy_is_argmax_with_its_logprob() -> None:
    token, logprob = sample(_logits(), Sampling(), None)
    assert token == 1
    assert abs(logprob - float(torch.log_softmax(_logits(), -1)[1])) < 1e-6


def test_same_seed_same_tokens_and_different_seed_differs() -> None:
    s = Sampling(temperature=5.0, seed=7)
    runs = []
    for _ in range(2):
        g = make_generator(s)
        runs.append([sample(_logits(), s, g)[0] for _ in range(40)])
    assert runs[0] == runs[1]
    other = Sampling(temperature=5.0, seed=8)
    g = make_generator(other)
    assert [sample(_logits(), other, g)[0] for _ in range(40)] != runs[0]


def test_top_k_and_top_p_restrict_the_choice() -> None:
    hot = Sampling(temperature=50.0, top_k=2, seed=1)
    g = make_generator(hot)
    assert {sample(_logits(), hot, g)[0] for _ in range(60)} == {1, 2}
    nucleus = Sampling(temperature=1.0, top_p=0.01, seed=1)
    g = make_generator(nucleus)
    assert {sample(_logits(), nucleus, g)[0] for _ in range(20)} == {1}


def test_invalid_parameters_are_named() -> None:
    assert check(Sampling()) is None
    assert "temperature" in (check(Sampling(temperature=-1)) or "")
    assert "top_p" in (check(Sampling(top_p=1.5)) or "")
    assert "top_k" in (check(Sampling(top_k=-2)) or "")
    assert make_generator(Sampling()) is None
