"""`brl run` as a user runs it: starts the fleet, prints the endpoint and an admin key, answers, hands keys
to its children through the environment only (never argv, which `ps` shows), and after SIGINT leaves no
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

import httpx
import openai

from services.cli.run import LocalDeployment

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


API_KEY = "run-inference-key-4f2a"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_launcher_puts_keys_in_the_environment_not_argv(tmp_path: Path) -> None:
    dep = LocalDeployment(api_key="k-inference", admin_api_key="k-admin", workdir=tmp_path)
    args, env = dep.coordinator_launch(tmp_path / "plan.json")
    assert not [a for a in args if "k-inference" in a or "k-admin" in a or a.endswith("-key")]
    assert env == {"BRL_API_KEY": "k-inference", "BRL_ADMIN_API_KEY": "k-admin"}
    assert LocalDeployment(workdir=tmp_path).coordinator_launch(tmp_path / "plan.json")[1] == {}


def test_auto_replan_reaches_the_coordinator_only_and_four_workers_can_be_planned(tmp_path: Path) -> None:
    from services.cli.run import plan_local
    from services.coordinator.settings import from_env

    _, env = LocalDeployment(workdir=tmp_path, auto_replan=True).coordinator_launch(tmp_path / "plan.json")
    assert env == {"BRL_AUTO_REPLAN": "1"} and from_env(env).auto_replan
    assert not from_env({}).auto_replan
    plan, specs = plan_local("local-cpu4", workers=4, time_limit_s=2.0)
    assert sorted(w.name for w in specs) == ["fast", "fast2", "mid", "slow"]
    assert not plan.placement.uncovered()


def test_brl_run_serves_and_leaves_no_orphans(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "run", "--port", "0", "--workdir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # The key comes from the environment, so not even `brl run`'s own argv holds it.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "BRL_API_KEY": API_KEY},
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
        admin = re.search(r"/admin/plan -H 'Authorization: Bearer (\S+)'", text)
        assert admin is not None, text  # a random admin key, printed for local use
        admin_key = admin.group(1)
        assert admin_key != API_KEY and len(admin_key) >= 24
        plan = f"{url.group(1)}/admin/plan"
        assert (
            httpx.get(plan, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30).status_code == 200
        )
        assert httpx.get(plan, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).status_code == 401
        client = openai.OpenAI(base_url=url.group(1), api_key=API_KEY, max_retries=0, timeout=120)
        r = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Hi!"}], max_tokens=4, temperature=0
        )
        assert r.choices[0].message.content
        assert r.usage is not None and r.usage.completion_tokens >= 1
        children = descendants(proc.pid)
        assert len(children) >= 4  # coordinator + 3 workers
        for pid in {proc.pid, *children}:
            line = cmdline(pid)
            assert API_KEY not in line and admin_key not in line, line
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
