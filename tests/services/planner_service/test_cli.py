"""`brl planner-service` / `brl simulator-service` as a user runs them: a real process, SIGTERM ends it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("command", ["planner-service", "simulator-service"])
def test_service_command_serves_and_stops_on_sigterm(tmp_path: Path, command: str) -> None:
    args = [
        sys.executable,
        "-m",
        "services.cli.main",
        command,
        "--port",
        "0",
        "--grpc-port",
        "0",
        "--db",
        str(tmp_path / "jobs.db"),
        "--max-workers",
        "1",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "service on http://" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(" on ", 1)[1].split(",", 1)[0].strip()
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        assert httpx.get(f"{url}/openapi.json", timeout=10).json()["info"]["title"].startswith("BRL")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "jobs.db").exists()


def test_bad_setting_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli.main import main

    assert main(["planner-service", "--port", "99999", "--db", str(tmp_path / "jobs.db")]) == 2
    err = capsys.readouterr().err
    assert "port" in err and "Traceback" not in err
