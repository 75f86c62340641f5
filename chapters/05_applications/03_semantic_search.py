# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5.3 · Semantic search over BBC News
#
# Keyword search finds documents that contain the words of the query. **Semantic search** finds
# documents whose *meaning* is close to the query's, even when they share no words: each text
# becomes a vector, and the nearest vectors are the answers. This notebook builds a search engine
# over the BBC News articles (one copy of each repeated article, as in notebook 5.2) with the real
# all-MiniLM-L6-v2 vectors and measures it:
#
# 1. build the index: one unit vector per article (an exercise first: the sentence vector from the
#    encoder's token vectors);
# 2. ask it questions, next to a TF-IDF keyword search;
# 3. measure retrieval with recall@k and the mean reciprocal rank, on a task with known answers:
#    find each article from its headline (two exercises first: recall@k and the MRR);
# 4. look at the neighbourhoods: do nearby articles share a topic?
# 5. pull keywords out of the results, and estimate what search costs.

# %% tags=["imports"]
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from scipy.stats import binomtest
from sklearn.feature_extraction.text import TfidfVectorizer

from course_lib import cache_dir, pick, ready_models, seed_everything, semantic_search
from course_lib.compress import median_time
from course_lib.datasets import BBC_LABELS
from course_lib.encoder import SentenceEncoder
from course_lib.metrics import format_table
from course_lib.plots import use_course_style
from course_lib.semantic_search import SemanticIndex, ranks_from_scores, tfidf_keywords

use_course_style()
seed_everything(0)
torch.set_num_threads(2)


# %% [markdown]
# ## 5.3.1 The index
#
# Each article body becomes one 384-dimensional vector: the encoder's token vectors averaged and
# scaled to length 1 (as in notebook 5.2, the encoder reads the first 128 tokens of each body; the
# vectors come from the same disk cache, so they are computed only once). For unit vectors the
# cosine similarity is a dot product, and scoring every article against a query is a single
# matrix-vector product.
#
# ### Exercise 5.3.1 — a sentence vector
# The encoder returns one vector per token, `hidden` (B, T, d), for a batch of texts padded to the
# same length T, with an `attention_mask` (B, T) that is 1 on real tokens and 0 on padding. Write
# `sentence_embedding(hidden, attention_mask)`: return (B, d), for each text the mean of its real
# tokens' vectors (the padding's vectors are not zero and must not count), scaled to length 1. The
# check compares with the pooling of `course_lib.encoder.Encoder.embed`, which gives the same vectors
# as sentence-transformers' all-MiniLM-L6-v2.

# %% tags=["exercise"]
def sentence_embedding(hidden, attention_mask):
    """(B, T, d) token vectors, (B, T) mask -> (B, d) unit vectors: the mean of the real tokens."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch05 import check_sentence_embedding

check_sentence_embedding(sentence_embedding)

# %% [markdown]
# `course_lib.semantic_search.SemanticIndex` stores such vectors with an id per article and returns
# the top $k$:

# %%
recipe = ready_models.topic_recipe()
articles, labels, _ = ready_models.bbc_topic_data(recipe)
encoder = SentenceEncoder.from_minilm(device="cpu")
doc_vectors = F.normalize(ready_models.bbc_body_features(recipe, encoder, articles), dim=-1)  # (N, 384) unit length
index = SemanticIndex(encoder).add_embeddings(doc_vectors, ids=[a.doc_id for a in articles])
by_id = {a.doc_id: a for a in articles}
print(f"{len(index):,} articles, vectors {tuple(index.embeddings.shape)}, "
      f"{index.embeddings.numel() * 4 / 1e6:.1f} MB as float32")

# %% [markdown]
# An index is data, not a model: it can be saved to a file and loaded by a search service that only
# needs the encoder to embed queries.

# %% tags=["nbval-check-output"]
path = index.save(cache_dir("apps") / f"bbc-index-{recipe.mode}.npz")
loaded = SemanticIndex.load(path, encoder)
query = "football match"
print("vector width:", loaded.embeddings.shape[1])
print("the loaded index answers like the original:", loaded.search(query, k=5) == index.search(query, k=5))

# %% [markdown]
# ## 5.3.2 Asking questions
#
# The queries below are written as a person might type them, not copied from the articles. Next to
# the semantic results is a classic **keyword search**: TF-IDF vectors of the same bodies (word
# counts, weighted up for words that are rare in the collection, and scaled to length 1) scored the
# same way, by cosine.

# %%
bodies = [a.body for a in articles]
tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english")
tfidf_docs = tfidf.fit_transform(bodies)  # (N, vocabulary) sparse, rows of length 1


def keyword_search(text: str, k: int = 3) -> list[tuple[str, float]]:
    scores = (tfidf.transform([text]) @ tfidf_docs.T).toarray()[0]  # (N,) cosines
    best = np.argsort(-scores)[:k]
    return [(articles[i].doc_id, float(scores[i])) for i in best]


def show(hits: list[tuple[str, float]]) -> None:
    for doc_id, score in hits:
        a = by_id[doc_id]
        print(f"   {score:.2f}  [{a.label}] {a.headline}")


queries = [
    "interest rates and inflation",
    "a new games console",
    "films that won prizes",
    "tax plans before the general election",
    "people stealing data over the internet",
]
for q in queries:
    print(f"{q!r}\n  semantic (MiniLM):")
    show(index.search(q, k=3))
    print("  keywords (TF-IDF):")
    show(keyword_search(q))
    print()

# %% [markdown]
# Where the articles use the query's own words (*interest rates*, *tax*), keyword search has
# something to match. Where they do not (*people stealing data over the internet*), it can only
# match the common words the query has, while the semantic index can match the meaning: compare
# the two lists for each query above. Looking at a handful of queries is not a measurement,
# though.
#
# ## 5.3.3 Measuring retrieval
#
# To measure a search engine we need queries whose right answers are known. Every article comes
# with its headline, and the index holds only the bodies, so the task is: given a headline, find
# its article among all of them. Two standard scores:
#
# - **recall@k**: the share of queries whose right article is among the top $k$ results;
# - the **mean reciprocal rank** (MRR): the average of $1/\text{rank}$ of the right article (1 if
#   always first, 0.5 if always second).
#
# ### Exercise 5.3.2 — recall@k
# Write `recall_at_k(query_embs, doc_embs, true_idx, k)`: `query_embs` (n, d) and `doc_embs` (N, d)
# are float tensors (not necessarily of length 1), `true_idx` (n,) holds the row of `doc_embs` that
# answers each query. Rank by cosine similarity and return the share of queries whose document is
# among the top `k`, as a float. The check compares with `course_lib.semantic_search.recall_at_k`.

# %% tags=["exercise"]
def recall_at_k(query_embs, doc_embs, true_idx, k):
    """The share of queries whose own document is among their k most cosine-similar documents."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch05 import check_recall_at_k

check_recall_at_k(recall_at_k)


# %% [markdown]
# ### Exercise 5.3.3 — the mean reciprocal rank
# Recall@k looks only at whether the right article is in the top $k$; the MRR also rewards ranking
# it first. Write `mrr(scores, true_idx)`: `scores` (n, N) holds a score per query and document,
# higher is better (cosines, or any other score), `true_idx` (n,) the right document of each
# query. The rank of the right document is 1 plus the number of documents of that row scored
# *strictly* higher, so a tie counts in its favour. Return the mean over queries of 1 / rank as a
# float. The check compares with `course_lib.semantic_search.ranks_from_scores`, which the table
# below uses.

# %% tags=["exercise"]
def mrr(scores, true_idx):
    """The mean over queries of 1 / (the rank of the right document)."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch05 import check_mrr

check_mrr(mrr)

# %% [markdown]
# Now the real measurement. The headlines are short, so encoding all of them takes seconds (cached
# too). For TF-IDF the headlines go through the same vectorizer as the bodies, and
# `semantic_search.ranks_from_scores` ranks any score matrix the way `recall_at_k` ranks cosines. A third
# row adds the two similarity scores together: a simple **hybrid** of meaning and keywords.

# %%
headlines = [a.headline for a in articles]
query_vectors = encoder.encode(headlines, cache=f"minilm-bbc-headlines-{recipe.mode}-v{ready_models.APPS_VERSION}")  # (N, 384)
true_idx = torch.arange(len(articles))  # headline i belongs to body i
tfidf_scores = torch.from_numpy((tfidf.transform(headlines) @ tfidf_docs.T).toarray()).float()  # (N, N)
semantic_scores = query_vectors @ doc_vectors.T  # (N, N) cosines
ranks = {
    "MiniLM (semantic)": ranks_from_scores(semantic_scores, true_idx),
    "TF-IDF (keywords)": ranks_from_scores(tfidf_scores, true_idx),
    "hybrid (sum of both)": ranks_from_scores(semantic_scores + tfidf_scores, true_idx),
}


def wilson(hits: int, n: int) -> str:
    """The 95% Wilson interval of a share of hits out of n."""
    ci = binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return f"{ci.low:.3f} to {ci.high:.3f}"


rows = [{"retriever": name, "recall@1": float((r <= 1).double().mean()),
         "recall@1, 95% interval": wilson(int((r <= 1).sum()), len(r)), "recall@10": float((r <= 10).double().mean()),
         "MRR": float((1.0 / r.double()).mean()), "median rank": int(r.median())} for name, r in ranks.items()]
format_table(rows).show()

# %% [markdown] tags=["answer", "points=2"]
# ### Question 5.3a — which retriever wins, and by how much?
# Using the table above (the 2,092 headlines as queries), rank the three retrievers. Do the intervals allow
# you to say that the hybrid beats MiniLM? Why does every row have a median rank of 1, and why might adding
# the two scores help?
#
# YOUR ANSWER HERE

# %% [markdown]
# `course_lib.semantic_search` computes the MiniLM row straight from the vectors; it must agree with the
# ranks above:

# %% tags=["nbval-check-output"]
lib = semantic_search.recall_at_k(query_vectors, doc_vectors, true_idx, ks=(1, 10))
print("recall_at_k agrees:", abs(lib[1] - rows[0]["recall@1"]) < 1e-9 and abs(lib[10] - rows[0]["recall@10"]) < 1e-9)
print("MRR agrees:", abs(semantic_search.mean_reciprocal_rank(query_vectors, doc_vectors, true_idx) - rows[0]["MRR"]) < 1e-9)

# %%
ks = np.arange(1, 51)
fig, ax = plt.subplots(figsize=(7, 4))
for name, r in ranks.items():
    ax.plot(ks, [float((r <= k).double().mean()) for k in ks], label=name)
ax.set_xscale("log")
ax.set_xlabel("k (results looked at)")
ax.set_ylabel("recall@k")
ax.set_title(f"Headline -> its article among {len(articles):,}")
ax.legend()
plt.show()

# %% [markdown]
# The cell below reads the table: how often each retriever ranks the right article first, and
# whether the intervals of the three overlap. Headlines are short and often allusive ("Mobile
# multimedia slow to catch on"), so exact word overlap is a weaker signal than meaning; where
# keywords still add something, production search engines combine the two.

# %%
semantic, keywords_row, hybrid = rows
display(Markdown(
    f"Out of {len(articles):,} headlines, MiniLM ranks the right article first for {semantic['recall@1']:.1%} "
    f"(interval {semantic['recall@1, 95% interval']}) and among the top ten for {semantic['recall@10']:.1%}; "
    f"TF-IDF for {keywords_row['recall@1']:.1%} ({keywords_row['recall@1, 95% interval']}) and "
    f"{keywords_row['recall@10']:.1%}; the hybrid for {hybrid['recall@1']:.1%} ({hybrid['recall@1, 95% interval']}) "
    f"and {hybrid['recall@10']:.1%}. Intervals that do not overlap mark a difference larger than the sampling "
    "noise of this many queries."
))

# %% [markdown]
# What is left is partly not the model's fault: exact copies were removed, but the collection
# still holds near-duplicate stories (follow-ups of one event), and several articles can fit one
# short headline.
#
# ## 5.3.4 Neighbourhoods
#
# A different check needs no queries: if the vectors capture what an article is about, an
# article's nearest neighbours should mostly share its topic. For each article we look at its ten
# nearest other articles:

# %%
def same_topic_share(similarity: torch.Tensor, k: int = 10) -> float:
    sim = similarity.clone().fill_diagonal_(-float("inf"))  # an article is not its own neighbour
    neighbours = sim.topk(k, dim=-1).indices  # (N, k)
    topic_ids = torch.as_tensor(labels)
    return float((topic_ids[neighbours] == topic_ids[:, None]).float().mean())


k_nn = min(10, len(articles) - 1)
print(f"share of the {k_nn} nearest neighbours with the same topic: "
      f"MiniLM {same_topic_share(doc_vectors @ doc_vectors.T, k_nn):.3f}, "
      f"TF-IDF {same_topic_share(torch.from_numpy((tfidf_docs @ tfidf_docs.T).toarray()).float(), k_nn):.3f} "
      f"(random guess about {np.sum((np.bincount(labels) / len(labels)) ** 2):.2f})")

# %% [markdown]
# The encoder was never told about topics, yet most of an article's neighbours share its topic
# (the cell above prints the shares, next to TF-IDF's and a random guess): both kinds of vector put
# articles on one subject close together. A picture of the same thing: the vectors projected onto their two main directions (principal
# component analysis). Two dimensions out of 384 lose most of the structure, but the topics already
# form overlapping clouds:

# %%
centred = doc_vectors - doc_vectors.mean(dim=0)
_, _, v = torch.pca_lowrank(centred, q=2, center=False)
xy = (centred @ v).numpy()
fig, ax = plt.subplots(figsize=(6.5, 5))
for t, name in enumerate(BBC_LABELS):
    ax.scatter(*xy[labels == t].T, s=6, alpha=0.6, label=name)
ax.set_xlabel("first principal component")
ax.set_ylabel("second principal component")
ax.set_title("MiniLM vectors of the BBC articles, projected to 2-D")
ax.legend(markerscale=3)
plt.show()

# %% [markdown]
# ## 5.3.5 Keywords, and what search costs
#
# A results page usually shows why a result matched. `semantic_search.tfidf_keywords` picks the words that
# are frequent in a document and rare in the collection (**keyword extraction**, another classic
# application). Here for the top results of one query:

# %%
q = "people stealing data over the internet"
hits = index.search(q, k=3)
keywords = tfidf_keywords(bodies, top_n=6)
position = {a.doc_id: i for i, a in enumerate(articles)}
print(f"{q!r}")
for doc_id, score in hits:
    words = ", ".join(w for w, _ in keywords[position[doc_id]])
    print(f"  {score:.2f} {by_id[doc_id].headline}\n       keywords: {words}")

# %% [markdown]
# The cost of a query is encoding it (one forward pass of the encoder) plus one matrix-vector
# product over the index. Measured here on the CPU with `compress.median_time`: a few calls first
# to warm up, then the median of many repeats, because a single timing on a busy machine can be
# off by several times. The timings use one CPU thread, as in notebooks 5.4 and 5.5, so the figures
# compare: on a machine busy with other work, several threads can wait on each other and make a
# small forward pass many times slower. The search itself is timed twice: `index.search` (checks,
# normalising, top k, building the result list) and the bare matrix-vector product it is built on.

# %%
torch.set_num_threads(1)
repeats = pick(fast=5, full=50)
q_vec = encoder.encode([q])  # (1, 384)
t_encode = median_time(lambda: encoder.encode([q]), repeats=repeats, warmup=5)
t_search = median_time(lambda: index.search(q_vec, k=10), repeats=repeats, warmup=5)
t_product = median_time(lambda: index.embeddings @ q_vec[0], repeats=repeats, warmup=5)  # (N,) cosines
n_query_tokens = encoder.tokenizer.n_tokens(q)
print(f"encode the query ({n_query_tokens} tokens): {t_encode * 1e3:.2f} ms")
print(f"index.search over {len(index):,} articles, top 10: {t_search * 1e3:.3f} ms, "
      f"of which the matrix-vector product: {t_product * 1e3:.3f} ms")
per_article = t_product / len(index)
print(f"a million articles would need {1e6 * index.embeddings.shape[1] * 4 / 1e9:.1f} GB of float32 vectors; "
      f"the product grows linearly: about {per_article * 1e6 * 1e3:.0f} ms per query at this speed")

# %%
share_encode = t_encode / (t_encode + t_search)
display(Markdown(
    f"Here one query costs {(t_encode + t_search) * 1e3:.1f} ms, {share_encode:.0%} of it encoding the query: "
    + ("the encoder pass dominates. " if share_encode > 0.5 else "the search itself dominates. ")
    + f"Scoring all {len(index):,} articles takes {t_search * 1e3:.2f} ms through the index and "
    f"{t_product * 1e3:.3f} ms for the bare product; the difference is the index's bookkeeping, a fixed cost "
    "per query."
))

# %% [markdown]
# Exhaustive scoring is exact and simple, and fast enough for collections of this size. For
# millions of documents, search services use *approximate* nearest-neighbour indexes (libraries
# such as FAISS, or vector databases) that look at a small part of the collection per query, and
# often store the vectors in 8 bits, the subject of the next notebook.
#
# **Bad input.** An index refuses what it cannot answer well, with a message that says what to do:
# an empty index, and a query longer than the encoder reads (it would be cut, and its end would
# silently play no part):

# %%
for bad in (lambda: SemanticIndex(encoder).search("football", k=3),
            lambda: index.search("football " * encoder.tokenizer.max_length, k=3)):
    try:
        bad()
    except ValueError as err:
        print("ValueError:", err)

# %% [markdown]
# ## Summary

# %% tags=["hide-input"]
display(Markdown("\n".join([
    "- A semantic index is a matrix of unit vectors, one per document; a query is one encoder pass and one "
    "matrix-vector product. It can be saved and loaded like any data, and it refuses an empty index or an "
    "over-long query with a clear error.",
    f"- Finding BBC articles from their headlines, MiniLM ranks the right article first {semantic['recall@1']:.1%} "
    f"of the time against {keywords_row['recall@1']:.1%} for TF-IDF and {hybrid['recall@1']:.1%} for the sum of "
    "both scores (intervals in the table).",
    "- The encoder's neighbourhoods mostly respect topics it was never told about (5.3.4).",
    f"- Exhaustive search over {len(index):,} documents took {t_search * 1e3:.2f} ms per query here and "
    f"encoding the query {t_encode * 1e3:.1f} ms (medians after warm-up, on a CPU shared with other work).",
])))
