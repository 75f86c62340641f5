"""Runs from a config: pretrain a GPT, fine-tune it as a classifier, sample from its checkpoint.

What ``python -m course_lib pretrain|finetune|generate`` does, as functions that take the merged config
of :func:`course_lib.config.load_config`:

- :func:`run_pretrain` -- corpus -> tokenizer (cached) -> TokenCache -> GPT -> Trainer;
- :func:`run_finetune` -- a pretrain checkpoint + a classification head, trained as ``finetune.mode``
  says, then a test-set report;
- :func:`generate_from_checkpoint` -- a continuation of a prompt.

The pretraining set-up lives here once: :func:`lm_trainer` (random windows of a token stream) and
:func:`pretrain_meta` (what a ``kind: pretrain`` checkpoint records), so the checkpoints of
:mod:`course_lib.pretrained` and of the command line have the same layout. Every run works unchanged
under torchrun: rank 0 prepares the tokenizer and the token cache while the others wait.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from course_lib.checkpoint import load_checkpoint, load_model_state
from course_lib.config import ConfigError, DataConfig, FinetuneConfig, check_corpus, checked
from course_lib.distributed import barrier, destroy_distributed, init_distributed
from course_lib.env import cache_dir, get_device, seed_everything
from course_lib.gpt import GPT, GPTConfig, get_config
from course_lib.layers import num_parameters
from course_lib.lm_data import get_batch
from course_lib.tokenizers import ENDOFTEXT, cached_tokenizer, tokenizer_from_meta, tokenizer_meta
from course_lib.trainer import TrainConfig, Trainer

# ----------------------------------------------------------------------------------------------------
# the pretraining set-up, shared with course_lib.pretrained


def lm_trainer(
    model: GPT,
    cfg: TrainConfig,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    meta: Mapping[str, Any],
    resume: bool = False,
) -> Trainer:
    """A Trainer that feeds ``model`` random windows of ``train_ids`` (``val_ids`` for evaluation):
    ``batch_size`` windows of ``block_size`` tokens and their targets, one position later."""
    B, T = cfg.batch_size, model.config.block_size

    def train_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return get_batch(train_ids, B, T, generator, device="cpu")  # (B, T), (B, T); the Trainer moves them

    def val_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return get_batch(val_ids, B, T, generator, device="cpu")

    return Trainer(model, cfg, train_batch, val_batch, resume=resume, meta=dict(meta))


def pretrain_meta(
    model_name: str,
    model_config: GPTConfig,
    data: Mapping[str, Any],
    tokenizer: Any,
    tokenizer_path: str | Path,
    **extra: Any,
) -> dict[str, Any]:
    """The ``meta`` of a pretraining checkpoint: what ``finetune`` and ``generate`` need to rebuild the model
    and its tokenizer (``extra`` adds keys, e.g. a recipe)."""
    return {
        "kind": "pretrain",
        "model_name": model_name,
        "model_config": model_config.to_dict(),
        "data": dict(data),
        **tokenizer_meta(tokenizer, tokenizer_path),
        **extra,
    }


def load_pretrain_checkpoint(path: str | Path, command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(checkpoint, meta) of a checkpoint written by pretraining; anything else is a ConfigError."""
    ckpt = load_checkpoint(Path(path).expanduser())
    meta = ckpt.get("meta") or {}
    if meta.get("kind") != "pretrain":
        raise ConfigError(
            f"{path} is not a pretraining checkpoint written by `python -m course_lib pretrain` "
            f"(meta kind: {meta.get('kind')!r}); {command} from one of those"
        )
    return ckpt, meta


# ----------------------------------------------------------------------------------------------------
# the runs


def _rank0_first(dist: Any, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 first (it fills the caches) and on the other ranks after (they read them)."""
    if dist.is_main:
        out = fn()
        barrier(dist)
    else:
        barrier(dist)
        out = fn()
    return out


def _say(dist: Any, msg: str) -> None:
    if dist.is_main:
        print(msg, flush=True)


def run_pretrain(
    config: dict[str, dict[str, Any]], resume: bool = False, run_name: str | None = None
) -> Path:
    """Corpus -> tokenizer (cached) -> TokenCache -> GPT -> Trainer; returns the last checkpoint's path.

    Checkpoints go to ``train.out_dir``, by default ``<cache>/runs/<run_name>`` (the config file's name).
    """
    from course_lib.datasets import pretrain_texts
    from course_lib.lm_data import TokenCache

    data = checked("data", DataConfig, **config["data"])
    check_corpus(data, "pretrain")
    train_values = dict(config["train"])
    train_values.setdefault("out_dir", str(cache_dir("runs", run_name or f"pretrain-{data.corpus}")))
    train_cfg = checked("train", TrainConfig.from_dict, train_values)
    model_values = dict(config["model"])
    name = model_values.pop("name", "tiny")

    dist = init_distributed(get_device(train_cfg.device).type)
    try:

        def prepare() -> tuple[Any, Path, Any]:
            texts = functools.cache(lambda: pretrain_texts(data.corpus, data.max_docs))  # only on a miss
            size = "" if data.tokenizer == "char" else f"-{data.vocab_size}"
            tok_name = f"{data.corpus}-{data.tokenizer}{size}-{data.max_docs or 'all'}"
            tok, tok_path = cached_tokenizer(
                tok_name, data.tokenizer, data.vocab_size, texts, train_cfg.progress
            )
            sep = tok.special_tokens.get(ENDOFTEXT) if data.tokenizer == "bpe" else None
            source = f"{data.corpus}-{data.max_docs or 'all'}"
            cache = TokenCache(tok, source, texts, val_fraction=data.val_fraction, separator_id=sep)
            cache.build()
            return tok, tok_path, cache

        tok, tok_path, cache = _rank0_first(dist, prepare)
        if "vocab_size" in model_values and model_values["vocab_size"] != tok.vocab_size:
            raise ConfigError(
                f"model.vocab_size={model_values['vocab_size']} but the tokenizer has {tok.vocab_size} ids; "
                "drop model.vocab_size (it is taken from the tokenizer) or change data.vocab_size"
            )
        model_values["vocab_size"] = tok.vocab_size
        seed_everything(train_cfg.seed)  # the same initial weights on every rank
        gpt_cfg = checked("model", get_config, name, **model_values)
        model = GPT(gpt_cfg)
        sizes = f"{len(cache.train):,} train / {len(cache.val):,} val tokens"
        _say(dist, f"pretrain: {model.num_parameters():,} parameters, {sizes}, {dist.world_size} process(es)")
        meta = pretrain_meta(name, gpt_cfg, dataclasses.asdict(data), tok, tok_path)
        trainer = lm_trainer(model, train_cfg, cache.train, cache.val, meta, resume=resume)
        trainer.fit()
        _say(dist, f"checkpoint: {trainer.last_path}")  # the real path: the next command takes it
        return trainer.last_path
    finally:
        destroy_distributed(dist)


def build_classifier(
    gpt_cfg: GPTConfig, n_classes: int, ft: FinetuneConfig, state: Mapping[str, Any] | None
) -> nn.Module:
    """A GPTClassifier on a pretrained GPT, with the parameters ``ft.mode`` says to train left trainable."""
    from course_lib.finetuning import prepare_for_finetuning
    from course_lib.heads import GPTClassifier

    gpt = GPT(gpt_cfg)
    if state is not None:
        load_model_state(gpt, state)
    clf = GPTClassifier(gpt, n_classes, dropout=ft.dropout)
    lora = {"lora_r": ft.lora_r, "lora_alpha": ft.lora_alpha, "lora_targets": ft.lora_targets}
    prepare_for_finetuning(clf, ft.mode, last_n=ft.last_n, **lora)
    return clf


def run_finetune(
    config: dict[str, dict[str, Any]], resume: bool = False, run_name: str | None = None
) -> Path:
    """Pretrained GPT + classification head, trained as ``finetune.mode`` says; prints a test-set report."""
    from torch.utils.data import DataLoader

    from course_lib.datasets import Splits, classification_texts
    from course_lib.finetuning import predict_classes
    from course_lib.lm_data import ClassificationDataset, pad_collate
    from course_lib.metrics import classification_report

    data = checked("data", DataConfig, **config["data"])
    check_corpus(data, "finetune")
    ft = checked("finetune", FinetuneConfig, **config["finetune"])
    if not ft.checkpoint:
        raise ConfigError(
            "finetune.checkpoint is required: --set finetune.checkpoint=PATH/last.pt (from pretrain)"
        )
    train_values = dict(config["train"])
    run_name = f"{run_name or 'finetune-' + data.corpus}-{ft.mode}"
    train_values.setdefault("out_dir", str(cache_dir("runs", run_name)))
    train_cfg = checked("train", TrainConfig.from_dict, train_values)
    ckpt, meta = load_pretrain_checkpoint(ft.checkpoint, "fine-tune")
    gpt_cfg = GPTConfig.from_dict(meta["model_config"])
    tok = tokenizer_from_meta(meta)

    dist = init_distributed(get_device(train_cfg.device).type)
    try:
        texts, labels, names = classification_texts(data.corpus, data.max_docs)
        max_len = min(data.max_length or gpt_cfg.block_size, gpt_cfg.block_size)
        ids = [tok.encode(t)[:max_len] or [0] for t in texts]
        splits = Splits.make(labels, (1 - 2 * ft.test_fraction, ft.test_fraction, ft.test_fraction), seed=0)
        (tr_ids, va_ids, te_ids), (tr_y, va_y, te_y) = splits.take(ids), splits.take(labels)
        collate = functools.partial(pad_collate, pad_id=0, max_length=max_len)  # the mask hides the pads

        def loader(token_ids: list, ys: list, shuffle: bool = False) -> DataLoader:
            dataset = ClassificationDataset(token_ids, ys)
            return DataLoader(dataset, train_cfg.batch_size, shuffle=shuffle, collate_fn=collate)

        train_loader, val_loader = loader(tr_ids, tr_y, shuffle=True), loader(va_ids, va_y)
        seed_everything(train_cfg.seed)
        clf = build_classifier(gpt_cfg, len(names), ft, ckpt["model"])
        n_train, n_all = num_parameters(clf, trainable_only=True), num_parameters(clf)
        sizes = f"{len(tr_y)} train / {len(va_y)} val / {len(te_y)} test texts"
        _say(dist, f"finetune ({ft.mode}): {n_train:,} of {n_all:,} parameters train; {sizes}")
        run_meta = {
            "kind": "finetune",
            "model_config": gpt_cfg.to_dict(),
            "finetune": dataclasses.asdict(ft),
            "labels": names,
            "data": dataclasses.asdict(data),
            **tokenizer_meta(tok, meta["tokenizer_path"]),
        }
        trainer = Trainer(clf, train_cfg, train_loader, val_loader, resume=resume, meta=run_meta)
        trainer.fit()

        if dist.is_main:  # test-set report from rank 0 only
            truth, preds, _ = predict_classes(clf, loader(te_ids, te_y))
            classes = list(range(len(names)))
            report = classification_report(truth, preds, labels=classes, target_names=names)
            report_dict = classification_report(
                truth, preds, labels=classes, target_names=names, output_dict=True
            )
            (trainer.out_dir / "test_report.json").write_text(json.dumps(report_dict, indent=1))
            print(report, flush=True)
        _say(dist, f"checkpoint: {trainer.last_path}")  # the real path: the next command takes it
        return trainer.last_path
    finally:
        destroy_distributed(dist)


def generate_from_checkpoint(
    checkpoint: str | Path,
    prompt: str = "",
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    device: str | None = None,
) -> str:
    """The prompt and the continuation that a pretraining checkpoint samples after it
    (:func:`course_lib.generation.generate_text`).

    An empty prompt starts a fresh document: from ``<|endoftext|>`` when the tokenizer has it, else from
    a newline.
    """
    from course_lib.generation import generate_text

    ckpt, meta = load_pretrain_checkpoint(checkpoint, "generate")
    model = GPT(GPTConfig.from_dict(meta["model_config"]))
    load_model_state(model, ckpt["model"])
    model.to(get_device(device)).eval()
    tok = tokenizer_from_meta(meta)
    start = prompt or (ENDOFTEXT if ENDOFTEXT in getattr(tok, "special_tokens", {}) else "\n")
    return prompt + generate_text(model, tok, start, max_new_tokens, temperature, top_k, top_p, seed)


__all__ = [
    "build_classifier",
    "generate_from_checkpoint",
    "lm_trainer",
    "load_pretrain_checkpoint",
    "pretrain_meta",
    "run_finetune",
    "run_pretrain",
]
