"""Tiny models, data and a command line shared by the Trainer tests and the processes they launch.

The subprocess tests (resume in a new process, Ctrl-C, torchrun with two ranks) run this file as a
script, so the model and data here must be importable without pytest.

    python tests/trainer_helpers.py resume  OUT_DIR TOTAL_STEPS DATA_KIND RESULT.pt
    python tests/trainer_helpers.py sigint  OUT_DIR
    python tests/trainer_helpers.py signal  OUT_DIR          (exits as the CLI does: 130 / 143)
    python tests/trainer_helpers.py killsave OUT_DIR         (the 2nd save hangs in fsync, to be SIGKILLed)
    python tests/trainer_helpers.py ddp     OUT_DIR GLOBAL_BATCH STEPS ACCUM RESULT.pt
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from course_lib.trainer import Callback, TrainConfig, Trainer

VOCAB, BLOCK, BATCH = 16, 8, 4


class TinyLM(nn.Module):
    """A GPT-shaped toy: token + position embeddings, a norm, one MLP block with dropout, a tied head."""

    def __init__(self, vocab: int = VOCAB, block: int = BLOCK, d: int = 16, dropout: float = 0.1):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block, d)
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(2 * d, d)
        self.drop = nn.Dropout(dropout)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # weight tying, as in GPT-2

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, d)
        x = x + self.drop(self.proj(F.gelu(self.fc(self.ln(x)))))  # (B, T, d)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))  # (B*T, vocab) vs (B*T,)
        return logits, loss


class TinyRegressor(nn.Module):
    """A two-layer MLP that returns its MSE loss: smooth, no dropout, so gradients are easy to compare."""

    def __init__(self, d_in: int = 4, d_hidden: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh(), nn.Linear(d_hidden, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.net(x).squeeze(-1), y)


def make_lm(seed: int = 0) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM()


def token_stream(n: int = 512, seed: int = 0) -> torch.Tensor:
    """A learnable token stream: mostly counting upwards mod VOCAB, with some noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(n) % VOCAB
    noise = torch.randint(0, VOCAB, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.2, noise, base)


def window_batches(stream: torch.Tensor, batch: int = BATCH, block: int = BLOCK):
    """``(step, generator) -> (x, y)``: random windows, nanoGPT's get_batch in four lines."""

    def fn(step: int, generator: torch.Generator):
        ix = torch.randint(len(stream) - block - 1, (batch,), generator=generator)
        x = torch.stack([stream[i : i + block] for i in ix])  # (B, T)
        y = torch.stack([stream[i + 1 : i + 1 + block] for i in ix])  # (B, T)
        return x, y

    return fn


def window_dataset(stream: torch.Tensor, block: int = BLOCK) -> TensorDataset:
    """Non-overlapping windows of the stream as a map-style Dataset of (x, y) pairs."""
    n = (len(stream) - 1) // block
    x = stream[: n * block].view(n, block)  # (n, T)
    y = stream[1 : n * block + 1].view(n, block)  # (n, T)
    return TensorDataset(x, y)


def regression_dataset(n: int = 64, d_in: int = 4, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


def lm_config(out_dir: str | Path, **overrides) -> TrainConfig:
    base = dict(
        max_steps=12, batch_size=BATCH, lr=3e-2, min_lr=3e-3, warmup_steps=3, eval_every=4, eval_steps=2,
        log_every=2, save_every=None, device="cpu", progress=False, out_dir=str(out_dir), seed=7,
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


class StopAt(Callback):
    """Ends the run after ``n`` optimizer steps, as if the machine had been switched off there."""

    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step >= self.n:
            trainer.should_stop = True


def lm_trainer(out_dir, data_kind: str, callbacks=(), resume=False, **overrides) -> Trainer:
    stream = token_stream()
    if data_kind == "callable":
        train, val = window_batches(stream[:400]), window_batches(stream[400:])
    else:
        train, val = window_dataset(stream[:400]), window_dataset(stream[400:])
    return Trainer(make_lm(), lm_config(out_dir, **overrides), train, val, callbacks=callbacks, resume=resume)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Announce(Callback):
    """Prints a line once training is under way, so a parent process knows when to send Ctrl-C."""

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step == 3:
            print("TRAINING", flush=True)


def main(argv: list[str]) -> None:
    mode, out_dir = argv[0], argv[1]
    if mode == "resume":
        total, kind, result = int(argv[2]), argv[3], argv[4]
        trainer = lm_trainer(out_dir, kind, resume=True, max_steps=total)
        trainer.fit()
        torch.save({"params": params_of(trainer.model), "history": trainer.history}, result)
    elif mode == "sigint":
        trainer = lm_trainer(out_dir, "callable", callbacks=[Announce()], max_steps=10**7, eval_every=10**6)
        trainer.fit()
    elif mode == "signal":
        trainer = lm_trainer(out_dir, "callable", callbacks=[Announce()], max_steps=10**7, eval_every=10**6)
        try:
            trainer.fit()
        except KeyboardInterrupt as e:  # what course_lib.cli.main does
            sys.exit(getattr(e, "exit_code", 130))
    elif mode == "killsave":
        import os

        real_fsync, calls = os.fsync, []

        def slow_fsync(fd: int) -> None:  # the second checkpoint write stalls with its bytes half on disk
            calls.append(fd)
            if len(calls) == 2:
                print("SAVING", flush=True)
                time.sleep(120)
            real_fsync(fd)

        os.fsync = slow_fsync
        trainer = lm_trainer(out_dir, "callable", max_steps=10**7, eval_every=10**6, save_every=2)
        trainer.fit()
    elif mode == "ddp":
        global_batch, steps, accum, result = int(argv[2]), int(argv[3]), int(argv[4]), argv[5]
        trainer = ddp_trainer(out_dir, global_batch, steps, accum)
        trainer.fit()
        if trainer.dist.is_main:
            torch.save(params_of(trainer.model), result)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def ddp_trainer(out_dir, global_batch: int, steps: int, accum: int, world_size: int | None = None) -> Trainer:
    """The same global batch whatever the number of processes: per-process batch = G / (world * accum)."""
    import os

    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    torch.manual_seed(0)
    model = TinyRegressor()
    cfg = TrainConfig(
        max_steps=steps, batch_size=global_batch // (world * accum), grad_accum_steps=accum, lr=1e-2,
        min_lr=1e-3, warmup_steps=2, weight_decay=0.1, grad_clip=None, device="cpu", progress=False,
        out_dir=str(out_dir), log_every=1, eval_every=10**6, seed=3,
    )  # fmt: skip
    return Trainer(model, cfg, regression_dataset(), regression_dataset(n=16, seed=1))


if __name__ == "__main__":
    main(sys.argv[1:])
