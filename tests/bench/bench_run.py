"""Runs a bench script the way a user does (`python bench/NAME.py ARGS` from the repository root) and reads
the JSON line every bench ends with."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(
    script: str, *args: str, timeout_s: float = 300, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """bench/`script` with `args`, its output captured; whatever it exits with."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout_s,
        env=None if env is None else dict(env),
    )


def bench_figures(script: str, *args: str, timeout_s: float = 300) -> tuple[dict[str, Any], str]:
    """The figures bench/`script` prints last (one JSON line) and its whole stdout; a run that exits non-zero
    fails the test with the tail of what it printed."""
    out = run_bench(script, *args, timeout_s=timeout_s)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures, out.stdout
