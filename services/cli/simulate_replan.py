"""`brl simulate --fail N@T --replan`: the same run without re-planning, and the figures that compare the
two (the core is simulator/replan_compare.py, shared with the simulator service). No subcommand of its own."""

from __future__ import annotations

from typing import Any

from simulator.config import SimConfig
from simulator.replan_compare import compare_without_replan as compare
from simulator.run import SimResult


def compare_without_replan(inputs: Any, cfg: SimConfig, result: SimResult) -> dict[str, Any]:
    """The same run (same seed) without re-planning, and the figures that compare the two; the run without
    is under "without_replan"."""
    without, figures = compare(inputs.cluster, inputs.model, inputs.profiles, inputs.plan, cfg, result)
    figures["without_replan"] = without
    return figures


def print_figures(f: dict[str, Any]) -> None:
    def seconds(v: float | None) -> str:
        return "never" if v is None else f"{v:.2f}s"

    print(
        f"decode tokens/s: before the failure {f['decode_tok_per_s_before']:.1f}; after it without re-plan "
        f"{f['decode_tok_per_s_after_without_replan']:.1f}, with re-plan {f['decode_tok_per_s_after_with_replan']:.1f}"
        + (
            f" ({f['decode_tok_per_s_after_switch']:.1f} once switched)"
            if f["decode_tok_per_s_after_switch"] is not None
            else ""
        )
    )
    print(
        f"re-plan: every layer covered {seconds(f['recover_s'])} after the failure (without re-plan "
        f"{seconds(f['recover_s_without_replan'])}), full service on the new plan after "
        f"{seconds(f['full_service_s'])}; {f['layers_moved']} layers moved ({f['bytes_moved'] / 1e9:.1f} GB)"
    )
