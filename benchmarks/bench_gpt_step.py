"""One training step of course_lib's GPT against a minimal nanoGPT-style model of the same shape.

Both models hold the same weights (checked: same loss before timing) and run the same loop:
forward, backward, AdamW step, zero_grad. Blocks of steps alternate between the two (the order
flips every repeat), so a machine whose load drifts slows both alike; the report gives the median
time per step, the spread (min .. max of the block medians) and the ratio reference / course
(>= 1.0: the course model is at least as fast).

    python benchmarks/bench_gpt_step.py                      # CPU, 1 thread, tiny and small
    python benchmarks/bench_gpt_step.py --threads 2 --configs tiny --profile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minimal_gpt import from_course_gpt  # noqa: E402

from course_lib.gpt import GPT, get_config  # noqa: E402
from course_lib.trainer import param_groups  # noqa: E402

# (batch size, context) per shape: the tiny and small configs at training sizes, the issue's
# 4-layer/128-wide model, and "overhead": tiny at 1 x 8 tokens, where Python's per-call cost dominates.
SHAPES = {"tiny": (16, 64), "small": (8, 256), "issue": (12, 64), "overhead": (1, 8)}
OVERRIDES = {"issue": dict(n_layer=4, n_head=4, d_model=128, vocab_size=256, block_size=64)}


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)

    def step() -> torch.Tensor:
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_block(step, n: int) -> tuple[float, float]:
    """Median wall and CPU seconds per step over ``n`` steps."""
    walls, cpus = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def bench(name: str, args: argparse.Namespace) -> dict[str, float]:
    batch, T = SHAPES[name]
    cfg_name = "small" if name == "small" else "tiny"
    torch.manual_seed(0)
    course = GPT(get_config(cfg_name, dropout=0.0, **OVERRIDES.get(name, {})))
    ref = from_course_gpt(course)
    c = course.config
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, c.vocab_size, (batch, T), generator=g)
    y = torch.randint(0, c.vocab_size, (batch, T), generator=g)
    with torch.no_grad():
        l_course, l_ref = course(x, y)[1].item(), ref(x, y)[1].item()
    if abs(l_course - l_ref) > 1e-5:
        raise SystemExit(f"{name}: the two models disagree (loss {l_course} vs {l_ref}); fix minimal_gpt.py")
    steps = {"course": make_step(course, x, y), "ref": make_step(ref, x, y)}
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    if args.profile:
        for label, fn in steps.items():
            with torch.profiler.profile() as prof:
                for _ in range(args.steps):
                    fn()
            print(f"\n### {name} {label}: top ops by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    wall: dict[str, list[float]] = {"course": [], "ref": []}
    cpu: dict[str, list[float]] = {"course": [], "ref": []}
    for r in range(args.repeats):
        order = ["ref", "course"] if r % 2 == 0 else ["course", "ref"]
        for label in order:
            w, cp = time_block(steps[label], args.steps)
            wall[label].append(w)
            cpu[label].append(cp)
    row = {"params": course.num_parameters(), "batch": batch, "T": T}
    for label in ("ref", "course"):
        row[f"{label}_wall"] = statistics.median(wall[label])
        row[f"{label}_cpu"] = statistics.median(cpu[label])
        row[f"{label}_lo"], row[f"{label}_hi"] = min(cpu[label]), max(cpu[label])
    # The ratio per repeat (neighbouring blocks share the machine's load), then its median and spread.
    ratios = sorted(a / b for a, b in zip(cpu["ref"], cpu["course"]))
    row["ratio_cpu"], row["ratio_lo"], row["ratio_hi"] = statistics.median(ratios), ratios[0], ratios[-1]
    row["ratio_wall"] = row["ref_wall"] / row["course_wall"]
    row["ratio_min"] = min(cpu["ref"]) / min(cpu["course"])  # the least disturbed blocks of each
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=sorted(SHAPES))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both models")
    p.add_argument("--steps", type=int, default=10, help="timed steps per block")
    p.add_argument("--repeats", type=int, default=7, help="blocks per model, interleaved")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile", type=int, default=0, metavar="ROWS", help="print the top ROWS ops of each")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# GPT train step, course_lib vs minimal nanoGPT-style: torch {torch.__version__}, CPU, "
          f"{args.threads} thread(s), {args.repeats} interleaved repeats x {args.steps} steps")  # fmt: skip
    print("| config | params | B x T | reference ms (CPU) | course ms (CPU) | spread ref / course ms "
          "| ratio ref/course (CPU) | ratio range | ratio of minima | ratio (wall) |")  # fmt: skip
    print("|---|---:|---|---:|---:|---|---:|---|---:|---:|")
    worst = float("inf")
    for name in args.configs:
        r = bench(name, args)
        worst = min(worst, r["ratio_cpu"])
        print(
            f"| {name} | {r['params']:,} | {r['batch']} x {r['T']} | {1e3 * r['ref_cpu']:.2f} | "
            f"{1e3 * r['course_cpu']:.2f} | {1e3 * r['ref_lo']:.2f}-{1e3 * r['ref_hi']:.2f} / "
            f"{1e3 * r['course_lo']:.2f}-{1e3 * r['course_hi']:.2f} | {r['ratio_cpu']:.3f}x | "
            f"{r['ratio_lo']:.3f}-{r['ratio_hi']:.3f} | {r['ratio_min']:.3f}x | {r['ratio_wall']:.3f}x |",
            flush=True,
        )
    print(f"slowest ratio: {worst:.3f}x (goal >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
