"""Figures of bench/fidelity.py side by side: predicted (one column per model) against measured, with the
relative errors, in the simulator's definitions."""

from __future__ import annotations

import math
from typing import Any

from simulator.run import SimResult

# (label, key): a key "a.b" reads figures["a"]["b"].
FIGURES = [("decode tok/s", "decode_tok_per_s"), ("all tok/s", "all_tok_per_s")] + [
    (f"{lat.split('_')[0]} latency {s} (s)", f"{lat}.{s}")
    for lat in ("prompt_latency_s", "decode_latency_s")
    for s in ("mean", "p50", "p95")
]


def shares(counts: dict[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {n: round(c / total, 4) if total else 0.0 for n, c in counts.items()}


def sim_figures(r: SimResult) -> dict[str, Any]:
    def st(s: Any) -> dict[str, float]:
        return {"count": s.count, "mean": s.mean, "p50": s.p50, "p95": s.p95}

    return {
        "decode_tok_per_s": r.decode_tok_per_s,
        "all_tok_per_s": r.all_tok_per_s,
        "prompt_latency_s": st(r.prompt_latency_s),
        "decode_latency_s": st(r.decode_latency_s),
        "finished": r.finished,
        # Which chains the router used: each node's share of the tokens (prompt + decode) it processed.
        "node_share": shares(
            {n: float(v["decode_seqs"]) + float(v["prompt_tokens"]) for n, v in r.nodes.items()}
        ),
    }


def pick(figures: dict[str, Any], key: str) -> float:
    value: Any = figures
    for part in key.split("."):
        value = value[part]
    return float(value)


def compare(pred: dict[str, Any], meas: dict[str, Any]) -> dict[str, float]:
    """Relative error (predicted - measured) / measured of every figure."""
    out = {}
    for _, key in FIGURES:
        m = pick(meas, key)
        out[key] = (pick(pred, key) - m) / m if m else math.inf
    return out


def print_table(
    predictions: dict[str, dict[str, Any]], meas: dict[str, Any] | None, errors: dict[str, dict[str, float]]
) -> None:
    names = list(predictions)
    head = f"{'figure':26s} " + " ".join(f"{'pred:' + n:>14s}" for n in names) + f" {'measured':>10s} "
    print(head + " ".join(f"{'err:' + n:>13s}" for n in names))
    for label, key in FIGURES:
        line = f"{label:26s} " + " ".join(f"{pick(predictions[n], key):14.4f}" for n in names)
        line += f" {pick(meas, key) if meas else math.nan:10.4f} "
        line += " ".join(f"{errors[n][key]:+13.1%}" if meas else f"{'':>13s}" for n in names)
        print(line)


def finite(x: Any) -> Any:
    """JSON has no infinity: a relative error against a zero measurement is written as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures averaged over runs, key by key (numbers averaged, lists joined, the rest from the first)."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs if key in r]
        if isinstance(first, dict):
            out[key] = mean_of(values)
        elif isinstance(first, bool) or not isinstance(first, (int, float)):
            out[key] = sum(values, []) if isinstance(first, list) else first
        else:
            out[key] = sum(values) / len(values)
    return out


def spread(runs: list[dict[str, Any]]) -> dict[str, float]:
    """How far the same replay's figures moved between runs: (max - min) / mean of each figure, the noise
    floor no prediction can beat."""
    out = {}
    for _, key in FIGURES:
        values = [pick(r, key) for r in runs]
        m = sum(values) / len(values)
        out[key] = (max(values) - min(values)) / m if m else 0.0
    return out
