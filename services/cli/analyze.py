"""`brl analyze LOGDIR`: throughput and prompt/decode latency (mean, p50, p95) from the JSON-lines logs that
the coordinator (--log-dir) or `brl load --out` write, plus plots (LOGDIR/analysis.png)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.errors import InvalidInput

DONE = ("stop", "length")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), 6),
        "p50": round(percentile(values, 0.5), 6),
        "p95": round(percentile(values, 0.95), 6),
    }


def load_rows(log_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from services.coordinator.eventlog import ITERATIONS_FILE, REQUESTS_FILE, read_jsonl

    req_path = log_dir / REQUESTS_FILE
    if not req_path.exists():
        raise InvalidInput(
            f"no {REQUESTS_FILE} here; point at a coordinator --log-dir or a `brl load --out` folder",
            source=str(log_dir),
        )
    try:
        requests = read_jsonl(req_path)
        it_path = log_dir / ITERATIONS_FILE
        iterations = read_jsonl(it_path) if it_path.exists() else []
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"not JSON lines: {exc.msg}", source=str(req_path), field=f"line {exc.lineno}"
        ) from None
    return requests, iterations


def analyze(requests: list[dict[str, Any]], iterations: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in requests if r.get("finish_reason") in DONE and not r.get("error")]
    starts = [r["wall"] - r["e2e_s"] for r in done]
    ends = [r["wall"] for r in done]
    span = (max(ends) - min(starts)) if done else 0.0
    out_tokens = sum(int(r["output_len"]) for r in done)
    in_tokens = sum(int(r["input_len"]) for r in done)
    steps = [it for it in iterations if "step_s" in it]
    summary: dict[str, Any] = {
        "requests": len(requests),
        "finished": len(done),
        "failed": sum(1 for r in requests if r.get("finish_reason") == "error" or r.get("error")),
        "span_s": round(span, 3),
        "decode_tok_per_s": round(out_tokens / span, 3) if span > 0 else 0.0,
        "all_tok_per_s": round((in_tokens + out_tokens) / span, 3) if span > 0 else 0.0,
        "prompt_latency_s": stats([r["ttft_s"] for r in done if r.get("ttft_s") is not None]),
        "decode_latency_s": stats(
            [r["decode_latency_s"] for r in done if r.get("decode_latency_s") is not None]
        ),
        "e2e_latency_s": stats([r["e2e_s"] for r in done]),
    }
    if steps:
        summary["steps"] = len(steps)
        summary["mean_batch_requests"] = round(sum(it["requests"] for it in steps) / len(steps), 3)
        chains: dict[str, int] = {}
        for it in steps:
            key = ">".join(it["chain"])
            chains[key] = chains.get(key, 0) + 1
        summary["steps_per_chain"] = chains
    routes: dict[str, int] = {}
    for r in done:
        if r.get("route"):
            key = ">".join(h.split("[")[0] for h in r["route"])
            routes[key] = routes.get(key, 0) + 1
    if routes:
        summary["requests_per_route"] = routes
    return summary


def plot(requests: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in requests if r.get("finish_reason") in DONE and not r.get("error")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ttft = [r["ttft_s"] for r in done if r.get("ttft_s") is not None]
    dec = [r["decode_latency_s"] for r in done if r.get("decode_latency_s") is not None]
    axes[0].hist(ttft, bins=30, color="tab:blue")
    axes[0].set(title="prompt latency (time to first token)", xlabel="s", ylabel="requests")
    axes[1].hist(dec, bins=30, color="tab:orange")
    axes[1].set(title="decode latency (per output token)", xlabel="s", ylabel="requests")
    if done:
        t0 = min(r["wall"] - r["e2e_s"] for r in done)
        width = max(1.0, (max(r["wall"] for r in done) - t0) / 30)
        bins: dict[int, int] = {}
        for r in done:
            b = int((r["wall"] - t0) // width)
            bins[b] = bins.get(b, 0) + int(r["output_len"])
        xs = sorted(bins)
        axes[2].plot([x * width for x in xs], [bins[x] / width for x in xs], marker="o")
    axes[2].set(title="decode throughput (by finish time)", xlabel="s", ylabel="tokens/s")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "analyze",
        help="throughput and latency from coordinator / load logs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("log_dir", type=Path, help="folder holding requests.jsonl (and iterations.jsonl)")
    p.add_argument("--no-plot", action="store_true", help="skip LOGDIR/analysis.png")
    p.set_defaults(func=_run)


def _fmt(s: dict[str, float | int]) -> str:
    if not s.get("n"):
        return "n/a"
    return f"mean {s['mean']:.3f}  p50 {s['p50']:.3f}  p95 {s['p95']:.3f}  (n={s['n']})"


def _run(args: argparse.Namespace) -> int:
    requests, iterations = load_rows(args.log_dir)
    summary = analyze(requests, iterations)
    print(
        f"requests {summary['requests']}  finished {summary['finished']}  failed {summary['failed']}  "
        f"over {summary['span_s']} s"
    )
    print(
        f"throughput: decode {summary['decode_tok_per_s']} tok/s, all (prompt + decode) "
        f"{summary['all_tok_per_s']} tok/s"
    )
    print(f"prompt latency (s): {_fmt(summary['prompt_latency_s'])}")
    print(f"decode latency (s/token): {_fmt(summary['decode_latency_s'])}")
    print(f"end-to-end (s): {_fmt(summary['e2e_latency_s'])}")
    if not args.no_plot and summary["finished"]:
        summary["plot"] = str(plot(requests, args.log_dir / "analysis.png"))
        print(f"plots: {summary['plot']}")
    print(json.dumps(summary))
    return 0
