"""The steady closed loop of bench/replan_clients.py against a real HTTP server on 127.0.0.1 that streams
completions as the coordinator does (one `data:` event a token, one with the finish reason, then
`data: [DONE]`): clients start
staggered, windows are cut from one run, answers unlike their reference are lost, 503s refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.replan_clients import PROMPTS, SteadyLoop

TOKEN_S = 0.01
MAX_TOKENS = 4


class Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.arrivals: list[tuple[float, str]] = []
        self.refuse: set[str] = set()  # prompts answered 503


class Handler(BaseHTTPRequestHandler):
    server: Stub

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.arrivals.append((time.monotonic(), body["prompt"]))
        if body["prompt"] in self.server.refuse:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for _ in range(body["max_tokens"]):
            time.sleep(TOKEN_S)
            event = {"choices": [{"text": "x", "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        # As services/coordinator/serving.py ends a stream: an event with the finish reason and no text.
        finish = {"choices": [{"text": "", "finish_reason": "length"}]}
        self.wfile.write(f"data: {json.dumps(finish)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url(server: Stub) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_clients_start_staggered_and_windows_count_the_decode_tokens_that_landed_in_them(stub: Stub) -> None:
    reference = {p: "x" * MAX_TOKENS for p in PROMPTS}
    # Four clients, four prompts: client i always sends PROMPTS[i].
    with SteadyLoop(url(stub), "m", 4, MAX_TOKENS, reference, stagger_s=0.2) as loop:
        started = time.monotonic()
        with pytest.raises(RuntimeError):
            loop.window(started, started + 1)  # answers under way are not counted yet
        time.sleep(1.0)
        ended = time.monotonic()
    firsts = {prompt: t for t, prompt in reversed(stub.arrivals)}
    for i in (1, 2, 3):
        assert firsts[PROMPTS[i]] - firsts[PROMPTS[0]] == pytest.approx(0.2 * i, abs=0.1)
    assert loop.lost == 0 and loop.refused == 0
    whole = loop.window(started - 1, time.monotonic())
    # Every answer is MAX_TOKENS token events (the first is its prompt's, the rest decode tokens) and a
    # finish event, which is no token.
    assert whole.decode_tokens == whole.completed * (MAX_TOKENS - 1) and whole.completed > 10
    half = loop.window(started, started + (ended - started) / 2)
    assert 0 < half.decode_tokens < whole.decode_tokens
    assert half.decode_tok_per_s == pytest.approx(half.decode_tokens / half.seconds)
    assert all(0 <= t <= half.seconds for t in half.decode_times)


def test_a_wrong_answer_is_lost_and_a_503_is_refused(stub: Stub) -> None:
    stub.refuse = {PROMPTS[1]}
    reference = {p: "x" * MAX_TOKENS for p in PROMPTS}
    reference[PROMPTS[0]] = "y" * MAX_TOKENS
    with SteadyLoop(url(stub), "m", 2, MAX_TOKENS, reference) as loop:
        time.sleep(0.5)
    assert loop.lost > 0 and loop.refused > 0
    assert loop.examples and PROMPTS[0] in loop.examples[0]
    # Only the correct answers (PROMPTS[2]) count.
    assert loop.window(0.0, time.monotonic()).completed > 0
