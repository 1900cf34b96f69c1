"""The end-to-end half of bench/coordinator.py: coordinator CPU microseconds per generated token. N real
coordinator processes (`brl coordinator`, replicas r0..) serve streaming completions from stub workers
(bench/coordinator_stub.py) that answer at once; the coordinators' user + system CPU time is read from
/proc (psutil) before and after the load. Optionally one coordinator runs under cProfile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.coordinator_stub import StubFleet, StubSpec

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
NUM_LAYERS = 30
SPECS = (StubSpec("s0", 0, 15), StubSpec("s1", 15, 30))
# Runs `brl ARGS...`; with BENCH_PROFILE_OUT set, SIGUSR2 starts cProfile (after the warm-up, so start-up
# imports stay out of it) and SIGUSR1 writes the profile (SIGTERM ends the process before a `finally` would).
CHILD = """
import cProfile, os, runpy, signal, sys
sys.argv = ["brl", *sys.argv[1:]]
out = os.environ.get("BENCH_PROFILE_OUT")
if out:
    prof = cProfile.Profile()
    def dump(signum, frame):
        prof.disable()
        prof.dump_stats(out + ".tmp")
        os.replace(out + ".tmp", out)
    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, lambda signum, frame: prof.enable())
runpy.run_module("services.cli.main", run_name="__main__")
"""
PROFILE_WAIT_S = 30.0


class Coordinators:
    """N coordinator processes on 127.0.0.1; `addresses` are (http, grpc) once started."""

    def __init__(self, count: int, workdir: Path, profile_out: Path | None = None) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.addresses: list[tuple[str, str]] = []
        for i in range(count):
            env = {k: v for k, v in os.environ.items() if not k.startswith("BRL_") or k == "BRL_CACHE_DIR"}
            env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", BRL_REPLICA_ID=f"r{i}")
            if profile_out is not None:
                env["BENCH_PROFILE_OUT"] = str(profile_out)
            args = ["coordinator", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"]
            log = open(workdir / f"coordinator-r{i}.log", "w", encoding="utf-8")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, *args, "--model", MODEL],
                    cwd=str(ROOT),
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            )
        for proc in self.procs:
            self.addresses.append(_first_line(proc))

    def cpu_s(self) -> float:
        total = 0.0
        for proc in self.procs:
            t = psutil.Process(proc.pid).cpu_times()
            total += t.user + t.system
        return total

    def dump_profile(self, path: Path) -> None:
        """Ask replica 0 (started with a profile) to write it, and wait until it has."""
        self.procs[0].send_signal(signal.SIGUSR1)
        t0 = time.monotonic()
        while not path.exists() and time.monotonic() - t0 < PROFILE_WAIT_S:
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()


def _first_line(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> tuple[str, str]:
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(timeout_s)
    if not found or not found[0].startswith("COORDINATOR"):
        raise RuntimeError(f"coordinator printed no address in {timeout_s:.0f} s (see its log)")
    parts = dict(p.split("=", 1) for p in found[0].split()[1:])
    return parts["http"], parts["grpc"]


async def _wait_routable(http: str, timeout_s: float = 60.0) -> None:
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                body = (await client.get(f"http://{http}/health")).json()
                if body.get("routable") and len(body.get("workers", [])) == len(SPECS):
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"coordinator {http} saw no routable fleet in {timeout_s} s")


async def _client(base: str, requests: int, max_tokens: int) -> tuple[int, int, Counter[str]]:
    """Streams `requests` completions one after another; (tokens received, failed requests, why each failed:
    the HTTP status, or the finish reason / error of a stream that ended short)."""
    tokens = failed = 0
    why: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(requests):
            body = {
                "model": MODEL,
                "prompt": f"Request {i}: the river is",
                "max_tokens": max_tokens,
                "stream": True,
                "ignore_eos": True,
                "stream_options": {"include_usage": True},
            }
            got = 0
            end = "no usage"
            async with client.stream("POST", f"{base}/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    failed += 1
                    why[f"http {resp.status_code}"] += 1
                    continue
                async for line in resp.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        event = json.loads(line[6:])
                        if "error" in event:
                            end = f"error {event['error'].get('code') or event['error'].get('type')}"
                        for choice in event.get("choices") or ():
                            end = choice.get("finish_reason") or end
                        usage = event.get("usage")
                        if usage:
                            got = int(usage["completion_tokens"])
            tokens += got
            if got < max_tokens:
                failed += 1
                why[f"short: {end}"] += 1
    return tokens, failed, why


async def measure(
    replicas: int,
    workdir: Path,
    *,
    clients: int,
    requests: int,
    max_tokens: int,
    profile_out: Path | None = None,
) -> dict[str, Any]:
    """Coordinator CPU per generated token with `replicas` coordinators; clients are spread evenly."""
    coords = Coordinators(replicas, workdir, profile_out)
    stubs = StubFleet(SPECS, NUM_LAYERS, MODEL)
    try:
        await stubs.start(",".join(g for _, g in coords.addresses))
        await asyncio.gather(*(_wait_routable(h) for h, _ in coords.addresses))
        # Warm-up: first requests pay for imports, tokenizer caches and channel set-up.
        await asyncio.gather(*(_client(f"http://{h}", 2, 4) for h, _ in coords.addresses))
        if profile_out is not None:
            coords.procs[0].send_signal(signal.SIGUSR2)
            await asyncio.sleep(0.2)
        cpu0, wall0 = coords.cpu_s(), time.perf_counter()
        done = await asyncio.gather(
            *(
                _client(f"http://{coords.addresses[i % replicas][0]}", requests, max_tokens)
                for i in range(clients)
            )
        )
        cpu_s, wall_s = coords.cpu_s() - cpu0, time.perf_counter() - wall0
        if profile_out is not None:
            coords.dump_profile(profile_out)
    finally:
        await stubs.stop()
        coords.stop()
    tokens = sum(t for t, _, _ in done)
    return {
        "tokens": tokens,
        "failed": sum(f for _, f, _ in done),
        "failed_why": dict(sum((w for _, _, w in done), Counter())),
        "coordinator_cpu_s": cpu_s,
        "cpu_us_per_token": cpu_s / tokens * 1e6 if tokens else None,
        "tokens_per_s": tokens / wall_s,
    }
