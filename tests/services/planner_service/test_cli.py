"""`brl planner-service` / `brl simulator-service` as a user runs them: a real process, SIGTERM ends it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.services.jobs.client import wait_job

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("command", ["planner-service", "simulator-service"])
def test_service_command_serves_and_stops_on_sigterm(tmp_path: Path, command: str) -> None:
    args = [
        str(Path(sys.executable).parent / "brl"),  # the console script users run
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
    log = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "service on http://" in line, line + (tmp_path / "stderr.log").read_text()
        url = line.split(" on ", 1)[1].split(",", 1)[0].strip()
        assert httpx.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
        assert httpx.get(f"{url}/openapi.json", timeout=30).json()["info"]["title"].startswith("BRL")
        if command == "planner-service":
            # Worker processes start from the console script's main module (spawn): a job must run.
            body = {"cluster": "cluster24", "model": "llama2-70b", "method": "swarm", "time_limit_s": 5}
            with httpx.Client(base_url=url, timeout=30) as client:
                job = wait_job(client, client.post("/v1/plans", json=body).json()["url"])
            assert job["status"] == "succeeded", job["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, (tmp_path / "stderr.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert (tmp_path / "jobs.db").exists()


def test_bad_setting_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli.main import main

    assert main(["planner-service", "--port", "99999", "--db", str(tmp_path / "jobs.db")]) == 2
    err = capsys.readouterr().err
    assert "port" in err and "Traceback" not in err
