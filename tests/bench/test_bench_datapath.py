"""The data-path benchmark's toy run: three real worker processes, figures and JSON last."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.bench.bench_run import bench_figures, run_bench
from tests.services.worker.conftest import save_tiny_llama


def test_bench_datapath_quick_prints_json_last() -> None:
    figures, _ = bench_figures("datapath.py", "--quick")
    assert figures["bench"] == "datapath" and figures["quick"] is True
    assert (figures["backend"], figures["device"], figures["dtype"]) == ("torch", "cpu", "float32")
    assert figures["layers"] == [[0, 7], [7, 19], [19, 30]]
    assert set(figures["batches"]) == {"1", "8"}
    for row in figures["batches"].values():
        assert row["single_tok_per_s"] > 0 and row["chain_tok_per_s"] > 0 and row["ratio"] > 0
    assert [(h["from"], h["to"]) for h in figures["hops"]] == [(-1, 0), (0, 1), (1, 2)]
    assert all(0 < h["link_ms_p50"] <= h["link_ms_p99"] for h in figures["hops"])


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_bench("datapath.py", *args, timeout_s=600, env=env)


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
    args = ("--backend", "vllm", "--device", "cpu", "--quick", "--model", str(model))
    figures, _ = bench_figures("datapath.py", *args, timeout_s=600)
    assert (figures["backend"], figures["device"], figures["dtype"]) == ("vllm", "cpu", "float32")
    assert figures["layers"] == [[0, 1], [1, 4], [4, 6]]
    assert set(figures["batches"]) == {"1", "8"}
    for row in figures["batches"].values():
        assert row["single_tok_per_s"] > 0 and row["chain_tok_per_s"] > 0 and row["ratio"] > 0
    assert all(0 < h["link_ms_p50"] <= h["link_ms_p99"] for h in figures["hops"])
