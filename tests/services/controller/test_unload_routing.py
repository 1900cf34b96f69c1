"""A node being unloaded takes no new request while it drains, with real processes: two SmolLM2 workers
hold [0,30) each; an operator's plan leaves `fast2` out while streams run on it. From the swap on, new
requests go only to `fast`: none is refused as "draining" (the coordinator re-routes nothing), the streams
on `fast2` finish there token for token, and `fast2` ends idle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from planner.formats.plan_json import plan_to_dict
from services.worker.client import stats
from tests.services.controller.replan_fleet import ADMIN_KEY, TIMEOUT_S, plan_of, replan_fleet
from tests.services.coordinator.fleet_procs import MODEL, ProcFleet, WorkerSpec, stream_completion

SPECS = (WorkerSpec("fast", 0, 30, gpu_type="cpu-fast"), WorkerSpec("fast2", 0, 30, gpu_type="cpu-fast"))
PROMPTS = ("The capital of France is", "One, two, three,", "The sky is", "Water boils at")
LONG_TOKENS = 32  # the streams that straddle the swap
SHORT_TOKENS = 4  # the requests sent while fast2 drains
REROUTES = "brl_request_reroutes_total"


async def complete(client: httpx.AsyncClient, base_url: str, prompt: str, max_tokens: int) -> str:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    resp = await client.post(f"{base_url}/completions", json=body, timeout=TIMEOUT_S)
    assert resp.status_code == 200, resp.text
    text: str = resp.json()["choices"][0]["text"]
    return text


async def scenario(fleet: ProcFleet) -> None:
    base, fast2 = fleet.base_url, fleet.worker_address("fast2")
    async with httpx.AsyncClient() as client:
        long_ref = await asyncio.gather(*(complete(client, base, p, LONG_TOKENS) for p in PROMPTS))
        short_ref = await asyncio.gather(*(complete(client, base, p, SHORT_TOKENS) for p in PROMPTS))
        reroutes = fleet.metric(REROUTES)
        streams = [
            asyncio.create_task(stream_completion(client, base, p, LONG_TOKENS, read_timeout_s=TIMEOUT_S))
            for p in PROMPTS * 2
        ]
        while (await stats(fast2)).active_requests == 0:  # some streams run on fast2
            await asyncio.sleep(0.05)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        body = {"plan": plan_to_dict(plan_of({"fast": (0, 30)}))}
        resp = await client.post(f"{base}/admin/plan", json=body, headers=headers, timeout=TIMEOUT_S)
        assert resp.status_code == 200, resp.text
        while (s := await stats(fast2)).serving:  # the unload order is on its way
            await asyncio.sleep(0.01)
        assert s.draining == ((0, 30),) and s.active_requests > 0, s  # still running streams
        # New requests while fast2 drains: the coordinator must not offer them to it.
        short = await asyncio.gather(*(complete(client, base, p, SHORT_TOKENS) for p in PROMPTS * 2))
        outcomes = await asyncio.gather(*streams)
    assert fleet.metric(REROUTES) == reroutes  # no "draining" (or any other) refusal was re-routed
    assert short == [*short_ref, *short_ref]
    for out, ref in zip(outcomes, [*long_ref, *long_ref], strict=True):
        assert out.status == 200 and out.error is None and not out.cut, out
        assert out.text == ref
    fleet.wait_workers(["fast"], timeout_s=TIMEOUT_S, exactly=True)  # fast2: idle, holding nothing
    assert (await stats(fast2)).held_layers == 0


def test_new_requests_avoid_a_node_that_drains_before_its_unload(tmp_path: Path) -> None:
    with replan_fleet(tmp_path, SPECS) as fleet:
        asyncio.run(scenario(fleet))
