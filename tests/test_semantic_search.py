"""Semantic search against sklearn's NearestNeighbors, metrics by their definitions, TF-IDF by its formula,
and a real MiniLM smoke test on BBC articles."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # MiniLM loads from its package folder, never a hub

from course_lib.semantic_search import (  # noqa: E402
    SemanticIndex,
    mean_reciprocal_rank,
    ranks_from_scores,
    ranks_of_true,
    recall_at_k,
    tfidf_keywords,
    top_k_cosine,
)

COS_ATOL = 1e-5  # fp32 cosine vs sklearn's float64 cosine distance
RECALL_MIN = 0.8  # a headline finds its own article at rank 1 among 50 BBC articles for most queries


def _random(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("n_docs, d, k, chunk_size", [(200, 16, 5, None), (200, 16, 7, 32), (57, 8, 57, 10)])
def test_search_matches_sklearn_nearest_neighbors_cosine(n_docs, d, k, chunk_size):
    from sklearn.neighbors import NearestNeighbors

    docs, queries = _random(n_docs, d, 0) * 3.0, _random(9, d, 1)  # not unit length: the index normalises
    index = SemanticIndex(chunk_size=chunk_size).add_embeddings(docs, ids=[f"doc{i}" for i in range(n_docs)])
    nn_ = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(docs)
    dist, idx = nn_.kneighbors(queries)  # cosine distance = 1 - cosine similarity
    results = index.search_many(queries, k=k)
    for row, (ref_d, ref_i) in enumerate(zip(dist, idx)):
        assert [i for i, _ in results[row]] == [f"doc{j}" for j in ref_i]
        np.testing.assert_allclose([s for _, s in results[row]], 1.0 - ref_d, atol=COS_ATOL)
    one = index.search(queries[0], k=3)  # a single vector query
    assert [i for i, _ in one] == [i for i, _ in results[0][:3]]
    np.testing.assert_allclose([s for _, s in one], [s for _, s in results[0][:3]], atol=COS_ATOL)


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 1000])
def test_chunked_top_k_equals_one_big_product(chunk_size):
    q, d = torch.from_numpy(_random(5, 12, 2)), torch.from_numpy(_random(50, 12, 3))
    s_full, i_full = top_k_cosine(q, d, k=6)
    s_chunk, i_chunk = top_k_cosine(q, d, k=6, chunk_size=chunk_size)
    torch.testing.assert_close(s_chunk, s_full, atol=COS_ATOL, rtol=0)
    assert torch.equal(i_chunk, i_full)
    assert torch.all(s_full[:, :-1] >= s_full[:, 1:])  # best first


def test_index_save_load_round_trip(tmp_path):
    docs = _random(30, 8, 4)
    ids = [f"a{i}" for i in range(20)] + list(range(10))  # strings and ints keep their types
    index = SemanticIndex().add_embeddings(docs[:20], ids[:20]).add_embeddings(docs[20:], ids[20:])
    path = index.save(tmp_path / "idx.npz")
    loaded = SemanticIndex.load(path)
    assert loaded.ids == ids and len(loaded) == 30
    q = _random(3, 8, 5)
    assert loaded.search_many(q, k=4) == index.search_many(q, k=4)
    with pytest.raises(ValueError, match=r"\.npz"):
        index.save(tmp_path / "idx.pt")
    with pytest.raises(FileNotFoundError, match="index.save"):
        SemanticIndex.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a SemanticIndex file"):
        SemanticIndex.load(tmp_path / "other.npz")


def test_index_errors_name_the_fix():
    index = SemanticIndex()
    with pytest.raises(ValueError, match="index is empty"):
        index.search(_random(1, 4, 0)[0])
    with pytest.raises(ValueError, match="no encoder"):
        index.add(["some text"])
    index.add_embeddings(_random(3, 4, 0), ids=["x", "y", "z"])
    with pytest.raises(ValueError, match="already used"):
        index.add_embeddings(_random(1, 4, 1), ids=["x"])
    with pytest.raises(ValueError, match="already used"):
        SemanticIndex().add_embeddings(_random(2, 4, 1), ids=["x", "x"])
    with pytest.raises(ValueError, match="one id per document"):
        index.add_embeddings(_random(2, 4, 1), ids=["q"])
    with pytest.raises(ValueError, match="same model"):
        index.add_embeddings(_random(1, 5, 1))
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(_random(1, 4, 0)[0], k=0)


def test_ranks_recall_and_mrr_follow_their_definitions():
    rng = np.random.default_rng(6)
    docs = rng.standard_normal((40, 10))
    true_idx = rng.integers(0, 40, size=25)
    queries = docs[true_idx] + 0.9 * rng.standard_normal((25, 10))  # noisy copies of their documents
    # reference: rank by a full argsort of float64 cosine similarities
    dn = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    order = np.argsort(-(qn @ dn.T), axis=1)
    ref_ranks = np.array([1 + int(np.flatnonzero(order[i] == t)[0]) for i, t in enumerate(true_idx)])
    assert ranks_of_true(queries, docs, true_idx).tolist() == ref_ranks.tolist()
    rec = recall_at_k(queries, docs, true_idx, ks=(1, 5, 40))
    assert rec == {1: np.mean(ref_ranks <= 1), 5: np.mean(ref_ranks <= 5), 40: 1.0}
    assert 0 < rec[1] < rec[5]  # the noise makes the task neither trivial nor hopeless
    assert mean_reciprocal_rank(queries, docs, true_idx) == pytest.approx(np.mean(1.0 / ref_ranks), abs=1e-6)
    with pytest.raises(ValueError, match="one per query"):
        recall_at_k(queries, docs, true_idx[:3])
    with pytest.raises(ValueError, match="must lie in"):
        recall_at_k(queries[:1], docs, [40])
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at_k(queries, docs, true_idx, ks=(0,))


def test_ranks_from_scores_any_score_matrix_ties_in_favour_of_the_answer():
    scores = np.array([[0.9, 0.5, 0.1], [2.0, 7.0, 7.0], [0.0, 0.0, 0.0]])  # e.g. TF-IDF products
    assert ranks_from_scores(scores, [1, 2, 2]).tolist() == [2, 1, 1]
    assert ranks_from_scores(scores, [2, 0, 0]).tolist() == [3, 3, 1]
    with pytest.raises(ValueError, match="one per query"):
        ranks_from_scores(scores, [0, 1])
    with pytest.raises(ValueError, match="must lie in"):
        ranks_from_scores(scores, [0, 1, 3])


def test_tfidf_keywords_follow_the_formula():
    docs = [
        "the cat sat on the mat with another cat",
        "the dog chased the cat",
        "stocks fell as the market dropped and stocks slid",
    ]
    got = tfidf_keywords(docs, top_n=3, stop_words=None)
    # by hand: raw counts x smoothed idf, then unit length per document
    tokenised = [re.findall(r"(?u)\b\w\w+\b", d.lower()) for d in docs]
    vocab = sorted({t for doc in tokenised for t in doc})
    df = {t: sum(t in doc for doc in tokenised) for t in vocab}
    idf = {t: np.log((1 + len(docs)) / (1 + df[t])) + 1 for t in vocab}
    for doc, top in zip(tokenised, got):
        w = {t: doc.count(t) * idf[t] for t in set(doc)}
        norm = np.sqrt(sum(v * v for v in w.values()))
        ref = sorted(((t, v / norm) for t, v in w.items()), key=lambda p: (-p[1], p[0]))[:3]
        assert [t for t, _ in top] == [t for t, _ in ref]
        np.testing.assert_allclose([v for _, v in top], [v for _, v in ref], rtol=1e-9)
    assert got[0][0][0] == "cat" and got[2][0][0] == "stocks"
    with pytest.raises(TypeError, match="list of strings"):
        tfidf_keywords([])


def test_tfidf_keywords_of_bbc_articles_echo_their_headlines():
    from course_lib.datasets import bbc_news

    articles = bbc_news()[::45][:40]  # 40 articles across all five topics
    keywords = tfidf_keywords([a.body for a in articles], top_n=10)
    hits = [
        bool({t for t, _ in kw} & set(re.findall(r"\w+", a.headline.lower())))
        for a, kw in zip(articles, keywords)
    ]
    assert np.mean(hits) >= 0.8  # a body's top terms share a word with its headline for most articles


@pytest.mark.slow
def test_minilm_headline_finds_its_own_article():
    from course_lib.datasets import bbc_news
    from course_lib.encoder import SentenceEncoder

    articles = [a for label in range(5) for a in [x for x in bbc_news() if x.label_id == label][:10]]
    encoder = SentenceEncoder.from_minilm(device="cpu")
    index = SemanticIndex(encoder).add([a.body for a in articles], ids=[a.doc_id for a in articles])
    results = index.search_many([a.headline for a in articles], k=10)
    top1 = np.mean([r[0][0] == a.doc_id for r, a in zip(results, articles)])
    assert top1 >= RECALL_MIN
    q = encoder.encode([a.headline for a in articles])
    rec = recall_at_k(q, index.embeddings, list(range(len(articles))), ks=(1, 10))
    assert rec[1] == pytest.approx(top1) and rec[10] >= rec[1]
    assert mean_reciprocal_rank(q, index.embeddings, list(range(len(articles)))) >= rec[1]


def test_text_queries_the_encoder_would_cut_or_that_are_empty_are_refused():
    from course_lib.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_minilm(device="cpu")
    index = SemanticIndex(encoder).add(["The striker scored twice.", "Shares fell sharply."])
    limit = encoder.tokenizer.max_length  # 256 for MiniLM
    fits = " ".join(["goal"] * (limit - 2))  # one token per word, plus [CLS] and [SEP]
    assert encoder.tokenizer.n_tokens(fits) == limit
    assert len(index.search(fits, k=1)) == 1
    with pytest.raises(ValueError, match=f"query 0 has {limit + 1} tokens but the encoder reads at most"):
        index.search(fits + " goal", k=1)
    with pytest.raises(ValueError, match="query 1 has .* shorten it"):
        index.search_many(["football", fits + " goal"], k=1)
    with pytest.raises(ValueError, match="query 0 is empty"):
        index.search("   ", k=1)
    with pytest.raises(ValueError, match="index is empty"):
        SemanticIndex(encoder).search("football", k=1)
    assert encoder.tokenizer.tokens(fits + " goal")[-1] == "[SEP]"  # truncation itself is unchanged
    assert len(encoder.tokenizer.tokens(fits + " goal goal")) == limit
