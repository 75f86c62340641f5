"""Benchmarks for course_lib's models: KV-cache generation and explicit vs fused attention.

    python benchmarks/bench_models.py                       # CPU, float32
    python benchmarks/bench_models.py --device cuda --dtype bfloat16

Part 1 times greedy generation of N new tokens with and without the KV cache (a "small"-shaped
GPT with block_size 640, so 512 new tokens fit). Part 2 times one attention call, written out
(course_lib.attention.explicit_attention) and fused (F.scaled_dot_product_attention), forward
and forward + backward, for a few (B, nh, T, hs). Timings use torch.utils.benchmark, which
synchronises CUDA and warms up before measuring.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.utils.benchmark as tb

from course_lib.attention import attention
from course_lib.env import get_device
from course_lib.gpt import GPT, get_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_generation(
    model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool, repeats: int
) -> float:
    """Best wall time (s) of ``repeats`` greedy generations (one short warm-up first)."""
    device = prompt.device
    model.generate(prompt, 8, temperature=0, use_cache=use_cache)  # warm-up: allocator, kernels
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_generation(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    cfg = get_config("small", block_size=640, dropout=0.0)
    torch.manual_seed(0)
    model = GPT(cfg).to(device=device, dtype=dtype).eval()
    prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_len), device=device)
    print(
        f"\n## Greedy generation, KV cache vs none: {cfg.n_layer} layers, d_model {cfg.d_model}, "
        f"{cfg.n_head} heads, vocab {cfg.vocab_size}, {model.num_parameters() / 1e6:.1f}M params, "
        f"batch {args.batch}, prompt {args.prompt_len}"
    )
    print("| new tokens | no cache (s) | tok/s | KV cache (s) | tok/s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.new_tokens:
        if args.prompt_len + n > cfg.block_size:
            raise SystemExit(f"prompt {args.prompt_len} + {n} new tokens > block_size {cfg.block_size}")
        slow = time_generation(model, prompt, n, use_cache=False, repeats=args.repeats_nocache)
        fast = time_generation(model, prompt, n, use_cache=True, repeats=args.repeats)
        tok = n * args.batch
        print(f"| {n} | {slow:.2f} | {tok / slow:.0f} | {fast:.3f} | {tok / fast:.0f} | {slow / fast:.1f}x |")


def bench_attention(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    print("\n## Attention, explicit vs fused (causal), median time per call in ms")
    print(
        "| B, nh, T, hs | explicit fwd | fused fwd | speed-up | explicit fwd+bwd | fused fwd+bwd | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for B, nh, T, hs in args.shapes:
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (
            torch.randn(B, nh, T, hs, device=device, dtype=dtype, generator=g).requires_grad_(True)
            for _ in range(3)
        )
        grad = torch.randn(B, nh, T, hs, device=device, dtype=dtype, generator=g)
        times = {}
        for explicit in (True, False):
            env = {"attention": attention, "q": q, "k": k, "v": v, "grad": grad, "explicit": explicit}
            fwd = "with torch.no_grad(): attention(q, k, v, is_causal=True, explicit=explicit)"
            both = "attention(q, k, v, is_causal=True, explicit=explicit).backward(grad)"
            for name, stmt in (("fwd", fwd), ("both", both)):
                timer = tb.Timer(
                    stmt=stmt, globals={**env, "torch": torch}, num_threads=torch.get_num_threads()
                )
                times[(explicit, name)] = timer.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
        ef, ff, eb, fb = (
            times[(True, "fwd")],
            times[(False, "fwd")],
            times[(True, "both")],
            times[(False, "both")],
        )
        row = [f"{B}, {nh}, {T}, {hs}", f"{ef:.2f}", f"{ff:.2f}", f"{ef / ff:.1f}x"]
        row += [f"{eb:.2f}", f"{fb:.2f}", f"{eb / fb:.1f}x"]
        print("| " + " | ".join(row) + " |")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(p) for p in text.split(","))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"shape {text!r} must be B,nh,T,hs, e.g. 8,8,256,32")
    return parts  # type: ignore[return-value]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: course_lib.env.get_device())")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--new-tokens", type=int, nargs="+", default=[256, 512])
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs with the cache (best is kept)")
    p.add_argument("--repeats-nocache", type=int, default=1, help="timed runs without the cache")
    p.add_argument(
        "--shapes", type=parse_shape, nargs="+", default=[(8, 8, 128, 32), (4, 8, 256, 32), (2, 12, 512, 64)]
    )
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds per attention measurement")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--skip", choices=["generation", "attention"], default=None)
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    dtype = DTYPES[args.dtype]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} CPU threads"
    )
    print(f"# course_lib model benchmarks: torch {torch.__version__}, {device} ({name}), {args.dtype}")
    if args.skip != "generation":
        bench_generation(args, device, dtype)
    if args.skip != "attention":
        bench_attention(args, device, dtype)


if __name__ == "__main__":
    main()
