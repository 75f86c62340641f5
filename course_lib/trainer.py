"""The Trainer: one training loop for every chapter, from a CPU notebook to torchrun on many GPUs.

Read top to bottom, the file follows one optimizer step:

1. :class:`TrainConfig` -- every knob, with a comment.
2. :func:`lr_at` -- linear warmup, then cosine decay to ``min_lr`` (a pure function you can plot).
3. :func:`param_groups` -- AdamW weight decay on matrices only (no decay on norms, biases, embeddings).
4. :func:`resolve_amp` -- which autocast dtype and whether a GradScaler is needed, for this device.
5. Batch sources -- a ``(step, generator) -> batch`` callable (random LM windows) or a Dataset/DataLoader,
   sharded per process under DDP with a DistributedSampler, and resumable mid-epoch.
6. :class:`Trainer` -- the loop: micro-batches with gradient accumulation (``no_sync`` on all but the
   last under DDP), clipping, the optimizer step, logging, evaluation, early stopping, checkpoints,
   a stop on NaN/inf losses or weights, and a checkpoint on Ctrl-C or SIGTERM.

Before step 1 the run checks that ``out_dir`` is writable with room for a checkpoint and takes a lock
on it (a second run on the same folder is refused); ``last.pt`` keeps ``keep_last - 1`` older copies.

Distributed training needs no code change: start the same script with torchrun (see
:mod:`course_lib.distributed` for the one-machine and multi-node command lines).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler
from tqdm.auto import tqdm

from course_lib.checkpoint import (
    CheckpointError,
    RunDirLock,
    capture_rng_state,
    check_out_dir,
    kept_path,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from course_lib.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    destroy_distributed,
    init_distributed,
    launched_by_torchrun,
    max_replica_difference,
)
from course_lib.env import cache_dir, display_path, get_device, move_to_device, seed_everything

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
CHECKPOINT_FORMAT = "course_lib.trainer/1"


# ----------------------------------------------------------------------------------------------------
# 1. Configuration


@dataclass
class TrainConfig:
    """Everything the Trainer needs to know. Build it directly or with :meth:`from_dict` (config files)."""

    max_steps: int = 1000  # optimizer steps in total; a resumed run continues up to this number
    batch_size: int = 16  # samples per micro-batch per process, Dataset input (a batch callable sets its own)
    grad_accum_steps: int = 1  # micro-batches per optimizer step; global batch = batch * accum * processes
    lr: float = 3e-4  # peak learning rate, reached at the end of warmup
    min_lr: float = 3e-5  # the cosine decay ends here at max_steps
    warmup_steps: int = 100  # steps of linear warmup from lr/(warmup+1) up to lr
    weight_decay: float = 0.1  # AdamW decoupled decay on weight matrices (never norms, biases, embeddings)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moment coefficients (beta1, beta2)
    grad_clip: float | None = 1.0  # clip the global gradient norm to this (>= 0); None or 0 turns it off
    eval_every: int = 100  # evaluate on val_data every this many steps (also at step 0 and at the end)
    eval_steps: int | None = 20  # batches per evaluation; None = the whole validation Dataset
    early_stopping_patience: int | None = None  # stop after this many evals without improvement (the best
    # weights are put back at the end, stopped early or not); None = off
    min_delta: float = 0.0  # an evaluation counts as an improvement when val loss drops by more than this
    amp: str = "auto"  # "auto" (CUDA: bf16, or fp16 + GradScaler; CPU: off), "bf16", "fp16" or "off"
    compile: bool = False  # torch.compile the model (pays off on GPUs in long runs; first steps are slow)
    device: str | None = None  # "cpu", "cuda", "cuda:1", "mps"; None = course_lib.env.get_device()
    seed: int = 1337  # seeds data order, batch sampling, dropout (per-process streams add the rank)
    out_dir: str | None = None  # checkpoint directory; None = <course cache>/runs/trainer
    save_every: int | None = 500  # write last.pt every this many steps and at the end; None = at the end only
    keep_last: int = 2  # last.pt plus this many - 1 older copies (last.1.pt, ...): a bad save loses nothing
    log_every: int = 10  # add a history record (train loss, lr, throughput) every this many steps
    progress: bool = True  # tqdm progress bar on rank 0; False prints one plain line per log step instead

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)  # a JSON/TOML list becomes the tuple AdamW expects
        if isinstance(self.out_dir, os.PathLike):
            self.out_dir = os.fspath(self.out_dir)
        hints = get_type_hints(type(self))
        for f in fields(self):  # types first: "no" is not False, -1.5 steps is not a number of steps
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), hints[f.name]))
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_every", "log_every", "keep_last"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("warmup_steps",):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("eval_steps", "early_stopping_patience", "save_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"TrainConfig.{name} must be a positive integer or None, got {value!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}; typical values are 1e-4 .. 1e-3")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig.min_lr must lie in [0, lr={self.lr}], got {self.min_lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"TrainConfig.amp must be one of {AMP_CHOICES}, got {self.amp!r}")
        for name in ("weight_decay", "min_delta", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < math.inf:
                raise ValueError(
                    f"TrainConfig.{name} must be a finite number >= 0, got {value}"
                    + ("; a negative clip would turn the gradient round (use 1.0, or 0 for off)"
                       if name == "grad_clip" else "")
                )  # fmt: skip
        if self.out_dir is not None and not self.out_dir.strip():
            raise ValueError("TrainConfig.out_dir is empty; give a folder, or None for the course cache")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain dict (a config file section); an unknown key raises, listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise ValueError(f"unknown TrainConfig key(s) {unknown}; valid keys are: {', '.join(valid)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON- and checkpoint-safe) that :meth:`from_dict` turns back into this config."""
        return asdict(self)


def _typed(name: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (ints stay ints, numbers become floats), or a
    ValueError naming the field: a config file's ``"compile": "no"`` must not switch compilation on."""
    options = get_args(tp) if get_origin(tp) is Union or type(tp).__name__ == "UnionType" else (tp,)
    if value is None and type(None) in options:
        return None
    for option in (o for o in options if o is not type(None)):
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if option is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if get_origin(option) is tuple and isinstance(value, tuple) and len(value) == len(get_args(option)):
            return tuple(_typed(name, v, a) for v, a in zip(value, get_args(option)))
    kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    wanted = [kinds.get(o, f"{len(get_args(o))} numbers") for o in options if o is not type(None)]
    wanted += ["None"] if type(None) in options else []
    got = f"{value!r} ({type(value).__name__})"
    raise ValueError(f"TrainConfig.{name} must be {' or '.join(wanted)}, got {got}")


# ----------------------------------------------------------------------------------------------------
# 2. Learning-rate schedule


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine decay to min_lr.

    warmup   (step < W):      lr * (step + 1) / (W + 1)
    cosine   (W <= step <= S): min_lr + (lr - min_lr) * (1 + cos(pi * (step - W) / (S - W))) / 2
    after    (step > S):      min_lr
    with W = warmup_steps and S = max_steps.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if step > cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)  # 0 -> 1
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------------
# 3. AdamW parameter groups


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decay for weight matrices, none for norms, biases, embeddings and other 1-D params.

    Decay pulls weights towards zero; for a norm's gain, a bias or an embedding row that is not a
    regularisation but a distortion. A parameter shared by two modules (tied embedding / LM head)
    appears once, in the no-decay group because it is an embedding. Frozen parameters are left out.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding) or "norm" in type(module).__name__.lower():
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():  # named_parameters already skips repeats of a tied parameter
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in no_decay_ids or p.ndim < 2 or name.endswith("bias"):
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    if not decay and not no_decay:
        raise ValueError(
            "the model has no trainable parameters (all requires_grad=False); unfreeze some first"
        )
    return [
        {"params": decay, "weight_decay": weight_decay, "param_names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "param_names": no_decay_names},
    ]


# ----------------------------------------------------------------------------------------------------
# 4. Mixed precision and fast-math switches


@dataclass(frozen=True)
class AmpPlan:
    """What autocast does on this device: the low-precision dtype (None = fp32), whether to scale losses."""

    dtype: torch.dtype | None
    use_scaler: bool
    reason: str


def resolve_amp(amp: str, device: torch.device | str, bf16_supported: bool | None = None) -> AmpPlan:
    """Turn TrainConfig.amp into a plan for ``device``; ``bf16_supported`` overrides the CUDA query."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    kind = torch.device(device).type
    if amp == "off":
        return AmpPlan(None, False, "amp='off': full fp32")
    if kind == "cuda":
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        if amp == "bf16" and not bf16_supported:
            raise ValueError("this GPU has no bf16 support; use amp='fp16' (with loss scaling) or amp='auto'")
        if amp == "bf16" or (amp == "auto" and bf16_supported):
            return AmpPlan(torch.bfloat16, False, "bf16 autocast: fp32 range, no loss scaling needed")
        return AmpPlan(torch.float16, True, "fp16 autocast with a GradScaler (this GPU lacks bf16)")
    if kind == "cpu":
        if amp == "auto":
            return AmpPlan(None, False, "amp='auto' on the CPU: full fp32")
        if amp == "bf16":
            return AmpPlan(torch.bfloat16, False, "bf16 autocast on the CPU")
        raise ValueError("amp='fp16' is not supported on the CPU; use amp='bf16' or amp='off'")
    if amp == "auto":
        return AmpPlan(None, False, f"amp='auto' on {kind}: full fp32")
    raise ValueError(f"amp={amp!r} is only supported on CUDA and the CPU; use amp='off' on {kind}")


def enable_tf32(device: torch.device) -> bool:
    """Let fp32 matmuls use TF32 tensor cores on Ampere or newer GPUs (much faster, ~1e-3 relative error)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    return True


# ----------------------------------------------------------------------------------------------------
# 5. Where batches come from


class CallableBatches:
    """Batches from a function ``(step, generator) -> batch``, e.g. random windows of a token stream.

    Each process owns a generator seeded with ``seed + rank``, so ranks draw different windows (that is
    the sharding) and the generator's state in the checkpoint makes a resumed run draw what the
    uninterrupted run would have drawn.
    """

    def __init__(self, fn: Callable[[int, torch.Generator], Any], seed: int):
        self.fn = fn
        self.generator = torch.Generator().manual_seed(seed)

    def next(self, step: int) -> Any:
        return self.fn(step, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class _SkipSampler(torch.utils.data.Sampler):
    """Drops the first ``skip`` indices of a sampler: resume mid-epoch without loading the skipped samples."""

    def __init__(self, base: DistributedSampler):
        self.base, self.skip = base, 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return len(self.base) - self.skip


class DatasetBatches:
    """Batches from a map-style Dataset, sharded across processes by a DistributedSampler.

    The sampler's order is a pure function of (seed, epoch), so the (epoch, position) pair in a
    checkpoint is enough to continue mid-epoch. On one process the same sampler runs with one replica,
    which is why one process with batch G and two with batch G/2 see the same samples per step.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        dist: DistInfo,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        collate_fn: Callable | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.batch_size = batch_size
        self.sampler = DistributedSampler(
            dataset,
            num_replicas=dist.world_size,
            rank=dist.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self._skip = _SkipSampler(self.sampler)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._skip,
            collate_fn=collate_fn,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin_memory,
            # each iter() draws a worker base seed; from its own generator it leaves the global RNG
            # (dropout) alone, so a resumed run that restarts the iterator draws the same dropout masks
            generator=torch.Generator().manual_seed(seed),
        )
        if drop_last and len(self.sampler) < batch_size:
            raise ValueError(
                f"the dataset gives each of {dist.world_size} process(es) {len(self.sampler)} samples, "
                f"fewer than one batch of {batch_size}; lower TrainConfig.batch_size or use more data"
            )
        self.epoch, self.position = 0, 0  # position = batches already taken in this epoch
        self._it: Iterator | None = None

    def _start_epoch(self) -> None:
        self.sampler.set_epoch(self.epoch)
        self._skip.skip = self.position * self.batch_size
        self._it = iter(self.loader)

    def next(self, step: int) -> Any:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._start_epoch()
            batch = next(self._it)
        self.position += 1
        return batch

    def iterate(self, max_batches: int | None) -> Iterator[Any]:
        """One pass from the start (evaluation), at most ``max_batches`` batches."""
        self.sampler.set_epoch(0)
        self._skip.skip = 0
        return itertools.islice(iter(self.loader), max_batches)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.position, self._it = int(state["epoch"]), int(state["position"]), None


def make_batches(
    data: Any, cfg: TrainConfig, dist: DistInfo, *, train: bool
) -> CallableBatches | DatasetBatches:
    """Wrap train_data or val_data (callable, Dataset or DataLoader) into a batch source for this rank."""
    seed = cfg.seed + (0 if train else 10_000)  # a DistributedSampler needs the same seed on every rank
    if isinstance(data, DataLoader):
        if data.batch_size is None:
            raise ValueError(
                "a DataLoader with a custom batch_sampler cannot be sharded or resumed; pass its Dataset "
                "and set TrainConfig.batch_size instead"
            )
        data_set = data.dataset
        if isinstance(data_set, IterableDataset):
            raise TypeError(_ITERABLE_HINT)
        return DatasetBatches(
            data_set,
            data.batch_size,
            dist,
            shuffle=train and isinstance(data.sampler, RandomSampler),
            seed=seed,
            drop_last=train,
            collate_fn=data.collate_fn,
            num_workers=data.num_workers,
            pin_memory=data.pin_memory,
        )
    if isinstance(data, IterableDataset):
        raise TypeError(_ITERABLE_HINT)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return DatasetBatches(data, cfg.batch_size, dist, shuffle=train, seed=seed, drop_last=train)
    if callable(data):
        return CallableBatches(data, seed + dist.rank)  # each rank draws its own random windows
    raise TypeError(
        f"training data of type {type(data).__name__} is not supported; pass a callable "
        "(step, generator) -> batch, a map-style Dataset or a DataLoader"
    )


_ITERABLE_HINT = (
    "an IterableDataset cannot be sharded across processes or resumed mid-epoch; wrap it in a callable "
    "(step, generator) -> batch, or use a map-style Dataset"
)


def count_items(batch: Any) -> tuple[int, str]:
    """How much a batch holds: (tokens, "tokens") for integer token tensors, else (samples, "samples")."""
    first = batch
    while not isinstance(first, torch.Tensor):
        if isinstance(first, Mapping) and first:
            first = first["input_ids"] if "input_ids" in first else next(iter(first.values()))
        elif isinstance(first, (tuple, list)) and first:
            first = first[0]
        else:
            return 0, "samples"
    if not first.is_floating_point() and first.dtype != torch.bool and first.ndim >= 2:
        return first.numel(), "tokens"
    return (first.shape[0] if first.ndim else 1), "samples"


def default_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Call the model on the batch and find the loss in what it returns.

    ``(x, y)`` -> ``model(x, y)``; a dict -> ``model(**batch)``. The loss is the output itself (a scalar),
    its second element (``(logits, loss)``, the course GPT) or its ``.loss``/``["loss"]`` (transformers).
    """
    if isinstance(batch, Mapping):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    if isinstance(out, torch.Tensor) and out.ndim == 0:
        return out
    if (
        isinstance(out, (tuple, list))
        and len(out) >= 2
        and isinstance(out[1], torch.Tensor)
        and out[1].ndim == 0
    ):
        return out[1]
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.ndim == 0:
        return loss
    raise TypeError(
        f"cannot find a scalar loss in the model's output ({type(out).__name__}); make the model return "
        "(logits, loss) when given targets, or pass loss_fn=lambda model, batch: ... to the Trainer"
    )


# ----------------------------------------------------------------------------------------------------
# 6. The Trainer


class NonFiniteLossError(RuntimeError):
    """The loss or the weights became NaN or infinite; training stopped before they reached a checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (preemption, ``docker stop``) ended :meth:`Trainer.fit` after it saved.

    ``exit_code`` is what a shell reports for that signal (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class Callback:
    """Hooks into the loop; override what you need. Set ``trainer.should_stop = True`` to end a run early."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Train ``model`` on ``train_data`` according to ``config``; the same code on CPU, one GPU or torchrun.

    model       returns a loss (scalar, ``(logits, loss)`` or ``.loss``) when called on a batch, or
    loss_fn     ``loss_fn(model, batch) -> scalar`` computes it instead.
    train_data  ``(step, generator) -> batch``, a map-style Dataset or a DataLoader.
    val_data    the same kinds; evaluated every ``eval_every`` steps (enables early stopping).
    resume      True continues from ``out_dir/last.pt``; a path continues from that file.
    meta        extra picklable facts stored in every checkpoint (the CLI stores the model config);
                entries named ``*_fingerprint`` (e.g. the tokenizer's) must match on resume.

    After :meth:`fit`, ``history`` holds one dict per log/eval step (step, train_loss, val_loss, lr,
    tokens_per_s or samples_per_s, elapsed_s); ``history_columns()`` gives it as lists for plotting.

    Under torchrun (see :mod:`course_lib.distributed`) the same call trains data-parallel: the model
    is wrapped in DistributedDataParallel, each rank draws its own batches (a DistributedSampler shard
    or its own generator), logged losses are averaged over ranks, and only rank 0 writes checkpoints,
    log lines and the progress bar. ``batch_size`` is per process, so the global batch is
    ``batch_size * grad_accum_steps * WORLD_SIZE``.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | Mapping[str, Any] | None = None,
        train_data: Any = None,
        val_data: Any = None,
        loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        resume: bool | str | Path = False,
        meta: Mapping[str, Any] | None = None,
    ):
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config or {})
        if train_data is None:
            raise ValueError(
                "Trainer needs train_data: a callable (step, generator) -> batch, a Dataset or a DataLoader"
            )
        self.config = cfg
        self.loss_fn = loss_fn or default_loss
        self.callbacks = list(callbacks)
        self.meta = dict(meta or {})
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else cache_dir("runs", "trainer")

        device = get_device(cfg.device)
        self.dist = init_distributed(device.type)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)  # one GPU per process
        self.device = device
        self.tf32 = enable_tf32(device)
        self.amp = resolve_amp(cfg.amp, device)
        seed_everything(cfg.seed + self.dist.rank)

        self.model = model.to(device)  # the plain module: what gets saved and what callers keep using
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, **_fused_if_cuda(device)
        )
        self.scaler = _grad_scaler(device) if self.amp.use_scaler else None
        self.train_batches = make_batches(train_data, cfg, self.dist, train=True)
        self.val_batches = (
            make_batches(val_data, cfg, self.dist, train=False) if val_data is not None else None
        )

        self.step = 0  # optimizer steps completed
        self.history: list[dict[str, Any]] = []
        self.should_stop = False
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0  # evaluations in a row without improvement
        self._best_state: dict[str, torch.Tensor] | None = None
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet checked for NaN
        self._interval_losses: list[float] = []
        self._replica_max_diff = 0.0  # set by save(): the largest weight difference between DDP ranks
        self._interval_items, self._item_unit = 0, "samples"
        self._interrupted: int | None = None  # the signal that asked the loop to stop, if one did
        self._lock = RunDirLock(self.out_dir)
        self._saved_step: int | None = None  # the step of the weights in last.pt, when this process knows it
        self._forward_model: nn.Module = self.model
        if resume:
            self.resume(None if resume is True else resume)

    # ------------------------------------------------------------------ checkpoints

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    def state_dict(self, rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, scaler, step, config, history, RNG."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": self.config.to_dict(),
            "history": list(self.history),
            "rng": rng if rng is not None else [self._rng_state()],
            "early_stopping": {
                "best_val": self.best_val,
                "best_step": self.best_step,
                "bad_evals": self.bad_evals,
            },
            "world_size": self.dist.world_size,
            "replica_max_diff": self._replica_max_diff,
            "meta": self.meta,
        }

    def _rng_state(self) -> dict[str, Any]:
        state = capture_rng_state()
        state["data"] = self.train_batches.state_dict()
        return state

    def save(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint (rank 0 writes; every rank must call this because RNG states are gathered)."""
        path = Path(path) if path is not None else self.last_path
        self._check_pending()  # never write NaN weights over a good checkpoint:
        self._check_weights()  # neither after a NaN loss nor after an update that overflowed
        rng = all_gather_objects(self._rng_state(), self.dist)
        # data parallelism must keep one model: the largest weight difference between ranks (0.0 alone)
        self._replica_max_diff = max_replica_difference(unwrap_model(self.model), self.dist)
        if self.dist.is_main:
            self._write(self.state_dict(rng), path)
        return path

    def _write(self, state: Mapping[str, Any], path: Path) -> None:
        keep = self.config.keep_last if path == self.last_path else 1
        save_checkpoint(state, path, keep=keep)
        if path == self.last_path:
            self._saved_step = self.step

    def _check_weights(self) -> None:
        """Stop (NonFiniteLossError) when a parameter holds NaN/inf: one host-device sync per save."""
        params = [p for p in self.model.parameters() if p.is_floating_point()]
        if not params or bool(torch.stack([p.detach().isfinite().all() for p in params]).all()):
            return
        bad = [n for n, p in unwrap_model(self.model).named_parameters() if not p.isfinite().all()]
        self._stop_non_finite(self.step - 1, math.nan, f"the weights {bad[:4]} hold NaN/inf after the update")

    def _checkpoint_bytes(self) -> int:
        """About how many bytes one checkpoint takes: weights, AdamW's two moments, some slack."""
        n = sum(t.numel() * t.element_size() for t in unwrap_model(self.model).state_dict().values())
        return 3 * n + 2**20

    def resume(self, path: str | Path | None = None) -> Trainer:
        """Continue from a checkpoint (default out_dir/last.pt): weights, optimizer, step, history, RNG."""
        path = Path(path) if path is not None else self.last_path
        ckpt = load_checkpoint(path)
        saved_meta = ckpt.get("meta") or {}
        for key in (k for k in self.meta if k.endswith("_fingerprint") and k in saved_meta):
            if self.meta[key] != saved_meta[key]:
                raise CheckpointError(
                    f"{path} was trained with another {key[: -len('_fingerprint')]} ({key} "
                    f"{saved_meta[key]} vs {self.meta[key]} now); resuming would mix two vocabularies. "
                    "Resume with the run's original settings, or train afresh in a new out_dir"
                )
        load_model_state(unwrap_model(self.model), ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self._saved_step = int(ckpt["step"]) if path == self.last_path else None
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.history = list(ckpt.get("history", []))
        es = ckpt.get("early_stopping") or {}
        self.best_val, self.best_step = es.get("best_val"), es.get("best_step")
        self.bad_evals = int(es.get("bad_evals", 0))
        if self.best_val is not None and self.best_path.is_file():
            try:
                self._best_state = load_checkpoint(self.best_path)["model"]
            except CheckpointError as e:
                raise CheckpointError(
                    f"{self.best_path} (the best weights so far, for early stopping) is unreadable, so "
                    f"resuming from {path} cannot put them back at the end. Delete {self.best_path} to "
                    f"resume without them, or train afresh ({str(e).split(';')[0]})"
                ) from e
        states = ckpt["rng"]
        mine = states[self.dist.rank] if self.dist.rank < len(states) else None
        if mine is None:  # a different number of processes than the run that saved: fresh, distinct streams
            seed_everything(self.config.seed + self.dist.rank + self.step)
            if self.dist.is_main:
                print(f"resume: checkpoint has RNG states for {len(states)} process(es); others are reseeded")
        else:
            restore_rng_state(mine)
            self.train_batches.load_state_dict(mine["data"])
        return self

    # ------------------------------------------------------------------ one optimizer step

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp.dtype)

    def _train_step(self) -> None:
        cfg = self.config
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = cfg.grad_accum_steps
        step_loss = torch.zeros((), device=self.device)
        for micro in range(accum):
            batch = self.train_batches.next(self.step)
            n, self._item_unit = count_items(batch)
            self._interval_items += n * self.dist.world_size
            batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
            # Under DDP, gradients are all-reduced on backward; skip that on all but the last micro-batch.
            last = micro == accum - 1
            sync = (
                contextlib.nullcontext() if last or not self.dist.enabled else self._forward_model.no_sync()
            )
            with sync:
                with self._autocast():
                    loss = self.loss_fn(self._forward_model, batch)
                scaled = loss / accum  # the sum over micro-batches is then the mean over the whole batch
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            step_loss += loss.detach().float() / accum
        if cfg.grad_clip:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._pending.append((self.step, step_loss))  # checked later, so the GPU is not synced every step
        self._last_lr = lr
        self.step += 1

    def _check_pending(self, local_only: bool = False) -> None:
        """Average the unchecked step losses over ranks and stop with advice if any is NaN or infinite."""
        if not self._pending:
            return
        steps = [s for s, _ in self._pending]
        losses = torch.stack([loss for _, loss in self._pending])
        if not local_only:
            losses = all_reduce_mean(losses, self.dist)
        values = losses.cpu().tolist()  # the one host-device sync per check
        self._pending = []
        for s, v in zip(steps, values):
            if not math.isfinite(v):
                self._stop_non_finite(s, v, weights_step=s)  # step s ran on the weights after s updates
        self._interval_losses.extend(values)

    def _stop_non_finite(
        self, step: int, value: float, what: str | None = None, weights_step: int | None = None
    ) -> None:
        """Raise NonFiniteLossError; ``weights_step``: the updates behind the weights that gave ``value``.

        Finite weights can still give NaN: when they are the ones in last.pt, that file is moved aside
        (last.nonfinite.pt) and the save before it becomes last.pt again.
        """
        bad = self._demote_last(weights_step)
        if bad is not None:
            before = f"{self.last_path} is the save before" if self.last_path.is_file() else "none is older"
            kept = f"last.pt of step {weights_step} held the weights that gave it: moved to {bad}; {before}"
        elif self.last_path.is_file():
            kept = f"the last good checkpoint {self.last_path} is untouched"
        else:
            kept = "no checkpoint had been written yet"
        what = what or f"the training loss is {value}"
        raise NonFiniteLossError(
            f"{what} at step {step + 1} (of {self.config.max_steps}); training "
            f"stopped and {kept}. Try a lower lr (now {self.config.lr:g}), gradient clipping "
            "(grad_clip=1.0), amp='off' (full fp32), a longer warmup, or check the batches for NaN/inf"
        )

    def _demote_last(self, weights_step: int | None) -> Path | None:
        """Move last.pt aside when it holds the weights of ``weights_step``; last.1.pt ... move up."""
        if weights_step is None or self._saved_step != weights_step or not self.dist.is_main:
            return None
        if not self.last_path.is_file():
            return None
        bad = self.out_dir / "last.nonfinite.pt"
        os.replace(self.last_path, bad)
        newer, i = self.last_path, 1
        while kept_path(self.last_path, i).is_file():
            os.replace(kept_path(self.last_path, i), newer)
            newer, i = kept_path(self.last_path, i), i + 1
        self._saved_step = None
        return bad

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, max_batches: int | None = None) -> float:
        """Mean validation loss over ``eval_steps`` batches (the same ones each time), averaged over ranks."""
        if self.val_batches is None:
            raise ValueError("no val_data was given to the Trainer; pass val_data=... to evaluate")
        max_batches = max_batches if max_batches is not None else self.config.eval_steps
        was_training = self.model.training
        self.model.eval()
        model = self._forward_model  # the compiled model when compile=True; never the DDP wrapper
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module  # no gradients, so nothing to synchronise
        total, count = torch.zeros((), device=self.device), 0
        if isinstance(self.val_batches, DatasetBatches):
            batches: Any = self.val_batches.iterate(max_batches)
        else:
            if max_batches is None:
                raise ValueError(
                    "eval_steps=None needs a validation Dataset; a batch callable needs a number"
                )
            gen = torch.Generator().manual_seed(
                self.config.seed + 10_000 + self.dist.rank
            )  # same batches each time
            batches = (self.val_batches.fn(i, gen) for i in range(max_batches))
        for batch in batches:
            with self._autocast():
                loss = self.loss_fn(model, move_to_device(batch, self.device))
            total += loss.detach().float()
            count += 1
        self.model.train(was_training)
        if count == 0:
            raise ValueError("the validation data gave no batches; check val_data and TrainConfig.eval_steps")
        return float(all_reduce_mean(total / count, self.dist).item())

    def _after_eval(self, val_loss: float) -> None:
        """Early-stopping bookkeeping: keep (and save) the best weights, count evals without progress."""
        cfg = self.config
        if not math.isfinite(val_loss):
            self._stop_non_finite(self.step - 1, val_loss, weights_step=self.step)
        if self.best_val is None or val_loss < self.best_val - cfg.min_delta:
            self.best_val, self.best_step, self.bad_evals = val_loss, self.step, 0
            if cfg.early_stopping_patience is not None:
                raw = unwrap_model(self.model)
                self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in raw.state_dict().items()}
                self.save(self.best_path)
        else:
            self.bad_evals += 1
            if cfg.early_stopping_patience is not None and self.bad_evals >= cfg.early_stopping_patience:
                self.should_stop = True
                self._say(
                    f"early stopping at step {self.step}: no val-loss improvement > {cfg.min_delta} in "
                    f"{self.bad_evals} evaluations; best {self.best_val:.4f} at step {self.best_step}"
                )

    # ------------------------------------------------------------------ the loop

    def _prepare_model(self) -> None:
        """Wrap the plain model for the forward pass: torch.compile, then DDP (the order nanoGPT uses)."""
        if launched_by_torchrun() and not torch.distributed.is_initialized():
            self.dist = init_distributed(
                self.device.type
            )  # a second fit() after the first destroyed the group
        model = self.model
        if self.config.compile:
            model = torch.compile(model)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self._forward_model = model

    def fit(self) -> list[dict[str, Any]]:
        """Train until ``max_steps`` (or early stopping); return the history."""
        cfg = self.config
        if self.dist.is_main:  # before step 1: a full or read-only disk, or a second run, fails now
            check_out_dir(self.out_dir, self._checkpoint_bytes())
            self._lock.acquire()
        self._prepare_model()
        self.model.train()
        self.should_stop, self._interrupted = False, None
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not (cfg.progress and self.dist.is_main),
            dynamic_ncols=True,
            desc="train",
        )
        for cb in self.callbacks:
            cb.on_train_start(self)
        try:
            with self._deferred_interrupt():
                self._fit_start = self._interval_start = time.perf_counter()
                if self.val_batches is not None and self.step == 0 and not self.history:
                    self._record(log=False, evaluate=True)
                while self.step < cfg.max_steps and not self.should_stop:
                    self._train_step()
                    bar.update(1)
                    for cb in self.callbacks:
                        cb.on_step_end(self)
                    at_end = self.step == cfg.max_steps
                    ev = self.val_batches is not None and (self.step % cfg.eval_every == 0 or at_end)
                    log = self.step % cfg.log_every == 0 or at_end or ev
                    if log or ev:
                        record = self._record(log=log, evaluate=ev)
                        if log:
                            bar.set_postfix(_postfix(record), refresh=False)
                    if cfg.save_every and self.step % cfg.save_every == 0 and not at_end:
                        self.save()
                    if self._interrupted is not None:
                        self._save_on_interrupt()
                        raise TrainingInterrupted(self._interrupted)
                if self._pending or self._interval_losses:
                    self._record(log=True, evaluate=False)  # a callback stopped the run between log steps
                self.save()
                if self._best_state is not None and self.best_step != self.step:  # keep the best weights
                    load_model_state(unwrap_model(self.model), self._best_state)
                    self._say(
                        f"restored the best weights (step {self.best_step}, val loss {self.best_val:.4f})"
                    )
        except KeyboardInterrupt:
            if self._interrupted is None:  # Ctrl-C outside the main thread's handler: save the last full step
                self._save_on_interrupt()
            raise
        finally:
            bar.close()
            self._forward_model = self.model
            self._lock.release()
            destroy_distributed(self.dist)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _record(self, *, log: bool, evaluate: bool) -> dict[str, Any]:
        """Add one history record: train loss/lr/throughput when logging, val loss when evaluating."""
        record: dict[str, Any] = {"step": self.step}
        if log:
            self._check_pending()
            now = time.perf_counter()
            elapsed = max(now - self._interval_start, 1e-9)
            record["train_loss"] = sum(self._interval_losses) / max(1, len(self._interval_losses))
            record["lr"] = self._last_lr
            record[f"{self._item_unit}_per_s"] = self._interval_items / elapsed
            record["elapsed_s"] = now - self._fit_start
            self._interval_losses, self._interval_items = [], 0
        if evaluate:
            t0 = time.perf_counter()
            record["val_loss"] = self.evaluate()
            self._after_eval(record["val_loss"])
            if log:
                record["eval_s"] = time.perf_counter() - t0
        self._interval_start = time.perf_counter()  # throughput counts training time only
        self.history.append(record)
        if not self.config.progress and self.dist.is_main:
            self._say(" | ".join(f"{k} {_fmt(v)}" for k, v in record.items()))
        for cb in self.callbacks:
            cb.on_log(self, record)
        return record

    def _say(self, msg: str) -> None:
        if self.dist.is_main:
            tqdm.write(msg)

    # ------------------------------------------------------------------ Ctrl-C and SIGTERM

    @contextlib.contextmanager
    def _deferred_interrupt(self) -> Iterator[None]:
        """The first Ctrl-C or SIGTERM finishes the current step, saves and stops; a second one quits at
        once. SIGTERM is what preemption, ``kill`` and ``docker stop`` send before they SIGKILL."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread; KeyboardInterrupt is caught in fit
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            self._interrupted = signum
            for sig, old in previous.items():  # a second signal interrupts immediately
                signal.signal(sig, old)
            name = signal.Signals(signum).name
            self._say(f"interrupt ({name}): finishing this step, then saving a checkpoint (again: quit now)")

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _save_on_interrupt(self) -> None:
        """Rank 0 saves where it stands, without collectives (other ranks may already be gone)."""
        if not self.dist.is_main:
            return
        try:
            self._check_pending(local_only=True)
            self._check_weights()
        except NonFiniteLossError:
            self._say("interrupt: the loss or weights were not finite; the last checkpoint is kept as it is")
            return
        self._write(self.state_dict([self._rng_state()]), self.last_path)
        where = display_path(self.last_path)
        self._say(f"interrupt: saved step {self.step} to {where}; continue with resume=True")

    # ------------------------------------------------------------------ results

    def history_columns(self) -> dict[str, list[Any]]:
        """The history as columns (``{"step": [...], "train_loss": [...]}``), gaps as NaN: ready to plot."""
        keys: list[str] = []
        for record in self.history:
            keys.extend(k for k in record if k not in keys)
        return {k: [r.get(k, math.nan) for r in self.history] for k in keys}


def _fused_if_cuda(device: torch.device) -> dict[str, bool]:
    """The fused AdamW kernel (one launch for all parameters) on CUDA; the default foreach path elsewhere."""
    return {"fused": True} if device.type == "cuda" else {}


def _grad_scaler(device: torch.device) -> Any:
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type)
    return torch.cuda.amp.GradScaler()  # torch < 2.3


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _postfix(record: Mapping[str, Any]) -> dict[str, str]:
    out = {"loss": f"{record['train_loss']:.4f}", "lr": f"{record['lr']:.2e}"}
    for unit, short in (("tokens_per_s", "tok/s"), ("samples_per_s", "samples/s")):
        if unit in record:
            out[short] = f"{record[unit]:,.0f}"
    return out


__all__ = [
    "AmpPlan",
    "Callback",
    "CallableBatches",
    "DatasetBatches",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "count_items",
    "default_loss",
    "enable_tf32",
    "lr_at",
    "make_batches",
    "param_groups",
    "resolve_amp",
]
