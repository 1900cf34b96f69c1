"""Real processes on 127.0.0.1 for the coordinator-replica tests and bench/chaos_coordinators.py: N
coordinators (`brl coordinator`, each with its own BRL_REPLICA_ID and log folder) serving one fleet of
workers that register with every replica (`brl worker --coordinator A,B,...`)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from services.coordinator.eventlog import REQUESTS_FILE, read_jsonl
from tests.services.coordinator.fleet_procs import Proc, ProcFleet


class ReplicaFleet(ProcFleet):
    """ProcFleet with several coordinators: start_replicas() before start_workers(). The inherited
    single-coordinator helpers (health, base_url) speak to replica 0."""

    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.replicas: list[Proc] = []
        self.http_addresses: list[str] = []
        self.grpc_addresses: list[str] = []

    def start_replicas(self, count: int, timeout_s: float = 120.0) -> None:
        procs = []
        for i in range(count):
            args = [
                "coordinator",
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--grpc-port",
                "0",
                "--model",
                self.model,
                "--log-dir",
                str(self.replica_log_dir(i)),
                *self.coordinator_args,
            ]
            if self.heartbeat_interval_s is not None:
                args += ["--heartbeat-interval-s", str(self.heartbeat_interval_s)]
            env = {**self.coordinator_env, "BRL_REPLICA_ID": f"r{i}"}
            procs.append(self._spawn(f"coordinator-r{i}", args, env))
        for proc in procs:
            found = dict(part.split("=", 1) for part in proc.wait_first_line(timeout_s).split()[1:])
            self.http_addresses.append(found["http"])
            self.grpc_addresses.append(found["grpc"])
        self.replicas.extend(procs)
        self.http_address = self.http_addresses[0]
        # Every worker started from now on registers with every replica.
        self.grpc_address = ",".join(self.grpc_addresses)

    def replica_log_dir(self, index: int) -> Path:
        return self.log_dir / f"r{index}"

    def base_urls(self) -> list[str]:
        return [f"http://{a}/v1" for a in self.http_addresses]

    def replica_health(self, index: int, timeout_s: float = 5.0) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(
            f"http://{self.http_addresses[index]}/health", timeout=timeout_s
        ).json()
        return body

    def wait_replicas(self, names: Iterable[str], timeout_s: float = 120.0) -> None:
        """Until every live replica lists these workers and can route."""
        want = set(names)
        t0 = time.monotonic()
        for i, proc in enumerate(self.replicas):
            last: Any = None
            while proc.alive():
                with contextlib.suppress(httpx.HTTPError, json.JSONDecodeError):
                    last = self.replica_health(i)
                    if want <= set(last.get("workers", [])) and last.get("routable"):
                        break
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"replica r{i} lacks {sorted(want)} after {timeout_s} s: {last}")
                time.sleep(0.05)

    def kill_replica(self, index: int, signum: int = signal.SIGKILL) -> None:
        proc = self.replicas[index]
        proc.signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=15)

    def request_ids(self, index: int) -> list[str]:
        """Ids of the requests replica `index` logged (its requests.jsonl)."""
        path = self.replica_log_dir(index) / REQUESTS_FILE
        return [str(r["id"]) for r in read_jsonl(path)] if path.exists() else []

    def __enter__(self) -> ReplicaFleet:
        return self

    def stop(self) -> None:
        super().stop()
        for proc in self.replicas:
            proc.stop()

    def pids(self) -> list[int]:
        return [*super().pids(), *(p.pid for p in self.replicas if p.alive())]
