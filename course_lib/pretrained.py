"""The GPT that chapter 3 pretrains on BBC News, kept in the cache so later chapters can load it.

One :class:`PretrainRecipe` fixes everything about the run: which articles, the BPE vocabulary, the
model shape and the training settings. The notebook of chapter 3.6 and :func:`bbc_gpt` call the same
functions with the same recipe, so a chapter that needs the model and finds no checkpoint rebuilds
exactly what the notebook would have made:

    model, tokenizer = bbc_gpt()          # load the cached checkpoint, or train it (about 10 min on a CPU)

The steps, each usable on its own:

1. :func:`bbc_documents` -- the 2,225 articles in a fixed shuffled order, split by article: the last
   ``val_fraction`` of them are validation text that neither the tokenizer nor the model trains on;
2. :func:`bbc_tokenizer` -- a byte-level BPE trained on the training articles (cached);
3. :func:`bbc_tokens` -- both splits as token-id streams in :class:`~course_lib.lm_data.TokenCache` files;
4. :func:`make_trainer` -- the :class:`~course_lib.trainer.Trainer` with random-window batches;
5. :func:`load_bbc_gpt` -- the trained model and tokenizer back from ``<cache>/pretrained/<run>/last.pt``.

Fast mode (``COURSE_FAST=1``) uses :data:`FAST_RECIPE`: a tiny model on a few articles that trains in
seconds. The mode is part of the cache key, so the two never overwrite each other. The checkpoint
has the same layout as ``python -m course_lib pretrain`` writes (``meta["kind"] == "pretrain"``), so
``python -m course_lib generate`` and ``finetune`` accept it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib.checkpoint import CheckpointError, load_checkpoint, load_model_state
from course_lib.datasets import SplitLists, pretrain_texts
from course_lib.env import cache_dir, fast_mode, get_device
from course_lib.gpt import GPT, GPTConfig, get_config
from course_lib.lm_data import TokenCache
from course_lib.runs import lm_trainer, pretrain_meta
from course_lib.tokenizers import ENDOFTEXT, BPETokenizer
from course_lib.trainer import TrainConfig, Trainer

RECIPE_VERSION = 1  # bump when the code below changes what a recipe produces


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that decides the pretrained model; its hash names the cache folder."""

    mode: str  # "full" (learner mode) or "fast" (CI): part of the cache key
    max_docs: int | None  # articles used (a fixed shuffled subset); None = all 2,225
    val_fraction: float  # the share of articles held out for validation
    vocab_size: int  # BPE vocabulary: 256 bytes + merges + <|endoftext|>
    base_config: str  # a course_lib.gpt config name
    model: dict[str, Any] = field(default_factory=dict)  # GPTConfig fields that override the base config
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (out_dir and progress excluded)

    def __post_init__(self) -> None:
        if self.mode not in ("full", "fast"):
            raise ValueError(f"PretrainRecipe.mode must be 'full' or 'fast', got {self.mode!r}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), e.g. 0.1; got {self.val_fraction}")
        if self.max_docs is not None and self.max_docs < 10:
            raise ValueError(f"max_docs must be at least 10 (or None for all articles), got {self.max_docs}")
        for key in ("out_dir", "progress"):
            if key in self.train:
                raise ValueError(
                    f"PretrainRecipe.train must not set {key!r}: it is chosen per call; pass it to "
                    "make_trainer"
                )
        TrainConfig.from_dict(self.train)  # unknown or bad training keys fail here, naming the key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """A short hash of the recipe (and of RECIPE_VERSION): a changed recipe gets a fresh cache folder."""
        blob = json.dumps([RECIPE_VERSION, self.to_dict()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def run_dir(self) -> Path:
        """``<cache>/pretrained/bbc-gpt-<mode>-<key>``: tokenizer.json and last.pt live here."""
        return cache_dir("pretrained", f"bbc-gpt-{self.mode}-{self.key}")

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        """The model's configuration for a tokenizer with ``vocab_size`` ids."""
        return get_config(self.base_config, **{**self.model, "vocab_size": vocab_size})

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The Trainer's configuration; checkpoints go to :attr:`run_dir` unless ``out_dir`` is given."""
        values = {"out_dir": str(self.run_dir), **self.train, **overrides}
        return TrainConfig.from_dict(values)


FULL_RECIPE = PretrainRecipe(
    mode="full",
    max_docs=None,
    val_fraction=0.1,
    vocab_size=1024,  # small enough that a few minutes of training beat the counting baselines clearly
    base_config="small",
    # "small" narrowed from d_model 256 to 192 (6 heads of 32): 1.6x the tokens per second on a CPU, which
    # buys more of the data within the ten-minute budget; < 3 epochs of data, so no dropout
    model={"block_size": 128, "d_model": 192, "n_head": 6, "dropout": 0.0},
    train={
        "max_steps": 1000,
        "batch_size": 32,  # 32 windows of 128 tokens = 4,096 tokens per step
        "lr": 2e-3,
        "min_lr": 2e-4,
        "warmup_steps": 100,
        "weight_decay": 0.1,
        "grad_clip": 1.0,
        "eval_every": 50,
        "eval_steps": 10,
        "log_every": 10,
        "save_every": 250,
        "amp": "auto",  # bf16 on a GPU that has it; full fp32 on the CPU
        "seed": 1337,
    },
)

FAST_RECIPE = PretrainRecipe(
    mode="fast",
    max_docs=120,
    val_fraction=0.1,
    vocab_size=512,
    base_config="tiny",  # 2 layers, 4 heads, d_model 64
    model={"block_size": 64},
    train={
        "max_steps": 30,
        "batch_size": 8,
        "lr": 3e-3,
        "min_lr": 3e-4,
        "warmup_steps": 5,
        "weight_decay": 0.1,
        "grad_clip": 1.0,
        "eval_every": 10,
        "eval_steps": 4,
        "log_every": 5,
        "save_every": None,
        "amp": "auto",
        "seed": 1337,
    },
)


def bbc_recipe(fast: bool | None = None) -> PretrainRecipe:
    """:data:`FAST_RECIPE` in fast mode, :data:`FULL_RECIPE` otherwise (``fast`` overrides COURSE_FAST)."""
    return FAST_RECIPE if (fast_mode() if fast is None else fast) else FULL_RECIPE


# ---------------------------------------------------------------------------------------------- the data


def bbc_documents(recipe: PretrainRecipe) -> tuple[list[str], list[str]]:
    """(train articles, validation articles): a fixed shuffle of BBC News cut by article.

    The shuffle is the command line's (:func:`course_lib.datasets.pretrain_texts`, seed 0), so every
    topic appears in both parts; the last ``val_fraction`` of the shuffled articles are the validation set.
    """
    texts = pretrain_texts("bbc_news", recipe.max_docs)
    n_val = max(1, round(len(texts) * recipe.val_fraction))
    return texts[:-n_val], texts[-n_val:]


def bbc_topic_splits(recipe: PretrainRecipe, val_fraction: float = 0.1, seed: int = 0) -> SplitLists:
    """(train, val, test) lists of BBC :class:`~course_lib.datasets.Article` for topic classification.

    The test articles are the recipe's validation articles, which the tokenizer and the GPT never saw;
    any of them whose text also occurs among the training articles (BBC News has duplicates) is dropped.
    The training articles are split, stratified by topic, into train and validation.
    """
    from course_lib.datasets import Splits, bbc_news

    by_text = {a.text: a for a in bbc_news()}
    train_docs, val_docs = bbc_documents(recipe)
    seen = set(train_docs)
    test = [by_text[t] for t in dict.fromkeys(val_docs) if t not in seen]
    rest = [by_text[t] for t in dict.fromkeys(train_docs)]  # one copy of each text
    splits = Splits.make([a.label_id for a in rest], (1 - val_fraction, val_fraction, 0.0), seed=seed)
    return SplitLists([rest[i] for i in splits.train], [rest[i] for i in splits.val], test)


def bbc_tokenizer(
    recipe: PretrainRecipe, train_docs: list[str] | None = None, progress: bool = False
) -> BPETokenizer:
    """The recipe's BPE tokenizer, trained on the training articles only; cached in :attr:`run_dir`."""
    path = recipe.run_dir / "tokenizer.json"
    if path.is_file():
        return BPETokenizer.load(path)
    if train_docs is None:
        train_docs = bbc_documents(recipe)[0]
    tokenizer = BPETokenizer.train(
        train_docs, recipe.vocab_size, special_tokens=(ENDOFTEXT,), show_progress=progress
    )
    tokenizer.save(path)
    return tokenizer


def bbc_tokens(
    recipe: PretrainRecipe,
    tokenizer: BPETokenizer,
    documents: tuple[list[str], list[str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, validation ids) as memmaps, articles joined by ``<|endoftext|>``; tokenized once.

    Each split is its own :class:`TokenCache` (with no held-out tail), so the split stays at article
    boundaries. ``documents`` is only read on a cache miss.
    """
    eot = tokenizer.token_to_id(ENDOFTEXT)
    out = []
    for k, split in enumerate(("train", "val")):

        def texts(k: int = k) -> list[str]:
            return (documents or bbc_documents(recipe))[k]

        cache = TokenCache(
            tokenizer, f"bbc-{recipe.mode}-{recipe.key}-{split}", texts, val_fraction=0.0, separator_id=eot
        )
        out.append(cache.train)
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- training


def make_trainer(
    recipe: PretrainRecipe,
    model: GPT,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    tokenizer: BPETokenizer,
    *,
    progress: bool = True,
    resume: bool = False,
    **overrides: Any,
) -> Trainer:
    """A Trainer that feeds ``model`` random windows of ``train_ids`` (and ``val_ids`` for evaluation).

    ``overrides`` replace TrainConfig fields of the recipe (e.g. ``max_steps=20`` or ``out_dir=...``).
    The set-up and the checkpoint's ``meta`` are the command line's (:func:`course_lib.runs.lm_trainer`,
    :func:`course_lib.runs.pretrain_meta`), plus the recipe.
    """
    cfg = recipe.train_config(progress=progress, **overrides)
    tokenizer_path = recipe.run_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        tokenizer.save(tokenizer_path)
    data = {"corpus": "bbc_news", "tokenizer": "bpe", "vocab_size": tokenizer.vocab_size}
    meta = pretrain_meta(
        recipe.base_config,
        model.config,
        data,
        tokenizer,
        tokenizer_path,
        recipe=recipe.to_dict(),
        recipe_key=recipe.key,
    )
    return lm_trainer(model, cfg, train_ids, val_ids, meta, resume=resume)


def pretrain(recipe: PretrainRecipe, progress: bool = True, resume: bool = False) -> Trainer:
    """Run the whole recipe: documents, tokenizer, tokens, model, training. Returns the finished Trainer."""
    documents = bbc_documents(recipe)
    tokenizer = bbc_tokenizer(recipe, documents[0], progress=progress)
    train_ids, val_ids = bbc_tokens(recipe, tokenizer, documents)
    cfg = recipe.train_config()
    torch.manual_seed(cfg.seed)  # the same initial weights as the notebook's
    model = GPT(recipe.gpt_config(tokenizer.vocab_size))
    trainer = make_trainer(recipe, model, train_ids, val_ids, tokenizer, progress=progress, resume=resume)
    trainer.fit()
    return trainer


def checkpoint_path(recipe: PretrainRecipe) -> Path:
    return recipe.run_dir / "last.pt"


def load_bbc_gpt(
    recipe: PretrainRecipe, device: torch.device | str | None = None
) -> tuple[GPT, BPETokenizer]:
    """The finished model (in eval mode, on ``device``) and its tokenizer from the recipe's checkpoint.

    Raises FileNotFoundError when there is none, and CheckpointError when it is unreadable, belongs to
    another recipe, or stopped before ``max_steps``; each message says how to fix it.
    """
    path = checkpoint_path(recipe)
    if not path.is_file():
        raise FileNotFoundError(
            f"no pretrained BBC GPT at {path}; run notebook 3.6 (chapters/03_training/06_pretraining_a_gpt) "
            "or call course_lib.pretrained.bbc_gpt(train_if_missing=True) to train it"
        )
    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta") or {}
    if meta.get("recipe_key") != recipe.key:
        raise CheckpointError(
            f"{path} was trained with recipe {meta.get('recipe_key')!r}, not {recipe.key!r}; delete "
            f"{recipe.run_dir} and call bbc_gpt() to retrain"
        )
    max_steps = recipe.train["max_steps"]
    if int(ckpt["step"]) < max_steps:
        raise CheckpointError(
            f"{path} stopped at step {ckpt['step']} of {max_steps} (interrupted?); call "
            "bbc_gpt(train_if_missing=True) to resume it, or delete it to start over"
        )
    model = GPT(GPTConfig.from_dict(meta["model_config"]))
    load_model_state(model, ckpt["model"])
    tokenizer = BPETokenizer.load(recipe.run_dir / "tokenizer.json")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(
            f"the tokenizer in {recipe.run_dir} has {tokenizer.vocab_size} ids but the model "
            f"{model.config.vocab_size}; delete {recipe.run_dir} and call bbc_gpt() to retrain"
        )
    return model.to(device if device is not None else get_device()).eval(), tokenizer


def bbc_gpt(
    train_if_missing: bool = True,
    progress: bool = True,
    fast: bool | None = None,
    device: torch.device | str | None = None,
) -> tuple[GPT, BPETokenizer]:
    """Chapter 3's pretrained BBC News GPT and its tokenizer.

    Loads ``<cache>/pretrained/bbc-gpt-<mode>-<key>/last.pt``. When it is missing (or was interrupted)
    and ``train_if_missing`` is true, trains it first with the recipe of notebook 3.6 (learner mode:
    about ten minutes on a laptop CPU; fast mode: seconds), showing a progress bar when ``progress``.
    """
    recipe = bbc_recipe(fast)
    path = checkpoint_path(recipe)
    if train_if_missing:
        resume = False
        if path.is_file():
            try:
                resume = int(load_checkpoint(path)["step"]) < recipe.train["max_steps"]
            except CheckpointError:
                path.unlink()  # unreadable: train afresh
        if not path.is_file() or resume:
            if progress:
                what = "resuming" if resume else "training"
                print(
                    f"{what} the chapter-3 BBC News GPT ({recipe.mode} recipe) into {recipe.run_dir}",
                    flush=True,
                )
            pretrain(recipe, progress=progress, resume=resume)
    return load_bbc_gpt(recipe, device)


__all__ = [
    "FAST_RECIPE",
    "FULL_RECIPE",
    "PretrainRecipe",
    "bbc_documents",
    "bbc_gpt",
    "bbc_recipe",
    "bbc_tokenizer",
    "bbc_tokens",
    "bbc_topic_splits",
    "checkpoint_path",
    "load_bbc_gpt",
    "make_trainer",
    "pretrain",
]
