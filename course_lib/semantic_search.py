"""Semantic search: find the documents whose meaning is closest to a query, and measure how well it works.

Texts become unit-length sentence vectors (MiniLM through :class:`course_lib.encoder.SentenceEncoder`),
so cosine similarity is a dot product and scoring every document is one matrix product:

    scores = Q @ D.T        (n_queries, d) @ (d, n_docs) -> (n_queries, n_docs)

:class:`SemanticIndex` stores the document vectors and their ids, returns the top k by cosine, and saves
to / loads from a ``.npz`` file. :func:`recall_at_k` and :func:`mean_reciprocal_rank` score a retriever
against known answers. :func:`tfidf_keywords` pulls the top TF-IDF terms out of each document.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

INDEX_FORMAT = "course_lib.search/1"  # the file format's tag: unchanged by the module's rename


class TextEncoder(Protocol):
    """Anything with ``encode(texts) -> (N, d)`` vectors, e.g. :class:`course_lib.encoder.SentenceEncoder`."""

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


def _as_matrix(x: Any, name: str) -> torch.Tensor:
    """A float32 CPU tensor of shape (N, d); a single vector (d,) becomes (1, d)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float().cpu()
    if t.dim() == 1:
        t = t[None]  # (d,) -> (1, d)
    if t.dim() != 2:
        raise ValueError(f"{name} must be vectors of shape (N, d), got shape {tuple(t.shape)}")
    return t


def top_k_cosine(
    queries: torch.Tensor, docs: torch.Tensor, k: int, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` documents most cosine-similar to each query: (scores, indices), each (n_queries, k).

    Both sides are L2-normalised, so ``Q @ D.T`` is the cosine. With ``chunk_size`` the documents are
    scored ``chunk_size`` at a time and only a running top k is kept, so memory stays at
    (n_queries, chunk_size + k) however many documents there are; the answer is the same.
    """
    if queries.shape[-1] != docs.shape[-1]:
        raise ValueError(
            f"queries have {queries.shape[-1]} dims but documents have {docs.shape[-1]}; encode both "
            "with the same model"
        )
    k = min(k, docs.shape[0])
    q = F.normalize(queries, dim=-1)  # (nq, d)
    d = F.normalize(docs, dim=-1)  # (nd, d)
    if chunk_size is None or chunk_size >= d.shape[0]:
        return torch.topk(q @ d.T, k, dim=-1)  # (nq, nd) -> (nq, k)
    best_s = q.new_full((q.shape[0], 0), float("-inf"))  # (nq, 0) running best scores
    best_i = torch.zeros(q.shape[0], 0, dtype=torch.long)  # (nq, 0) and their document indices
    for start in range(0, d.shape[0], chunk_size):
        s = q @ d[start : start + chunk_size].T  # (nq, chunk)
        idx = torch.arange(start, start + s.shape[1]).expand_as(s)  # (nq, chunk) global indices
        cand_s, cand_i = torch.cat([best_s, s], dim=1), torch.cat([best_i, idx], dim=1)  # (nq, k + chunk)
        best_s, pos = torch.topk(cand_s, min(k, cand_s.shape[1]), dim=-1)  # (nq, k)
        best_i = torch.gather(cand_i, 1, pos)  # (nq, k)
    return best_s, best_i


class SemanticIndex:
    """Documents as unit vectors; ``search(query, k)`` returns ``[(id, cosine), ...]``, best first.

    >>> index = SemanticIndex(SentenceEncoder.from_minilm())
    >>> index.add(["The striker scored twice.", "Shares fell sharply."], ids=["sport-1", "biz-1"])
    >>> index.search("football match", k=1)        # [("sport-1", 0.4...)]
    """

    def __init__(self, encoder: TextEncoder | None = None, chunk_size: int | None = 8192) -> None:
        self.encoder = encoder
        self.chunk_size = chunk_size
        self.embeddings = torch.zeros(0, 0)  # (N, d) unit vectors
        self.ids: list[Hashable] = []

    def __len__(self) -> int:
        return len(self.ids)

    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        if self.encoder is None:
            raise ValueError(
                "this index has no encoder, so it cannot embed text; build SemanticIndex(encoder) or pass "
                "vectors to add_embeddings / search"
            )
        return _as_matrix(self.encoder.encode(list(texts)), "encoder output")

    def _check_query_length(self, queries: Sequence[str]) -> None:
        """Refuse a query the encoder would cut: its end would silently play no part in the search."""
        tokenizer = getattr(self.encoder, "tokenizer", None)
        if tokenizer is None or not hasattr(tokenizer, "n_tokens"):
            return  # an encoder without a WordPiece tokenizer: nothing to count with
        for i, text in enumerate(queries):
            if not text.strip():
                raise ValueError(f"query {i} is empty; type the words to search for")
            n = tokenizer.n_tokens(text)  # [CLS] and [SEP] included, before truncation
            if n > tokenizer.max_length:
                raise ValueError(
                    f"query {i} has {n} tokens but the encoder reads at most {tokenizer.max_length}; "
                    "shorten it, or split it into several queries and search with each"
                )

    def add(self, texts: Sequence[str], ids: Sequence[Hashable] | None = None) -> SemanticIndex:
        """Embed ``texts`` and add them; ``ids`` default to their positions in the index (0, 1, ...)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.add_embeddings(self._encode(texts), ids)

    def add_embeddings(self, embeddings: Any, ids: Sequence[Hashable] | None = None) -> SemanticIndex:
        """Add precomputed vectors (N, d); they are L2-normalised here."""
        emb = F.normalize(_as_matrix(embeddings, "embeddings"), dim=-1)  # (N, d)
        ids = list(range(len(self), len(self) + len(emb))) if ids is None else list(ids)
        if len(ids) != len(emb):
            raise ValueError(f"got {len(emb)} vectors but {len(ids)} ids; pass one id per document")
        existing = set(self.ids)
        clash = sorted({str(i) for i in ids if i in existing} | _duplicates(ids))
        if clash:
            raise ValueError(f"ids {clash[:10]} are already used; every document needs its own id")
        if len(self) and emb.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"the index holds {self.embeddings.shape[1]}-dim vectors, got {emb.shape[1]}-dim ones; "
                "encode every document with the same model"
            )
        self.embeddings = emb if not len(self) else torch.cat([self.embeddings, emb])
        self.ids.extend(ids)
        return self

    def search(self, query: str | Any, k: int = 5) -> list[tuple[Hashable, float]]:
        """The ``k`` nearest documents to one query (a text, or a vector) as ``(id, cosine)``, best first."""
        return self.search_many([query] if isinstance(query, str) else _as_matrix(query, "query"), k)[0]

    def search_many(self, queries: Sequence[str] | Any, k: int = 5) -> list[list[tuple[Hashable, float]]]:
        """:meth:`search` for many queries (texts, or vectors (n, d)) in one matrix product."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not len(self):
            raise ValueError("the index is empty; add documents first with add(texts) or add_embeddings")
        if isinstance(queries, str):
            queries = [queries]
        is_text = isinstance(queries, (list, tuple)) and len(queries) > 0 and isinstance(queries[0], str)
        if is_text:
            self._check_query_length(queries)
        q = self._encode(queries) if is_text else _as_matrix(queries, "queries")  # (nq, d)
        scores, idx = top_k_cosine(q, self.embeddings, k, self.chunk_size)  # (nq, k) each
        return [
            [(self.ids[i], float(s)) for s, i in zip(row_s.tolist(), row_i.tolist())]
            for row_s, row_i in zip(scores, idx)
        ]

    def save(self, path: str | Path) -> Path:
        """Write the vectors and ids to one ``.npz`` file (ids as JSON, so ints stay ints)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"save the index as a .npz file, got {path.name!r}; e.g. index.save('bbc.npz')")
        try:
            ids_json = json.dumps(self.ids)
        except TypeError as err:
            raise TypeError(f"ids must be JSON types (str or int) to be saved: {err}") from err
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            format=np.array(INDEX_FORMAT),
            embeddings=self.embeddings.numpy(),
            ids=np.array(ids_json),
        )
        return path

    @classmethod
    def load(
        cls, path: str | Path, encoder: TextEncoder | None = None, chunk_size: int | None = 8192
    ) -> SemanticIndex:
        """Read an index written by :meth:`save`; pass the same ``encoder`` to search with text."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no index at {path}; build one and call index.save(path) first")
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data or str(data["format"]) != INDEX_FORMAT:
                raise ValueError(
                    f"{path} is not a SemanticIndex file ({INDEX_FORMAT}); write one with index.save(path)"
                )
            index = cls(encoder, chunk_size)
            index.embeddings = torch.from_numpy(data["embeddings"].astype(np.float32))
            index.ids = json.loads(str(data["ids"]))
        return index


def _duplicates(ids: Sequence[Hashable]) -> set[str]:
    seen: set[Hashable] = set()
    dup = set()
    for i in ids:
        if i in seen:
            dup.add(str(i))
        seen.add(i)
    return dup


# ----------------------------------------------------------------------------------------------------
# Retrieval metrics


def ranks_from_scores(scores: Any, true_idx: Sequence[int] | Any) -> torch.Tensor:
    """The 1-based rank of each query's correct document, from a score matrix (n_queries, n_docs) where
    higher is better (cosines, TF-IDF products, ...).

    rank = 1 + the number of documents scored strictly higher than the correct one (ties count in
    the correct document's favour).
    """
    scores = _as_matrix(scores, "scores")  # (nq, nd)
    true_idx = torch.as_tensor(np.asarray(true_idx), dtype=torch.long).reshape(-1)  # (nq,)
    if len(true_idx) != len(scores):
        raise ValueError(f"{len(scores)} queries but {len(true_idx)} true indices; give one per query")
    if len(true_idx) and not 0 <= int(true_idx.min()) <= int(true_idx.max()) < scores.shape[1]:
        raise ValueError(f"true indices must lie in [0, {scores.shape[1]}) (row numbers of the documents)")
    true_scores = scores.gather(1, true_idx[:, None])  # (nq, 1)
    return 1 + (scores > true_scores).sum(dim=1)  # (nq,)


def ranks_of_true(query_embs: Any, doc_embs: Any, true_idx: Sequence[int] | Any) -> torch.Tensor:
    """The 1-based rank of each query's correct document among all documents, by cosine
    (:func:`ranks_from_scores` of the cosine matrix)."""
    q = F.normalize(_as_matrix(query_embs, "query_embs"), dim=-1)  # (nq, d)
    d = F.normalize(_as_matrix(doc_embs, "doc_embs"), dim=-1)  # (nd, d)
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dims, documents {d.shape[1]}; use one model for both")
    return ranks_from_scores(q @ d.T, true_idx)  # (nq, nd) cosines -> (nq,)


def recall_at_k(
    query_embs: Any, doc_embs: Any, true_idx: Sequence[int] | Any, ks: Sequence[int] = (1, 10)
) -> dict[int, float]:
    """``{k: fraction of queries whose correct document is among the top k}`` for each k in ``ks``."""
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {list(ks)}")
    ranks = ranks_of_true(query_embs, doc_embs, true_idx)
    return {int(k): float((ranks <= k).double().mean()) for k in ks}


def mean_reciprocal_rank(query_embs: Any, doc_embs: Any, true_idx: Sequence[int] | Any) -> float:
    """MRR: the mean over queries of 1 / rank of the correct document (1.0 = always first)."""
    return float((1.0 / ranks_of_true(query_embs, doc_embs, true_idx).double()).mean())


# ----------------------------------------------------------------------------------------------------
# Keywords


def tfidf_keywords(
    docs: Sequence[str], top_n: int = 5, stop_words: str | None = "english", **vectorizer_kwargs: Any
) -> list[list[tuple[str, float]]]:
    """The ``top_n`` terms of each document by TF-IDF weight, as ``[(term, weight), ...]`` best first.

    A term scores high when it is frequent in the document but rare in the collection:
    ``tfidf = count(term, doc) * (ln((1 + n_docs) / (1 + doc_freq(term))) + 1)``, each document's vector
    then scaled to unit length (scikit-learn's ``TfidfVectorizer`` defaults). Extra keyword arguments go
    to ``TfidfVectorizer`` (e.g. ``ngram_range=(1, 2)``, ``max_df=0.5``).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = list(docs)
    if not docs or not all(isinstance(d, str) for d in docs):
        raise TypeError("tfidf_keywords expects a non-empty list of strings (one per document)")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    vec = TfidfVectorizer(stop_words=stop_words, **vectorizer_kwargs)
    matrix = vec.fit_transform(docs).tocsr()  # (n_docs, vocab) sparse
    terms = vec.get_feature_names_out()
    out = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        cols, vals = matrix.indices[start:end], matrix.data[start:end]
        order = sorted(range(len(cols)), key=lambda j: (-vals[j], terms[cols[j]]))[:top_n]  # ties by term
        out.append([(str(terms[cols[j]]), float(vals[j])) for j in order])
    return out
