"""The data-path benchmark's toy run: three real worker processes, figures and JSON last."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_datapath_quick_prints_json_last() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "datapath.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "datapath" and figures["quick"] is True
    assert figures["layers"] == [[0, 7], [7, 19], [19, 30]]
    assert set(figures["batches"]) == {"1", "8"}
    for row in figures["batches"].values():
        assert row["single_tok_per_s"] > 0 and row["chain_tok_per_s"] > 0 and row["ratio"] > 0
    assert [(h["from"], h["to"]) for h in figures["hops"]] == [(-1, 0), (0, 1), (1, 2)]
    assert all(0 < h["link_ms_p50"] <= h["link_ms_p99"] for h in figures["hops"])
