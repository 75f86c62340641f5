"""Choosing hyperparameters: a grid search, the learning-rate range test, and their plots.

* :func:`grid_search` runs ``train_fn(**params)`` for every combination in a grid and keeps a table.
* :func:`lr_range_test` raises the learning rate exponentially for a few hundred steps and records the
  loss; the useful range is where the loss falls fastest, just before it blows up (Smith, 2015).
  The model's weights are restored afterwards, so the test costs time but no training.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from course_lib.distributed import DistInfo
from course_lib.env import move_to_device
from course_lib.trainer import TrainConfig, default_loss, make_batches, param_groups

# ----------------------------------------------------------------------------------------------------
# grid search


def grid_search(
    train_fn: Callable[..., float | Mapping[str, float]],
    grid: Mapping[str, Sequence[Any]],
    *,
    metric: str = "val_loss",
    mode: str = "min",
    progress: bool = True,
    on_error: str = "raise",
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Call ``train_fn(**params)`` for every combination of ``grid``; return (all results, the best one).

    ``train_fn`` returns the metric (a number) or a dict of metrics that includes ``metric``.
    Each result is ``{**params, **metrics, "time_s": seconds}``. ``mode`` says whether a lower ("min")
    or higher ("max") metric is better. ``on_error="record"`` notes a failed run (e.g. a diverged
    one) with ``metric = nan`` and an ``"error"`` entry instead of stopping the search.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    if not grid:
        raise ValueError("the grid is empty; give at least one hyperparameter, e.g. {'lr': [1e-3, 3e-4]}")
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    results: list[dict[str, Any]] = []
    for combo in tqdm(combos, desc="grid search", disable=not progress):
        params = dict(zip(keys, combo))
        t0 = time.perf_counter()
        try:
            out = train_fn(**params)
        except Exception as e:
            if on_error == "raise":
                raise
            results.append({**params, metric: math.nan, "error": f"{type(e).__name__}: {e}"})
            continue
        metrics = {metric: float(out)} if isinstance(out, (int, float)) else dict(out)
        if metric not in metrics:
            raise KeyError(
                f"train_fn returned {sorted(metrics)} but the search ranks by {metric!r}; "
                f"return that key or pass metric=<one of {sorted(metrics)}>"
            )
        results.append({**params, **metrics, "time_s": time.perf_counter() - t0})
    return results, best_result(results, metric, mode)


def best_result(
    results: Sequence[Mapping[str, Any]], metric: str, mode: str = "min"
) -> dict[str, Any] | None:
    """The result with the lowest (``mode="min"``) or highest finite ``metric``; None if there is none."""
    finite = [r for r in results if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not finite:
        return None
    pick = min if mode == "min" else max
    return dict(pick(finite, key=lambda r: r[metric]))


# ----------------------------------------------------------------------------------------------------
# learning-rate range test


def lr_range_test(
    model: nn.Module,
    train_data: Any,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
    batch_size: int = 16,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
    seed: int = 0,
) -> tuple[list[float], list[float]]:
    """Train with an exponentially rising learning rate and record the smoothed loss at each step.

    step i uses lr_i = start_lr * (end_lr / start_lr) ** (i / (steps - 1)). The loss is an exponential
    moving average (``smooth`` = its decay, bias-corrected; 0 = raw losses). The test stops early
    once the smoothed loss exceeds ``diverge`` times the best so far, or is not finite. ``train_data``
    and ``loss_fn`` are what the Trainer takes. Weights, train/eval mode and the global RNG are
    restored at the end, so the model is exactly as it was.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to ramp the learning rate, got {steps}")
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1) (0 = no smoothing; 0.98 is typical), got {smooth}")
    if diverge <= 1:
        raise ValueError(f"diverge must be > 1 (the blow-up factor over the best loss), got {diverge}")
    loss_fn = loss_fn or default_loss
    device = next(model.parameters()).device
    saved_state = copy.deepcopy(model.state_dict())
    was_training, rng = model.training, torch.get_rng_state()
    cfg = TrainConfig(batch_size=batch_size, seed=seed)
    batches = make_batches(train_data, cfg, DistInfo(), train=True)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=start_lr, betas=betas)
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    model.train()
    try:
        for i in range(steps):
            lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = loss_fn(model, move_to_device(batches.next(i), device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            raw = loss.item()
            avg = smooth * avg + (1 - smooth) * raw
            smoothed = avg / (1 - smooth ** (i + 1))  # bias correction: early averages lean towards 0
            lrs.append(lr)
            losses.append(smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                break
            best = min(best, smoothed)
    finally:
        model.load_state_dict(saved_state)
        model.train(was_training)
        torch.set_rng_state(rng)
    return lrs, losses


def suggest_lr(
    lrs: Sequence[float], losses: Sequence[float], skip_start: int = 2, skip_end: int = 2
) -> float:
    """The learning rate where the loss falls fastest (most negative d loss / d log lr)."""
    if len(lrs) != len(losses):
        raise ValueError(
            f"{len(lrs)} learning rates but {len(losses)} losses; pass the pair lr_range_test returned"
        )
    lo, hi = skip_start, len(lrs) - skip_end
    if hi - lo < 2:
        raise ValueError(
            f"only {len(lrs)} points; run lr_range_test with more steps (or a smaller end_lr) to get a slope"
        )
    x = np.log(np.asarray(lrs[lo:hi], dtype=np.float64))
    y = np.asarray(losses[lo:hi], dtype=np.float64)
    slope = np.gradient(y, x)
    return float(lrs[lo + int(np.argmin(slope))])


# ----------------------------------------------------------------------------------------------------
# plots


def plot_lr_range(lrs: Sequence[float], losses: Sequence[float], suggestion: bool = True):
    """Loss against learning rate on a log axis, with the steepest-descent suggestion marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    ax.plot(lrs, losses, lw=1.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("learning-rate range test")
    if suggestion and len(lrs) >= 6:
        lr = suggest_lr(lrs, losses)
        i = list(lrs).index(lr)
        ax.plot([lr], [losses[i]], "o", ms=8, label=f"steepest descent: {lr:.1e}")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_grid(
    results: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    hue: str | None = None,
    logx: bool | None = None,
):
    """One line of ``y`` against ``x`` per value of ``hue`` (e.g. val_loss vs lr, one line per batch size).

    ``logx=None`` uses a log axis when every x is positive and they span at least a factor of 100.
    """
    import matplotlib.pyplot as plt

    missing = [k for k in (x, y, hue) if k is not None and not any(k in r for r in results)]
    if not results or missing:
        available = sorted({k for r in results for k in r})
        raise KeyError(f"no results carry {missing or [x, y]}; available keys: {available}")
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault(r.get(hue) if hue else None, []).append(r)
    xs_all = [r[x] for r in results]
    numeric = all(isinstance(v, (int, float)) for v in xs_all)
    if logx is None:
        logx = numeric and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100
    categories = list(dict.fromkeys(xs_all)) if not numeric else []
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    try:
        hue_values = sorted(groups)  # numbers in numeric order
    except TypeError:
        hue_values = sorted(groups, key=str)
    for key in hue_values:
        rows = sorted(groups[key], key=lambda r: r[x] if numeric else categories.index(r[x]))
        xs = [r[x] if numeric else categories.index(r[x]) for r in rows]
        ax.plot(xs, [r[y] for r in rows], "o-", label=None if hue is None else f"{hue}={key}")
    if not numeric:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue is not None:
        ax.legend(title=hue)
    fig.tight_layout()
    return fig


__all__ = ["best_result", "grid_search", "lr_range_test", "plot_grid", "plot_lr_range", "suggest_lr"]
