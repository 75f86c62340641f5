"""Every GPU measurement of issue 21 in one run (about 6-8 minutes on an H100/H200), one table at the end.

    python benchmarks/gpu_suite.py                  # on a CUDA machine: GPT-2 124M, bf16
    python benchmarks/gpu_suite.py --tiny           # anywhere: the same runs at toy sizes (a smoke test)

Training (goal: >= 50% MFU with the course Trainer): bench_trainer.py on GPT-2 124M, bf16, batch 16 x
1024, unpadded eager, padded (50304) eager and compiled, and a larger compiled micro-batch.
Decoding (goal: >= 5x the eager cached decode at batch 1, same tokens): bench_decode.py, the cached
GPT.generate against fast_decode.StaticDecoder eager and compiled (CUDA graphs). Each run's full
output goes to $OUT/gpu_suite/ when $OUT is set (else ./gpu_suite_logs/).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (label, script, arguments): the GPU sizes; --tiny swaps in TINY's arguments.
TRAIN = "--config gpt2 --amp bf16 --batch-size {b} --block-size 1024 --steps {s} --warmup {w} --repeats 1"
RUNS = [
    ("train eager, vocab 50257", "bench_trainer.py", TRAIN.format(b=16, s=25, w=5) + " --pad-vocab 0"),
    ("train eager+compiled, vocab 50304", "bench_trainer.py",
     TRAIN.format(b=16, s=30, w=10) + " --compile both"),
    ("train compiled, micro-batch 32", "bench_trainer.py", TRAIN.format(b=32, s=20, w=8) + " --compile"),
    ("decode batch 1, fp32", "bench_decode.py",
     "--config gpt2 --new-tokens 256 --repeats 2 --modes cached static compiled"),
]  # fmt: skip
TINY_TRAIN = "--config tiny --amp off --batch-size 4 --block-size 32 --steps 4 --warmup 2 --repeats 1"
TINY = [
    TINY_TRAIN + " --pad-vocab 0",
    TINY_TRAIN + " --pad-vocab 64 --compile both",
    TINY_TRAIN.replace("--batch-size 4", "--batch-size 8") + " --pad-vocab 64 --compile",
    "--config tiny --new-tokens 24 --repeats 1 --modes cached static compiled",
]


def parse_train(text: str) -> list[tuple[str, str]]:
    """(what, figure) pairs from bench_trainer's output: tokens/s and MFU per mode."""
    rows = []
    for mode, who, rate in re.findall(
        r"\[(\w+)\] (reference loop|course Trainer) :\s+([\d,]+) tokens/s", text
    ):
        rows.append((f"{mode} {who} tokens/s", rate))
    for mode, who, mfu in re.findall(r"\[(\w+)\] MFU (reference|Trainer): ([\d.]+%)", text):
        rows.append((f"{mode} {who} MFU", mfu))
    for mode, ratio in re.findall(r"\[(\w+)\] ratio Trainer / reference: ([\d.]+x)", text):
        rows.append((f"{mode} Trainer / reference", ratio))
    return rows


def parse_decode(text: str) -> list[tuple[str, str]]:
    rows = []
    for path, tps, rel, same in re.findall(
        r"^\| (\w+) \| [\d.]+ \| ([\d,.]+) \| ([\d.]+x|-) \| (.+?) \|", text, re.M
    ):
        rows.append((f"{path} tokens/s (vs cached, same tokens)", f"{tps} ({rel}, {same})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes on any device: checks that every run works")
    p.add_argument("--device", default=None, help="passed to each benchmark (default: theirs)")
    args = p.parse_args(argv)
    logs = Path(os.environ.get("OUT", "gpu_suite_logs")) / "gpu_suite"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    table, failed, t_start = [], [], time.perf_counter()
    for i, (label, script, arguments) in enumerate(RUNS):
        arguments = TINY[i] if args.tiny else arguments
        if args.device:
            arguments += f" --device {args.device}"
        cmd = [sys.executable, str(HERE / script), *arguments.split()]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
        text = proc.stdout + proc.stderr
        (logs / f"{i + 1}_{script.removesuffix('.py')}.log").write_text(" ".join(cmd) + "\n\n" + text)
        header = next((ln for ln in proc.stdout.splitlines() if ln.startswith(("device", "# greedy"))), "")
        print(f"[{seconds:5.0f} s] {label}: exit {proc.returncode}  {header}", flush=True)
        if proc.returncode != 0:
            failed.append(label)
            print(text[-3000:], flush=True)
        rows = parse_train(text) if script == "bench_trainer.py" else parse_decode(text)
        table += [(label, what, figure) for what, figure in rows]
    print(f"\n## issue 21 GPU figures ({time.perf_counter() - t_start:.0f} s in all; logs in {logs})")
    print("| run | measure | figure |")
    print("|---|---|---:|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    if failed:
        print(f"FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
