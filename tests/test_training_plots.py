"""The training figures draw what they are given and reject input they cannot draw."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course_lib.training_plots import (  # noqa: E402
    plot_confusion_matrix,
    plot_curves,
    plot_image_grid,
    plot_lm_training,
    plot_misclassified,
    plot_optimizer_paths,
    plot_train_val,
    smooth,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_smooth_is_a_trailing_mean():
    np.testing.assert_allclose(smooth([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(smooth([4.0, 0.0], 1), [4.0, 0.0])
    with pytest.raises(ValueError, match="window must be >= 1"):
        smooth([1.0], 0)


def test_plot_curves_draws_each_curve_and_each_reference_line():
    fig = plot_curves({"a": [3, 2, 1], "b": ([0, 10, 20], [1, float("nan"), 0.5])}, hlines={"bigram": 1.5})
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b", "bigram"]
    np.testing.assert_array_equal(lines[1].get_xdata(), [0, 20])  # the NaN gap is dropped
    with pytest.raises(ValueError, match="no curves"):
        plot_curves({})
    with pytest.raises(ValueError, match="equal-length"):
        plot_curves({"bad": ([0, 1, 2], [1, 2])})


@pytest.mark.parametrize("side_by_side", [False, True])
def test_plot_train_val_marks_the_lowest_validation_loss(side_by_side):
    runs = {
        "r1": {"train_loss": [2, 1, 0.5], "val_loss": [2.1, 1.2, 1.4]},
        "r2": {"train_loss": [3, 2], "val_loss": [3, 2.5]},
    }
    fig = plot_train_val(runs, side_by_side=side_by_side)
    assert len(fig.axes) == (2 if side_by_side else 1)
    markers = [line for ax in fig.axes for line in ax.get_lines() if line.get_marker() == "o"]
    assert sorted((float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in markers) == [
        (2.0, 1.2),
        (2.0, 2.5),
    ]
    with pytest.raises(KeyError, match="val_loss"):
        plot_train_val({"r": {"train_loss": [1.0]}})


def test_side_by_side_zooms_the_validation_panel_past_the_first_tenth():
    val = [9.0, 5.0] + [0.2 + 0.01 * i for i in range(18)]  # a steep start, then a slow climb
    fig = plot_train_val({"r": {"train_loss": val, "val_loss": val}}, side_by_side=True)
    low, high = fig.axes[1].get_ylim()
    assert low < 0.2 and 0.37 < high < 1.0  # the 9.0 and 5.0 of the first epochs are off the panel


def test_plot_lm_training_shows_loss_and_perplexity_with_baselines():
    history = {
        "step": [0, 10, 20],
        "train_loss": [float("nan"), 5.0, 4.0],
        "val_loss": [6.0, float("nan"), 4.5],
    }
    fig = plot_lm_training(history, baselines={"bigram": 5.0})
    loss_ax, ppl_ax = fig.axes
    val = [line for line in ppl_ax.get_lines() if line.get_label() == "val"][0]
    np.testing.assert_allclose(val.get_ydata(), np.exp([6.0, 4.5]))
    assert any(
        line.get_label() == "bigram" and math.isclose(line.get_ydata()[0], math.exp(5.0))
        for line in ppl_ax.get_lines()
    )
    with pytest.raises(KeyError, match="history_columns"):
        plot_lm_training({"step": [0]})


def test_plot_optimizer_paths_checks_path_shapes():
    fig = plot_optimizer_paths(
        lambda x, y: x**2 + y**2, {"sgd": np.zeros((5, 2))}, (-1, 1), (-1, 1), minimum=(0, 0)
    )
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["sgd", "minimum"]
    with pytest.raises(ValueError, match=r"shape \(steps, 2\)"):
        plot_optimizer_paths(lambda x, y: x + y, {"bad": np.zeros((5, 3))}, (-1, 1), (-1, 1))


def test_plot_confusion_matrix_writes_counts_and_checks_shape():
    cm = np.array([[5, 1], [0, 4]])
    fig = plot_confusion_matrix(cm, ["cat", "dog"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["1", "4", "5"]  # zero off-diagonal cells stay blank
    with pytest.raises(ValueError, match="one name per class"):
        plot_confusion_matrix(cm, ["cat"])
    normalised = plot_confusion_matrix(cm, ["cat", "dog"], normalize=True)
    assert "0.83" in [t.get_text() for t in normalised.axes[0].texts]


def test_image_grid_and_misclassified():
    images = np.random.default_rng(0).random((7, 8, 8))
    fig = plot_image_grid(images, [str(i) for i in range(7)], ncols=4)
    assert len(fig.axes) == 8 and sum(ax.has_data() for ax in fig.axes) == 7
    fig = plot_misclassified(images, [0, 1, 2, 3, 4, 5, 6], [0, 1, 9, 3, 4, 8, 6])
    assert [ax.get_title() for ax in fig.axes if ax.has_data()] == ["2 → 9", "5 → 8"]
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        plot_image_grid(images.reshape(7, 64))
    with pytest.raises(ValueError, match="one of each per example"):
        plot_misclassified(images, [0, 1], [0, 1])
    empty = plot_misclassified(images[:2], [0, 1], [0, 1])
    assert empty.axes[0].texts[0].get_text() == "no misclassified examples"
