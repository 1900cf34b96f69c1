"""`brl cluster …`: tables, generated files, conversions, and exit code 2 with a clear line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner import bundled
from planner.errors import UnknownName
from planner.formats.cluster_yaml import load_cluster_yaml
from planner.formats.helix_ini import load_cluster_ini
from services.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def test_show_bundled_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "show", "3cluster24"]) == 0
    out = capsys.readouterr().out
    assert "24 nodes" in out and "region-1" in out
    assert "total VRAM: 544 GB" in out  # 4 x 40 + 8 x 24 + 12 x 16 GB
    assert "region-0 <-> region-1" in out and "coordinator -> region-2" in out
    row = next(line for line in out.splitlines() if line.startswith("region-1 ") and " T4 " in line)
    assert row.split()[2] == "8"


def test_generate_single_region_yaml_is_seeded(tmp_path: Path) -> None:
    args = ["cluster", "generate", "--gpus", "A100=2,L4=3,T4=5", "--bandwidth", "1e9+-1e8", "--seed", "4"]
    assert main([*args, "-o", str(tmp_path / "a.yaml")]) == 0
    assert main([*args, "-o", str(tmp_path / "b.yaml")]) == 0
    a, b = load_cluster_yaml(tmp_path / "a.yaml"), load_cluster_yaml(tmp_path / "b.yaml")
    assert a == b and a.gpu_counts() == {"A100": 2, "L4": 3, "T4": 5}
    assert len({lk.bandwidth_bytes_per_s for lk in a.links}) > 10
    assert main([*args[:-1], "5", "-o", str(tmp_path / "c.yaml")]) == 0
    assert load_cluster_yaml(tmp_path / "c.yaml") != a


def test_generate_multi_region_ini_reproduces_the_paper(tmp_path: Path) -> None:
    out = tmp_path / "3cluster24.ini"
    code = main(
        [
            "cluster",
            "generate",
            "--region",
            "region-0:A100=4",
            "--region",
            "region-1:L4=2,T4=8",
            "--region",
            "region-2:L4=6,T4=4",
            "--seed",
            "0",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    assert load_cluster_ini(out) == bundled.cluster("3cluster24")


def test_convert_ini_to_yaml(tmp_path: Path) -> None:
    assert main(["cluster", "convert", "cluster10", "-o", str(tmp_path / "c.yaml")]) == 0
    assert load_cluster_yaml(tmp_path / "c.yaml", name="cluster10") == bundled.cluster("cluster10")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cluster", "show", "no-such-cluster"], "unknown cluster 'no-such-cluster'"),
        (["cluster", "generate", "--gpus", "A100=0"], "--gpus: count of A100 must be >= 1"),
        (["cluster", "generate", "--gpus", "A100=2", "--bandwidth", "fast"], "--bandwidth"),
        (["cluster", "generate", "--gpus", "A100=2", "--bandwidth", "-5"], "bandwidth must stay > 0"),
        (["cluster", "generate", "--region", "A100=2"], "NAME:TYPE=COUNT"),
        (["cluster", "generate"], "either --gpus"),
        (["cluster", "generate", "--gpus", "T4=2", "-o", "x.csv"], "unknown output type"),
        (["cluster", "convert", "cluster10", "-o", "/nonexistent-dir/c.yaml"], "cannot write"),
    ],
)
def test_bad_input_exits_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("brl: error:") and expected in err
    assert "Traceback" not in err


def test_bad_file_names_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node_groups:\n  - {gpu_type: T4, count: -3}\nlinks: {}\n")
    assert main(["cluster", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "node_groups.0.count" in err and "greater than or equal to 1" in err


def _gpu_node(name: str, product: str, region: str) -> dict[str, object]:
    labels = {"nvidia.com/gpu.product": product, "topology.kubernetes.io/region": region}
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"nvidia.com/gpu": "1"},
            "capacity": {"nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_discover_writes_yaml_that_show_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("services.discovery.kube_nodes")
    items = [
        _gpu_node("gpu-a", "NVIDIA-A100-SXM4-40GB", "us-east1"),
        _gpu_node("gpu-b", "NVIDIA-H100-80GB", "eu"),
    ]
    f = tmp_path / "nodes.json"
    f.write_text(json.dumps({"apiVersion": "v1", "kind": "NodeList", "items": items}))
    out = tmp_path / "fleet.yaml"
    assert main(["cluster", "discover", "--node-list-json", str(f), "-o", str(out)]) == 0
    fleet = load_cluster_yaml(out)
    assert sorted(fleet.gpu_counts()) == ["A100", "H100"]
    # show accepts GPU types without a profile (VRAM unknown), planning input does not
    assert main(["cluster", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "unknown VRAM for H100" in shown
    with pytest.raises(UnknownName, match="H100"):
        bundled.cluster(str(out))


def test_help_lists_cluster_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cluster", "--help"])
    out = capsys.readouterr().out
    for sub in ("show", "generate", "convert", "discover"):
        assert sub in out


def test_console_script_exits_2_on_bad_input(tmp_path: Path) -> None:
    brl = ROOT / ".venv" / "bin" / "brl"
    cmd = [str(brl)] if brl.exists() else [sys.executable, "-m", "services.cli.main"]
    bad = tmp_path / "bad.ini"
    bad.write_text("[NodeNames]\ntotal_compute_nodes=1\n[ComputeNode-0]\n")
    proc = subprocess.run(
        [*cmd, "cluster", "show", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "[ComputeNode-0] type" in proc.stderr
    assert "Traceback" not in proc.stderr
