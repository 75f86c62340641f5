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
# # 3.4 · Tokenization: a byte-level BPE tokenizer, written by hand
#
# A language model reads integers, not text. The **tokenizer** decides which integers: one per
# character, one per byte, one per word, or something in between. This notebook builds the
# tokenizer GPT-2 made standard, **byte-level byte-pair encoding (BPE)**, with your own code:
#
# 1. characters, Unicode code points and UTF-8 bytes, in English and in Chinese;
# 2. BPE training: count adjacent pairs, merge the most frequent one, repeat (three exercises);
#    trained on BBC News and People's Daily, it must learn exactly the merges of `course_lib`'s trainer;
# 3. encoding and decoding with the learned merges (two exercises);
# 4. measuring a tokenizer: bytes per token and tokens per character, for your tokenizer, `course_lib`'s,
#    the WordPiece tokenizer of MiniLM (chapter 2's encoder) and the BPE of a real LLM, SmolLM2, and what
#    the vocabulary size trades;
# 5. special tokens.
#
# Notebook 3.6 trains a GPT on text tokenized this way.

# %% tags=["imports"]
import random
import time

import matplotlib.pyplot as plt
import regex
from tokenizers import Tokenizer

from course_lib import fast_mode, pick, seed_everything
from course_lib.datasets import bbc_news, peoples_daily_text
from course_lib.encoder import minilm_dir
from course_lib.metrics import format_table, tokenizer_compression
from course_lib.plots import use_course_style
from course_lib.smollm2 import load_smollm2_tokenizer
from course_lib.tokenizers import ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer

use_course_style()
seed_everything(0)
print("fast mode:", fast_mode())

# %% [markdown]
# ## 3.4.1 Characters, code points and bytes
#
# Python strings are sequences of Unicode **code points**: `ord("A")` is 65, `ord("中")` is 20013.
# There are about 150,000 assigned code points, far too many for a model's vocabulary, and any of
# them may turn up in text. Files and networks store text as **UTF-8 bytes**: a code point below 128
# (plain English) takes one byte, most European accents two, and Chinese characters three. Only 256
# byte values exist, so a model whose vocabulary contains all 256 bytes can read *any* text.

# %%
for text in ["The economy", "人民日报"]:
    data = text.encode("utf-8")
    print(f"{text!r}: {len(text)} characters -> {len(data)} UTF-8 bytes")
    print("  code points:", [ord(c) for c in text])
    print("  bytes:      ", list(data))
print("\nthe bytes of '中':", [f"{b:08b}" for b in "中".encode()],
      "(a leading byte 1110xxxx says 'three bytes'; 10xxxxxx marks the continuations)")

# %% [markdown]
# The price of reading bytes is length: the Chinese sentence above is three times as long in bytes
# as in characters. BPE buys the length back by giving frequent byte sequences their own token.
#
# ## 3.4.2 The training text
#
# BBC News articles (English) and People's Daily paragraphs (Chinese), a few hundred kilobytes of
# each in learner mode: enough for the pure-Python trainer you are about to write to finish in a
# minute or two. A different part of each corpus is held out to measure the finished tokenizers.

# %%
articles = [a.text for a in bbc_news()]
random.Random(0).shuffle(articles)
paragraphs = peoples_daily_text(join=False)


def take(docs, n_chars, start=0):
    """Documents from ``docs[start:]`` until they hold at least ``n_chars`` characters; also the next index."""
    out, n, i = [], 0, start
    while n < n_chars and i < len(docs):
        out.append(docs[i])
        n += len(docs[i])
        i += 1
    return out, i


en_train, i_en = take(articles, pick(20_000, 200_000))
zh_train, i_zh = take(paragraphs, pick(7_000, 70_000))
en_test, _ = take(articles, pick(5_000, 50_000), start=i_en)
zh_test, _ = take(paragraphs, pick(3_000, 20_000), start=i_zh)
train_texts = en_train + zh_train
NUM_MERGES = pick(40, 300)
for name, docs in [("English training", en_train), ("Chinese training", zh_train),
                   ("English held out", en_test), ("Chinese held out", zh_test)]:
    print(f"{name:<17} {len(docs):>5} documents, {sum(map(len, docs)):>8,} characters, "
          f"{sum(len(d.encode()) for d in docs) / 1e3:>6.0f} kB")

# %% [markdown]
# ## 3.4.3 Pre-tokens, then pairs
#
# GPT-2 first cuts the text into **pre-tokens** with a regular expression: runs of letters (with the
# space before them), runs of digits, runs of punctuation, whitespace. Merges never cross a
# pre-token boundary, so no token ends up holding "the end of one word and the start of the next".
# (Chinese has no spaces, so a whole clause of Chinese characters is one pre-token.) Training only
# needs each distinct pre-token once, with its count, as a tuple of byte values:

# %%
print(regex.findall(GPT2_SPLIT_PATTERN, "The plans, welcomed by 5 firms, rose 20%.  人民日报报道，经济增长。"))


# %%
def word_counts(texts):
    """{pre-token as a tuple of UTF-8 byte values: how often it occurs} over all ``texts``."""
    counts = {}
    for text in texts:
        for word in regex.findall(GPT2_SPLIT_PATTERN, text):
            key = tuple(word.encode("utf-8"))
            counts[key] = counts.get(key, 0) + 1
    return counts


# %%
words = word_counts(train_texts)
print(f"{len(words):,} distinct pre-tokens; the most frequent:")
for w, f in sorted(words.items(), key=lambda kv: -kv[1])[:5]:
    print(f"  {bytes(w).decode('utf-8', 'replace')!r:>8}  {f:>6,} times  bytes {w}")

# %% [markdown]
# ### Exercise 3.4a — count adjacent pairs
# Write `count_pairs(words)`: for a dict `{tuple of ids: count}` return `{(a, b): n}`, where `n` is how
# often the ids `a, b` stand next to each other inside a word, weighted by the word's count. Pairs
# never span two words.

# %% tags=["exercise"]
def count_pairs(words):
    """{(a, b): how often a is followed by b} over the words, each weighted by its count."""
    ### BEGIN SOLUTION
    counts = {}
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] = counts.get(pair, 0) + freq
    return counts
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_count_pairs

check_count_pairs(count_pairs)

# %% [markdown]
# ### Exercise 3.4b — merge a pair
# Write `merge(ids, pair, new_id)`: a new list where every occurrence of `pair` in `ids`, scanning left
# to right, is replaced by `new_id`. In `[7, 7, 7]` the pair `(7, 7)` becomes `[new_id, 7]`: once the
# first two are merged, the third 7 has no partner left.

# %% tags=["exercise"]
def merge(ids, pair, new_id):
    """Replace each (a, b) = pair in ids, left to right, by new_id."""
    ### BEGIN SOLUTION
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_merge

check_merge(merge)

# %% [markdown]
# ### Exercise 3.4c — train
# Write `train_bpe(texts, num_merges)`. Start from `word_counts(texts)`; then `num_merges` times:
# count the pairs, choose the most frequent, give it the next id (256, 257, ...), and merge it in every
# word. Return the merges as a dict `{(a, b): new_id}` in the order they were learned (Python dicts
# keep insertion order).
#
# **Ties.** Pairs often have the same count; which one wins changes every later merge. The rule here
# (and in `course_lib.tokenizers.BPETokenizer.train`) is: *among the pairs with the highest count,
# take the smallest pair, comparing `(a, b)` as a tuple of ids* — so `(32, 116)` beats `(101, 32)`.
# `Counter.most_common` breaks ties by first appearance instead, and learns different merges.

# %% tags=["exercise"]
def train_bpe(texts, num_merges):
    """Learn num_merges merges from texts: {(a, b): new id} in the order learned."""
    ### BEGIN SOLUTION
    words = word_counts(texts)
    merges = {}
    for k in range(num_merges):
        counts = count_pairs(words)
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))  # highest count, then the smallest pair
        new_id = 256 + k
        merges[best] = new_id
        merged = {}
        for word, freq in words.items():
            word = tuple(merge(list(word), best, new_id))
            merged[word] = merged.get(word, 0) + freq
        words = merged
    return merges
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_train_bpe

check_train_bpe(train_bpe)

# %% [markdown]
# Now on the real training text. Your code recounts every pair after each merge; `course_lib`'s
# trainer updates the counts of only the words that changed, which is much faster on big corpora.
# The merges must be the same:

# %%
t0 = time.perf_counter()
library_bpe = BPETokenizer.train(train_texts, 256 + NUM_MERGES + 1, special_tokens=(ENDOFTEXT,),
                                 show_progress=False)
t_lib = time.perf_counter() - t0
print(f"course_lib's trainer: {len(library_bpe.merges)} merges in {t_lib:.1f} s")

# %% [markdown]
# From here on, cells that run your functions stop with `NotImplementedError` until you have solved
# the exercises they use (they are tagged `raises-exception`, so running the whole notebook carries on).

# %% tags=["raises-exception"]
t0 = time.perf_counter()
merges = train_bpe(train_texts, NUM_MERGES)
t_mine = time.perf_counter() - t0
print(f"your trainer: {len(merges)} merges in {t_mine:.1f} s (timings on a shared machine are rough)")


def build_vocab(merges):
    """{id: the bytes it stands for}: the 256 single bytes, then each merge's two parts joined."""
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new_id in merges.items():
        vocab[new_id] = vocab[a] + vocab[b]
    return vocab


def show(token):
    """A token's text, or its bytes in hex when they are only part of a UTF-8 character."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return "<" + " ".join(f"{b:02x}" for b in token) + ">"


# %% tags=["raises-exception"]
vocab = build_vocab(merges)
mine_as_bytes = [(vocab[a], vocab[b]) for a, b in merges]
print("the same merges as course_lib, in the same order:", mine_as_bytes == library_bpe.merges)
assert mine_as_bytes == library_bpe.merges

# %% [markdown]
# The first merges (a token that is only part of a character is shown as its bytes in hex): spaces
# glued to the next letter, frequent English endings, and the first two bytes of common Chinese
# characters, then whole characters such as 的 ("of") and the Chinese comma.

# %% tags=["raises-exception"]
for (a, b), new_id in list(merges.items())[:16]:
    print(f"{new_id}: {show(vocab[a])!r:>10} + {show(vocab[b])!r:<10} -> {show(vocab[new_id])!r}")
longest = sorted(vocab.values(), key=len, reverse=True)[:8]
print("\nthe longest tokens:", [show(t) for t in longest])

# %% [markdown]
# ### Exercise 3.4d — encode
# Write `encode(text, merges)`: cut the text into pre-tokens; for each, start from its UTF-8 bytes and
# apply merges **in the order they were learned**: repeatedly find, among the adjacent pairs present,
# the one with the smallest new id, merge it, until no pair present is a merge. Merging the leftmost
# known pair instead gives different (and worse) tokens: `abc` with `(b, c)` learned before `(a, b)`
# must become `a` + `bc`.

# %% tags=["exercise"]
def encode(text, merges):
    """Text -> token ids with the learned merges."""
    ### BEGIN SOLUTION
    ids_out = []
    for word in regex.findall(GPT2_SPLIT_PATTERN, text):
        ids = list(word.encode("utf-8"))
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
            if pair not in merges:
                break  # no pair present was learned
            ids = merge(ids, pair, merges[pair])
        ids_out.extend(ids)
    return ids_out
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_bpe_encode

check_bpe_encode(encode)

# %% [markdown]
# ### Exercise 3.4e — decode
# Write `decode(ids, vocab)`. Join the tokens' bytes first and decode UTF-8 once at the end: one Chinese
# character's three bytes may be spread over two tokens. An arbitrary id sequence (a model's sample)
# can contain bytes that are not valid UTF-8; they must become the replacement character `'\ufffd'`
# (`errors="replace"`), not an exception.

# %% tags=["exercise"]
def decode(ids, vocab):
    """Token ids -> text; invalid UTF-8 becomes U+FFFD."""
    ### BEGIN SOLUTION
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_bpe_decode

check_bpe_decode(decode)

# %% tags=["raises-exception"]
held_out = en_test + zh_test
same_ids = all(encode(t, merges) == library_bpe.encode(t) for t in held_out[:20])
round_trip = all(decode(encode(t, merges), vocab) == t for t in held_out)
print("your ids equal course_lib's on held-out text:", same_ids)
print("decode(encode(text)) == text on every held-out document:", round_trip)
assert same_ids and round_trip

# %% tags=["raises-exception"]
sentence = "人民日报报道，经济增长。The economy grew."
ids = encode(sentence, merges)
print(f"{len(sentence)} characters, {len(sentence.encode())} bytes -> {len(ids)} tokens:")
print(" | ".join(show(vocab[i]) for i in ids))

# %% [markdown]
# ## 3.4.4 Measuring a tokenizer
#
# Two numbers describe how well a tokenizer packs text: **bytes per token** (how much text each token
# carries; higher is better) and **tokens per character** (the sequence length the model pays per
# character of text; lower is better). Both are ratios of *totals* over a corpus, so long documents
# weigh more than short ones.
#
# ### Exercise 3.4f — bytes per token, tokens per character
# Write `compression(encode_fn, texts)` returning `(bytes_per_token, tokens_per_char)`, where
# `encode_fn(text)` gives a list of ids.

# %% tags=["exercise"]
def compression(encode_fn, texts):
    """(UTF-8 bytes per token, tokens per character), totalled over all texts."""
    ### BEGIN SOLUTION
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_chars = sum(len(t) for t in texts)
    n_tokens = sum(len(encode_fn(t)) for t in texts)
    return n_bytes / n_tokens, n_tokens / n_chars
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_compression

check_compression(compression)

# %% [markdown]
# ### Exercise 3.4g — an experiment: how well does your tokenizer pack Chinese?
# Run your `encode` over the held-out Chinese paragraphs (`zh_test`) and report the bytes per token
# as `zh_bytes_per_token` (a float). Before you run it, guess: more or fewer bytes per token than on
# English? The check recounts it with `course_lib`.

# %% tags=["exercise", "experiment", "raises-exception"]
zh_bytes_per_token = None  # your number
### BEGIN SOLUTION
zh_bytes_per_token, _ = compression(lambda t: encode(t, merges), zh_test)
### END SOLUTION
print(f"Chinese held out: {zh_bytes_per_token:.3f} bytes per token")

# %% tags=["check"]
from course_lib.exercises.ch03 import check_reported_bytes_per_token

check_reported_bytes_per_token(zh_bytes_per_token, merges, zh_test)

# %% [markdown]
# Now several tokenizers side by side on the same held-out text, counted with the library's
# `course_lib.metrics.tokenizer_compression` (the same totals as your `compression`):
#
# - **bytes**: no merges at all, one token per UTF-8 byte (vocabulary 256);
# - **yours** and **course_lib's**, trained on the same text with the same number of merges (so equal);
# - **course_lib's, bigger vocabularies**: the same trainer run longer. BPE training is greedy, so the
#   first *k* merges of a long run are exactly a run of *k* merges; one run gives every size;
# - **MiniLM's WordPiece** (the encoder of chapter 2, 30,522 tokens, trained on English): it lower-cases
#   and maps characters it does not know to `[UNK]`, so unlike byte-level BPE it cannot give the text back;
# - **SmolLM2's BPE** (the real LLM of chapters 4 and 5, 49,152 tokens): byte-level BPE like yours, read
#   by `course_lib` from the model's own file, trained by its authors on far more text, mostly English.

# %%
big_size = pick(512, 4096)
big_bpe = BPETokenizer.train(train_texts, big_size, special_tokens=(ENDOFTEXT,), show_progress=False)
wordpiece = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
wordpiece.no_truncation()
smollm2_bpe = load_smollm2_tokenizer()


def bpe_with(n_merges):
    """course_lib's tokenizer made of the first n_merges merges of the big run."""
    return BPETokenizer(big_bpe.merges[:n_merges], special_tokens=())


# %% tags=["raises-exception"]
tokenizers_to_compare = {
    "bytes (256)": lambda t: list(t.encode("utf-8")),
    f"yours ({256 + len(merges)})": lambda t: encode(t, merges),
    f"course_lib BPE ({library_bpe.vocab_size - 1})": lambda t: library_bpe.encode(t, allowed_special="none"),
    f"course_lib BPE ({big_size - 1})": bpe_with(big_size - 257).encode,
    f"MiniLM WordPiece ({wordpiece.get_vocab_size():,})": lambda t: wordpiece.encode(
        t, add_special_tokens=False).ids,
    f"SmolLM2 BPE ({smollm2_bpe.vocab_size:,})": lambda t: smollm2_bpe.encode(t, allowed_special="none"),
}
rows, stats = [], {}
for name, enc in tokenizers_to_compare.items():
    en, zh = tokenizer_compression(enc, en_test), tokenizer_compression(enc, zh_test)
    stats[name] = (en, zh)
    rows.append({"tokenizer (vocabulary)": name,
                 "English bytes/token": en.bytes_per_token, "English tokens/char": en.tokens_per_char,
                 "Chinese bytes/token": zh.bytes_per_token, "Chinese tokens/char": zh.tokens_per_char})
format_table(rows, floatfmt=".3f").show()
unk = wordpiece.token_to_id("[UNK]")
zh_wp = [i for t in zh_test for i in wordpiece.encode(t, add_special_tokens=False).ids]
print(f"WordPiece maps {sum(i == unk for i in zh_wp) / len(zh_wp):.1%} of the Chinese tokens to [UNK]")
smol, ours = stats[f"SmolLM2 BPE ({smollm2_bpe.vocab_size:,})"], stats[f"course_lib BPE ({big_size - 1})"]
print(f"SmolLM2's {smollm2_bpe.vocab_size:,} tokens against course_lib's {big_size - 1}: "
      f"{smol[0].bytes_per_token:.2f} against {ours[0].bytes_per_token:.2f} English bytes per token, "
      f"{smol[1].bytes_per_token:.2f} against {ours[1].bytes_per_token:.2f} Chinese")

# %% tags=["raises-exception"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
names = list(stats)
for k, lang in enumerate(["English", "Chinese"]):
    axes[0].bar([x + 0.4 * k for x in range(len(names))], [stats[n][k].bytes_per_token for n in names],
                width=0.4, label=lang)
axes[0].set_xticks([x + 0.2 for x in range(len(names))], names, rotation=25, ha="right", fontsize=8)
axes[0].set_ylabel("UTF-8 bytes per token (higher = shorter sequences)")
axes[0].set_title("held-out text")
axes[0].legend()

sizes = [n for n in (0, 64, 128, 256, 512, 1024, 2048, 4096 - 257) if n <= big_size - 257]
sweep = {lang: [tokenizer_compression(bpe_with(n).encode, docs).tokens_per_char for n in sizes]
         for lang, docs in [("English", en_test), ("Chinese", zh_test)]}
vocab_sizes = [256 + n for n in sizes]
for lang, values in sweep.items():
    axes[1].plot(vocab_sizes, values, "o-", label=f"{lang}: tokens per character")
axes[1].set_xscale("log", base=2)
axes[1].set_xlabel("vocabulary size (course_lib BPE, same training text)")
axes[1].set_ylabel("tokens per character")
ax2 = axes[1].twinx()
ax2.plot(vocab_sizes, [v * 768 / 1e6 for v in vocab_sizes], "k--", label="embedding parameters (d = 768)")
ax2.set_ylabel("embedding parameters (millions)")
axes[1].legend(loc="upper center", fontsize=8)
ax2.legend(loc="center right", fontsize=8)
fig.tight_layout()
plt.show()
en_drop = sweep["English"][0] / sweep["English"][-1]
zh_drop = sweep["Chinese"][0] / sweep["Chinese"][-1]
print(f"from 256 to {vocab_sizes[-1]} tokens, English sequences get {en_drop:.2f}x shorter and Chinese "
      f"{zh_drop:.2f}x shorter, while the embedding table grows {vocab_sizes[-1] / 256:.0f}x")

# %% [markdown]
# **Reading the figures.** Every merge shortens the sequences, but with diminishing returns: the first
# merges take the most frequent pairs (a space and the next letter, `he`, `in`); later ones only
# frequent whole words. Each token costs a row of the embedding table (and, untied, of the output
# layer): $V \times d$ parameters, 768 numbers per token at GPT-2's width, and every step's softmax
# runs over all $V$ tokens. Large models choose tens of thousands of tokens; a small model trained on
# a laptop, like the one of notebook 3.6, picks a vocabulary of about a thousand, so that the embedding
# table does not dwarf the rest of the model.
#
# A tokenizer also serves the languages of its training text. SmolLM2's, trained on mostly English
# text, packs more English into a token than any other here, yet its Chinese is no better than that
# of our small BPE (the line under the table): its merges went to English pairs, whereas ours, trained
# on People's Daily as well, spent many of theirs on Chinese characters.

# %% [markdown] tags=["answer"]
# ### Question 3.4h — the vocabulary-size trade-off
# Using the table and the figure above, explain in a few sentences (1) why Chinese costs so many more
# tokens per character than English with the byte tokenizer and with yours, and what it takes to bring
# it below one token per character; (2) what you gain and what you pay when you multiply the vocabulary
# size by 16 for a model with $d = 768$.
#
# ### BEGIN SOLUTION
# (1) With bytes alone a Chinese character costs three tokens, an English letter one. A merge fuses one
# particular pair: English needs few merges to cover its frequent pairs, which 26 letters share across
# many words, whereas every Chinese character is its own three-byte sequence and needs merges of its
# own, and thousands of characters are in use. So after a few hundred merges most Chinese characters
# are still split into two or three tokens, while English tokens already hold about two characters;
# only a vocabulary of thousands (the sweep) brings Chinese below one token per character, with the
# frequent characters and a few frequent words as single tokens. (2) Sixteen times the vocabulary
# shortens the sequences (fewer tokens per character, for both languages), so the same context window
# holds more text and each training or generation step covers more of it; the price is sixteen times
# the embedding rows ($V \times 768$ parameters, millions at a few thousand tokens, doubled if the
# output layer is not tied), a softmax over sixteen times as many classes at every position, and rarer
# tokens that each get fewer training examples.
#
# Rubric: 1 point for both parts: (1) three bytes per Chinese character against one per English letter, and
# merges that must be spent character by character on thousands of characters, so only a vocabulary of
# thousands gets Chinese below one token per character; (2) shorter sequences, so more text per context
# window, against sixteen times the embedding rows ($V \times 768$), a softmax over sixteen times the
# classes and rarer tokens. Half a point when only one part is right.
# ### END SOLUTION

# %% [markdown]
# ## 3.4.5 Special tokens
#
# Some ids mean something other than text: `<|endoftext|>` marks where one document stops and the next
# begins (notebook 3.6 puts one between BBC articles, so the model learns that a new article starts
# afresh). A special token is never produced by merges; it gets its own id after the merges, and the
# encoder cuts it out of the text before the pre-token step. Whether the *string* `<|endoftext|>` in
# some text becomes the special id is a choice (`allowed_special`): text from users should not be able
# to end a document on the model's behalf.

# %%
eot = library_bpe.token_to_id(ENDOFTEXT)
text = "First article.<|endoftext|>Second article."
as_special = library_bpe.encode(text, allowed_special="all")
as_text = library_bpe.encode(text, allowed_special="none")
print(f"{ENDOFTEXT} has id {eot}, after the 256 bytes and the {len(library_bpe.merges)} merges")
print(f"allowed: {len(as_special)} tokens, the special id appears {as_special.count(eot)} time(s)")
print(f"not allowed: {len(as_text)} tokens, the special id appears {as_text.count(eot)} time(s)")

# %% tags=["nbval-check-output"]
print("the special id appears once when allowed and never when not:",
      as_special.count(eot) == 1 and as_text.count(eot) == 0)
assert as_special.count(eot) == 1 and as_text.count(eot) == 0

# %% [markdown]
# ## Summary
#
# - Text is code points; storage is UTF-8 bytes (1 per ASCII character, 3 per common Chinese
#   character). Starting from the 256 bytes, a tokenizer can encode anything, with no `<unk>`.
# - BPE training counts adjacent pairs inside pre-tokens and merges the most frequent, again and again;
#   a stated tie-break (highest count, then the smallest pair) makes it reproducible: your trainer and
#   `course_lib`'s learn identical merges.
# - Encoding applies the merges in the order they were learned; decoding joins bytes and decodes once,
#   replacing invalid UTF-8.
# - Bytes per token and tokens per character measure a tokenizer; a larger vocabulary shortens
#   sequences with diminishing returns, and costs $V \times d$ embedding parameters.
#
# Next, notebook 3.5 builds the GPT that reads these ids, piece by piece.
