# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3.7 · Scaling the run
#
# The GPT of notebook 3.6 trained for minutes on one CPU. Real pretraining runs last weeks on
# thousands of GPUs, and the code has to cope with things a notebook never meets: numbers that no
# longer fit, batches that no longer fit, machines that stop halfway, and many processes that must
# act as one. The course's `Trainer` handles each of them with one setting. This notebook opens them
# one by one on a tiny GPT, small enough that every cell runs in seconds:
#
# 1. **mixed precision**: compute in 16-bit numbers where it is safe (`amp`), and round a float
#    to bfloat16 by hand (an exercise);
# 2. **gradient accumulation**: a large batch in several small pieces (`grad_accum_steps`), also
#    with a smaller last piece (an exercise);
# 3. **checkpoint and resume**: stop anywhere, continue exactly (`resume=True`);
# 4. **`torch.compile`**: fuse the model's operations into faster kernels (`compile`);
# 5. **distributed data parallel**: one model trained by several processes (`torchrun`), checked:
#    the processes' gradients are averaged and their weights stay identical;
# 6. **a small scaling experiment**: four model sizes on the same data, loss against parameters and
#    against compute, a fitted power law (an exercise), and the Chinchilla rule next to it.

# %% tags=["imports"]
import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from course_lib import cache_dir, model_costs, pick, pretrained, seed_everything
from course_lib.checkpoint import load_checkpoint
from course_lib.gpt import GPT, get_config
from course_lib.lm_data import get_batch
from course_lib.plots import use_course_style
from course_lib.trainer import Callback, TrainConfig, Trainer, resolve_amp

use_course_style()
seed_everything(0)
torch.set_num_threads(1)  # a tiny model: one thread is fastest, and leaves a core for the two-process run below

# %% [markdown]
# The data are the BBC News tokens of the fast recipe of notebook 3.6 (120 articles, a 512-token
# BPE vocabulary): plenty for a model of this size.

# %%
recipe = pretrained.bbc_recipe(fast=True)
documents = pretrained.bbc_documents(recipe)
tokenizer = pretrained.bbc_tokenizer(recipe, documents[0])
train_ids, val_ids = pretrained.bbc_tokens(recipe, tokenizer, documents)
cfg = get_config("tiny", vocab_size=tokenizer.vocab_size, block_size=64, dropout=0.1)
print(f"{len(train_ids):,} training tokens; a GPT of {GPT(cfg).num_parameters():,} parameters")

# %% [markdown]
# ## 3.7.1 Mixed precision
#
# A float32 number has 8 exponent bits and 23 mantissa bits. Two 16-bit formats halve the memory
# and, on hardware built for them, run matrix products many times faster:
#
# - **float16**: 5 exponent bits, 10 mantissa bits: precise, but the range ends at 65,504 and
#   small gradients round to zero;
# - **bfloat16**: float32's 8 exponent bits with only 7 mantissa bits: the same range as float32,
#   less precision.

# %% tags=["nbval-check-output"]
print(f"{'dtype':<15} {'bits':>4} {'largest':>12} {'smallest normal':>16} {'spacing at 1':>13}")
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    info = torch.finfo(dtype)
    print(f"{str(dtype):<15} {info.bits:>4} {info.max:>12.3g} {info.tiny:>16.3g} {info.eps:>13.3g}")


# %% [markdown]
# bfloat16 is float32 cut short: the same sign bit and 8 exponent bits, and the first 7 of the 23
# mantissa bits. Converting a float32 to bfloat16 therefore keeps its top 16 bits, after rounding to
# the nearest bfloat16 number; a value exactly half-way between two of them goes to the one whose
# last kept bit is 0 ("ties to even", so that rounding errors do not pile up in one direction).
#
# ### Exercise 3.7a — round to bfloat16 by hand
# Write `round_to_bfloat16(x)` for a float32 tensor: return a float32 tensor of the same shape
# holding each value rounded to the nearest bfloat16 number. Work on the bits: `x.view(torch.int32)`
# reads the same 32 bits as an integer (no conversion), integer `+`, `&` and `>>` work on it, and
# `.view(torch.float32)` reads the bits back as a float. The check compares with PyTorch's own
# cast, `x.to(torch.bfloat16).float()` (which your answer may not call), bit for bit, exact ties
# included.

# %% tags=["exercise"]
def round_to_bfloat16(x):
    """Each float32 value of x rounded to the nearest bfloat16 (ties to even), returned as float32."""
    ### BEGIN SOLUTION
    bits = x.float().view(torch.int32)
    half_ulp = 0x7FFF + ((bits >> 16) & 1)  # just under half of the dropped part; one more if the kept bit is odd
    return ((bits + half_ulp) & -0x10000).view(torch.float32)  # clear the low 16 bits
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03_pretraining import check_round_to_bfloat16

check_round_to_bfloat16(round_to_bfloat16)

# %% [markdown]
# **Automatic mixed precision** keeps the weights in float32 and, inside `torch.autocast`, runs
# each operation in the precision that suits it: matrix products in 16 bits (they are most of the
# work and tolerate rounding), and sums over many numbers, softmax and the loss in float32 (they do
# not). The gradients flow back into the float32 weights, so the small updates of late training
# are not rounded away. Inside autocast on the CPU:

# %% tags=["nbval-check-output"]
layer = torch.nn.Linear(16, 16)
inputs = torch.randn(4, 16)
with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
    out = layer(inputs)
    loss = F.cross_entropy(out, torch.zeros(4, dtype=torch.long))
print("weights:", layer.weight.dtype, "| Linear output:", out.dtype, "| loss:", loss.dtype)
loss.backward()
print("gradient of the weights:", layer.weight.grad.dtype)

# %% [markdown]
# The loss of a whole GPT barely moves when its forward pass runs in bfloat16:

# %% tags=["nbval-check-output"]
torch.manual_seed(0)
model = GPT(cfg).eval()
x, y = get_batch(val_ids, 16, cfg.block_size, torch.Generator().manual_seed(0), device="cpu")
with torch.no_grad():
    loss_fp32 = model(x, y)[1].item()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss_bf16 = model(x, y)[1].item()
print("fp32 and bf16-autocast losses agree within 0.05:", abs(loss_fp32 - loss_bf16) < 0.05)
assert abs(loss_fp32 - loss_bf16) < 0.05

# %% [markdown]
# float16's narrow range needs one more trick: the loss is multiplied by a large factor before the
# backward pass so that small gradients do not round to zero, and the gradients are divided by it
# before the update (a `GradScaler`). bfloat16 needs no scaling. `TrainConfig.amp="auto"` picks for
# the device: bfloat16 on GPUs that support it, float16 with a scaler on older GPUs, and plain
# float32 on the CPU, where 16-bit arithmetic is often not faster. (`amp="bf16"` on the CPU is
# allowed, for demonstration.)

# %% tags=["nbval-check-output"]
for device_type, bf16 in [("cuda", True), ("cuda", False), ("cpu", None)]:
    plan = resolve_amp("auto", device_type, bf16_supported=bf16)
    label = device_type + ("" if bf16 is None else f" ({'with' if bf16 else 'without'} bf16)")
    print(f"{label:<22} dtype={str(plan.dtype):<15} loss scaling={plan.use_scaler!s:<5}  {plan.reason}")

# %% [markdown]
# ## 3.7.2 Gradient accumulation
#
# The batch a recipe asks for may not fit in memory: activations grow with batch size (chapter 1).
# The way out is to split it. Because the loss is a **mean** over the batch, the gradient of a batch
# of 32 equals the average of the gradients of four micro-batches of 8. So run the micro-batches
# one after another, let `backward()` *add* their gradients into `.grad` (it accumulates unless
# told otherwise), divide each micro-loss by 4, and step the optimizer once. Memory is that of a
# batch of 8; the update is that of a batch of 32.

# %% tags=["nbval-check-output"]
torch.manual_seed(0)
model = GPT(get_config("tiny", vocab_size=tokenizer.vocab_size, block_size=64))  # no dropout: same function twice
x, y = get_batch(train_ids, 32, 64, torch.Generator().manual_seed(1), device="cpu")

model.zero_grad()
model(x, y)[1].backward()  # one batch of 32
full = {n: p.grad.clone() for n, p in model.named_parameters()}

model.zero_grad()
for micro_x, micro_y in zip(x.chunk(4), y.chunk(4)):  # four micro-batches of 8
    (model(micro_x, micro_y)[1] / 4).backward()  # gradients add up in .grad
worst = max((p.grad - full[n]).abs().max().item() for n, p in model.named_parameters())
print("accumulated 4 x 8 equals one batch of 32, every gradient within 1e-6:", worst < 1e-6)
assert worst < 1e-6

# %% [markdown]
# Dividing by 4 relied on four micro-batches of equal size. When the batch does not split evenly
# (the last micro-batch is smaller), each micro-batch's mean loss must instead be weighted by its
# share of the batch's rows, so that every row counts as much as in the full batch.
#
# ### Exercise 3.7b — gradient accumulation with a smaller last micro-batch
# Write `accumulated_gradients(model, x, y, micro_batch_size)`: run the batch `(x, y)` through
# `model(x, y)` (which returns `(logits, mean loss)`) in micro-batches of at most `micro_batch_size`
# rows, accumulating the gradients, and return `[p.grad for p in model.parameters()]`. The model may
# arrive with gradients left over from an earlier step. The check compares with one backward pass of
# the whole batch on a tiny GPT, for batches that split evenly and batches that do not.

# %% tags=["exercise"]
def accumulated_gradients(model, x, y, micro_batch_size):
    """The gradients of the mean loss over the whole batch, computed micro-batch by micro-batch."""
    ### BEGIN SOLUTION
    model.zero_grad()
    for micro_x, micro_y in zip(x.split(micro_batch_size), y.split(micro_batch_size)):
        share = len(micro_x) / len(x)  # this micro-batch's fraction of the rows
        (model(micro_x, micro_y)[1] * share).backward()
    return [p.grad for p in model.parameters()]
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03_pretraining import check_accumulated_gradients

check_accumulated_gradients(accumulated_gradients)


# %% [markdown]
# The `Trainer` does this with `grad_accum_steps`: the global batch is
# `batch_size x grad_accum_steps x number of processes`. (With dropout the two differ by the random
# masks only; with batch normalisation, which averages over the batch, they would differ — one
# reason transformers use layer normalisation.)
#
# ## 3.7.3 Checkpoint and resume
#
# A long run will be interrupted: a crash, a pre-empted cloud machine, a laptop lid. A checkpoint
# must therefore hold everything the next step depends on, not only the weights: the optimizer's
# running averages, the step count (which sets the learning rate), and the state of every random
# number generator (which windows come next, which units dropout zeroes). The `Trainer` saves all of
# it atomically (a half-written file never replaces a good one), and on Ctrl-C it finishes the
# current step and saves before stopping.
#
# The test: train 40 steps straight; then train the same run but "switch off the machine" after 20
# steps, and resume it in a new `Trainer` from its checkpoint. The model has dropout, so the random
# state matters.

# %%
def make_trainer(out_dir, callbacks=(), resume=False):
    torch.manual_seed(0)
    model = GPT(cfg)
    config = TrainConfig(max_steps=40, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=5, eval_every=20,
                         eval_steps=2, log_every=1, save_every=None, out_dir=str(out_dir), device="cpu",
                         progress=False)  # every step is logged in trainer.history; no progress bar
    return Trainer(model, config, callbacks=callbacks, resume=resume,
                   train_data=lambda step, g: get_batch(train_ids, 8, 64, g, device="cpu"),
                   val_data=lambda step, g: get_batch(val_ids, 8, 64, g, device="cpu"))


class SwitchOffAt(Callback):
    """Stop the run after ``step`` optimizer steps, as if the power had gone."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.step >= self.step:
            trainer.should_stop = True


def quietly(trainer):
    """Train, keeping the one log line per step in trainer.history instead of on the screen."""
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit()
    return trainer


straight = quietly(make_trainer(cache_dir("runs", "ch03-resume-straight")))
first_half = quietly(make_trainer(cache_dir("runs", "ch03-resume-split"), callbacks=[SwitchOffAt(20)]))
print(f"interrupted run stopped at step {first_half.step}; checkpoint {first_half.last_path.name}")
second_half = make_trainer(cache_dir("runs", "ch03-resume-split"), resume=True)
print(f"resumed at step {second_half.step}")
quietly(second_half)
print(f"the resumed run finished at step {second_half.step}")

# %% tags=["nbval-check-output"]
losses_straight = [r["train_loss"] for r in straight.history if "train_loss" in r]
losses_resumed = [r["train_loss"] for r in second_half.history if "train_loss" in r]
same_weights = all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(), second_half.model.state_dict().values()))
print("resumed run logged", len(losses_resumed), "training losses, the straight run", len(losses_straight))
print("every training loss identical:", losses_straight == losses_resumed)
print("final weights identical:", same_weights)
assert losses_straight == losses_resumed and same_weights

# %% [markdown]
# Bit-for-bit the same: resuming is invisible in the result.
#
# ## 3.7.4 `torch.compile`
#
# In eager mode PyTorch runs one operation at a time, writing each intermediate result to memory
# and reading it back for the next. `torch.compile(model)` traces the model once and generates fused
# kernels (for example a whole GELU-and-add in one pass), which on GPUs often speeds training up by
# a third or more. The first steps are slow while it compiles, so it pays off in long runs.
# `TrainConfig(compile=True)` turns it on; checkpoints are unaffected (the Trainer saves the
# uncompiled module's weights). On the CPU it needs a C++ compiler and the gain varies, so the cell
# below only runs when you set `RUN_COMPILE = True`.

# %%
RUN_COMPILE = False  # set to True to try it (the first call compiles, which takes a while)
if RUN_COMPILE:
    torch.manual_seed(0)
    eager = GPT(cfg).train()
    compiled = torch.compile(eager)
    x, y = get_batch(train_ids, 16, 64, torch.Generator().manual_seed(0), device="cpu")
    for name, m in [("eager", eager), ("compiled", compiled)]:
        m(x, y)[1].backward()  # warm-up (and, for the compiled model, compilation)
        t0 = time.perf_counter()
        for _ in range(10):
            m(x, y)[1].backward()
        print(f"{name}: {(time.perf_counter() - t0) / 10 * 1000:.1f} ms per forward + backward")
else:
    print("skipped: set RUN_COMPILE = True to compare eager and compiled speed")

# %% [markdown]
# ## 3.7.5 Distributed data parallel: several processes, one model
#
# With $P$ GPUs (or CPU processes), **data parallelism** gives each process a full copy of the
# model and a different slice of the data. Every step, each process computes the gradient of its
# own micro-batch; then an **all-reduce** averages the gradients across processes, so all of them
# apply the same update and their copies stay identical. The result is training with a global batch
# $P$ times larger in about the time one process needs for its share. PyTorch's
# `DistributedDataParallel` (DDP) does the averaging during the backward pass, overlapping the
# communication with the computation.
#
# `torchrun` (also `python -m torch.distributed.run`) starts the processes and tells each one its
# rank and the world size through environment variables; `course_lib.distributed` reads them and
# the `Trainer` wraps the model in DDP. The script itself is unchanged. Here is a complete
# two-process pretraining run of the course's command line on this machine's CPU (the gloo
# backend), with a tiny configuration so that it takes seconds:

# %%
config_file = Path("../../configs/ch03_ddp.json").resolve()  # notebooks run in their chapter folder
if not config_file.is_file():
    raise FileNotFoundError(f"{config_file} is missing: run this notebook from chapters/03_training/ of the course")
out_dir = cache_dir("runs", "ch03-ddp")
command = [
    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
    "-m", "course_lib", "pretrain", "--config", str(config_file),
    "--set", f"train.out_dir={out_dir}",  # 20 steps in both modes, so CI runs exactly this
]
print(" ".join(command[1:]).replace(str(config_file), "configs/ch03_ddp.json").replace(str(out_dir), "<cache>/runs/ch03-ddp"))
t0 = time.perf_counter()
run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
print(f"exit status {run.returncode} after {time.perf_counter() - t0:.0f} s; the run's log (rank 0 prints):\n")
print(run.stdout[-2500:])
if run.returncode != 0:
    raise RuntimeError(f"the two-process run failed:\n{run.stderr[-3000:]}")

# %% tags=["nbval-check-output"]
ddp_checkpoint = load_checkpoint(out_dir / "last.pt")
print("processes that trained the checkpoint:", ddp_checkpoint["world_size"])
print("optimizer steps:", ddp_checkpoint["step"])
print("random-generator states saved, one per process:", len(ddp_checkpoint["rng"]))
print("largest weight difference between the two processes at the end:", ddp_checkpoint["replica_max_diff"])
assert ddp_checkpoint["world_size"] == 2 and ddp_checkpoint["replica_max_diff"] == 0.0

# %% [markdown]
# Each of the two processes drew its own random windows (its generator is seeded with its rank), so
# every step averaged the gradients of two different micro-batches: a global batch of twice the
# configured `batch_size`. When the Trainer saves, every process compares its weights with process
# 0's (`distributed.max_replica_difference`): after 20 steps they are still identical to the bit.
#
# That the gradients really are *averaged* needs one more look, at a single step.
# `distributed.gradient_averaging_check` computes each process's own gradient with communication
# switched off (DDP's `no_sync`), then the normal synchronised one, and compares. `python -m
# course_lib.distributed` runs it under `torchrun` on a tiny GPT, each process with a batch of its
# own, then takes three ordinary steps and compares the weights:

# %%
check = subprocess.run(
    [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "course_lib.distributed"],
    capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
)
if check.returncode != 0:
    raise RuntimeError(f"the two-process check failed:\n{check.stderr[-3000:]}")
print(check.stdout)
report = {line.split()[0]: float(line.split()[1]) for line in check.stdout.splitlines()[1:] if line.strip()}

# %% tags=["nbval-check-output"]
print("the two processes' own gradients differ:", report["ranks_local_spread"] > 1e-3)
print("after the synchronised backward each holds their mean (within 1e-6):", report["synced_minus_mean"] < 1e-6)
print("and both hold exactly the same gradient:", report["synced_spread"] == 0.0)
print("weights identical after three steps:", report["weights_spread_after_3_steps"] == 0.0)
assert report["ranks_local_spread"] > 1e-3 and report["synced_minus_mean"] < 1e-6
assert report["synced_spread"] == 0.0 and report["weights_spread_after_3_steps"] == 0.0

# %% [markdown]
# Had DDP not averaged, each process would have kept its own gradient: the synchronised gradients
# would differ exactly as much as the local ones do, and the copies of the model would drift apart
# from the first step. The same command with `--nproc_per_node 8` on a machine with eight GPUs,
# or with `--nnodes`, `--node_rank` and `--rdzv_endpoint` across machines, trains the chapter's
# model in exactly the same way (`course_lib.distributed` lists the command lines).
#
# Beyond data parallelism, the largest models also split the model itself: different layers on
# different GPUs (pipeline parallelism), the matrices of one layer across GPUs (tensor
# parallelism), or the optimizer states and weights sharded across processes (ZeRO / FSDP), so that
# a model too big for one GPU's memory can be trained at all.
#
# ## 3.7.6 A small scaling experiment
#
# How does the loss depend on the size of the model and on the compute spent? Kaplan et al. (2020)
# found that, over many orders of magnitude, the loss falls as a **power law**, a straight line on
# log-log axes, in the parameters $N$, the tokens $D$ and the compute $C$. Hoffmann et al. (2022,
# "Chinchilla") then asked how to split a fixed compute budget $C \approx 6ND$ between parameters
# and tokens, trained many model sizes at each of several budgets, and found that both should grow
# together, at about 20 tokens per parameter, so $N_\text{opt} = \sqrt{C / 120}$.
#
# A miniature of that experiment: four GPTs of two blocks, from width 32 to 192, read the same
# token stream with the same batch size and the **same compute budget**: each trains for as many
# steps as the budget pays for at its size (`flops_per_token`, the $6N$ rule plus attention, times
# the tokens), so the small models see more tokens and the large ones fewer. The validation loss
# is measured a dozen times along each run.

# %%
widths = [32, 64, 128, 192]
batch, block = 16, 64


def scaling_gpt(width):
    torch.manual_seed(0)
    return GPT(get_config("tiny", vocab_size=tokenizer.vocab_size, block_size=block, n_layer=2, n_head=4,
                          d_model=width, dropout=0.0))


budget = pick(fast=20, full=300) * batch * block * scaling_gpt(64).flops_per_token()  # width 64's run
scaling = {}
for width in widths:
    model = scaling_gpt(width)
    steps = max(4, round(budget / (batch * block * model.flops_per_token())))
    config = TrainConfig(max_steps=steps, batch_size=batch, lr=3e-3, min_lr=3e-4, warmup_steps=max(1, steps // 20),
                         eval_every=max(1, steps // 12), eval_steps=pick(fast=2, full=8), log_every=steps,
                         save_every=None, out_dir=str(cache_dir("runs", f"ch03-scaling-{width}")), device="cpu",
                         progress=False)
    trainer = quietly(Trainer(model, config,
                              train_data=lambda step, g: get_batch(train_ids, batch, block, g, device="cpu"),
                              val_data=lambda step, g: get_batch(val_ids, batch, block, g, device="cpu")))
    evals = [(r["step"], r["val_loss"]) for r in trainer.history if "val_loss" in r and r["step"] > 0]
    scaling[width] = {
        "params": model.num_parameters(),
        "steps": steps,
        "flops": np.array([s * batch * block * model.flops_per_token() for s, _ in evals], dtype=float),
        "val_loss": np.array([v for _, v in evals]),
    }
print(f"compute budget per model: {budget:.3g} FLOPs")
print(f"{'width':>5} {'parameters':>11} {'steps':>6} {'tokens':>9} {'tokens per parameter':>21} {'final val loss':>15}")
for width, r in scaling.items():
    tokens = r["steps"] * batch * block
    print(f"{width:>5} {r['params']:>11,} {r['steps']:>6} {tokens:>9,} {tokens / r['params']:>21.3g} "
          f"{r['val_loss'][-1]:>15.3f}")

# %% [markdown]
# Left, the final loss of each model against its number of parameters, all at the same compute
# (Chinchilla's "IsoFLOP" view), with the size the Chinchilla rule recommends for this budget.
# Right, every validation curve against the compute spent so far. The lowest loss reached by any
# model at each amount of compute (the **frontier**) is what a well-chosen model size buys; a power
# law is fitted to it with `model_costs.fit_power_law` (a least-squares line through the logarithms).

# %%
params = np.array([r["params"] for r in scaling.values()], dtype=float)
final = np.array([r["val_loss"][-1] for r in scaling.values()])
n_opt = np.sqrt(budget / (6 * model_costs.CHINCHILLA_TOKENS_PER_PARAMETER))
points = sorted((c, v) for r in scaling.values() for c, v in zip(r["flops"], r["val_loss"]))
frontier, best = [], np.inf
for c, v in points:  # keep each point that beats every point of less compute
    if v < best:
        frontier.append((c, v))
        best = v
frontier = np.array([(c, v) for c, v in frontier if c >= budget / 20])  # skip the first moments of training
a, b = model_costs.fit_power_law(frontier[:, 0], frontier[:, 1])

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
ax1.semilogx(params, final, "o-", label="final validation loss, same compute")
ax1.axvline(n_opt, color="grey", ls=":", label=f"Chinchilla: sqrt(C/120) = {n_opt:,.0f}")
ax1.set(xlabel="parameters N", ylabel="validation loss (nats/token)", title=f"Same compute: {budget:.2g} FLOPs")
ax1.legend(fontsize=8)
for width, r in scaling.items():
    ax2.loglog(r["flops"], r["val_loss"], "o-", ms=3, label=f"width {width} ({r['params']:,} parameters)")
grid = np.logspace(np.log10(frontier[0, 0]), np.log10(frontier[-1, 0]), 50)
ax2.loglog(grid, a * grid**b, "k--", label=f"frontier fit: L = {a:.2f} C^{b:.3f}")
ax2.set(xlabel="training compute spent (FLOPs)", ylabel="validation loss (nats/token)", title="Loss against compute")
for axis_format in (ax2.yaxis.set_major_formatter, ax2.yaxis.set_minor_formatter):
    axis_format(plt.FormatStrFormatter("%.1f"))  # plain numbers on the log-scaled loss axis
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()
best_width = widths[int(np.argmin(final))]
print(f"lowest final loss at this budget: width {best_width} ({scaling[best_width]['params']:,} parameters)")
print(f"Chinchilla's compute-optimal size for this budget: {n_opt:,.0f} parameters")
print(f"power law fitted to the frontier: loss = {a:.2f} x C^{b:.3f} over {len(frontier)} points "
      f"(Kaplan et al. report an exponent of about -0.05 for compute, over many orders of magnitude)")


# %% [markdown] tags=["answer", "points=2"]
# ### Question 3.7d — which size wins at a fixed budget
# All four models above spent the same 2.75e+11 FLOPs. Which width reached the lowest loss, how does it
# compare with Chinchilla's rule, and why did the largest model do worst? Is the winner certainly the best
# size for this budget?
#
# ### BEGIN SOLUTION
# Width 32 (43,904 parameters) reached the lowest final validation loss, 4.138, after 916,480 tokens, 20.9
# per parameter; Chinchilla's rule of 20 tokens per parameter puts the optimum at 47,880 parameters, close
# to it. A larger model costs more FLOPs per token, so at the same budget it takes fewer steps: width 192
# (1,000,704 parameters) trained for 43 steps on 0.044 tokens per parameter and stopped at 5.302, far from
# trained. The winner is the smallest size tried, at the edge of the grid, so the table does not show the
# loss rising again below it: a width-16 or width-24 model is needed to see the bottom of the curve. (The
# frontier's fitted exponent, -0.110 against Kaplan's -0.05, comes from a narrow range at a tiny scale and
# should not be extrapolated.)
#
# Rubric: 1 point for width 32 at 4.138 with 20.9 tokens per parameter, close to Chinchilla's 47,880
# parameters; 1 point for why the large models lose (fewer steps: 43 steps, 0.044 tokens per parameter for
# width 192) and for noting that the winner sits at the edge of the grid.
# ### END SOLUTION

# %% [markdown]
# ### Exercise 3.7c — fitting a power law
# A power law $y = a x^b$ is a straight line on log-log axes: $\log y = \log a + b \log x$. Write
# `power_law_fit(x, y)` returning `(a, b)` from the least-squares line through the points
# $(\log x_i, \log y_i)$, using the slope and intercept formulas of simple linear regression with
# NumPy array operations (no `np.polyfit` or `np.linalg.lstsq`). The check compares with
# `model_costs.fit_power_law`, used for the frontier above, on exact and noisy laws.

# %% tags=["exercise"]
def power_law_fit(x, y):
    """(a, b) of the least-squares fit of y = a * x**b on log-log axes."""
    ### BEGIN SOLUTION
    log_x, log_y = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    dx = log_x - log_x.mean()
    b = float((dx * (log_y - log_y.mean())).sum() / (dx**2).sum())
    return float(np.exp(log_y.mean() - b * log_x.mean())), b
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03_pretraining import check_power_law_fit

check_power_law_fit(power_law_fit)

# %% [markdown]
# Read these figures with their limits. At this budget the smallest of the four models ends lowest,
# and it is also the one closest to the Chinchilla size printed above, having seen about 20 tokens
# per parameter (the table); the larger models stopped after a fraction of a token per parameter,
# still far from what their size could reach. But the loss is still falling towards the smallest
# size, so these four points do not bracket the best size: a model smaller still might do as well
# or better, and the agreement with the rule may be partly luck. The frontier on the right is, at
# almost every budget here, the curve of the smallest model, so its fitted exponent describes one
# model's training curve more than a law across sizes. Four models, one seed each, trained for
# about a minute on a hundred thousand tokens of one news source are a sketch of the experiment,
# not a measurement: the published laws come from hundreds of runs spanning many orders of
# magnitude. What the miniature does show is the shape of the argument: at a fixed compute budget,
# a larger model is not automatically better, because it pays for its size with fewer tokens.
#
# ## Summary
#
# - **Mixed precision** runs matrix products in bfloat16 or float16 while weights, sums and losses
#   stay in float32; float16 needs loss scaling. `amp="auto"` chooses per device.
# - **Gradient accumulation** adds the gradients of micro-batches before one step; with the loss a
#   mean, four micro-batches of 8 give the gradient of one batch of 32.
# - **Checkpoints** hold weights, optimizer state, step and random state; a resumed run continued
#   bit-for-bit like the uninterrupted one.
# - **`torch.compile`** fuses operations into faster kernels, paying a compile time up front.
# - **DDP** trains one model with several processes, averaging gradients every step; `torchrun`
#   starts the same script on each. The check showed the two processes' gradients averaged and
#   their weights identical to the bit.
# - **Scaling**: at a fixed compute budget a larger model is not automatically better, because it
#   sees fewer tokens; Chinchilla's rule puts the best size at $\sqrt{C/120}$ parameters. Of four
#   tiny models trained here at one budget, the smallest, the one closest to that size, ended
#   lowest; a power law fitted to the lowest loss against compute is printed in section 3.7.6.
#
# Chapter 4 takes the pretrained GPT of notebook 3.6 and fine-tunes it for tasks.
