"""The load of bench/replan_live.py: a closed loop of streaming clients on the OpenAI endpoint, each answer
checked against its prompt's greedy reference, and decode tokens/s counted as the simulator counts them
(decode tokens whose stream event lands in the window after the warm-up)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

import httpx

PROMPTS = ("The capital of France is", "One, two, three,", "The sky is", "Water boils at")


@dataclass
class Window:
    """A closed loop of clients: completed requests, decode tokens in [warmup, seconds], anything lost."""

    seconds: float
    warmup_s: float
    completed: int = 0
    decode_tokens: int = 0
    lost: int = 0
    refused: int = 0
    examples: list[str] = field(default_factory=list)
    # When each counted decode token's event landed (s since the window began): a window's rate over time.
    decode_times: list[float] = field(default_factory=list)

    @property
    def decode_tok_per_s(self) -> float:
        span = self.seconds - self.warmup_s
        return self.decode_tokens / span if span > 0 else 0.0


@dataclass
class Timed:
    """One streamed answer: its text, how it ended, and when each token's text came (monotonic s; one
    event a token, where a token completes its text: no multi-byte characters in these answers)."""

    text: str = ""
    status: int = 0
    error: str | None = None
    finish_reason: str | None = None
    token_times: list[float] = field(default_factory=list)


async def stream_timed(
    http: httpx.AsyncClient, base_url: str, model: str, prompt: str, max_tokens: int
) -> Timed:
    """One greedy streaming completion (ignore_eos: every answer has max_tokens); never raises."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    out = Timed()
    try:
        async with http.stream("POST", f"{base_url}/completions", json=body, timeout=180) as resp:
            out.status = resp.status_code
            if resp.status_code != 200:
                out.error = (await resp.aread()).decode(errors="replace")[:200]
                return out
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                event = json.loads(line[len("data: ") :])
                if "error" in event:
                    out.error = str(event["error"].get("message"))
                    continue
                for choice in event.get("choices", []):
                    out.text += choice.get("text") or ""
                    out.finish_reason = choice.get("finish_reason") or out.finish_reason
                    # A token's event carries its text; the stream's last event carries only the finish
                    # reason (counted as a token, it added one decode token per request: 1/15 too many
                    # with 16-token answers, 1/5 with 6).
                    if choice.get("text"):
                        out.token_times.append(time.monotonic())
            if not done and out.error is None:
                out.error = "the stream ended without data: [DONE]"
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    return out


REFUSED = "refused"


def verdict(out: Timed, prompt: str, reference: dict[str, str]) -> str | None:
    """None for a correct answer, REFUSED for a clean 503/429 (told, may retry), else what a lost one
    showed (broken off, or greedy text unlike the prompt's reference): both loops judge answers alike."""
    if out.status in (429, 503):
        return REFUSED
    if out.error is None and out.finish_reason is not None and out.text == reference[prompt]:
        return None
    return f"{prompt!r}: {out.error or out.text!r}"


async def closed_loop(
    base_url: str,
    model: str,
    clients: int,
    seconds: float,
    max_tokens: int,
    reference: dict[str, str],
    *,
    warmup_s: float = 0.0,
) -> Window:
    """`clients` streams at a time, started until `seconds` have passed; a stream is lost when it breaks off
    or its greedy text differs from the reference of its prompt; a clean 503/429 is refused (told, may
    retry). Decode tokens (every token after a request's first) count when they land in [warmup, seconds]."""
    win = Window(seconds, warmup_s)
    t0 = time.monotonic()

    async def one(http: httpx.AsyncClient, i: int) -> None:
        k = i
        while time.monotonic() < t0 + seconds:
            prompt = PROMPTS[k % len(PROMPTS)]
            k += clients
            out = await stream_timed(http, base_url, model, prompt, max_tokens)
            seen = verdict(out, prompt, reference)
            if seen == REFUSED:
                win.refused += 1
                await asyncio.sleep(0.2)
            elif seen is None:
                win.completed += 1
                landed = [t - t0 for t in out.token_times[1:] if warmup_s <= t - t0 <= seconds]
                win.decode_tokens += len(landed)
                win.decode_times.extend(landed)
            else:
                win.lost += 1
                if len(win.examples) < 3:
                    win.examples.append(seen)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 2)) as http:
        await asyncio.gather(*(one(http, i) for i in range(clients)))
    return win


class SteadyLoop:
    """The closed loop of `closed_loop`, kept running in a thread of its own until stopped, so that windows
    are cut afterwards from one steady load (`window`) instead of each starting with every client at once
    (an empty pipeline, clients in lock step). Every answer is checked against its reference as there;
    `lost`, `refused` and `examples` cover the whole run."""

    def __init__(
        self,
        base_url: str,
        model: str,
        clients: int,
        max_tokens: int,
        reference: dict[str, str],
        *,
        stagger_s: float = 0.0,
    ) -> None:
        self.base_url, self.model, self.clients = base_url, model, clients
        self.max_tokens, self.reference = max_tokens, reference
        # Client i sends its first request i * stagger_s after the first: clients that start together stay
        # in one batch (a chain's runner batches every ready request), so one micro-batch of its pipeline
        # would carry them all and the other would idle.
        self.stagger_s = stagger_s
        self.decode_times: list[float] = []  # monotonic s of every decode token of a correct answer
        self.done_times: list[float] = []  # monotonic s of every correct answer's end
        self.lost = 0
        self.refused = 0
        self.examples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="steady loop", daemon=True
        )

    async def _run(self) -> None:
        async def one(http: httpx.AsyncClient, i: int) -> None:
            k = i
            await asyncio.sleep(i * self.stagger_s)
            while not self._stop.is_set():
                prompt = PROMPTS[k % len(PROMPTS)]
                k += self.clients
                out = await stream_timed(http, self.base_url, self.model, prompt, self.max_tokens)
                seen = verdict(out, prompt, self.reference)
                if seen == REFUSED:
                    self.refused += 1
                    await asyncio.sleep(0.2)
                elif seen is None:
                    self.decode_times.extend(out.token_times[1:])
                    self.done_times.append(time.monotonic())
                else:
                    self.lost += 1
                    if len(self.examples) < 3:
                        self.examples.append(seen)

        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=self.clients + 2)) as http:
            await asyncio.gather(*(one(http, i) for i in range(self.clients)))

    def __enter__(self) -> SteadyLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops starting requests and waits for the ones under way to end (each is checked)."""
        self._stop.set()
        self._thread.join()

    def window(self, start: float, end: float) -> Window:
        """Decode tokens and answers that landed in [start, end] (monotonic s) as a Window of that length.
        Only once stopped: an answer's tokens are kept when it ends and checks, so a window cut while the loop
        runs would miss those of the answers under way."""
        if self._thread.is_alive():
            raise RuntimeError(
                "cut windows once the loop has stopped (answers under way are not counted yet)"
            )
        win = Window(end - start, 0.0, lost=self.lost, refused=self.refused, examples=list(self.examples))
        win.decode_times = [t - start for t in list(self.decode_times) if start <= t <= end]
        win.decode_tokens = len(win.decode_times)
        win.completed = sum(1 for t in list(self.done_times) if start <= t <= end)
        return win


async def references(base_url: str, model: str, max_tokens: int) -> tuple[dict[str, str], dict[str, int]]:
    """Each prompt's greedy text (ignore_eos, so every answer has max_tokens) and its length in tokens."""
    out: dict[str, str] = {}
    lengths: dict[str, int] = {}
    async with httpx.AsyncClient() as http:
        for p in PROMPTS:
            body = {
                "model": model,
                "prompt": p,
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            resp = await http.post(f"{base_url}/completions", json=body, timeout=180)
            resp.raise_for_status()
            out[p] = resp.json()["choices"][0]["text"]
            lengths[p] = int(resp.json()["usage"]["prompt_tokens"])
    return out, lengths
