"""Start a job service's HTTP (uvicorn) and gRPC servers together, in the background (tests, embedding)
or in the foreground until SIGINT/SIGTERM (the CLI). Port 0 picks free ports; the bound ones are returned."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import grpc
import uvicorn
from fastapi import FastAPI

from services.jobs.grpc_server import start_grpc_server
from services.jobs.settings import JobServiceSettings

log = logging.getLogger(__name__)


@dataclass
class GrpcSpec:
    add: Callable[[grpc.Server], None]
    service_names: Sequence[str]
    port: int


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class RunningServers:
    """Handle on started servers: ports, and `stop()` which ends HTTP, gRPC and then calls `on_close`."""

    def __init__(
        self, app: FastAPI, *, host: str, port: int, grpc_spec: GrpcSpec | None, on_close: Callable[[], None]
    ) -> None:
        self.host = host
        self._sock = _bind(host, port)
        self.http_port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False)
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None
        self.grpc_port: int | None = None
        if grpc_spec is not None:
            self._grpc, self.grpc_port = start_grpc_server(
                grpc_spec.add, grpc_spec.service_names, host=host, port=grpc_spec.port
            )
        self._on_close = on_close
        self._stopped = False

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"

    def start_background(self, *, timeout_s: float = 30.0) -> RunningServers:
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._sock]}, name="uvicorn", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self

    def run_foreground(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop everything. uvicorn re-raises the signal it caught once it has
        shut down; a SIGTERM handler turns that into a clean exit so jobs and workers are ended first."""

        def _exit(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(0)

        previous = signal.signal(signal.SIGTERM, _exit)
        try:
            self._uvicorn.run(sockets=[self._sock])
        finally:
            self.stop()
            signal.signal(signal.SIGTERM, previous)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(5)
        self._sock.close()
        self._on_close()


def open_job_service(
    settings: JobServiceSettings,
    app: FastAPI,
    *,
    add_grpc: Callable[[grpc.Server], None],
    grpc_service_name: str,
    on_close: Callable[[], None],
    interrupted: Sequence[object],
    jobs_noun: str,
) -> RunningServers:
    """Bind a job service's HTTP and (when a port is set) gRPC servers; not yet serving HTTP. `on_close` runs if
    binding fails too, so the store opened by the caller is never left locked."""
    if interrupted:
        log.warning("marked %d interrupted %s failed", len(interrupted), jobs_noun)
    if settings.api_key is None:
        log.warning("no BRL_API_KEY set: mutating calls are open to anyone who can reach %s", settings.host)
    grpc_spec = None
    if settings.grpc_port is not None:
        grpc_spec = GrpcSpec(add_grpc, [grpc_service_name], settings.grpc_port)
    try:
        return RunningServers(
            app, host=settings.host, port=settings.port, grpc_spec=grpc_spec, on_close=on_close
        )
    except Exception:
        on_close()
        raise


def serve_job_service(servers: RunningServers, settings: JobServiceSettings, what: str) -> int:
    grpc_text = f", gRPC on port {servers.grpc_port}" if servers.grpc_port is not None else ""
    print(f"{what} on {servers.base_url}{grpc_text} (store {settings.db_path})", flush=True)
    servers.run_foreground()
    return 0
