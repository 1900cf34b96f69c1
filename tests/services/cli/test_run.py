"""`brl run` as a user runs it: starts the fleet, prints the endpoint, answers, and after SIGINT leaves no
process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[3]


def descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces or parentheses: fields start after the last ')'.
            fields = stat[stat.rindex(")") + 2 :].split()
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def test_brl_run_serves_and_leaves_no_orphans(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", "--port", "0", "--workdir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    endpoint = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "OpenAI endpoint:" in line:
                endpoint.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    children: set[int] = set()
    try:
        assert endpoint.wait(240), "".join(lines)
        text = "".join(lines)
        url = re.search(r"OpenAI endpoint: (\S+)", text)
        assert url is not None
        assert "curl " in text and "/chat/completions" in text
        assert len(re.findall(r"^\s+worker ", text, flags=re.M)) == 3
        client = openai.OpenAI(base_url=url.group(1), api_key="unused", max_retries=0, timeout=120)
        r = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Hi!"}], max_tokens=4, temperature=0
        )
        assert r.choices[0].message.content
        assert r.usage is not None and r.usage.completion_tokens >= 1
        children = descendants(proc.pid)
        assert len(children) >= 4  # coordinator + 3 workers
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(running(p) for p in children):
        time.sleep(0.2)
    assert not [p for p in children if running(p)]
    assert (tmp_path / "plan.json").exists()
    assert (tmp_path / "logs" / "requests.jsonl").exists()
