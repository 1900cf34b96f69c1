"""`brl run`: the local deployment. Plans a small "virtual heterogeneous" CPU fleet (planner/data/clusters/
local-cpu.yaml: workers of declared speeds 1, 0.5, 0.25), starts the coordinator and one worker per node on
127.0.0.1 as child processes, waits until they serve, prints the endpoint, and shuts everything down on
Ctrl+C / SIGTERM (process groups: SIGTERM, then SIGKILL; children also die with this process).
Keys reach the children as BRL_* environment variables, never as arguments (visible to anyone in `ps`);
the admin routes are on, with a random admin key printed at start unless --admin-api-key / BRL_ADMIN_API_KEY
gives one.

`start_local_deployment(...)` does the same from Python (tests, benchmarks) and returns a LocalDeployment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from planner.errors import InvalidInput, Unavailable
from planner.plan import Plan
from services.cli.children import Child, Interrupted, die_with_parent

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLUSTER = "local-cpu"
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_METHOD = "milp"
# Declared speed of each virtual CPU type (the worker throttles itself to it); see the cluster file.
SPEED_FACTORS = {"cpu": 1.0, "cpu-fast": 1.0, "cpu-mid": 0.5, "cpu-slow": 0.25}


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    gpu_type: str
    start: int
    end: int
    speed_factor: float


def plan_local(
    cluster: str = DEFAULT_CLUSTER,
    model: str = DEFAULT_MODEL,
    method: str = DEFAULT_METHOD,
    *,
    time_limit_s: float = 5.0,
    seed: int = 0,
    workers: int | None = None,
) -> tuple[Plan, list[WorkerSpec]]:
    """(plan, worker specs) for the local fleet: a planner method on the bundled cluster and CPU profiles."""
    from planner import bundled
    from planner.solvers import solve

    fleet = bundled.cluster(cluster)
    if workers is not None:
        if not 1 <= workers <= len(fleet.nodes):
            raise InvalidInput(
                f"--workers must be 1..{len(fleet.nodes)} for cluster {cluster}", field="workers"
            )
        fleet = fleet.without(fleet.node_names[workers:])
    spec = bundled.model(model)
    profiles = bundled.profiles(spec)
    plan = solve(method, fleet, spec, profiles, time_limit_s=time_limit_s, seed=seed, clock=time.monotonic)
    specs = [
        WorkerSpec(
            name,
            fleet.node(name).gpu_type,
            rng.start,
            rng.end,
            SPEED_FACTORS.get(fleet.node(name).gpu_type, 1.0),
        )
        for name, rng in plan.placement.ranges.items()
    ]
    return plan, specs


class LocalDeployment:
    """Coordinator + workers as child processes on 127.0.0.1. Use as a context manager or call stop()."""

    def __init__(
        self,
        *,
        cluster: str = DEFAULT_CLUSTER,
        model: str = DEFAULT_MODEL,
        method: str = DEFAULT_METHOD,
        workers: int | None = None,
        backend: str = "torch",
        http_port: int = 0,
        api_key: str | None = None,
        admin_api_key: str | None = None,
        workdir: Path | None = None,
        policy: str = "maxflow",
        extra_env: dict[str, str] | None = None,
        coordinator_args: list[str] | None = None,
        auto_replan: bool = False,
    ) -> None:
        self.cluster, self.model, self.method, self.workers = cluster, model, method, workers
        self.backend, self.http_port, self.api_key, self.policy = backend, http_port, api_key, policy
        self.admin_api_key = admin_api_key
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="brl-run-"))
        self.extra_env = dict(extra_env or {})
        self.coordinator_args = list(coordinator_args or [])
        self.auto_replan = auto_replan
        self.children: list[Child] = []
        self.specs: list[WorkerSpec] = []
        self.http_address = ""
        self.grpc_address = ""
        # Set from a signal handler to abandon a start-up in progress.
        self.cancel = threading.Event()

    # -- addresses -----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.http_address}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.http_address}"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    # -- life cycle ----------------------------------------------------------------------------------
    def _env(self, secrets_env: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRL_") or k == "BRL_CACHE_DIR"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        env.update(secrets_env or {})
        return env

    def coordinator_launch(self, plan_path: Path) -> tuple[list[str], dict[str, str]]:
        """(argv after `brl`, key variables) of the coordinator: the keys travel in its environment only."""
        args = [
            "coordinator",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            "0",
            "--model",
            self.model,
            "--plan",
            str(plan_path),
            "--cluster",
            self.cluster,
            "--policy",
            self.policy,
            "--log-dir",
            str(self.log_dir),
            *self.coordinator_args,
        ]
        keys = {"BRL_API_KEY": self.api_key, "BRL_ADMIN_API_KEY": self.admin_api_key}
        env = {k: v for k, v in keys.items() if v}
        if self.auto_replan:
            env["BRL_AUTO_REPLAN"] = "1"  # the rollout controller, in the coordinator's process
        return args, env

    def _spawn(self, name: str, args: list[str], secrets_env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - the child owns it after fork
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", *args],
                cwd=str(ROOT),
                env=self._env(secrets_env),
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                preexec_fn=die_with_parent,
            )  # noqa: PLW1509 - setsid + pdeathsig only
        finally:
            log_file.close()
        child = Child(name, proc, log_path=log_path)
        child.start_reader()
        self.children.append(child)
        return child

    def start(self, timeout_s: float = 240.0) -> LocalDeployment:
        from planner.formats.plan_json import save_plan

        deadline = time.monotonic() + timeout_s
        plan, self.specs = plan_local(self.cluster, self.model, self.method, workers=self.workers)
        self.workdir.mkdir(parents=True, exist_ok=True)
        plan_path = self.workdir / "plan.json"
        save_plan(plan, plan_path)
        try:
            args, keys = self.coordinator_launch(plan_path)
            coord = self._spawn("coordinator", args, keys)
            line = coord.wait_first_line(max(1.0, deadline - time.monotonic()), self.cancel)
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            self.http_address, self.grpc_address = fields["http"], fields["grpc"]
            for w in self.specs:
                self._spawn(
                    f"worker-{w.name}",
                    [
                        "worker",
                        "--model",
                        self.model,
                        "--layers",
                        f"{w.start}:{w.end}",
                        "--port",
                        "0",
                        "--backend",
                        self.backend,
                        "--coordinator",
                        self.grpc_address,
                        "--name",
                        w.name,
                        "--gpu-type",
                        w.gpu_type,
                        "--speed-factor",
                        str(w.speed_factor),
                    ],
                )
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        want = {w.name for w in self.specs}
        last = "no answer"
        while time.monotonic() < deadline:
            if self.cancel.is_set():
                raise Interrupted("start-up interrupted")
            for child in self.children:
                if child.proc.poll() is not None:
                    raise Unavailable(
                        f"{child.name} exited with code {child.proc.returncode}; see {child.log_path}"
                    )
            try:
                with urllib.request.urlopen(f"{self.root_url}/ready", timeout=2) as resp:
                    body = json.loads(resp.read())
                    if want <= set(body.get("workers", [])):
                        return
                    last = json.dumps(body)
            except urllib.error.HTTPError as exc:
                last = exc.read().decode(errors="replace")
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise Unavailable(f"the local deployment was not ready in time ({last}); logs in {self.log_dir}")

    def alive(self) -> list[str]:
        return [c.name for c in self.children if c.proc.poll() is None]

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Workers first (they deregister), then the coordinator: SIGTERM each process group, then SIGKILL."""
        order = [c for c in self.children if c.name != "coordinator"] + [
            c for c in self.children if c.name == "coordinator"
        ]
        for c in order:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for c in order:
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Anything left in the group (the child or its own children) is killed.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=5)
            if c.proc.stdout is not None:
                c.proc.stdout.close()

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_local_deployment(**kwargs: object) -> LocalDeployment:
    """Start (and wait for) a local deployment; keyword arguments as LocalDeployment. Call .stop() after."""
    return LocalDeployment(**kwargs).start()  # type: ignore[arg-type]


# -- CLI -----------------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="start the local deployment (coordinator + CPU workers on loopback)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--cluster", default=DEFAULT_CLUSTER, help="fleet to emulate (default: local-cpu, 3 workers)"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="use only the first N nodes of the fleet (local-cpu4 has 4: fast, fast2, mid, slow)",
    )
    p.add_argument(
        "--auto-replan",
        action="store_true",
        help="when a worker dies, re-plan, dry-run in the simulator and load the new ranges live "
        "(figures: GET /v1/admin/rollout)",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="model short name (default: smollm2-135m)")
    p.add_argument("--method", default=DEFAULT_METHOD, help="placement method (brl plan --method)")
    p.add_argument("--backend", default="torch", choices=("torch", "vllm"), help="worker execution backend")
    p.add_argument(
        "--policy", default="maxflow", help="routing policy (maxflow, swarm, random, shortest-queue)"
    )
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the OpenAI endpoint (0 = any free)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("BRL_API_KEY") or None,
        help="require `Authorization: Bearer KEY` on the OpenAI routes (default: BRL_API_KEY; "
        "prefer the variable: flags show in `ps`)",
    )
    p.add_argument(
        "--admin-api-key",
        default=os.environ.get("BRL_ADMIN_API_KEY") or None,
        help="key of /v1/admin/* (default: BRL_ADMIN_API_KEY, else a random key printed at start)",
    )
    p.add_argument(
        "--workdir", type=Path, help="plan, logs and JSON-lines events go here (default: a temp dir)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    admin_key = args.admin_api_key or secrets.token_urlsafe(24)
    if admin_key == args.api_key:
        raise InvalidInput("the admin key must differ from the API key", field="admin_api_key")
    dep = LocalDeployment(
        cluster=args.cluster,
        model=args.model,
        method=args.method,
        workers=args.workers,
        backend=args.backend,
        http_port=args.port,
        api_key=args.api_key,
        admin_api_key=admin_key,
        workdir=args.workdir,
        policy=args.policy,
        auto_replan=args.auto_replan,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        dep.cancel.set()

    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        print(
            f"brl run: planning {args.cluster} for {args.model} and starting the fleet (logs: {dep.log_dir})",
            flush=True,
        )
        try:
            dep.start()
        except Interrupted:
            return 130
        for w in dep.specs:
            print(f"  worker {w.name:<6} {w.gpu_type:<9} layers [{w.start},{w.end})  speed x{w.speed_factor}")
        auth = f' -H "Authorization: Bearer {args.api_key}"' if args.api_key else ""
        sign_in = "   (sign in there with the API key)" if args.api_key else ""
        print(
            f"\nOpenAI endpoint: {dep.base_url}   (metrics: {dep.root_url}/metrics)\n"
            f"Dashboard: {dep.root_url}/dashboard{sign_in}\n"
            f"Try:\n  curl {dep.base_url}/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
            f'    -d \'{{"model": "{args.model}", "messages": [{{"role": "user", '
            f'"content": "What is the capital of France?"}}], "max_tokens": 32}}\'\n'
            f"Admin (plan status and swap, its own key):\n"
            f"  curl {dep.base_url}/admin/plan -H 'Authorization: Bearer {admin_key}'\n"
            + (
                f"  curl {dep.base_url}/admin/rollout -H 'Authorization: Bearer {admin_key}'\n"
                if args.auto_replan
                else ""
            )
            + "Ctrl+C stops it.",
            flush=True,
        )
        while not stop.wait(1.0):
            gone = [c.name for c in dep.children if c.proc.poll() is not None]
            if "coordinator" in gone:
                print("brl run: the coordinator exited; shutting down", file=sys.stderr)
                return 1
        return 0
    finally:
        print("brl run: stopping...", flush=True)
        dep.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
