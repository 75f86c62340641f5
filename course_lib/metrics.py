"""Classification and language-model metrics, written out from their definitions.

Every function takes plain lists, NumPy arrays or torch tensors of integer class labels and agrees
with scikit-learn (tests check it), including the corner cases: a class that is never predicted has
precision 0, a class that never occurs has recall 0 -- scikit-learn's ``zero_division=0``.

    precision_c = TP_c / (TP_c + FP_c)      of everything predicted as c, how much was c
    recall_c    = TP_c / (TP_c + FN_c)      of everything that was c, how much was found
    F1_c        = 2 TP_c / (2 TP_c + FP_c + FN_c)   the harmonic mean of the two
    perplexity  = exp(mean negative log-likelihood per token)
    ROUGE-L F1  = 2 P R / (P + R) with P = LCS / |candidate|, R = LCS / |reference| (in words)

:func:`format_table` shows rows of results (one dict per run or model) as a Markdown table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from course_lib.display import format_table  # tables of metrics: Markdown text that displays as HTML

AVERAGES = (None, "macro", "weighted", "micro")


def _as_labels(y: Any, name: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D sequence of class labels, got shape {arr.shape}; "
            "for logits take argmax(-1) first, and flatten batches"
        )
    return arr


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}; they must pair up one to one")
    if len(t) == 0:
        raise ValueError("no labels given; metrics of an empty set are undefined")
    return t, p


def _resolve_labels(t: np.ndarray, p: np.ndarray, labels: Sequence[Any] | None) -> np.ndarray:
    """The classes to report: those given, else every label seen in y_true or y_pred, sorted."""
    if labels is None:
        return np.unique(np.concatenate([t, p]))
    labels = np.asarray(labels)
    if len(labels) == 0 or len(np.unique(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list without repeats, got {labels.tolist()}")
    return labels


def accuracy(y_true: Any, y_pred: Any) -> float:
    """The fraction of predictions equal to the true label."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def accuracy_interval(n_correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy of ``n_correct`` out of ``n`` (inside [0, 1], fine at 100%)."""
    if n < 1 or not 0 <= n_correct <= n:
        raise ValueError(f"need 0 <= n_correct <= n and n >= 1, got n_correct={n_correct}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is a fraction in (0, 1), got {confidence}")
    quantile = torch.tensor(0.5 + confidence / 2, dtype=torch.float64)
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(quantile))  # 1.96 for 95%
    p = n_correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if n_correct == 0 else max(0.0, centre - half)  # exact ends: rounding must not exclude p itself
    hi = 1.0 if n_correct == n else min(1.0, centre + half)
    return lo, hi


def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of samples whose true class is ``labels[i]`` and predicted class ``labels[j]``."""
    t, p = _pair(y_true, y_pred)
    labels = _resolve_labels(t, p, labels)
    is_true = (t[None, :] == labels[:, None]).astype(np.int64)  # (C, N) one-hot of the true class
    is_pred = (p[None, :] == labels[:, None]).astype(np.int64)  # (C, N) one-hot of the prediction
    return is_true @ is_pred.T  # (C, C); samples outside the chosen labels count nowhere


def _safe_divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(
    y_true: Any,
    y_pred: Any,
    labels: Sequence[Any] | None = None,
    average: str | None = None,
    zero_division: float = 0.0,
) -> dict[str, Any]:
    """Precision, recall, F1 and support, per class (``average=None``) or averaged.

    ``"macro"``: the plain mean over classes; ``"weighted"``: weighted by each class's support;
    ``"micro"``: from the pooled counts (equal to accuracy when every class is included).
    A 0/0 ratio is ``zero_division`` (0.0, scikit-learn's ``zero_division=0``).
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    t, p = _pair(y_true, y_pred)
    labels = _resolve_labels(t, p, labels)
    is_true = t[None, :] == labels[:, None]  # (C, N): sample n belongs to class c
    is_pred = p[None, :] == labels[:, None]  # (C, N): sample n was predicted as class c
    tp = (is_true & is_pred).sum(axis=1).astype(np.float64)
    fp = is_pred.sum(axis=1) - tp  # predicted as c, but were something else
    fn = is_true.sum(axis=1) - tp  # were c, but predicted as something else
    support = is_true.sum(axis=1)
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    precision = _safe_divide(tp, tp + fp, zero_division)
    recall = _safe_divide(tp, tp + fn, zero_division)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn, zero_division)
    if average is None:
        return {"labels": labels, "precision": precision, "recall": recall, "f1": f1, "support": support}
    if average == "micro":  # one value each, from the pooled counts
        values = [precision[0], recall[0], f1[0]]
    elif average == "macro":  # every class counts the same
        values = [np.mean(precision), np.mean(recall), np.mean(f1)]
    elif support.sum() > 0:  # weighted by how often each class occurs
        values = [np.average(v, weights=support) for v in (precision, recall, f1)]
    else:  # weighted, but none of the chosen classes occurs at all
        values = [0.0, 0.0, 0.0]
    p_avg, r_avg, f_avg = (float(v) for v in values)
    return {"precision": p_avg, "recall": r_avg, "f1": f_avg, "support": int(support.sum())}


def classification_report(
    y_true: Any,
    y_pred: Any,
    labels: Sequence[Any] | None = None,
    target_names: Sequence[str] | None = None,
    digits: int = 2,
    output_dict: bool = False,
    zero_division: float = 0.0,
) -> str | dict[str, Any]:
    """A per-class table plus accuracy, macro and weighted averages, laid out like scikit-learn's.

    With ``output_dict=True`` the same numbers come back as a dict with scikit-learn's keys
    (``"precision"``, ``"recall"``, ``"f1-score"``, ``"support"``; ``"accuracy"``, ``"macro avg"``,
    ``"weighted avg"``; ``"micro avg"`` replaces accuracy when ``labels`` leaves some classes out).
    """
    t, p = _pair(y_true, y_pred)
    labels = _resolve_labels(t, p, labels)
    names = [str(x) for x in labels] if target_names is None else list(target_names)
    if len(names) != len(labels):
        raise ValueError(f"{len(names)} target_names for {len(labels)} classes; give one name per class")

    def row(r: dict[str, Any], i: int | None = None) -> dict[str, Any]:
        pick = (lambda v: v[i]) if i is not None else (lambda v: v)
        keys = (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1"))
        return {**{out: float(pick(r[k])) for out, k in keys}, "support": int(pick(r["support"]))}

    per = precision_recall_f1(t, p, labels, None, zero_division)
    rows: dict[str, Any] = {name: row(per, i) for i, name in enumerate(names)}
    # accuracy when the labels cover every class present, else the micro average (scikit-learn's rule)
    covers_all = set(np.unique(np.concatenate([t, p])).tolist()) <= set(labels.tolist())
    if covers_all:
        rows["accuracy"] = accuracy(t, p)
    else:
        rows["micro avg"] = row(precision_recall_f1(t, p, labels, "micro", zero_division))
    for avg in ("macro", "weighted"):
        rows[f"{avg} avg"] = row(precision_recall_f1(t, p, labels, avg, zero_division))
    if output_dict:
        return rows
    return _format_report(rows, digits, total=len(t))


def _format_report(rows: dict[str, Any], digits: int, total: int) -> str:
    """The text table: one row per class, a blank line, then accuracy and the averages."""
    width = max(len("weighted avg"), digits, *(len(k) for k in rows))
    lines = [f"{'':>{width}}  {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    summary = [k for k in rows if k == "accuracy" or k.endswith(" avg")]
    for name, r in rows.items():
        if name == summary[0]:
            lines.append("")
        if name == "accuracy":
            lines.append(f"{name:>{width}}  {'':>9} {'':>9} {r:>9.{digits}f} {total:>9}")
        else:
            lines.append(
                f"{name:>{width}}  {r['precision']:>9.{digits}f} {r['recall']:>9.{digits}f} "
                f"{r['f1-score']:>9.{digits}f} {r['support']:>9}"
            )
    return "\n".join(lines) + "\n"


def perplexity(mean_nll: float | torch.Tensor) -> float:
    """exp(mean negative log-likelihood in nats): the effective number of equally likely next tokens."""
    value = float(mean_nll.detach().float().mean()) if isinstance(mean_nll, torch.Tensor) else float(mean_nll)
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"mean_nll must be a non-negative number (a cross-entropy in nats), got {value}; "
            "pass the mean loss, not log-probabilities"
        )
    return math.exp(value) if value < 709.0 else math.inf  # exp overflows a float above ~709.78


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: the words ROUGE compares (no stemming)."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def longest_common_subsequence(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest sequence that appears in both, in order but not necessarily adjacent."""
    prev = [0] * (len(b) + 1)  # prev[j]: LCS of the first i-1 items of a and the first j of b
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 between two texts: how much of the reference's word order the candidate keeps, in [0, 1]."""
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    lcs = longest_common_subsequence(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-example scores with a percentile bootstrap interval.

    Resample the examples with replacement ``n_resamples`` times (a fixed seed), take each resample's
    mean, and report the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of those means.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"bootstrap_interval needs a 1-D list of at least 2 scores, got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)  # (n_resamples,)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(x.mean()), float(low), float(high)


__all__ = [
    "accuracy",
    "accuracy_interval",
    "bootstrap_interval",
    "classification_report",
    "confusion_matrix",
    "format_table",
    "perplexity",
    "longest_common_subsequence",
    "precision_recall_f1",
    "rouge_l",
    "rouge_tokens",
]
