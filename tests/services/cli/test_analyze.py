"""`brl analyze` on JSON-lines logs: throughput over the span, latency statistics, per-route counts, plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from planner.errors import InvalidInput
from services.cli.analyze import analyze, load_rows, percentile
from services.cli.main import main


def write_logs(folder: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i in range(20):
        rows.append(
            {
                "id": f"r{i}",
                "arrival": i * 0.5,
                "wall": 1000.0 + i * 0.5 + 2.0,
                "input_len": 10 + i,
                "output_len": 5 + i % 3,
                "route": ["a[0,2)", "b[2,4)"] if i % 2 else ["a[0,2)", "c[2,4)"],
                "finish_reason": "length",
                "error": None,
                "ttft_s": 0.1 + i * 0.01,
                "decode_latency_s": 0.05 + (i % 4) * 0.01,
                "e2e_s": 2.0,
            }
        )
    rows.append(
        {
            "id": "bad",
            "arrival": 0.0,
            "wall": 1001.0,
            "input_len": 3,
            "output_len": 0,
            "route": None,
            "finish_reason": "error",
            "error": "boom",
            "ttft_s": None,
            "decode_latency_s": None,
            "e2e_s": 1.0,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    its = [
        {
            "t": i,
            "chain": ["a", "b"],
            "requests": 2 + i % 2,
            "prompt_tokens": 0,
            "decode_tokens": 2,
            "step_s": 0.01,
        }
        for i in range(10)
    ]
    (folder / "iterations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in its))
    return rows


def test_summary_numbers(tmp_path: Path) -> None:
    rows = write_logs(tmp_path)
    good = [r for r in rows if r["finish_reason"] == "length"]
    summary = analyze(*load_rows(tmp_path))
    assert summary["finished"] == 20 and summary["failed"] == 1
    span = (1000.0 + 19 * 0.5 + 2.0) - 1000.0
    assert summary["span_s"] == pytest.approx(span)
    out_tokens = sum(int(r["output_len"]) for r in good)  # type: ignore[call-overload]
    assert summary["decode_tok_per_s"] == pytest.approx(out_tokens / span, rel=1e-3)
    ttft = [float(r["ttft_s"]) for r in good]  # type: ignore[arg-type]
    assert summary["prompt_latency_s"]["mean"] == pytest.approx(statistics.fmean(ttft), abs=1e-6)
    assert summary["prompt_latency_s"]["p50"] == pytest.approx(statistics.median(ttft), abs=1e-6)
    assert summary["requests_per_route"] == {"a>b": 10, "a>c": 10}
    assert summary["mean_batch_requests"] == pytest.approx(2.5)


def test_percentile_matches_linear_interpolation() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 0.5) == 3.0
    assert percentile(xs, 0.95) == pytest.approx(4.8)
    assert statistics.quantiles(xs, n=20, method="inclusive")[-1] == pytest.approx(percentile(xs, 0.95))


def test_cli_prints_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_logs(tmp_path)
    assert main(["analyze", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["finished"] == 20
    assert (tmp_path / "analysis.png").stat().st_size > 0


def test_missing_logs_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="requests.jsonl"):
        load_rows(tmp_path)
    assert main(["analyze", str(tmp_path)]) == 2
