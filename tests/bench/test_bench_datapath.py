"""The data-path benchmark's toy run: three real worker processes, figures and JSON last."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.worker.conftest import save_tiny_llama

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
    assert (figures["backend"], figures["device"], figures["dtype"]) == ("torch", "cpu", "float32")
    assert figures["layers"] == [[0, 7], [7, 19], [19, 30]]
    assert set(figures["batches"]) == {"1", "8"}
    for row in figures["batches"].values():
        assert row["single_tok_per_s"] > 0 and row["chain_tok_per_s"] > 0 and row["ratio"] > 0
    assert [(h["from"], h["to"]) for h in figures["hops"]] == [(-1, 0), (0, 1), (1, 2)]
    assert all(0 < h["link_ms_p50"] <= h["link_ms_p99"] for h in figures["hops"])


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "datapath.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )


def test_cuda_without_a_device_says_so_in_one_line_and_exits_2() -> None:
    # An empty CUDA_VISIBLE_DEVICES hides every GPU, so this holds on a GPU machine too.
    out = _bench(
        "--backend", "vllm", "--device", "cuda", "--quick", env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "datapath: cannot run --backend vllm --device cuda: no CUDA device (torch.cuda.is_available() is False)"
    ]


def test_cuda_needs_the_vllm_backend() -> None:
    out = _bench("--device", "cuda", "--quick")
    assert out.returncode == 2 and "--device cuda needs --backend vllm" in out.stderr


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_bench_datapath_vllm_on_cpu_at_toy_size(tmp_path: Path) -> None:
    """One vLLM engine in the bench process against three `brl worker --backend vllm` processes."""
    model = save_tiny_llama(tmp_path / "tiny")
    out = _bench("--backend", "vllm", "--device", "cpu", "--quick", "--model", str(model))
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert (figures["backend"], figures["device"], figures["dtype"]) == ("vllm", "cpu", "float32")
    assert figures["layers"] == [[0, 1], [1, 4], [4, 6]]
    assert set(figures["batches"]) == {"1", "8"}
    for row in figures["batches"].values():
        assert row["single_tok_per_s"] > 0 and row["chain_tok_per_s"] > 0 and row["ratio"] > 0
    assert all(0 < h["link_ms_p50"] <= h["link_ms_p99"] for h in figures["hops"])
