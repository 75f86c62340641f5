"""Fine-tuning a pretrained model as a text classifier: what trains, what it costs, how well it does.

    clf = GPTClassifier(gpt, n_classes=5)
    prepare_for_finetuning(clf, "lora", lora_r=8)          # freeze / unfreeze / wrap, by mode
    result = finetune_classifier(clf, "LoRA r=8", train_loader, val_loader, test_loader, train_config)
    results_table([result, ...]).show()                      # accuracy, macro-F1, parameters, time, memory

The four modes, from cheapest to most expensive:

``head``    the backbone is frozen; only the new classification head trains;
``last_n``  the head and the last ``last_n`` transformer blocks (plus the GPT's final LayerNorm) train;
``lora``    the backbone is frozen and low-rank adapters are added to the attention projections
            (:mod:`course_lib.lora`); head and adapters train;
``full``    every weight trains.

Memory is measured, not estimated: :func:`measure_training_memory` runs one training step and adds up
the weights, the gradients of the trainable weights, AdamW's two states per trainable weight and the
activations autograd saved for the backward pass (:mod:`course_lib.model_costs` has the same arithmetic as
formulas).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib.display import Table
from course_lib.env import move_to_device
from course_lib.heads import freeze, unfreeze, unfreeze_last_blocks
from course_lib.layers import num_parameters
from course_lib.lora import apply_lora, mark_only_lora_trainable
from course_lib.metrics import accuracy, format_table, precision_recall_f1
from course_lib.model_costs import TrainingMemory
from course_lib.trainer import TrainConfig, Trainer, default_loss

FINETUNE_MODES = ("head", "last_n", "lora", "full")


def _backbone(model: nn.Module) -> nn.Module:
    """The pretrained part of a classifier: ``.gpt`` (GPTClassifier) or ``.encoder`` (EncoderClassifier)."""
    for name in ("gpt", "encoder"):
        if isinstance(getattr(model, name, None), nn.Module):
            return getattr(model, name)
    raise TypeError(
        f"{type(model).__name__} has neither .gpt nor .encoder; pass a course_lib.heads.GPTClassifier "
        "or EncoderClassifier"
    )


def prepare_for_finetuning(
    model: nn.Module,
    mode: str,
    *,
    last_n: int = 2,
    lora_r: int = 8,
    lora_alpha: float = 16.0,
    lora_targets: Sequence[str] = ("qkv", "proj"),
    head_name: str = "head",
) -> int:
    """Leave trainable exactly what ``mode`` trains (see the module docstring); returns that count.

    ``lora`` replaces the backbone's target Linear layers in place by LoRA layers.
    """
    if mode not in FINETUNE_MODES:
        raise ValueError(f"mode must be one of {FINETUNE_MODES}, got {mode!r}")
    backbone = _backbone(model)
    if mode == "full":
        unfreeze(model)
    elif mode == "head":
        freeze(backbone)
        unfreeze(model.get_submodule(head_name))
    elif mode == "last_n":
        freeze(backbone)
        unfreeze(model.get_submodule(head_name))
        unfreeze_last_blocks(model, last_n)
        final_norm = getattr(getattr(backbone, "transformer", None), "ln_f", None)
        if final_norm is not None:
            unfreeze(final_norm)  # the GPT's last LayerNorm feeds the head directly
    else:
        apply_lora(backbone, targets=lora_targets, r=lora_r, alpha=lora_alpha)
        mark_only_lora_trainable(model, train_head_names=[head_name])
    return num_parameters(model, trainable_only=True)


# ---------------------------------------------------------------------------------------------- memory


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def measure_training_memory(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] = default_loss,
    optimizer_states: int = 2,
) -> TrainingMemory:
    """Bytes that one training step of ``model`` on ``batch`` holds at its peak, part by part.

    weights      every parameter (trainable or not: the forward pass needs them all);
    gradients    one value per trainable parameter;
    optimizer    ``optimizer_states`` fp32 values per trainable parameter (AdamW: 2);
    activations  the tensors autograd saves for the backward pass, counted once per storage and
                 without the parameters themselves (measured with saved-tensor hooks).

    The step's gradients are computed and then dropped; the model's weights do not change.
    """
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters; call prepare_for_finetuning first")
    device = params[0].device
    param_storages = {_storage_key(p) for p in params}
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in param_storages:
            saved[key] = key[1]
        return t

    was_training = model.training
    model.train()
    old_grads = [p.grad for p in trainable]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model, move_to_device(batch, device))
        loss.backward()
    finally:
        for p, g in zip(trainable, old_grads):
            p.grad = g
        model.train(was_training)
    n_trainable = sum(p.numel() for p in trainable)
    return TrainingMemory(
        weights=float(sum(p.numel() * p.element_size() for p in params)),
        gradients=float(sum(p.numel() * p.element_size() for p in trainable)),
        optimizer=float(4 * optimizer_states * n_trainable),
        master_weights=0.0,
        activations=float(sum(saved.values())),
    )


# ---------------------------------------------------------------------------------------------- runs


@torch.no_grad()
def predict_classes(model: nn.Module, loader: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, predicted labels, class probabilities) over every batch of ``loader``.

    Batches are dicts with ``input_ids``, ``attention_mask`` and ``labels`` (``pad_collate``'s layout);
    the model returns ``(logits, loss)``.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    truth, probs = [], []
    for batch in loader:
        batch = move_to_device(batch, device)
        logits, _ = model(batch["input_ids"], batch["attention_mask"])  # (B, n_classes)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu())
        truth.append(batch["labels"].cpu())
    model.train(was_training)
    p = torch.cat(probs).numpy()
    return torch.cat(truth).numpy(), p.argmax(-1), p


@dataclass
class FinetuneResult:
    """One fine-tuning run, measured: what trained, how well, how long, how much memory."""

    name: str
    trainable: int  # parameters that trained
    total: int  # parameters in the model
    accuracy: float  # on the test set
    macro_f1: float  # on the test set
    time_s: float  # wall time of the training loop (evaluations included)
    memory: TrainingMemory  # measured on one training batch
    steps: int
    best_step: int | None
    history: list[dict[str, Any]] = field(repr=False, default_factory=list)
    y_true: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=int))
    y_pred: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=int))

    def row(self) -> dict[str, Any]:
        """The result as one table row (see :func:`results_table`)."""
        return {
            "model": self.name,
            "trainable": f"{self.trainable:,}",
            "share": f"{100 * self.trainable / self.total:.1f}%",
            "test acc": f"{self.accuracy:.3f}",
            "macro-F1": f"{self.macro_f1:.3f}",
            "time (s)": f"{self.time_s:.0f}",
            "memory (MB)": f"{self.memory.total / 1e6:.1f}",
        }


def finetune_classifier(
    model: nn.Module,
    name: str,
    train_loader: Any,
    val_loader: Any,
    test_loader: Any,
    config: TrainConfig,
) -> FinetuneResult:
    """Train ``model`` (already prepared) with the course Trainer, then measure it on the test set.

    Early stopping, when ``config.early_stopping_patience`` is set, watches the validation loss and
    puts the best weights back before testing.
    """
    n_trainable = num_parameters(model, trainable_only=True)
    trainer = Trainer(model, config, train_loader, val_loader)  # moves the model to its device
    memory = measure_training_memory(model, next(iter(train_loader)))
    t0 = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - t0
    y_true, y_pred, _ = predict_classes(model, test_loader)
    f1 = precision_recall_f1(y_true, y_pred, average="macro")["f1"]
    return FinetuneResult(
        name=name,
        trainable=n_trainable,
        total=num_parameters(model),
        accuracy=accuracy(y_true, y_pred),
        macro_f1=float(f1),
        time_s=elapsed,
        memory=memory,
        steps=trainer.step,
        best_step=trainer.best_step,
        history=trainer.history,
        y_true=y_true,
        y_pred=y_pred,
    )


def results_table(rows: Sequence[FinetuneResult | dict[str, Any]]) -> Table:
    """A table, one line per result (dicts are rows already, e.g. a baseline's); ``.show()`` displays it."""
    return format_table([r.row() if isinstance(r, FinetuneResult) else r for r in rows])


__all__ = [
    "FINETUNE_MODES",
    "FinetuneResult",
    "finetune_classifier",
    "measure_training_memory",
    "predict_classes",
    "prepare_for_finetuning",
    "results_table",
]
