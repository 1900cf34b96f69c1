"""`brl worker`: serve layers [START, END) of a model over gRPC; the first stdout line is HOST:PORT."""

from __future__ import annotations

import argparse
import asyncio
import logging

from services.worker.settings import from_env


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="serve a layer shard of the model (data path over gRPC)",
        description="Serve layers [START, END) of a model (none until a Load when --layers is omitted). "
        "Flags override BRL_* env vars. "
        "The first line on stdout is the bound address HOST:PORT.",
    )
    p.add_argument("--model", help="bundled model name (smollm2-135m) or a Hugging Face folder")
    p.add_argument(
        "--layers",
        help="START:END, half-open (e.g. 0:7); omit (or 0:0) to start with no layers and wait for a Load",
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default)")
    p.add_argument("--advertise", help="HOST:PORT other hops reach this worker at (default HOST:PORT)")
    p.add_argument("--backend", help="execution backend: torch (default) or vllm")
    p.add_argument(
        "--coordinator",
        help="HOST:PORT of the coordinator to register with; several replicas: A:P,B:P or dns:NAME:PORT",
    )
    p.add_argument("--name", help="node name in the plan (default worker-PORT)")
    p.add_argument("--gpu-type", dest="gpu_type", help="GPU profile key reported to the coordinator (cpu)")
    p.add_argument("--speed-factor", dest="speed_factor", type=float, help="declared throttle (1.0)")
    p.add_argument("--dtype", help="activation/weight dtype: float32 (default), bfloat16, float16")
    p.add_argument("--kv-cache-gib", dest="kv_cache_gib", type=float, help="KV cache budget (0.5 GiB)")
    p.add_argument("--kv-capacity-tokens", dest="kv_capacity_tokens", type=int, help="KV capacity in tokens")
    p.add_argument("--max-batch-tokens", dest="max_batch_tokens", type=int, help="tokens per step (4096)")
    p.add_argument(
        "--max-loaded-layers",
        dest="max_loaded_layers",
        type=int,
        help="most layers held during a Load (no limit)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from services.worker.main import print_address, serve  # heavy imports only for this command

    fields = (
        "model",
        "layers",
        "host",
        "port",
        "advertise",
        "backend",
        "coordinator",
        "name",
        "gpu_type",
        "speed_factor",
        "dtype",
        "kv_cache_gib",
        "kv_capacity_tokens",
        "max_batch_tokens",
        "max_loaded_layers",
        "threads",
    )
    settings = from_env(**{f: getattr(args, f) for f in fields})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(settings, on_ready=print_address))
    return 0
