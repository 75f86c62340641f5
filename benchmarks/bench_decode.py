"""Greedy decoding speed: GPT.generate with and without its KV cache, and fast_decode.StaticDecoder
(static caches) eager and compiled. Every path must produce the tokens of the cached generate.

    python benchmarks/bench_decode.py                                   # CPU: small config, eager paths
    python benchmarks/bench_decode.py --device cuda --config gpt2 --modes cached static compiled

"compiled" is torch.compile with mode reduce-overhead (CUDA graphs) on CUDA and the default mode
elsewhere; its first call (the compilation) is timed separately and left out of tokens/s.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from course_lib.env import get_device
from course_lib.fast_decode import StaticDecoder
from course_lib.gpt import GPT, get_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` calls, and the last output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--config", default=None, help="course_lib.gpt config (default: gpt2 on CUDA, else small)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument(
        "--pad-vocab", type=int, default=0, metavar="M", help="pad the vocabulary to a multiple of M"
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=None, help="default: 512, or what fits in block_size")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path (best kept)")
    p.add_argument(
        "--modes", nargs="+", default=["uncached", "cached", "static"],
        choices=["uncached", "cached", "static", "compiled"],
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    cuda = device.type == "cuda"
    name = args.config or ("gpt2" if cuda else "small")
    overrides = {"dropout": 0.0, "pad_vocab_to": args.pad_vocab or None}
    if name == "small":
        overrides["block_size"] = 640  # 16 + 512 new tokens fit
    cfg = get_config(name, **overrides)
    new = args.new_tokens or min(512, cfg.block_size - args.prompt_len)
    torch.manual_seed(0)
    model = GPT(cfg).to(device=device, dtype=DTYPES[args.dtype]).eval()
    prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_len), device=device)
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} CPU threads"
    print(f"# greedy decoding, {name} ({model.num_parameters() / 1e6:.1f}M params, vocab {cfg.vocab_size} "
          f"padded to {cfg.padded_vocab_size}), {args.dtype}, batch {args.batch}, prompt {args.prompt_len}, "
          f"{new} new tokens; torch {torch.__version__}, {device} ({where})")  # fmt: skip

    def static_run(decoder: StaticDecoder):
        return lambda: decoder.generate(prompt, new)

    paths = {
        "uncached": lambda: model.generate(prompt, new, temperature=0, use_cache=False),
        "cached": lambda: model.generate(prompt, new, temperature=0, use_cache=True),
    }
    reference = model.generate(prompt, new, temperature=0)  # the cached generate: the tokens to match
    results = {}
    for mode in args.modes:
        first = None
        if mode in paths:
            fn = paths[mode]
            fn() if mode != "uncached" else None  # warm-up (uncached is slow and needs none)
        else:
            compile_mode = ("reduce-overhead" if cuda else True) if mode == "compiled" else False
            fn = static_run(StaticDecoder(model, args.batch, args.prompt_len + new, compile=compile_mode))
            first, _ = timed(fn, device, 1)  # warm-up, and for "compiled" the compilation
        repeats = 1 if mode == "uncached" else args.repeats
        seconds, out = timed(fn, device, repeats)
        same = torch.equal(out, reference)
        first_diff = int((out != reference).any(0).nonzero()[0]) - args.prompt_len if not same else 0
        diverge = "" if same else f" (first difference at new token {first_diff})"
        results[mode] = (seconds, same, first, diverge)

    base = results.get("cached", (None,))[0]
    print("| path | seconds | tokens/s | vs cached | same tokens | first call (s) |")
    print("|---|---:|---:|---:|---|---:|")
    ok = True
    for mode, (seconds, same, first, diverge) in results.items():
        ok &= same
        rel = f"{base / seconds:.2f}x" if base else "-"
        first_s = f"{first:.2f}" if first is not None else "-"
        print(f"| {mode} | {seconds:.3f} | {args.batch * new / seconds:,.1f} | {rel} | "
              f"{'yes' if same else 'NO' + diverge} | {first_s} |")  # fmt: skip
    if "uncached" in results and base:
        print(
            f"KV cache speed-up over recomputation: {results['uncached'][0] / base:.1f}x at {new} new tokens"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
