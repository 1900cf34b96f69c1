"""`brl profile`: measure a worker backend on this machine and write a GPU profile folder (the format of the
Helix profiles: settings.json + <type>/{prompt,decode}_bs2time.csv) that the planner and simulator load."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.errors import InvalidInput

QUICK_PROMPT = (16, 64, 256)
QUICK_DECODE = (1, 4, 16)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure a worker backend on this machine and write a GPU profile",
        description="Time the worker's execution backend (prompt ms per layer against batch tokens, decode "
        "ms per layer against batch size at a realistic context), derive KV capacity per layer count, and "
        "write settings.json + <gpu-type>/{prompt,decode}_bs2time.csv into DIR (merged with other types).",
    )
    p.add_argument("--model", default="smollm2-135m", help="bundled model name or a Hugging Face folder")
    p.add_argument("--backend", default="torch", help="execution backend: torch (default) or vllm")
    p.add_argument("--layers", type=int, required=True, help="K: layers a node of this type holds (at most)")
    p.add_argument(
        "--gpu-type", dest="gpu_type", default=None, help="profile key (default: cpu / the GPU name)"
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="profile folder to write (or add to)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    p.add_argument("--prompt-tokens", type=_ints, help="prompt batch points (16,32,64,128,256,512)")
    p.add_argument("--decode-batches", type=_ints, help="decode batch points (1,2,4,8,16,32)")
    p.add_argument("--decode-context", type=int, help="cached tokens per decoding sequence (512)")
    p.add_argument("--measure-layers", type=int, default=4, help="layers of the measuring shard (4)")
    p.add_argument("--repeats", type=int, help="timed runs per point, median kept (3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads, as the worker (1)")
    p.add_argument("--kv-cache-gib", type=float, help="fixed KV pool (torch worker; default 0.5)")
    p.add_argument("--memory-gib", type=float, help="memory for weights + KV (default on a GPU: 90%% of it)")
    p.add_argument("--min-kv-tokens", type=int, default=2048, help="KV tokens a node must keep (2048)")
    p.add_argument("--prompt-max-requests", type=int, default=1, help="prompts batched in one step (1)")
    p.add_argument("--prompt-max-tokens", type=int, help="prompt tokens per step (largest measured)")
    p.add_argument("--decode-max", type=int, help="sequences decoding at once (largest measured)")
    p.add_argument("--nic-bytes-per-s", type=float, help="NIC speed to record (default: planner's 1e10)")
    p.add_argument("--quick", action="store_true", help="few points, short context, one repeat (seconds)")
    p.set_defaults(func=run)


def default_gpu_type(backend: str) -> str:
    if backend == "torch":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise InvalidInput("no GPU found; give --gpu-type", field="gpu_type")
    # "NVIDIA H100 80GB HBM3" -> "H100": the paper's naming (A100, L4, T4) is the model number.
    words = [w for w in torch.cuda.get_device_name(0).split() if w.upper() not in ("NVIDIA", "TESLA")]
    return words[0] if words else "gpu"


def run(args: argparse.Namespace) -> int:
    from services.profiling.measure import MeasureConfig
    from services.profiling.profile import ProfileRequest, run_profile

    quick = bool(args.quick)
    measure = MeasureConfig(
        prompt_tokens=args.prompt_tokens or (QUICK_PROMPT if quick else MeasureConfig.prompt_tokens),
        decode_batches=args.decode_batches or (QUICK_DECODE if quick else MeasureConfig.decode_batches),
        decode_context=args.decode_context or (128 if quick else MeasureConfig.decode_context),
        measure_layers=args.measure_layers,
        repeats=args.repeats or (1 if quick else MeasureConfig.repeats),
        threads=args.threads,
    )
    req = ProfileRequest(
        model=args.model,
        backend=args.backend,
        layers=args.layers,
        out_dir=args.out,
        gpu_type=args.gpu_type or default_gpu_type(args.backend),
        dtype=args.dtype,
        measure=measure,
        kv_cache_gib=args.kv_cache_gib,
        memory_gib=args.memory_gib,
        min_kv_tokens=args.min_kv_tokens,
        prompt_max_requests=args.prompt_max_requests,
        prompt_max_tokens=args.prompt_max_tokens,
        decode_max_tokens=args.decode_max,
        nic_bytes_per_s=args.nic_bytes_per_s,
    )
    out = run_profile(req)
    m = out.measurement
    print(
        f"{out.gpu_type}: {m.backend} backend on {m.device}, {m.threads} thread(s); tables per layer "
        f"for nodes holding {min(args.layers, out.capacity.max_layers)}..{out.capacity.max_layers} layers"
    )
    print("  prompt tokens -> ms/layer: " + ", ".join(f"{x:g}:{y:.3f}" for x, y in out.prompt.points[1:]))
    print(
        f"  decode batch (context {m.decode_context}) -> ms/layer: "
        + ", ".join(f"{x:g}:{y:.3f}" for x, y in out.decode.points[1:])
    )
    print(
        f"  max layers {out.capacity.max_layers}; KV token x layer entries k=1: {out.capacity.kv_entries[0]}, "
        f"k={out.capacity.max_layers}: {out.capacity.kv_entries[-1]}"
    )
    print(
        "  LM head on the last hop (not in the tables) batch -> ms per step: "
        + ", ".join(f"{x}:{y:.3f}" for x, y in zip(out.head.points, out.head.ms, strict=True))
    )
    print(f"wrote {out.folder}")
    return 0
