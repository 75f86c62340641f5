"""SmolLM2-135M-Instruct in course_lib's GPT vs transformers' LlamaForCausalLM, both from the same GGUF.

    python benchmarks/bench_llm.py                     # CPU (and the GPU as well when there is one)
    python benchmarks/bench_llm.py --repeats 5 --new-tokens 256 --threads 2

Prints, for each library: load time (course_lib: first load, which dequantizes the GGUF file and
writes the float32 cache, then a cached load; transformers converts the file on every load), prefill
tokens/s (one forward pass over a prompt) and decode tokens/s (greedy generation of --new-tokens
tokens at batch 1, KV cache on). The two libraries run interleaved, alternating which goes first,
and medians are reported, so a neighbour's load on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from course_lib import smollm2
from course_lib.env import CACHE_ENV

PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden screw press. Within fifty years, "
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def load_times() -> dict[str, float]:
    """Wall times (s) of course_lib's first and cached loads (in a fresh cache) and of transformers'."""
    import transformers

    out = {}
    old = os.environ.get(CACHE_ENV)
    tmp = tempfile.mkdtemp(prefix="bench_llm_cache_")
    os.environ[CACHE_ENV] = tmp  # a fresh cache, so the first load really converts the GGUF file
    try:
        out["course_lib first"] = timed(lambda: smollm2.load_smollm2("cpu"), torch.device("cpu"))
        out["course_lib cached"] = timed(lambda: smollm2.load_smollm2("cpu"), torch.device("cpu"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = old
    path = smollm2.gguf_path()
    out["transformers"] = timed(
        lambda: transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        ),
        torch.device("cpu"),
    )
    return out


def bench_device(ours, hf, tok, device: torch.device, args: argparse.Namespace) -> None:
    ours, hf = ours.to(device), hf.to(device)
    long_ids = tok(PROMPT * 8, return_tensors="pt").input_ids[:, : args.prefill_tokens].to(device)
    short_ids = tok(PROMPT, return_tensors="pt").input_ids.to(device)
    n = args.new_tokens

    runs = {
        ("course_lib", "prefill"): lambda: ours(long_ids),
        ("transformers", "prefill"): lambda: hf(long_ids, use_cache=False),
        ("course_lib", "decode"): lambda: ours.generate(short_ids, n, temperature=0),
        ("transformers", "decode"): lambda: hf.generate(
            short_ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id
        ),
    }
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        runs["course_lib", "prefill"]()  # warm-up: allocator, kernels, lazy initialisation
        runs["transformers", "prefill"]()
        ours.generate(short_ids, 4, temperature=0)
        hf.generate(short_ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
        for r in range(args.repeats):
            libs = ["course_lib", "transformers"] if r % 2 == 0 else ["transformers", "course_lib"]
            for phase in ("prefill", "decode"):
                for lib in libs:
                    times[lib, phase].append(timed(runs[lib, phase], device))

    T = long_ids.size(1)
    print(
        f"\n## {device}, float32, batch 1: prefill {T} tokens, decode {n} new tokens "
        f"({args.repeats} interleaved repeats, medians)"
    )
    print("| | course_lib tok/s | transformers tok/s | course_lib / transformers |")
    print("|---|---:|---:|---:|")
    for phase, count in (("prefill", T), ("decode", n)):
        a = count / statistics.median(times["course_lib", phase])
        b = count / statistics.median(times["transformers", phase])
        print(f"| {phase} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prefill-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip-load", action="store_true", help="skip the load-time measurements")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    print(
        f"# SmolLM2-135M-Instruct: course_lib vs transformers {transformers.__version__}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    if not args.skip_load:
        print("\n## Load time (s)")
        print("| course_lib first (GGUF -> float32, writes cache) | course_lib cached | transformers |")
        print("|---:|---:|---:|")
        t = load_times()
        print(f"| {t['course_lib first']:.1f} | {t['course_lib cached']:.1f} | {t['transformers']:.1f} |")

    path = smollm2.gguf_path()
    ours = smollm2.load_smollm2("cpu")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    bench_device(ours, hf, tok, torch.device("cpu"), args)
    if torch.cuda.is_available():
        bench_device(ours, hf, tok, torch.device("cuda"), args)


if __name__ == "__main__":
    main()
