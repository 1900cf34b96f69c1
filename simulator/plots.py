"""PNG plots of a SimResult: tokens/s over time against the max-flow bound, latency CDFs, and the placement
(one bar per node over the layers it holds, coloured by how busy it was). matplotlib is imported lazily."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from simulator.run import SimResult

SMOOTH_S = 10


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_throughput(result: SimResult, path: str | Path | BinaryIO) -> str | Path | BinaryIO:
    plt = _pyplot()
    series = result.throughput_series
    decode = result.decode_series
    xs = list(range(len(series)))

    def smooth(values: tuple[int, ...]) -> list[float]:
        out, acc = [], 0.0
        for i, v in enumerate(values):
            acc += v
            if i >= SMOOTH_S:
                acc -= values[i - SMOOTH_S]
            out.append(acc / min(i + 1, SMOOTH_S))
        return out

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(xs, smooth(series), label=f"all tokens/s ({SMOOTH_S}-s mean)")
    ax.plot(xs, smooth(decode), label="decode tokens/s")
    if result.max_flow_tok_per_s > 0:
        ax.axhline(result.max_flow_tok_per_s, color="red", linestyle="--", label="max-flow bound")
    ax.axvspan(*result.window_s, color="grey", alpha=0.1, label="measurement window")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("tokens/s")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def _smooth(values: tuple[int, ...]) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= SMOOTH_S:
            acc -= values[i - SMOOTH_S]
        out.append(acc / min(i + 1, SMOOTH_S))
    return out


def save_replan(without: SimResult, with_replan: SimResult, path: str | Path | BinaryIO) -> Any:
    """Decode tokens/s through the failures of two runs with the same seed, without and with re-planning,
    the failures and (per transition) the plan known, every layer covered again and the routing switch
    marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    # The runs share a seed, so they coincide until the failure: the dashed one stays visible on top.
    for label, result, style in (("with re-plan", with_replan, "-"), ("without re-plan", without, "--")):
        series = result.decode_series
        ax.plot(
            range(len(series)),
            _smooth(series),
            linestyle=style,
            label=f"decode tokens/s {label} ({SMOOTH_S}-s mean)",
        )
    for i, node in enumerate(with_replan.failed_nodes):
        at = with_replan.start_s + dict(with_replan.config.get("failures", []))[node]
        ax.axvline(at, color="red", linestyle="--", label="failure" if i == 0 else None)
    for i, t in enumerate(with_replan.transitions):
        marks = (("planned_s", "green", "new plan known"), ("switched_s", "black", "routing switched"))
        for key, colour, label in marks:
            if t.get(key) is not None:
                ax.axvline(float(t[key]), color=colour, linestyle=":", label=label if i == 0 else None)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("decode tokens/s")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def save_latency_cdf(result: SimResult, path: str | Path | BinaryIO) -> str | Path | BinaryIO:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, cdf, stats in (
        ("prompt", result.prompt_cdf, result.prompt_latency_s),
        ("decode (per token)", result.decode_cdf, result.decode_latency_s),
    ):
        if cdf:
            ax.plot(
                [x for x, _ in cdf],
                [y for _, y in cdf],
                label=f"{label}: mean {stats.mean:.3f}s p99 {stats.p99:.3f}s",
            )
    ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("share of requests")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def save_placement(result: SimResult, path: str | Path | BinaryIO) -> str | Path | BinaryIO:
    plt = _pyplot()
    placement = result.plan.get("placement", {})
    names = sorted(placement, key=lambda n: (placement[n][0], n))
    fig, ax = plt.subplots(figsize=(8, max(3, 0.3 * len(names) + 1)))
    cmap = plt.get_cmap("RdYlGn_r")
    for row, name in enumerate(names):
        start, end = placement[name]
        info = result.nodes.get(name, {})
        util = float(info.get("utilisation", 0.0))
        failed = bool(info.get("failed", False))
        ax.barh(
            row,
            end - start,
            left=start,
            color=cmap(min(1.0, util)),
            edgecolor="black",
            hatch="xx" if failed else None,
        )
        ax.text(end + 0.5, row, f"{util:.0%}" + (" failed" if failed else ""), va="center", fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([f"{n} ({result.nodes.get(n, {}).get('gpu_type', '?')})" for n in names], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_title("placement (colour = busy share of simulated time)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


PLOTS: dict[str, Callable[[SimResult, Any], Any]] = {
    "throughput.png": save_throughput,
    "latency_cdf.png": save_latency_cdf,
    "placement.png": save_placement,
}


def save_all(result: SimResult, folder: str | Path) -> list[Path]:
    """Write every plot into `folder` (created if needed); returns the paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, save in PLOTS.items():
        save(result, out / name)
        paths.append(out / name)
    return paths


def render_pngs(result: SimResult) -> dict[str, bytes]:
    """Every plot as PNG bytes, by file name (for services that store them)."""
    pngs = {}
    for name, save in PLOTS.items():
        buf = io.BytesIO()
        save(result, buf)
        pngs[name] = buf.getvalue()
    return pngs
