"""`brl load URL`: replay a workload against any OpenAI-compatible endpoint, like the paper's real-system runs.

online: Azure arrivals (3-s bins, drawn at random and rescaled) at a mean of --rate requests/s;
offline: keep --concurrency requests in flight. Request lengths come from a trace (--lengths azure-conv, ...):
the prompt is input_len token ids, and max_tokens = output_len with `ignore_eos` so outputs have the trace's
length. Every request is streamed to time its first token; results go to OUT/requests.jsonl in the same
schema as the coordinator's log, so `brl analyze OUT` reads either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import InvalidInput

ARRIVAL_BIN_S = 3.0
TOKEN_ID_RANGE = (100, 30000)  # ordinary vocabulary ids of the small models we serve


@dataclass(frozen=True)
class LoadConfig:
    url: str
    mode: str = "online"
    lengths: str = "azure-conv"
    arrivals: str = "azure-conv"
    rate: float = 1.0
    concurrency: int = 8
    duration_s: float = 60.0
    max_input_len: int | None = None
    max_output_len: int | None = None
    model: str | None = None
    api_key: str | None = None
    seed: int = 0
    timeout_s: float = 600.0


def arrival_times(bins: tuple[int, ...], rate: float, duration_s: float, rng: random.Random) -> list[float]:
    """Arrival offsets (s) over `duration_s`: each 3-s interval draws a trace bin at random, rescaled so the
    mean is `rate` requests/s; fractional requests carry over; arrivals spread uniformly in the interval."""
    if rate <= 0:
        raise InvalidInput(f"--rate must be > 0, got {rate}", field="rate")
    scale = ARRIVAL_BIN_S * rate / (sum(bins) / len(bins))
    out: list[float] = []
    carry = 0.0
    for k in range(max(1, int(duration_s // ARRIVAL_BIN_S))):
        value = rng.choice(bins) * scale + carry
        n = int(value)
        carry = value - n
        out.extend(sorted(k * ARRIVAL_BIN_S + rng.random() * ARRIVAL_BIN_S for _ in range(n)))
    return [t for t in out if t < duration_s]


def request_lengths(cfg: LoadConfig, rng: random.Random) -> Iterator[tuple[int, int]]:
    from simulator.workload import load_lengths

    table = load_lengths(cfg.lengths)
    while True:
        i, o = table.sample(rng)
        if cfg.max_input_len:
            i = min(i, cfg.max_input_len)
        if cfg.max_output_len:
            o = min(o, cfg.max_output_len)
        yield max(1, i), max(1, o)


class Runner:
    def __init__(self, cfg: LoadConfig, out_dir: Path | None) -> None:
        import httpx

        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.http = httpx.AsyncClient(
            base_url=cfg.url.rstrip("/"),
            headers=headers,
            timeout=cfg.timeout_s,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self.out = open(out_dir / "requests.jsonl", "w", encoding="utf-8") if out_dir else None  # noqa: SIM115
        self.rows: list[dict[str, Any]] = []
        self.model = cfg.model or ""
        self.t0 = time.monotonic()
        self.bar: Any = None

    async def close(self) -> None:
        await self.http.aclose()
        if self.out is not None:
            self.out.close()

    async def resolve_model(self) -> None:
        if not self.model:
            r = await self.http.get("/models")
            r.raise_for_status()
            self.model = r.json()["data"][0]["id"]

    async def one(self, rid: int, input_len: int, output_len: int) -> None:
        prompt = [self.rng.randrange(*TOKEN_ID_RANGE) for _ in range(input_len)]
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": output_len,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
        start = time.monotonic()
        first: float | None = None
        last = start
        tokens = 0
        status, error = 0, None
        try:
            async with self.http.stream("POST", "/completions", json=body) as resp:
                status = resp.status_code
                if status != 200:
                    error = (await resp.aread()).decode(errors="replace")[:300]
                else:
                    async for line in resp.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            error = chunk["error"].get("message")
                            continue
                        if chunk.get("usage"):
                            tokens = int(chunk["usage"]["completion_tokens"])
                        if any(c.get("text") for c in chunk.get("choices", [])):
                            now = time.monotonic()
                            first = first if first is not None else now
                            last = now
        except Exception as exc:  # network errors are results here, not crashes
            error = f"{type(exc).__name__}: {exc}"
        end = time.monotonic()
        ok = status == 200 and error is None
        row = {
            "id": f"load-{rid}",
            "arrival": round(start - self.t0, 6),
            "wall": round(time.time(), 6),
            "input_len": input_len,
            "output_len": tokens,
            "expected_output_len": output_len,
            "finish_reason": "length" if ok else "error",
            "status": status,
            "error": error,
            "ttft_s": None if first is None else round(first - start, 6),
            "decode_latency_s": round((last - first) / (tokens - 1), 6)
            if ok and first and tokens > 1
            else None,
            "e2e_s": round(end - start, 6),
        }
        self.rows.append(row)
        if self.out is not None:
            self.out.write(json.dumps(row) + "\n")
        if self.bar is not None:
            self.bar.update(1)
            done = [r for r in self.rows if r["status"] == 200 and not r["error"]]
            self.bar.set_postfix(
                ok=len(done),
                failed=len(self.rows) - len(done),
                tok_s=f"{sum(r['output_len'] for r in done) / max(1e-9, end - self.t0):.1f}",
            )

    async def online(self) -> None:
        from simulator.workload import load_arrivals

        times = arrival_times(load_arrivals(self.cfg.arrivals), self.cfg.rate, self.cfg.duration_s, self.rng)
        lengths = request_lengths(self.cfg, self.rng)
        self._bar(len(times))
        tasks = []
        self.t0 = time.monotonic()
        for rid, t in enumerate(times):
            delay = self.t0 + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            i, o = next(lengths)
            tasks.append(asyncio.create_task(self.one(rid, i, o)))
        await asyncio.gather(*tasks)

    async def offline(self) -> None:
        lengths = request_lengths(self.cfg, self.rng)
        self._bar(None)
        self.t0 = time.monotonic()
        deadline = self.t0 + self.cfg.duration_s
        counter = iter(range(10**12))

        async def lane() -> None:
            while time.monotonic() < deadline:
                i, o = next(lengths)
                await self.one(next(counter), i, o)

        await asyncio.gather(*(lane() for _ in range(self.cfg.concurrency)))

    def _bar(self, total: int | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="req", desc=f"brl load {self.cfg.mode}", leave=True)


def summarize(rows: list[dict[str, Any]], span_s: float) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == 200 and not r["error"]]
    out_tokens = sum(r["output_len"] for r in ok)
    in_tokens = sum(r["input_len"] for r in ok)
    return {
        "requests": len(rows),
        "completed": len(ok),
        "failed": len(rows) - len(ok),
        "rejected_429": sum(1 for r in rows if r["status"] == 429),
        "span_s": round(span_s, 3),
        "decode_tok_per_s": round(out_tokens / span_s, 3) if span_s > 0 else 0.0,
        "all_tok_per_s": round((in_tokens + out_tokens) / span_s, 3) if span_s > 0 else 0.0,
    }


async def run_load(cfg: LoadConfig, out_dir: Path | None = None) -> dict[str, Any]:
    if cfg.mode not in ("online", "offline"):
        raise InvalidInput(f"--mode must be online or offline, got {cfg.mode!r}", field="mode")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(cfg, out_dir)
    try:
        await runner.resolve_model()
        await (runner.online() if cfg.mode == "online" else runner.offline())
    finally:
        if runner.bar is not None:
            runner.bar.close()
        await runner.close()
    return summarize(runner.rows, time.monotonic() - runner.t0)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "load",
        help="replay a trace against an OpenAI endpoint (online or offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", help="base URL of the API, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--mode", default="online", choices=("online", "offline"))
    p.add_argument(
        "--lengths", default="azure-conv", help="azure-conv, azure-code, alpaca, sharegpt or a CSV"
    )
    p.add_argument(
        "--arrivals", default="azure-conv", help="arrival trace for online mode (azure-conv, azure-code)"
    )
    p.add_argument("--rate", type=float, default=1.0, help="online: mean requests per second")
    p.add_argument("--concurrency", type=int, default=8, help="offline: requests kept in flight")
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds of arrivals (online) or of load (offline)"
    )
    p.add_argument("--max-input-len", type=int, help="clip trace input lengths (small CPU fleets)")
    p.add_argument("--max-output-len", type=int, help="clip trace output lengths")
    p.add_argument("--model", help="model name to send (default: the first of GET /models)")
    p.add_argument("--api-key", help="sent as `Authorization: Bearer`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write requests.jsonl here (then: brl analyze OUT)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = LoadConfig(
        url=args.url,
        mode=args.mode,
        lengths=args.lengths,
        arrivals=args.arrivals,
        rate=args.rate,
        concurrency=args.concurrency,
        duration_s=args.duration,
        max_input_len=args.max_input_len,
        max_output_len=args.max_output_len,
        model=args.model,
        api_key=args.api_key,
        seed=args.seed,
    )
    summary = asyncio.run(run_load(cfg, args.out))
    print(json.dumps(summary))
    return 0 if summary["completed"] else 1
