"""Figures for training: loss curves, optimizer paths, confusion matrices and misclassified images.

Each function draws one figure and returns it; the notebook calls ``plt.show()``. Colours come from
:func:`course_lib.plots.use_course_style`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from course_lib.plots import PALETTE

Curve = Sequence[float] | tuple[Sequence[float], Sequence[float]]  # y values, or (x values, y values)


def _xy(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from either y alone (x = 0, 1, ...) or an (x, y) pair; NaN gaps are dropped."""
    if isinstance(curve, tuple) and len(curve) == 2 and np.ndim(curve[0]) == 1:
        x, y = np.asarray(curve[0], dtype=float), np.asarray(curve[1], dtype=float)
    else:
        y = np.asarray(curve, dtype=float)
        x = np.arange(len(y), dtype=float)
    if x.shape != y.shape or y.ndim != 1:
        raise ValueError(
            f"a curve must be y values or an (x, y) pair of equal-length 1-D sequences, got x {x.shape} and "
            f"y {y.shape}"
        )
    keep = ~np.isnan(y)
    return x[keep], y[keep]


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start), for noisy per-step losses."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    v = np.asarray(values, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    hi = np.arange(1, len(v) + 1)
    lo = np.maximum(0, hi - window)
    return (csum[hi] - csum[lo]) / (hi - lo)


def plot_curves(
    curves: Mapping[str, Curve],
    *,
    xlabel: str = "step",
    ylabel: str = "loss",
    title: str = "",
    logy: bool = False,
    hlines: Mapping[str, float] | None = None,
    styles: Mapping[str, str] | None = None,
    ax: plt.Axes | None = None,
) -> Figure:
    """Several named curves on one axis, with optional horizontal reference lines (e.g. baselines)."""
    if not curves:
        raise ValueError("no curves to plot; pass {'name': values, ...}")
    if ax is None:
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    for name, curve in curves.items():
        x, y = _xy(curve)
        ax.plot(x, y, (styles or {}).get(name, "-"), label=name)
    for i, (name, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, ls=":", lw=1.5, color=PALETTE[(len(curves) + i) % len(PALETTE)], label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_train_val(
    runs: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    x_key: str = "epoch",
    xlabel: str = "epoch",
    ylabel: str = "loss",
    title: str = "",
    best_marker: bool = True,
    side_by_side: bool = False,
    logy: bool = False,
) -> Figure:
    """Train (solid) and validation (dashed) curves of each run, one colour per run.

    A run is a mapping with ``"train_loss"``, ``"val_loss"`` and optionally ``x_key`` columns (e.g. the
    Trainer's ``history_columns()``); the lowest validation loss is marked with a dot. ``side_by_side``
    draws training curves on a log scale on the left and validation curves on a linear scale on the
    right, zoomed past the first tenth of each run, which shows a validation loss that creeps up while
    the training loss keeps falling.
    """
    if not runs:
        raise ValueError("no runs to plot; pass {'name': {'train_loss': [...], 'val_loss': [...]}}")
    if side_by_side:
        fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 3.8))
    else:
        fig, ax_train = plt.subplots()
        ax_val = ax_train
    for i, (name, run) in enumerate(runs.items()):
        missing = [k for k in ("train_loss", "val_loss") if k not in run]
        if missing:
            raise KeyError(f"run {name!r} has no {missing}; it needs 'train_loss' and 'val_loss' columns")
        colour = PALETTE[i % len(PALETTE)]
        for key, ax, style, label in (
            ("train_loss", ax_train, "-", "train"),
            ("val_loss", ax_val, "--", "val"),
        ):
            xs = run[x_key] if x_key in run else range(1, len(run[key]) + 1)
            x, y = _xy((list(xs), list(run[key])))
            ax.plot(x, y, style, color=colour, label=name if side_by_side else f"{name} ({label})")
            if key == "val_loss" and best_marker and len(y):
                ax.plot(x[np.argmin(y)], y.min(), "o", color=colour, ms=6)
    if side_by_side:  # zoom in on the part of the validation curves where the runs differ
        later = [v for run in runs.values() for v in list(run["val_loss"])[len(run["val_loss"]) // 10 :]]
        later = [v for v in later if not math.isnan(v)]
        if later:
            low, high = min(later), max(later)
            ax_val.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    axes = (
        [(ax_train, "training " + ylabel), (ax_val, "validation " + ylabel)]
        if side_by_side
        else [(ax_train, ylabel)]
    )
    for ax, label in axes:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.legend(fontsize=8, ncol=2 if len(runs) > 2 and not side_by_side else 1)
    if logy or side_by_side:
        ax_train.set_yscale("log")
    if title:
        (fig.suptitle if side_by_side else ax_train.set_title)(title)
    fig.tight_layout()
    return fig


def plot_lm_training(
    history: Mapping[str, Sequence[float]],
    baselines: Mapping[str, float] | None = None,
    title: str = "",
) -> Figure:
    """Two panels: train/val loss in nats per token against step, and validation perplexity exp(loss).

    ``history`` holds ``"step"``, ``"train_loss"`` and ``"val_loss"`` columns (NaN where a row has no
    value, as the Trainer's ``history_columns()`` gives them); ``baselines`` are drawn as dotted lines.
    """
    for key in ("step", "train_loss", "val_loss"):
        if key not in history:
            raise KeyError(f"history has no {key!r} column; pass Trainer.history_columns()")
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = list(history["step"])
    plot_curves(
        {"train": (steps, history["train_loss"]), "val": (steps, history["val_loss"])},
        ylabel="loss (nats per token)",
        hlines=baselines,
        styles={"val": "o-"},
        ax=ax_loss,
        title="loss",
    )
    _, val = _xy((steps, history["val_loss"]))
    x_val, _ = _xy((steps, history["val_loss"]))
    ax_ppl.plot(x_val, np.exp(val), "o-", color=PALETTE[1], label="val")
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax_ppl.axhline(math.exp(value), ls=":", lw=1.5, color=PALETTE[(2 + i) % len(PALETTE)], label=name)
    ax_ppl.set_yscale("log")
    ax_ppl.set_xlabel("step")
    ax_ppl.set_ylabel("perplexity (log scale)")
    ax_ppl.set_title("validation perplexity")
    ax_ppl.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_optimizer_paths(
    f: Callable[[np.ndarray, np.ndarray], np.ndarray],
    paths: Mapping[str, np.ndarray],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    minimum: tuple[float, float] | None = None,
    title: str = "",
) -> Figure:
    """Contours of a 2-D loss ``f(X, Y)`` with the path (steps, 2) each optimizer took across it."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    X, Y = np.meshgrid(np.linspace(*xlim, 300), np.linspace(*ylim, 300))
    Z = f(X, Y)
    levels = np.quantile(Z, np.linspace(0.0, 0.95, 25) ** 2)
    ax.contour(X, Y, Z, levels=np.unique(levels), colors="#bbbbbb", linewidths=0.7)
    for i, (name, path) in enumerate(paths.items()):
        path = np.asarray(path)
        if path.ndim != 2 or path.shape[1] != 2:
            raise ValueError(f"path {name!r} must have shape (steps, 2), got {path.shape}")
        ax.plot(path[:, 0], path[:, 1], ".-", ms=3, lw=1.2, color=PALETTE[i % len(PALETTE)], label=name)
    if minimum is not None:
        ax.plot(*minimum, "k*", ms=12, label="minimum")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.grid(False)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    cm: np.ndarray, labels: Sequence[str], title: str = "Confusion matrix", normalize: bool = False
) -> Figure:
    """Counts (or row fractions with ``normalize``) of true class (rows) against predicted class (columns)."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(
            f"want a square (C, C) matrix and C labels, got a matrix of shape {cm.shape} and {len(labels)} "
            "labels; pass metrics.confusion_matrix(y_true, y_pred, labels=range(C)) and one name per class"
        )
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    side = 1.6 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shown, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            text = f"{shown[i, j]:.2f}" if normalize else f"{cm[i, j]:d}"
            if cm[i, j] or i == j:
                colour = "white" if shown[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_image_grid(
    images: np.ndarray | Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    title: str = "",
    cmap: str = "gray_r",
) -> Figure:
    """Small greyscale images (N, H, W) in a grid, each with an optional caption."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"want images of shape (N, H, W), got {images.shape}; reshape flat pixels first")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images; give one title per image")
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.1 * ncols, 1.35 * nrows + (0.4 if title else 0)))
    axes = np.atleast_1d(axes).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], cmap=cmap, vmin=0, vmax=max(1.0, float(images.max())))
            if titles is not None:
                ax.set_title(titles[k], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_misclassified(
    images: np.ndarray,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str] | None = None,
    max_images: int = 20,
    ncols: int = 10,
) -> Figure:
    """The images whose prediction is wrong, captioned "true -> predicted"."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    images = np.asarray(images)
    if not len(images) == len(y_true) == len(y_pred):
        raise ValueError(
            f"got {len(images)} images, {len(y_true)} true labels and {len(y_pred)} predictions; "
            "pass one of each per example"
        )
    wrong = np.flatnonzero(y_true != y_pred)[:max_images]
    if len(wrong) == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified examples", ha="center", va="center")
        return fig

    def name(c: int) -> str:
        return str(labels[c]) if labels is not None else str(c)

    captions = [f"{name(y_true[i])} → {name(y_pred[i])}" for i in wrong]
    return plot_image_grid(
        images[wrong], captions, ncols=ncols, title=f"misclassified: true → predicted ({len(wrong)} shown)"
    )


__all__ = [
    "plot_confusion_matrix",
    "plot_curves",
    "plot_image_grid",
    "plot_lm_training",
    "plot_misclassified",
    "plot_optimizer_paths",
    "plot_train_val",
    "smooth",
]
