"""Training throughput of course_lib's GPT + Trainer against a minimal nanoGPT-style loop.

Both train the same model (same config, initial weights, batches, AdamW settings and schedule) on
the same machine; the ratio shows what the Trainer's extras (NaN checks, logging, history, callbacks,
checkpoint bookkeeping) cost per step. Runs alternate and the median of ``--repeats`` is reported.
On CUDA the MFU (model FLOPs utilisation) is printed against the GPU's peak dense bf16 throughput,
for the eager model, the compiled one, or both (``--compile both``). On CUDA the vocabulary is padded
to a multiple of 64 by default (GPTConfig.pad_vocab_to: GPT-2's 50257 -> 50304), as the course's
GPU configs should; ``--pad-vocab 0`` measures the unpadded model.

    python benchmarks/bench_trainer.py                                   # CPU, the "tiny" config
    python benchmarks/bench_trainer.py --device cuda --config gpt2 --amp bf16 --compile both
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time

import torch

from course_lib.env import get_device
from course_lib.gpt import GPT, get_config
from course_lib.trainer import Callback, TrainConfig, Trainer, lr_at, param_groups, resolve_amp

# Peak dense bf16 tensor-core FLOP/s (vendor datasheets, without sparsity), matched by GPU name.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12 (pass --peak-flops)
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    return None


def make_batches(n: int, batch: int, block: int, vocab: int, device: torch.device) -> list:
    """``n`` fixed random (x, y) batches already on the device, so data loading is not what is measured."""
    g = torch.Generator().manual_seed(0)
    stream = torch.randint(0, vocab, (n * batch * (block + 1) + 1,), generator=g)
    rows = stream[: n * batch * (block + 1)].view(n, batch, block + 1)  # (n, B, T + 1)
    return [(r[:, :-1].contiguous().to(device), r[:, 1:].contiguous().to(device)) for r in rows]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(args: argparse.Namespace, device: torch.device) -> GPT:
    torch.manual_seed(0)
    overrides = {"dropout": 0.0, "pad_vocab_to": args.pad_vocab or None}
    if args.block_size:
        overrides["block_size"] = args.block_size
    return GPT(get_config(args.config, **overrides)).to(device)


def reference_loop(args, cfg: TrainConfig, batches: list, device: torch.device) -> tuple[float, float]:
    """nanoGPT's train.py reduced to its inner loop: lr schedule, accumulation, clip, step, rare .item()."""
    model = build_model(args, device)
    if cfg.compile:
        model = torch.compile(model)
    amp = resolve_amp(cfg.amp, device)
    ctx = torch.autocast(device.type, dtype=amp.dtype) if amp.dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=amp.use_scaler)
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, **fused)
    model.train()
    k = 0
    t0 = c0 = 0.0
    for step in range(cfg.max_steps):
        if step == args.warmup:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        for _ in range(cfg.grad_accum_steps):
            x, y = batches[k % len(batches)]
            k += 1
            with ctx:
                _, loss = model(x, y)
            scaler.scale(loss / cfg.grad_accum_steps).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % cfg.log_every == 0:
            loss.item()  # nanoGPT reads the loss only at log steps (a host-device sync)
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


class _Clock(Callback):
    """Starts the clock after the warm-up steps and stops it after the last step (synchronised on CUDA)."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.t0 = self.t1 = self.c0 = self.c1 = 0.0

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step == self.warmup:
            sync(self.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        if trainer.step == trainer.config.max_steps:
            sync(self.device)
            self.t1, self.c1 = time.perf_counter(), time.process_time()


def trainer_loop(args, cfg: TrainConfig, batches: list, device: torch.device) -> tuple[float, float]:
    model = build_model(args, device)
    clock = _Clock(args.warmup, device)
    n = len(batches)
    counter = iter(range(10**12))

    def data(step: int, generator: torch.Generator):
        return batches[next(counter) % n]

    Trainer(model, cfg, data, callbacks=[clock]).fit()
    return clock.t1 - clock.t0, clock.c1 - clock.c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    p.add_argument("--config", default=None, help="course_lib.gpt config (default: tiny; gpt2 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument(
        "--compile", nargs="?", const="on", default="off", choices=["off", "on", "both"],
        help="torch.compile the model: off, on (--compile alone) or both (eager, then compiled)",
    )  # fmt: skip
    p.add_argument(
        "--pad-vocab", type=int, default=None, metavar="M",
        help="round the vocabulary up to a multiple of M (default: 64 on CUDA, none on the CPU; 0 = none)",
    )  # fmt: skip
    p.add_argument("--peak-flops", type=float, default=None, help="override the GPU's peak FLOP/s for MFU")
    args = p.parse_args(argv)

    device = get_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    args.config = args.config or ("gpt2" if cuda else "tiny")
    if args.pad_vocab is None:
        args.pad_vocab = 64 if cuda else 0
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    batch = args.batch_size or (8 if cuda else 16)
    steps = args.steps or (30 if cuda else 60)
    if steps <= args.warmup:
        p.error("--steps must exceed --warmup")
    if cuda:
        torch.set_float32_matmul_precision("high")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            max_steps=steps, batch_size=batch, grad_accum_steps=args.grad_accum, lr=6e-4, min_lr=6e-5,
            warmup_steps=2, amp=args.amp, compile=False, device=str(device), out_dir=tmp,
            save_every=None, log_every=10, progress=False, eval_every=10**9,
        )  # fmt: skip
        model = build_model(args, device)
        block = model.config.block_size
        tokens_per_step = batch * block * args.grad_accum
        batches = make_batches(8, batch, block, model.config.vocab_size, device)
        where = torch.cuda.get_device_name(device) if cuda else f"{os.cpu_count()} CPU cores"
        print(f"device {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} threads")
        amp_dtype = resolve_amp(args.amp, device).dtype
        print(
            f"model {args.config}: {model.num_parameters():,} params, vocab {model.config.vocab_size} "
            f"padded to {model.config.padded_vocab_size}, block {block}, batch {batch} x accum "
            f"{args.grad_accum} = {tokens_per_step:,} tokens/step, amp {amp_dtype}, compile {args.compile}, "
            f"{steps} steps ({args.warmup} warm-up) x {args.repeats} repeats"
        )
        model.to("cpu")  # kept only for its FLOP count (MFU)
        peak = peak_flops(device, args.peak_flops)
        if peak is None:
            print("MFU: skipped " + ("on the CPU" if not cuda else "for this GPU (pass --peak-flops)"))
        ok = True
        for compiled in modes:
            ok &= measure(args, dataclasses.replace(cfg, compile=compiled), batches, device, model, peak)
    return 0 if ok else 1


def measure(
    args, cfg: TrainConfig, batches: list, device: torch.device, model: GPT, peak: float | None
) -> bool:
    """Interleaved runs of the reference loop and the Trainer; prints tokens/s, their ratio and MFU."""
    tokens_per_step = cfg.batch_size * model.config.block_size * cfg.grad_accum_steps
    rates: dict[str, list[float]] = {"ref": [], "ours": []}
    cpu_rates: dict[str, list[float]] = {"ref": [], "ours": []}
    timed = (cfg.max_steps - args.warmup) * tokens_per_step
    devnull = open(os.devnull, "w")  # the Trainer's log lines would interleave with the report
    for r in range(args.repeats):
        order = [("ref", reference_loop), ("ours", trainer_loop)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            with contextlib.redirect_stdout(devnull):
                wall, cpu = fn(args, cfg, batches, device)
            rates[name].append(timed / wall)
            cpu_rates[name].append(timed / cpu)
    ref, ours = statistics.median(rates["ref"]), statistics.median(rates["ours"])
    mode = "compiled" if cfg.compile else "eager"
    for label, key in (("reference loop", "ref"), ("course Trainer", "ours")):
        runs = ", ".join(f"{v:,.0f}" for v in rates[key])
        print(f"[{mode}] {label} : {statistics.median(rates[key]):12,.0f} tokens/s  (runs: {runs})")
    overhead_ms = (tokens_per_step / ours - tokens_per_step / ref) * 1e3
    print(
        f"[{mode}] ratio Trainer / reference: {ours / ref:.3f}x  (per-step difference {overhead_ms:+.3f} ms)"
    )
    if device.type != "cuda":  # CPU seconds of this process: steadier than wall time on a shared machine
        cpu_ratio = statistics.median(cpu_rates["ours"]) / statistics.median(cpu_rates["ref"])
        print(f"[{mode}] ratio by CPU time (tokens per CPU-second): {cpu_ratio:.3f}x")
    if peak is not None:
        for name, rate in (("reference", ref), ("Trainer", ours)):
            mfu = model.estimate_mfu(rate, peak)
            print(f"[{mode}] MFU {name}: {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s")
    return math.isfinite(ours / ref)


if __name__ == "__main__":
    sys.exit(main())
