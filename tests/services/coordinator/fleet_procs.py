"""Real processes on 127.0.0.1 for failure tests and bench/chaos.py: one coordinator (`brl coordinator`)
and named workers (`brl worker --coordinator ...`) that can be killed, restarted, and waited for.

Every child runs in its own process group and gets SIGTERM when the thread that started it dies (Linux
PDEATHSIG), so a crashed test never leaves a fleet behind: start children from the main thread.
The coordinator's ports are fixed after its first start, so a restarted
coordinator is found again by the workers (they re-register by themselves) and by clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[3]
MODEL = "smollm2-135m"


# Runs `brl ARGS...` in the child after asking Linux to SIGTERM it when its parent dies (a crashed test
# leaves no fleet behind). Done after exec rather than in a preexec_fn, which is unsafe with threads.
CHILD_MAIN = """
import ctypes, os, runpy, signal, sys
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(os.environ.pop("FLEET_PROCS_PARENT", os.getppid())):
    sys.exit(0)  # the parent died before we could ask
sys.argv = ["brl", *sys.argv[1:]]
runpy.run_module("services.cli.main", run_name="__main__")
"""


@dataclass
class Proc:
    """One child process; its first stdout line (the address it serves) is read by a thread."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[str]
    first_line: str = ""
    _ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, name=f"stdout {self.name}", daemon=True).start()

    def _read(self) -> None:
        stdout = self.popen.stdout
        if stdout is None:
            self._ready.set()
            return
        for i, line in enumerate(stdout):
            if i == 0:
                self.first_line = line.strip()
                self._ready.set()
        self._ready.set()

    def wait_first_line(self, timeout_s: float) -> str:
        if not self._ready.wait(timeout_s) or not self.first_line:
            raise RuntimeError(f"{self.name} printed no address in {timeout_s:.0f} s; log:\n{self.log()}")
        return self.first_line

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self, tail_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail_chars:]
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signum)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left; reaps the child."""
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    start: int
    end: int
    gpu_type: str = "cpu"
    extra_args: tuple[str, ...] = ()


class ProcFleet:
    """A coordinator and workers as child processes. Use as a context manager (stop() on exit)."""

    def __init__(
        self,
        workdir: Path,
        *,
        model: str = MODEL,
        coordinator_args: Sequence[str] = (),
        coordinator_env: Mapping[str, str] | None = None,
        heartbeat_interval_s: float | None = None,
    ) -> None:
        self.workdir = workdir
        self.model = model
        self.coordinator_args = list(coordinator_args)
        self.coordinator_env = dict(coordinator_env or {})
        self.heartbeat_interval_s = heartbeat_interval_s
        self.coordinator_overrides: dict[str, str] = {}
        self.coordinator: Proc | None = None
        self.workers: dict[str, Proc] = {}
        self.specs: dict[str, WorkerSpec] = {}
        self.retired: list[Proc] = []
        self.http_address = ""
        self.grpc_address = ""
        self._spawned = 0

    # -- addresses -----------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"http://{self.http_address}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def worker_address(self, name: str) -> str:
        return self.workers[name].wait_first_line(120)

    # -- processes -----------------------------------------------------------------------------------
    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRL_") or k == "BRL_CACHE_DIR"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._spawned += 1
        log_path = self.log_dir / f"{self._spawned:03d}-{name}.log"
        with open(log_path, "w", encoding="utf-8") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-c", CHILD_MAIN, *args],
                cwd=str(ROOT),
                env={**self._env(env), "FLEET_PROCS_PARENT": str(os.getpid())},
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                start_new_session=True,  # its own process group: a kill reaches its children too
            )
        return Proc(name, args, log_path, popen)

    def start_coordinator(self, timeout_s: float = 120.0, **env: str) -> Proc:
        """Starts (or restarts, on the same ports) the coordinator and waits until it listens; `env` adds
        BRL_* settings for this incarnation only (e.g. BRL_MAX_RUNNING="4")."""
        http_port, grpc_port = "0", "0"
        if self.http_address:
            http_port, grpc_port = self.http_address.rsplit(":", 1)[1], self.grpc_address.rsplit(":", 1)[1]
        args = [
            "coordinator",
            "--host",
            "127.0.0.1",
            "--http-port",
            http_port,
            "--grpc-port",
            grpc_port,
            "--model",
            self.model,
            "--log-dir",
            str(self.log_dir),
            *self.coordinator_args,
        ]
        if self.heartbeat_interval_s is not None:
            args += ["--heartbeat-interval-s", str(self.heartbeat_interval_s)]
        if self.coordinator is not None:
            if self.coordinator.alive():
                self.coordinator.stop()
            self.retired.append(self.coordinator)
        self.coordinator_overrides = dict(env)
        proc = self.coordinator = self._spawn("coordinator", args, {**self.coordinator_env, **env})
        line = proc.wait_first_line(timeout_s)
        found = dict(part.split("=", 1) for part in line.split()[1:])
        self.http_address, self.grpc_address = found["http"], found["grpc"]
        return proc

    def start_workers(self, specs: Iterable[WorkerSpec], timeout_s: float | None = 180.0) -> None:
        """Starts the workers at once (they load in parallel) and waits for each one's address (unless
        `timeout_s` is None)."""
        started = [self._start_worker(s) for s in specs]
        for proc in started:
            if timeout_s is not None:
                proc.wait_first_line(timeout_s)

    def _start_worker(self, spec: WorkerSpec) -> Proc:
        if spec.name in self.workers:
            self.retired.append(self.workers[spec.name])
        self.specs[spec.name] = spec
        args = [
            "worker",
            "--model",
            self.model,
            "--layers",
            f"{spec.start}:{spec.end}",
            "--port",
            "0",
            "--backend",
            "torch",
            "--coordinator",
            self.grpc_address,
            "--name",
            spec.name,
            "--gpu-type",
            spec.gpu_type,
            *spec.extra_args,
        ]
        proc = self.workers[spec.name] = self._spawn(f"worker-{spec.name}", args)
        return proc

    def restart_worker(self, name: str, timeout_s: float | None = 180.0) -> Proc:
        """Starts a fresh process for a worker that was killed (same name and layers, a new port); waits
        for its address unless `timeout_s` is None."""
        old = self.workers[name]
        if old.alive():
            old.stop()
        self.start_workers([self.specs[name]], timeout_s)
        return self.workers[name]

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Signals a worker (or "coordinator"); SIGKILL by default: no goodbye to anyone. A killing signal
        also waits for the process to end (SIGSTOP/SIGCONT do not)."""
        proc = self.coordinator if name == "coordinator" else self.workers[name]
        if proc is None:
            raise KeyError(name)
        proc.signal(signum)
        if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=15)

    def stop(self) -> None:
        """Workers first (they deregister), then the coordinator."""
        for proc in [*self.workers.values(), *self.retired]:
            proc.signal(signal.SIGTERM)
        for proc in [*self.workers.values(), *self.retired]:
            proc.stop()
        if self.coordinator is not None:
            self.coordinator.stop()

    def pids(self) -> list[int]:
        procs = [*self.workers.values(), *self.retired]
        if self.coordinator is not None:
            procs.append(self.coordinator)
        return [p.pid for p in procs if p.alive()]

    def __enter__(self) -> ProcFleet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what the coordinator says -------------------------------------------------------------------
    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.root_url}/health", timeout=timeout_s).json()
        return body

    def wait_workers(
        self, names: Iterable[str], timeout_s: float = 60.0, *, exactly: bool = False, idle_ok: bool = False
    ) -> float:
        """Waits until the coordinator lists these workers (only these when `exactly`; with `idle_ok` a worker
        registered idle, which a re-plan may legitimately leave without layers, counts) and can route;
        returns the seconds it took."""
        want = set(names)
        t0 = time.monotonic()
        last: Any = None
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(httpx.HTTPError, json.JSONDecodeError):
                last = self.health()
                have = set(last.get("workers", []))
                if idle_ok:
                    have |= set(last.get("idle", []))
                if (have == want if exactly else want <= have) and last.get("routable"):
                    return time.monotonic() - t0
            time.sleep(0.05)
        raise TimeoutError(f"workers {sorted(want)} not registered in {timeout_s} s; last /health: {last}")

    def wait_gone(self, name: str, timeout_s: float = 30.0) -> float:
        """Seconds until the coordinator no longer lists worker `name`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(httpx.HTTPError, json.JSONDecodeError):
                if name not in self.health().get("workers", []):
                    return time.monotonic() - t0
            time.sleep(0.02)
        raise TimeoutError(f"the coordinator still lists {name} after {timeout_s} s")

    def metric(self, name: str) -> float:
        """Sum of every sample of one Prometheus metric (all label sets) from /metrics."""
        text = httpx.get(f"{self.root_url}/metrics", timeout=5).text
        total = 0.0
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+|NaN)$")
        for line in text.splitlines():
            m = pattern.match(line)
            if m and m.group(1) != "NaN":
                total += float(m.group(1))
        return total

    async def worker_stats(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Each worker's Stats (KV in use and capacity among them), asked of the worker itself."""
        from services.worker.client import Connections, stats

        chosen = list(self.workers) if names is None else list(names)
        conns = Connections()
        try:
            found = await asyncio.gather(
                *(stats(self.worker_address(n), connections=conns, timeout_s=5) for n in chosen)
            )
        finally:
            await conns.close()
        return dict(zip(chosen, found, strict=True))

    async def kv_used(self, names: Iterable[str] | None = None) -> dict[str, int]:
        """Each live worker's real KV use (tokens), asked of the worker itself over its Stats RPC."""
        return {n: s.kv_used_tokens for n, s in (await self.worker_stats(names)).items()}

    async def wait_kv_zero(
        self, names: Iterable[str] | None = None, timeout_s: float = 15.0
    ) -> dict[str, int]:
        """Polls the workers until every one reports zero KV in use; returns the last reading."""
        t0 = time.monotonic()
        used = await self.kv_used(names)
        while any(used.values()) and time.monotonic() - t0 < timeout_s:
            await asyncio.sleep(0.1)
            used = await self.kv_used(names)
        return used


# -- clients -----------------------------------------------------------------------------------------
@dataclass
class StreamOutcome:
    """What one streaming request saw: its text, and the HTTP status / error when it failed. `cut`: the
    answer broke off with no error from the server (connection lost, or no `data: [DONE]`)."""

    text: str = ""
    status: int = 0
    error: str | None = None
    retry_after: str | None = None
    finish_reason: str | None = None
    chunks: int = 0
    cut: bool = False


async def stream_completion(
    client: httpx.AsyncClient,
    base_url: str,
    prompt: str,
    max_tokens: int,
    *,
    model: str = MODEL,
    read_timeout_s: float = 120.0,
) -> StreamOutcome:
    """One greedy streaming /v1/completions over raw SSE; never raises for HTTP or stream errors."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    out = StreamOutcome()
    try:
        async with client.stream(
            "POST", f"{base_url}/completions", json=body, timeout=read_timeout_s
        ) as resp:
            out.status = resp.status_code
            if resp.status_code != 200:
                raw = await resp.aread()
                out.retry_after = resp.headers.get("retry-after")
                try:
                    out.error = json.loads(raw)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    out.error = raw.decode(errors="replace")
                return out
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    out.error = str(event["error"].get("message"))
                    continue
                for choice in event.get("choices", []):
                    out.text += choice.get("text") or ""
                    out.finish_reason = choice.get("finish_reason") or out.finish_reason
                out.chunks += 1
            if not done and out.error is None:
                out.error = "the stream ended without data: [DONE]"
                out.cut = True
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        out.cut = True
    return out


def rss_bytes(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def logged_for(log_text: str, message: str) -> str:
    """The log lines about a 5xx a client got: clients read a generic message with an error id; the
    coordinator logs the details (which layers, which worker) under that id."""
    found = re.search(r"error id ([0-9a-f]+)", message)
    if found is None:
        raise AssertionError(f"no error id in {message!r}")
    return "\n".join(line for line in log_text.splitlines() if found.group(1) in line)
