"""Grid search, the learning-rate range test and their plots (Agg backend)."""

from __future__ import annotations

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from trainer_helpers import TinyRegressor, params_of, regression_dataset  # noqa: E402

from course_lib.hparam_search import (  # noqa: E402
    best_result,
    grid_search,
    lr_range_test,
    plot_grid,
    plot_lr_range,
    suggest_lr,
)

LR_TOL = 1e-12  # relative: the ramp is closed-form float64 on both sides


# ---------------------------------------------------------------------------------------------- grid search


def _bowl(lr: float, batch: int) -> float:
    return (math.log10(lr) + 3) ** 2 + batch / 100  # best at lr = 1e-3 and the smallest batch


def test_grid_search_tries_every_combination_in_order_and_finds_the_best():
    grid = {"lr": [1e-4, 1e-3, 1e-2], "batch": [32, 8]}
    results, best = grid_search(_bowl, grid, progress=False)
    assert [(r["lr"], r["batch"]) for r in results] == list(itertools.product(grid["lr"], grid["batch"]))
    assert all(
        r["val_loss"] == pytest.approx(_bowl(r["lr"], r["batch"])) and r["time_s"] >= 0 for r in results
    )
    assert (best["lr"], best["batch"]) == (1e-3, 8)
    assert best == min(results, key=lambda r: r["val_loss"])


def test_grid_search_with_a_dict_of_metrics_and_max_mode():
    results, best = grid_search(
        lambda width: {"val_loss": 1 / width, "accuracy": 1 - 1 / width},
        {"width": [2, 8, 4]},
        metric="accuracy",
        mode="max",
        progress=False,
    )
    assert best["width"] == 8 and set(results[0]) == {"width", "val_loss", "accuracy", "time_s"}


def test_failed_runs_are_recorded_or_raised():
    def train(lr):
        if lr > 1:
            raise FloatingPointError("diverged")
        return lr

    results, best = grid_search(train, {"lr": [0.5, 2.0]}, progress=False, on_error="record")
    assert math.isnan(results[1]["val_loss"]) and "diverged" in results[1]["error"]
    assert best["lr"] == 0.5
    with pytest.raises(FloatingPointError):
        grid_search(train, {"lr": [0.5, 2.0]}, progress=False)
    assert best_result([{"val_loss": math.nan}], "val_loss") is None


@pytest.mark.parametrize(
    "grid, kwargs, error, message",
    [
        ({}, {}, ValueError, "grid is empty"),
        ({"lr": []}, {}, ValueError, r"grid\['lr'\] must be a non-empty list"),
        ({"lr": "0.1"}, {}, ValueError, "non-empty list"),
        ({"lr": [1]}, {"mode": "best"}, ValueError, "mode must be"),
        ({"lr": [1]}, {"metric": "accuracy"}, KeyError, "return that key or pass metric="),
    ],
)
def test_grid_search_input_errors(grid, kwargs, error, message):
    with pytest.raises(error, match=message):
        grid_search(lambda lr: {"val_loss": lr}, grid, progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------- lr range test


def test_lr_range_test_ramps_exponentially_and_restores_the_model():
    torch.manual_seed(0)
    model = TinyRegressor()
    model.eval()
    before = params_of(model)
    rng_before = torch.get_rng_state()
    lrs, losses = lr_range_test(
        model, regression_dataset(), start_lr=1e-5, end_lr=1e-1, steps=30, batch_size=16
    )
    expected = [1e-5 * (1e-1 / 1e-5) ** (i / 29) for i in range(30)]
    assert lrs == pytest.approx(expected[: len(lrs)], rel=LR_TOL)
    assert len(lrs) == len(losses) == 30 and all(math.isfinite(v) for v in losses)
    for k, v in params_of(model).items():
        assert torch.equal(v, before[k]), k  # the weights are back
    assert not model.training  # so is eval mode
    assert torch.equal(torch.get_rng_state(), rng_before)  # and the global RNG


def test_lr_range_test_stops_when_the_loss_blows_up():
    torch.manual_seed(0)
    model = TinyRegressor()
    before = params_of(model)
    lrs, losses = lr_range_test(model, regression_dataset(), start_lr=1e-4, end_lr=1e6, steps=200, smooth=0.5)
    assert len(lrs) < 200  # stopped early
    assert not math.isfinite(losses[-1]) or losses[-1] > 4 * min(losses[:-1])
    assert all(torch.equal(v, before[k]) for k, v in params_of(model).items())


def test_bias_corrected_smoothing_of_a_constant_loss_is_that_constant():
    model = TinyRegressor()

    def constant_loss(m, batch):
        return sum(p.sum() for p in m.parameters()) * 0.0 + 3.0

    _, losses = lr_range_test(
        model, lambda step, g: None, constant_loss, start_lr=1e-4, end_lr=1e-2, steps=10, smooth=0.9
    )
    assert losses == pytest.approx([3.0] * 10, rel=1e-12)  # without the correction the first would be 0.3


def test_suggest_lr_finds_the_steepest_descent():
    lrs = np.logspace(-6, 0, 61)
    losses = 2 - np.tanh(2 * (np.log10(lrs) + 3))  # steepest at 1e-3
    assert suggest_lr(lrs.tolist(), losses.tolist()) == pytest.approx(1e-3, rel=0.2)
    with pytest.raises(ValueError, match="more steps"):
        suggest_lr([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"start_lr": 1.0, "end_lr": 0.1}, "start_lr < end_lr"), ({"steps": 1}, "steps must be >= 2")],
)
def test_lr_range_test_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_range_test(TinyRegressor(), regression_dataset(), **kwargs)


# ---------------------------------------------------------------------------------------------- plots


def test_plot_grid_draws_one_line_per_hue_on_a_log_axis():
    results, _ = grid_search(_bowl, {"lr": [1e-5, 1e-3, 1e-1], "batch": [8, 32]}, progress=False)
    fig = plot_grid(results, x="lr", y="val_loss", hue="batch")
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and len(ax.lines) == 2 and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["batch=8", "batch=32"]
    line = ax.lines[0]
    assert list(line.get_xdata()) == [1e-5, 1e-3, 1e-1]  # sorted by x
    assert ax.get_xlabel() == "lr" and ax.get_ylabel() == "val_loss"


def test_plot_grid_with_categories_and_a_missing_key():
    results = [{"mode": m, "acc": a} for m, a in [("head", 0.7), ("lora", 0.85), ("full", 0.9)]]
    fig = plot_grid(results, x="mode", y="acc")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["head", "lora", "full"]
    with pytest.raises(KeyError, match="available keys"):
        plot_grid(results, x="lr", y="acc")


def test_plot_lr_range_marks_the_suggestion():
    lrs = np.logspace(-6, 0, 40).tolist()
    losses = (2 - np.tanh(2 * (np.log10(lrs) + 3))).tolist()
    fig = plot_lr_range(lrs, losses)
    ax = fig.axes[0]
    assert (
        ax.get_xscale() == "log"
        and len(ax.lines) == 2
        and "steepest" in ax.get_legend().get_texts()[0].get_text()
    )
