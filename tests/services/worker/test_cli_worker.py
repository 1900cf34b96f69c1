"""`brl worker` as a real process: first stdout line is the bound address; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from services.worker import client

ROOT = Path(__file__).resolve().parents[3]


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_worker_prints_address_serves_and_stops(tiny_dir: Path) -> None:
    proc = _worker("--model", str(tiny_dir), "--layers", "2:6", "--port", "0", "--name", "n7")
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        info = asyncio.run(client.info(address))
        assert (info.start_layer, info.end_layer, info.name, info.backend) == (2, 6, "n7", "torch")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_bad_flags_exit_2_with_a_clear_message(tiny_dir: Path) -> None:
    proc = _worker("--model", str(tiny_dir), "--layers", "4:2")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "layers" in err and "START < END" in err
    proc = _worker("--model", str(tiny_dir), "--layers", "0:2", "--backend", "tensorrt")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "unknown backend 'tensorrt'" in err and "torch" in err
