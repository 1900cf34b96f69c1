"""`brl coordinator`: run the coordinator alone (OpenAI HTTP API + worker registration over gRPC).

Every flag has a `BRL_*` environment variable (flag wins); e.g. --http-port / BRL_HTTP_PORT.
Prefer the variables for keys (BRL_API_KEY, BRL_ADMIN_API_KEY, BRL_PLANNER_API_KEY): a flag's value is
visible to every local user in `ps`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.routing.maxflow import DEAD_END_RULES, DEFAULT_DEAD_END
from services.coordinator.settings import from_env


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "coordinator",
        help="run the coordinator (OpenAI API + worker registration)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="interface to listen on (BRL_HOST, default 127.0.0.1)")
    p.add_argument(
        "--http-port", type=int, help="OpenAI HTTP port; 0 = any free (BRL_HTTP_PORT, default 8000)"
    )
    p.add_argument("--grpc-port", type=int, help="worker registration port (BRL_GRPC_PORT, default 50050)")
    p.add_argument("--model", help="model short name or HF folder (BRL_MODEL, default smollm2-135m)")
    p.add_argument("--served-model-name", help="name clients send as `model` (BRL_SERVED_MODEL_NAME)")
    p.add_argument(
        "--plan", type=Path, help="plan JSON from `brl plan` (BRL_PLAN); default: flows of live workers"
    )
    p.add_argument("--planner-url", help="planner service base URL, for --plan-id (BRL_PLANNER_URL)")
    p.add_argument("--plan-id", help="load this plan from the planner service at start (BRL_PLAN_ID)")
    p.add_argument("--cluster", help="cluster short name or file the plan is for (BRL_CLUSTER)")
    p.add_argument("--policy", help="routing policy: maxflow, swarm, random, shortest-queue (BRL_POLICY)")
    p.add_argument(
        "--dead-end",
        metavar="RULE",
        help=f"max-flow routing ({', '.join(DEAD_END_RULES)}): what a request that finds no chain with KV "
        f"room does with the IWRR charges of its walk (BRL_DEAD_END, default {DEFAULT_DEAD_END}; rollback is "
        "the paper's)",
    )
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1 (BRL_API_KEY)")
    p.add_argument(
        "--admin-api-key",
        help="key of /v1/admin/*; unset: no admin routes (BRL_ADMIN_API_KEY; must differ from the API key)",
    )
    p.add_argument(
        "--max-prompt-chars",
        type=int,
        help="longest prompt in characters; default context x 16 (BRL_MAX_PROMPT_CHARS)",
    )
    p.add_argument(
        "--log-dir", type=Path, help="write iterations.jsonl and requests.jsonl here (BRL_LOG_DIR)"
    )
    p.add_argument("--max-waiting", type=int, help="admission queue bound; beyond it 429 (BRL_MAX_WAITING)")
    p.add_argument(
        "--heartbeat-interval-s", type=float, help="worker heartbeat period (BRL_HEARTBEAT_INTERVAL_S)"
    )
    p.add_argument(
        "--replica-id",
        help="this replica's name when several coordinators serve one fleet (BRL_REPLICA_ID, default host name)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from services.coordinator.main import run

    settings = from_env(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        model=args.model,
        served_model_name=args.served_model_name,
        plan=args.plan,
        planner_url=args.planner_url,
        plan_id=args.plan_id,
        cluster=args.cluster,
        policy=args.policy,
        dead_end=args.dead_end,
        api_key=args.api_key,
        admin_api_key=args.admin_api_key,
        max_prompt_chars=args.max_prompt_chars,
        log_dir=args.log_dir,
        max_waiting=args.max_waiting,
        heartbeat_interval_s=args.heartbeat_interval_s,
        replica_id=args.replica_id,
    )
    return run(settings)
