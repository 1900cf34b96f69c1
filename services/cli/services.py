"""`brl planner-service` and `brl simulator-service`: the planner and the simulator as REST + gRPC services.

Every flag has an environment variable (flag wins): BRL_PLANNER_<FIELD> / BRL_SIMULATOR_<FIELD>, e.g.
BRL_PLANNER_PORT, BRL_SIMULATOR_DB_PATH; the API key is BRL_API_KEY for both.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any


def _common(p: argparse.ArgumentParser, *, prefix: str, port: int, grpc_port: int, db: str) -> None:
    p.add_argument("--host", help=f"interface to listen on ({prefix}HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"HTTP port; 0 = any free ({prefix}PORT, default {port})")
    p.add_argument(
        "--grpc-port",
        type=int,
        help=f"gRPC port; 0 = any free; unset = no gRPC ({prefix}GRPC_PORT, e.g. {grpc_port})",
    )
    p.add_argument(
        "--db", dest="db_path", help=f"SQLite file for jobs and results ({prefix}DB_PATH, default {db})"
    )
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on mutating calls (BRL_API_KEY)")
    p.add_argument("--max-workers", type=int, help=f"jobs running at once ({prefix}MAX_WORKERS, default 2)")
    p.add_argument("--max-queued", type=int, help=f"jobs waiting beyond that; then 429 ({prefix}MAX_QUEUED)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "planner-service",
        help="run the planner as a REST + gRPC service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, prefix="BRL_PLANNER_", port=8001, grpc_port=50061, db="brl-planner.db")
    p.add_argument("--max-nodes", type=int, help="largest fleet a request may name (BRL_PLANNER_MAX_NODES)")
    p.add_argument(
        "--max-time-limit-s",
        type=float,
        help="longest solver time limit a request may ask (BRL_PLANNER_MAX_TIME_LIMIT_S)",
    )
    p.set_defaults(func=_run_planner)

    s = sub.add_parser(
        "simulator-service",
        help="run the simulator (dry runs of plans) as a REST + gRPC service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(s, prefix="BRL_SIMULATOR_", port=8002, grpc_port=50062, db="brl-simulator.db")
    s.add_argument("--planner-url", help="planner service to fetch plans by id (BRL_SIMULATOR_PLANNER_URL)")
    s.add_argument(
        "--planner-db", help="or read them from the planner's SQLite file (BRL_SIMULATOR_PLANNER_DB)"
    )
    s.add_argument(
        "--max-duration-s",
        type=float,
        help="longest simulated time a request may ask (BRL_SIMULATOR_MAX_DURATION_S)",
    )
    s.set_defaults(func=_run_simulator)


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


COMMON = ("host", "port", "grpc_port", "db_path", "api_key", "max_workers", "max_queued")


def _run_planner(args: argparse.Namespace) -> int:
    from services.planner_service.main import serve, settings_from

    settings = settings_from(_overrides(args, (*COMMON, "max_nodes", "max_time_limit_s")))
    _logging()
    return serve(settings)


def _run_simulator(args: argparse.Namespace) -> int:
    from services.simulator_service.main import serve, settings_from

    settings = settings_from(_overrides(args, (*COMMON, "planner_url", "planner_db", "max_duration_s")))
    _logging()
    return serve(settings)
