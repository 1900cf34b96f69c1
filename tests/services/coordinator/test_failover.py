"""Worker loss on a real local deployment (fast [0,30), mid [0,20), slow [20,30)): streams in flight when a
worker is killed finish with the same greedy text; with no chain left new requests get a 503 naming the
uncovered layers; a worker that registers again brings service back without a restart."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from services.cli.run import LocalDeployment
from tests.services.coordinator.fleet_procs import logged_for

MODEL = "smollm2-135m"
QUESTIONS = [f"List {i + 2} fruits." for i in range(6)]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    dep = LocalDeployment(http_port=0, workdir=tmp_path_factory.mktemp("failover"))
    dep.start()
    try:
        yield dep
    finally:
        dep.stop()


def kill(dep: LocalDeployment, name: str) -> None:
    child = next(c for c in dep.children if c.name == f"worker-{name}")
    os.killpg(child.proc.pid, signal.SIGKILL)
    child.proc.wait(timeout=10)


def health(dep: LocalDeployment) -> dict[str, object]:
    return dict(httpx.get(f"{dep.root_url}/health", timeout=10).json())


async def stream_all(dep: LocalDeployment, on_first_tokens: asyncio.Event) -> list[str]:
    client = openai.AsyncOpenAI(base_url=dep.base_url, api_key="x", max_retries=0, timeout=300)
    started = 0

    async def one(q: str) -> str:
        nonlocal started
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": q}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
        )
        parts: list[str] = []
        counted = False
        async for chunk in stream:
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                if len(parts) > 3 and not counted:
                    counted = True
                    started += 1
                    if started == len(QUESTIONS):
                        on_first_tokens.set()
        return "".join(parts)

    try:
        return await asyncio.gather(*(one(q) for q in QUESTIONS))
    finally:
        await client.close()


def test_killed_worker_mid_stream_loses_nothing_then_503_then_recovery(deployment: LocalDeployment) -> None:
    async def run_with_kill() -> list[str]:
        ready = asyncio.Event()
        task = asyncio.create_task(stream_all(deployment, ready))
        await asyncio.wait_for(ready.wait(), timeout=240)
        kill(deployment, "slow")
        return await task

    with_failure = asyncio.run(run_with_kill())
    assert "slow" not in health(deployment)["workers"]  # type: ignore[operator]

    # The same requests on what is left (greedy, so the text must be the same).
    client = openai.OpenAI(base_url=deployment.base_url, api_key="x", max_retries=0, timeout=300)
    again = [
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=MAX_TOKENS, temperature=0
        )
        .choices[0]
        .message.content
        for q in QUESTIONS
    ]
    assert with_failure == again
    metrics = httpx.get(f"{deployment.root_url}/metrics", timeout=10).text
    assert "brl_workers_lost_total 1.0" in metrics
    reroutes = re.search(r"^brl_request_reroutes_total (\S+)$", metrics, flags=re.M)
    assert reroutes is not None and float(reroutes.group(1)) >= 1

    # Without `fast`, nothing holds the slow worker's layers: fail fast with 503 and say which layers.
    slow = next(w for w in deployment.specs if w.name == "slow")
    gap = f"[{slow.start},{slow.end})"
    kill(deployment, "fast")
    deadline = time.monotonic() + 10
    while "fast" in health(deployment)["workers"] and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.2)
    r = httpx.post(
        f"{deployment.base_url}/completions",
        timeout=30,
        json={"model": MODEL, "prompt": "Hello", "max_tokens": 2},
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_route"
    # Clients read a generic message; the layers missing are in the log under its error id.
    log_text = (deployment.log_dir / "coordinator.log").read_text()
    assert gap in logged_for(log_text, r.json()["error"]["message"])
    assert httpx.get(f"{deployment.root_url}/ready", timeout=10).status_code == 503

    # A worker for the missing layers registers: service resumes, no restart.
    deployment._spawn(
        "worker-slow2",
        [
            "worker",
            "--model",
            MODEL,
            "--layers",
            f"{slow.start}:{slow.end}",
            "--port",
            "0",
            "--coordinator",
            deployment.grpc_address,
            "--name",
            "slow2",
            "--gpu-type",
            "cpu-slow",
            "--speed-factor",
            "1.0",
        ],
    )
    deadline = time.monotonic() + 120
    while httpx.get(f"{deployment.root_url}/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    r2 = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, temperature=0)
    assert r2.usage is not None and r2.usage.completion_tokens >= 1
