"""Chapter 5's ready-made classifiers: trained once with a fixed recipe, then loaded from the cache.

Each is kept in the cache as a deployment bundle (:mod:`course_lib.deploy`), so the compression and
deployment notebooks start from the models the classifier notebook built:

- :func:`digit_cnn` -- chapter 3's ``DigitCNN`` with chapter 3's recipe, on the split of
  :func:`digit_data`;
- :func:`bbc_topic_classifier` -- all-MiniLM-L6-v2 with a linear head on BBC News topics
  (:class:`~course_lib.heads.EncoderClassifier`); the steps are :func:`bbc_topic_data`,
  :func:`bbc_body_features` and :func:`train_topic_head`, which notebook 5.2 runs one by one.

Fast mode (``COURSE_FAST=1``) uses tiny recipes; the mode is part of each cache folder's name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from course_lib.env import cache_dir, fast_mode

APPS_VERSION = 2  # bump when a recipe below changes what it produces: old cache folders are then ignored

# ----------------------------------------------------------------------------------------------------
# Ready-made classifiers, kept in the cache as deployment bundles


def _mode(fast: bool | None) -> str:
    return "fast" if (fast_mode() if fast is None else fast) else "full"


BUNDLES = ("digit-cnn", "bbc-topics")


def bundle_dir(name: str, fast: bool | None = None) -> Path:
    """The cache folder of a ready-made bundle: ``<cache>/apps/<name>-<mode>-v<APPS_VERSION>``, for
    ``name`` in :data:`BUNDLES` (what ``python -m course_lib predict`` and ``load_for_inference`` read)."""
    if name not in BUNDLES:
        raise ValueError(f"unknown bundle {name!r}; the ready-made ones are {BUNDLES}")
    return cache_dir("apps", f"{name}-{_mode(fast)}-v{APPS_VERSION}")


def _bundle_or_none(path: Path, device: torch.device | str | None) -> Any:
    from course_lib.deploy import load_for_inference

    if not (path / "config.json").is_file():
        return None
    try:
        return load_for_inference(path, device=device)
    except (ValueError, KeyError, RuntimeError, OSError):
        return None  # unreadable or from an older recipe: rebuilt by the caller


# ----------------------------------------------------------------------------------------------------
# 1. Chapter 3's CNN on the digits, as a ready-made classifier

DIGIT_LABELS = tuple(str(d) for d in range(10))
DIGIT_CNN_KWARGS = {"image_size": 8, "n_classes": 10, "channels": [32, 64], "dropout": 0.25}


def digit_data() -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Images (N, 1, 8, 8), labels (N,) and chapter 3's fixed 80/10/10 split (a ``Splits``)."""
    from course_lib.datasets import Splits, digits

    images, labels = digits()
    splits = Splits.make(labels, fractions=(0.8, 0.1, 0.1), seed=0)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), splits


def digit_cnn(fast: bool | None = None, device: torch.device | str | None = "cpu") -> Any:
    """Chapter 3's DigitCNN trained with chapter 3's recipe (SGD with momentum, 30 epochs; fast mode 3)
    on the training split of :func:`digit_data`: an :class:`~course_lib.deploy.InferenceBundle`.

    Loaded from ``<cache>/apps/`` when it is there, trained (about half a minute on a CPU) and saved
    there first when it is not.
    """
    from course_lib.deploy import load_for_inference, save_for_inference
    from course_lib.mlp_cnn import DigitCNN
    from course_lib.training_basics import fit_classifier

    path = bundle_dir("digit-cnn", fast)
    bundle = _bundle_or_none(path, device)
    if bundle is None:
        x, y, splits = digit_data()
        (x_train, x_val, _), (y_train, y_val, _) = splits.take(x), splits.take(y)
        torch.manual_seed(0)
        cnn = DigitCNN(**DIGIT_CNN_KWARGS)
        fit_classifier(
            cnn,
            (x_train, y_train),
            (x_val, y_val),
            torch.optim.SGD(cnn.parameters(), lr=0.01, momentum=0.9),
            epochs=3 if _mode(fast) == "fast" else 30,
            batch_size=32,
            seed=0,
            device="cpu",
        )
        config = {"architecture": "DigitCNN", "kwargs": DIGIT_CNN_KWARGS, "labels": list(DIGIT_LABELS)}
        bundle = load_for_inference(save_for_inference(cnn, path, config), device=device)
    return bundle


# ----------------------------------------------------------------------------------------------------
# 2. MiniLM + a linear head on BBC News topics


@dataclass(frozen=True)
class TopicRecipe:
    """Everything that decides the BBC topic classifier."""

    mode: str  # "full" or "fast": part of the cache folder's name
    per_topic: int | None  # articles per topic (the first ones of each folder); None = all 2,092 distinct
    max_length: int  # tokens of each article body the encoder reads (MiniLM accepts up to 256)
    epochs: int  # passes of the linear head over the training features
    lr: float = 0.01  # AdamW learning rate of the head
    weight_decay: float = 0.01
    batch_size: int = 64


FULL_TOPIC_RECIPE = TopicRecipe(mode="full", per_topic=None, max_length=128, epochs=50)
FAST_TOPIC_RECIPE = TopicRecipe(mode="fast", per_topic=20, max_length=32, epochs=10)


def topic_recipe(fast: bool | None = None) -> TopicRecipe:
    """:data:`FAST_TOPIC_RECIPE` in fast mode, :data:`FULL_TOPIC_RECIPE` otherwise."""
    return FAST_TOPIC_RECIPE if _mode(fast) == "fast" else FULL_TOPIC_RECIPE


def bbc_topic_data(recipe: TopicRecipe) -> tuple[list[Any], np.ndarray, Any]:
    """The articles (:class:`~course_lib.datasets.Article`), their topic ids, and a stratified 80/10/10
    :class:`~course_lib.datasets.Splits` (seed 0).

    The articles are ``bbc_news(dedupe=True)``: the first copy of each body only (2,092 of 2,225), so no
    test body also occurs in the training split (as in chapter 4).
    """
    from course_lib.datasets import Splits, bbc_news

    articles = bbc_news(dedupe=True)
    if recipe.per_topic is not None:
        articles = [a for t in range(5) for a in [x for x in articles if x.label_id == t][: recipe.per_topic]]
    labels = np.array([a.label_id for a in articles])
    return articles, labels, Splits.make(labels, fractions=(0.8, 0.1, 0.1), seed=0)


def bbc_body_features(recipe: TopicRecipe, encoder: Any, articles: Sequence[Any], progress: bool = True):
    """(N, 384) mean-pooled MiniLM vectors of the article bodies (not normalised: what the head of an
    EncoderClassifier reads), cached on disk. ``encoder`` is a :class:`~course_lib.encoder.SentenceEncoder`.
    ``F.normalize`` of them gives the unit vectors of semantic search."""
    return encoder.encode(
        [a.body for a in articles],
        max_length=recipe.max_length,
        normalize=False,
        cache=f"minilm-bbc-bodies-{recipe.mode}-v{APPS_VERSION}",
        progress=progress,
    )


def train_topic_head(
    recipe: TopicRecipe, features: torch.Tensor, labels: Any, splits: Any
) -> tuple[nn.Linear, Any]:
    """A Linear(384, 5) trained on the training features with AdamW (seed 0): a *linear probe* of the
    frozen encoder. Returns the head and the :class:`~course_lib.training_basics.FitHistory`."""
    from course_lib.training_basics import fit_classifier

    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    (x_train, x_val, _), (y_train, y_val, _) = splits.take(features), splits.take(y)
    torch.manual_seed(0)
    head = nn.Linear(features.shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    history = fit_classifier(
        head, (x_train, y_train), (x_val, y_val), opt, recipe.epochs, recipe.batch_size, seed=0, device="cpu"
    )
    return head.eval(), history


def bbc_topic_classifier(
    fast: bool | None = None, device: torch.device | str | None = "cpu", progress: bool = True
) -> Any:
    """MiniLM + the linear head of :func:`train_topic_head` as one EncoderClassifier: an
    :class:`~course_lib.deploy.InferenceBundle` whose tokenizer reads raw text (``labels`` = the topics,
    ``config["max_length"]`` = the recipe's). Loaded from ``<cache>/apps/``, or built and saved there
    (learner mode: about two minutes to encode the articles on a CPU the first time).
    """
    from course_lib.datasets import BBC_LABELS
    from course_lib.deploy import load_for_inference, save_for_inference
    from course_lib.encoder import SentenceEncoder, minilm_dir
    from course_lib.heads import EncoderClassifier

    recipe = topic_recipe(fast)
    path = bundle_dir("bbc-topics", fast)
    bundle = _bundle_or_none(path, device)
    if bundle is None:
        encoder = SentenceEncoder.from_minilm(device="cpu")
        articles, labels, splits = bbc_topic_data(recipe)
        head, _ = train_topic_head(
            recipe, bbc_body_features(recipe, encoder, articles, progress), labels, splits
        )
        model = EncoderClassifier(encoder.encoder, n_classes=len(BBC_LABELS), dropout=0.0)
        model.head.out.load_state_dict(head.state_dict())
        config = {
            "architecture": "EncoderClassifier",
            "kwargs": {
                "encoder": dataclasses.asdict(encoder.encoder.config),
                "n_classes": len(BBC_LABELS),
                "dropout": 0.0,
            },
            "labels": list(BBC_LABELS),
            "max_length": recipe.max_length,
        }
        save_for_inference(model, path, config, tokenizer_path=minilm_dir() / "tokenizer.json")
        bundle = load_for_inference(path, device=device)
    return bundle


__all__ = [
    "BUNDLES",
    "DIGIT_LABELS",
    "FAST_TOPIC_RECIPE",
    "FULL_TOPIC_RECIPE",
    "TopicRecipe",
    "bbc_body_features",
    "bbc_topic_classifier",
    "bbc_topic_data",
    "bundle_dir",
    "digit_cnn",
    "digit_data",
    "topic_recipe",
]
