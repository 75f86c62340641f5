"""Figures shared by the chapters, so every chapter looks the same."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

PALETTE = ("#3b6ea5", "#e07a2f", "#4a9a5b", "#b5443b", "#7d5ba6", "#8c6d46", "#c65d9f", "#6f6f6f")

PIPELINE_STAGES = (
    ("Data", "collect, clean,\nnormalise, split"),
    ("Model choice", "MLP, CNN, RNN,\nTransformer"),
    ("Pretraining", "self-supervised on\nlarge unlabelled text"),
    ("Fine-tuning", "task data: head,\nLoRA or full"),
    ("Evaluation", "accuracy, F1,\nperplexity, people"),
    ("Deployment", "compress, export,\nserve"),
)


def use_course_style() -> None:
    """One look for every figure of the course."""
    plt.rcParams.update(
        {
            "figure.figsize": (7.5, 4.0),
            "figure.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": plt.cycler(color=PALETTE),
            "font.size": 10,
        }
    )


def pipeline_diagram(stages: Sequence[tuple[str, str]] = PIPELINE_STAGES, loop_back: bool = True) -> Figure:
    """The development pipeline from data to deployment, with the evaluate-and-iterate loop."""
    fig, ax = plt.subplots(figsize=(11, 2.8))
    ax.set_xlim(0, len(stages) * 2)
    ax.set_ylim(-1.4, 1.05)
    ax.axis("off")
    centres = []
    for i, (title, detail) in enumerate(stages):
        x = i * 2 + 0.15
        ax.add_patch(
            FancyBboxPatch(
                (x, -0.55),
                1.7,
                1.5,
                boxstyle="round,pad=0.03",
                fc=PALETTE[i % len(PALETTE)],
                alpha=0.15,
                ec=PALETTE[i % len(PALETTE)],
                lw=1.5,
            )
        )
        ax.text(x + 0.85, 0.62, title, ha="center", va="center", fontsize=11, fontweight="bold")
        ax.text(x + 0.85, 0.0, detail, ha="center", va="center", fontsize=8.5)
        centres.append(x + 0.85)
        if i:
            ax.add_patch(
                FancyArrowPatch((x - 0.3, 0.2), (x - 0.02, 0.2), arrowstyle="-|>", mutation_scale=14)
            )
    if loop_back and len(stages) >= 4:
        ax.add_patch(
            FancyArrowPatch(
                (centres[-2], -0.6),
                (centres[1], -0.6),
                connectionstyle="arc3,rad=-0.1",
                arrowstyle="-|>",
                mutation_scale=14,
                ls="--",
                color="#555555",
            )
        )
        ax.text(
            (centres[1] + centres[-2]) / 2,
            -1.2,
            "not good enough? change data, model or settings and repeat",
            ha="center",
            fontsize=8.5,
            style="italic",
        )
    fig.tight_layout()
    return fig
