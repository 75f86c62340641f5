"""Fine-tuning modes, measured training memory and a whole fine-tuning run on a task a tiny GPT can learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from course_lib.finetuning import (
    FINETUNE_MODES,
    finetune_classifier,
    measure_training_memory,
    predict_classes,
    prepare_for_finetuning,
    results_table,
)
from course_lib.gpt import GPT, get_config
from course_lib.heads import GPTClassifier
from course_lib.lm_data import make_classification_loader
from course_lib.lora import LoRALinear
from course_lib.trainer import TrainConfig


def _classifier(n_classes: int = 3, seed: int = 0) -> GPTClassifier:
    torch.manual_seed(seed)
    return GPTClassifier(GPT(get_config("tiny", vocab_size=32, block_size=16, dropout=0.0)), n_classes)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_each_mode_trains_exactly_its_part():
    d, r = 64, 4
    counts = {}
    for mode in FINETUNE_MODES:
        clf = _classifier()
        counts[mode] = prepare_for_finetuning(clf, mode, last_n=1, lora_r=r)
        trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
        if mode == "head":
            assert trainable == {n for n, _ in clf.named_parameters() if n.startswith("head.")}
        if mode == "last_n":  # head + the last block + the final LayerNorm
            expected = _numel(clf.head) + _numel(clf.gpt.transformer.h[-1]) + _numel(clf.gpt.transformer.ln_f)
            assert counts[mode] == expected
            assert not any(".h.0." in n for n in trainable)
        if mode == "lora":  # head + A (r x in) and B (out x r) on every qkv and attention proj
            layers = [m for m in clf.modules() if isinstance(m, LoRALinear)]
            assert len(layers) == 2 * 2  # 2 blocks x (qkv, proj)
            adapters = sum(r * (m.in_features + m.out_features) for m in layers)
            assert counts[mode] == _numel(clf.head) + adapters
            assert all(("lora_" in n) or n.startswith("head.") for n in trainable)
        if mode == "full":
            assert counts[mode] == _numel(clf)
    assert counts["head"] == d * 3 + 3
    assert counts["head"] < counts["lora"] < counts["last_n"] < counts["full"]


def test_bad_mode_and_a_model_without_backbone_are_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        prepare_for_finetuning(_classifier(), "everything")
    with pytest.raises(TypeError, match="neither .gpt nor .encoder"):
        prepare_for_finetuning(nn.Linear(2, 2), "head")


class _TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def _sum_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(batch).sum()  # sum saves nothing for backward


def test_memory_counts_weights_gradients_adam_states_and_saved_activations_exactly():
    model, x = _TwoLayers(), torch.randn(32, 8)
    n_all = 8 * 16 + 16 + 16 * 4 + 4
    mem = measure_training_memory(model, x, _sum_loss)
    assert mem.weights == 4 * n_all and mem.gradients == 4 * n_all and mem.optimizer == 2 * 4 * n_all
    # saved for backward: x (for body.weight's gradient) and relu's output (relu's own backward and
    # head.weight's gradient share that one storage); the weights themselves are not activations
    assert mem.activations == 32 * 8 * 4 + 32 * 16 * 4

    model.body.requires_grad_(False)  # a frozen body needs no x for a weight gradient
    mem = measure_training_memory(model, x, _sum_loss)
    n_head = 16 * 4 + 4
    assert mem.gradients == 4 * n_head and mem.optimizer == 8 * n_head and mem.weights == 4 * n_all
    assert mem.activations == 32 * 16 * 4
    assert all(p.grad is None for p in model.parameters())  # measuring left no gradients behind


def test_frozen_modes_save_less_activation_memory_than_full_finetuning():
    batch = {
        "input_ids": torch.randint(0, 32, (8, 16)),
        "attention_mask": torch.ones(8, 16, dtype=torch.long),
        "labels": torch.randint(0, 3, (8,)),
    }
    act = {}
    for mode in ("head", "lora", "full"):
        clf = _classifier()
        prepare_for_finetuning(clf, mode)
        act[mode] = measure_training_memory(clf, batch).activations
    assert act["head"] < act["lora"] <= act["full"]


def _keyword_task(n: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Label 1 when token 7 occurs in the sequence, else 0 (a task attention solves easily)."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for i in range(n):
        length = int(torch.randint(4, 16, (1,), generator=g))
        seq = torch.randint(8, 32, (length,), generator=g)
        if i % 2:
            seq[int(torch.randint(0, length, (1,), generator=g))] = 7
        ids.append(seq.tolist())
        labels.append(i % 2)
    return ids, labels


def test_finetune_classifier_learns_a_task_and_lora_leaves_the_base_weights_alone(tmp_path):
    loaders = []
    for k, n in enumerate((256, 64, 64)):
        ids, labels = _keyword_task(n, seed=k)
        loaders.append(make_classification_loader(ids, labels, 32, pad_id=0, shuffle=k == 0, seed=k))
    clf = _classifier(n_classes=2)
    base = {n: p.detach().clone() for n, p in clf.gpt.named_parameters()}
    prepare_for_finetuning(clf, "lora", lora_r=4, lora_alpha=8)
    cfg = TrainConfig(
        max_steps=80, lr=3e-3, min_lr=3e-4, warmup_steps=5, eval_every=20, eval_steps=None,
        early_stopping_patience=10, device="cpu", out_dir=str(tmp_path), progress=False, log_every=20,
    )  # fmt: skip
    result = finetune_classifier(clf, "lora", *loaders, cfg)
    assert result.accuracy > 0.9, result
    assert result.trainable < result.total and result.memory.total > result.memory.weights
    assert len(result.y_true) == 64 and result.steps <= 80
    for name, p in clf.gpt.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base[name.replace(".base.", ".")]), name
    y_true, y_pred, probs = predict_classes(clf, loaders[2])
    assert probs.shape == (64, 2) and (y_pred == probs.argmax(-1)).all()
    table = results_table([result, {k: "-" for k in result.row()}])
    assert table.count("\n") == 3 and "lora" in table


def test_memory_of_a_fully_frozen_model_is_refused_with_advice():
    model = _TwoLayers().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters; call prepare_for_finetuning"):
        measure_training_memory(model, torch.randn(2, 8), _sum_loss)
