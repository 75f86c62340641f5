"""Figures shared by the chapters, so every chapter looks the same."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
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


MAX_FIGURE_WIDTH = 10.0  # inches: a wider figure is shrunk past legibility in the book's text column


def compact_png(png: bytes) -> bytes:
    """A figure's PNG re-encoded with a palette of 256 colours: about a third of the bytes.

    A chart holds few colours; median cut without dithering keeps white white and moves the course's
    figures by under 0.3/255 per channel on average. A PNG with see-through pixels, one already with a
    palette, or one that would not shrink comes back unchanged (so applying it twice changes nothing)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    if image.mode == "P" or (image.mode == "RGBA" and image.getextrema()[3][0] < 255):
        return png
    palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, "PNG", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def _show_figures_compact() -> None:
    """In a Jupyter kernel, figures are shown as compact PNGs (the site stores every figure twice)."""
    try:
        from IPython import get_ipython
    except ModuleNotFoundError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    import matplotlib
    from IPython.core.pylabtools import print_figure

    if "inline" in matplotlib.get_backend():  # load it now: at the first figure it registers its own PNGs
        import matplotlib_inline.backend_inline  # noqa: F401

    def png(fig: Figure) -> bytes | None:
        raw = print_figure(fig, fmt="png", bbox_inches="tight")
        return None if raw is None else compact_png(raw)  # None: an empty figure shows nothing

    shell.display_formatter.formatters["image/png"].for_type(Figure, png)


def use_course_style() -> None:
    """One look for every figure of the course (and, in a notebook, figures stored compactly)."""
    _show_figures_compact()
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


def pipeline_diagram(
    stages: Sequence[tuple[str, str]] = PIPELINE_STAGES, loop_back: bool = True, per_row: int = 3
) -> Figure:
    """The development pipeline from data to deployment, with the evaluate-and-iterate loop.

    The stages run left to right in rows of ``per_row`` (a row of six is unreadable on a phone); an
    arrow leads from the end of one row to the start of the next."""
    rows, step = -(-len(stages) // per_row), 2.8  # vertical distance between rows
    fig, ax = plt.subplots(figsize=(2.6 * per_row, 2.1 * rows + 0.4 * (rows - 1)))
    ax.set_xlim(0, per_row * 2)
    ax.set_ylim(-step * (rows - 1) - 0.7, 1.05)
    ax.axis("off")
    centres = []
    arrow = dict(arrowstyle="-|>", mutation_scale=16)
    for i, (title, detail) in enumerate(stages):
        row, col = divmod(i, per_row)
        x, y = col * 2 + 0.15, -step * row
        colour = PALETTE[i % len(PALETTE)]
        box = FancyBboxPatch(
            (x, y - 0.55), 1.7, 1.5, boxstyle="round,pad=0.03", fc=colour, alpha=0.15, ec=colour, lw=1.5
        )
        ax.add_patch(box)
        ax.text(x + 0.85, y + 0.62, title, ha="center", va="center", fontsize=12, fontweight="bold")
        ax.text(x + 0.85, y + 0.0, detail, ha="center", va="center", fontsize=10.5)
        centres.append((x + 0.85, y))
        if i and col:  # from the box on the left
            ax.add_patch(FancyArrowPatch((x - 0.3, y + 0.2), (x - 0.02, y + 0.2), **arrow))
        elif i:  # from the end of the row above: down, left, down
            px, py = centres[i - 1]
            turn = py - 0.6 - 0.3
            ax.plot([px, px, x + 0.85], [py - 0.6, turn, turn], color="black", lw=1)
            ax.add_patch(FancyArrowPatch((x + 0.85, turn), (x + 0.85, y + 0.98), **arrow))
    if loop_back and len(stages) > per_row:
        (x0, y0), y1 = centres[-2], centres[min(1, per_row - 1)][1]
        if y0 < y1:  # the loop goes up from evaluation to model choice, beside the row connector
            ax.add_patch(
                FancyArrowPatch(
                    (x0 + 0.45, y0 + 0.98), (x0 + 0.45, y1 - 0.6), ls="--", color="#555555", **arrow
                )
            )
            ax.text(
                x0 + 0.6,
                (y0 + 0.98 + y1 - 1.5) / 2,
                "not good enough? change data,\nmodel or settings and repeat",
                ha="left",
                va="center",
                fontsize=10,
                style="italic",
                color="#444444",
            )
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Matrices: attention maps, masks and position tables (chapter 2).


def as_matrix(m: Any, what: str = "matrix") -> np.ndarray:
    """A 2-D float NumPy array from a tensor (detached, moved to the CPU) or anything array-like."""
    if hasattr(m, "detach"):
        m = m.detach().float().cpu().numpy()
    arr = np.asarray(m, dtype=float)
    if arr.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (rows, columns), got shape {arr.shape}; "
            "pick one map first, e.g. maps[layer, head] or weights[0, 0]"
        )
    return arr


def _label_size(n: int) -> float:
    """A tick-label font size that keeps ``n`` labels readable along one axis of a figure."""
    return float(np.clip(200 / max(n, 1), 5.5, 10))


def _check_labels(labels: Sequence[str] | None, n: int, name: str, along: str) -> None:
    if labels is not None and len(labels) != n:
        raise ValueError(
            f"{len(labels)} {name} labels for a map with {n} {along}; pass one label per token "
            "(e.g. tokenizer.tokens(text), which includes [CLS] and [SEP])"
        )


def attention_heatmap(
    weights: Any,
    keys: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool = False,
    fmt: str = "{:.2f}",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    cmap: str = "Blues",
    colorbar: bool = True,
    axis_labels: bool = True,
) -> AxesImage:
    """Draw a (T_q, T_k) attention map: row i is query i (the token that looks), column j is key j.

    ``keys`` and ``queries`` label the columns and rows (``queries`` defaults to ``keys`` when the map
    is square); ``annotate`` writes every value in its cell with ``fmt``. Entries that are NaN or
    infinite (masked scores) are drawn grey. Returns the image; its figure is ``image.figure``.
    """
    w = as_matrix(weights, "attention weights")
    T_q, T_k = w.shape
    if queries is None and keys is not None and T_q == T_k:
        queries = keys
    _check_labels(keys, T_k, "key", "columns")
    _check_labels(queries, T_q, "query", "rows")
    if ax is None:
        side = float(np.clip(1.8 + 0.36 * max(T_q, T_k), 3.2, 9.0))
        _, ax = plt.subplots(figsize=(side + (1.0 if colorbar else 0.0), side), layout="constrained")
    cm = plt.get_cmap(cmap).with_extremes(bad="#d0d0d0")  # masked (-inf, NaN) entries in grey
    image = ax.imshow(
        np.ma.masked_invalid(w), cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal"
    )
    ax.grid(False)
    for axis, labels, n, rotate in ((ax.xaxis, keys, T_k, 90), (ax.yaxis, queries, T_q, 0)):
        if labels is not None:
            axis.set_ticks(range(n), labels=list(labels), fontsize=_label_size(n), rotation=rotate)
        elif n <= 16:
            axis.set_ticks(range(n))
    if axis_labels:
        ax.set_xlabel("key: the position looked at")
        ax.set_ylabel("query: the position looking")
    if title:
        ax.set_title(title)
    if annotate:
        lo, hi = image.get_clim()
        for i in range(T_q):
            for j in range(T_k):
                v = w[i, j]
                text = fmt.format(v) if np.isfinite(v) else ("-inf" if v < 0 else "nan")
                dark = np.isfinite(v) and hi > lo and (v - lo) / (hi - lo) > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return image


def heatmap_grid(
    matrices: Sequence[Any],
    titles: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    ncols: int = 4,
    annotate: bool = False,
    fmt: str = "{:.2f}",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    cmap: str = "Blues",
    panel_size: float = 2.6,
    suptitle: str | None = None,
) -> Figure:
    """Several maps side by side on one shared colour scale (masks, heads of a layer, ...).

    Token labels go on the left column and the bottom row only, so the panels stay readable.
    """
    mats = [as_matrix(m, f"matrix {i}") for i, m in enumerate(matrices)]
    if not mats:
        raise ValueError("heatmap_grid needs at least one matrix")
    if titles is not None and len(titles) != len(mats):
        raise ValueError(f"{len(titles)} titles for {len(mats)} matrices; pass one title per matrix")
    if vmax is None:
        finite = [m[np.isfinite(m)] for m in mats]
        vmax = max((float(f.max()) for f in finite if f.size), default=1.0)
    ncols = max(1, min(ncols, len(mats), int((MAX_FIGURE_WIDTH - 0.8) // panel_size)))
    nrows = -(-len(mats) // ncols)
    aspect = min(1.0, max(m.shape[0] / m.shape[1] for m in mats))  # wide matrices need shorter rows
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size * ncols + 0.8, (panel_size * aspect + 0.6) * nrows + 0.3),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(mats):
            ax.axis("off")
            continue
        row, col = divmod(k, ncols)
        last_row = k + ncols >= len(mats)
        image = attention_heatmap(
            mats[k],
            keys=keys if last_row else None,
            queries=(queries if queries is not None else keys) if col == 0 else None,
            ax=ax,
            title=titles[k] if titles else None,
            annotate=annotate,
            fmt=fmt,
            vmin=vmin,
            vmax=vmax,
            cmap=cmap,
            colorbar=False,
            axis_labels=False,
        )
        if not last_row:
            ax.set_xticks([])
        if col:
            ax.set_yticks([])
        for labels, n in ((ax.get_xticklabels(), mats[k].shape[1]), (ax.get_yticklabels(), mats[k].shape[0])):
            for label in labels:  # a panel is smaller than a whole figure: shrink its token labels
                label.set_fontsize(min(_label_size(n), 0.75 * panel_size * 72 / max(n, 1)))
    if suptitle:
        fig.suptitle(suptitle)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
    return fig


def positional_encoding_figure(table: Any, dims: Sequence[int] | None = None) -> Figure:
    """A (T, d) position table as an image (positions down, features across) and a few features as curves.

    ``dims`` picks the features drawn as curves; by default three sine features, fast to slow.
    """
    t = as_matrix(table, "position table")
    if dims is None:
        d = t.shape[1]
        dims = sorted({2 * (k // 2) for k in (2, d // 8, d // 3)})
    bad = [d for d in dims if not 0 <= d < t.shape[1]]
    if bad:
        raise ValueError(
            f"dims {bad} are outside the table's {t.shape[1]} features; pick dims below {t.shape[1]}"
        )
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.1, 1.4]})
    image = left.imshow(t, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    left.grid(False)
    left.set_xlabel("feature (dimension of the vector)")
    left.set_ylabel("position")
    left.set_title("the table: one row per position")
    fig.colorbar(image, ax=left, fraction=0.046, pad=0.04)
    for d in dims:
        right.plot(t[:, d], label=f"feature {d}")
    right.set_xlabel("position")
    right.set_ylabel("value")
    right.set_title("low features turn fast, high features slowly")
    right.set_ylim(-1.1, 1.5)  # room for the legend above the curves
    right.legend(fontsize=8, ncols=len(dims), loc="upper center")
    fig.tight_layout()
    return fig
