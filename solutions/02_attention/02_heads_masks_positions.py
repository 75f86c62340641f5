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
# # 2B · Masks, heads, positions and the Transformer block
#
# Notebook 2A built one attention head: every query looks at every key. Real models need four more
# ideas, and this notebook adds them one at a time, each checked against a reference implementation:
#
# - **2.6 masks**: which tokens a query is *allowed* to see (the future in GPT, the padding in a batch);
# - **2.7 multi-head attention**: several heads side by side, with the tensor bookkeeping to run
#   them all in one matrix product; checked against PyTorch's `nn.MultiheadAttention`;
# - **2.8 grouped-query attention**: fewer keys and values than queries, to save memory;
# - **2.9 positions**: attention ignores word order unless it is told where each token is
#   (sinusoidal tables and rotary embeddings);
# - **2.10 the Transformer block**: attention, a feed-forward network, normalisation and residual
#   connections, the unit that GPT stacks; checked against `transformers`' GPT-2.

# %% tags=["imports"]
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import choose_device, get_device, seed_everything
from course_lib.attention import (
    MultiHeadAttention,
    causal_mask,
    explicit_attention,
    padding_mask,
    per_head_from_fused,
    repeat_kv,
)
from course_lib.convert import gpt_to_hf_gpt2
from course_lib.gpt import GPT, Block, get_config
from course_lib.layers import RotaryEmbedding, sinusoidal_positions
from course_lib.plots import attention_heatmap, heatmap_grid, positional_encoding_figure, use_course_style

use_course_style()
seed_everything(0)
device = get_device()
print("device:", choose_device())
ATOL = 1e-5  # float32 comparisons of values of order 1: kernels add in different orders

# %% [markdown]
# ## 2.6 Masks: who may look at whom
#
# A **mask** is a boolean matrix beside the scores: `True` where query $i$ may look at key $j$. The
# forbidden scores are set to $-\infty$ *before* the softmax, so they get weight exactly zero and the
# allowed weights still add up to one (2A, section 2.2). Two masks cover nearly every use:
#
# - the **causal mask** of a decoder such as GPT: a model trained to predict the next token must not
#   see it, so position $i$ may look only at positions $0, \dots, i$ — the lower triangle;
# - the **padding mask** of a batch: texts of different lengths are padded to the same length with a
#   filler token, and no query may look at the filler.
#
# ### Exercise 2.3 — the causal mask
#
# Write `make_causal_mask(T)`: a `(T, T)` boolean tensor, `True` on and below the diagonal.

# %% tags=["exercise"]
def make_causal_mask(T: int) -> torch.Tensor:
    """(T, T) boolean mask, True where query i may look at key j, i.e. j <= i."""
    ### BEGIN SOLUTION
    return torch.tril(torch.ones(T, T, dtype=torch.bool))
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch02 import check_causal_mask

check_causal_mask(make_causal_mask)

# %% [markdown]
# From here on the notebook uses `course_lib.attention.causal_mask` and `padding_mask`. A padding
# mask starts from the `(B, T)` 0/1 `attention_mask` a tokenizer returns (1 = real token); reshaped to
# `(B, 1, 1, T)` it broadcasts over heads and queries, so it hides *columns*. Combining the two masks
# is a logical AND. Here is a batch of two texts, the second one padded:

# %% tags=["nbval-check-output"]
texts = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "ran", "[PAD]", "[PAD]", "[PAD]"]]
T = len(texts[0])
attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])  # (B, T): 1 = real token
causal = causal_mask(T)  # (T, T)
padding = padding_mask(attention_mask)  # (B, 1, 1, T)
both = causal & padding  # (B, 1, T, T) by broadcasting
print("causal", tuple(causal.shape), "| padding", tuple(padding.shape), "| causal & padding", tuple(both.shape))
print("causal & padding for the second text (1 = may look):")
print(both[1, 0].int().numpy())

# %%
fig = heatmap_grid(
    [causal.float(), padding[1, 0].expand(T, T).float(), both[1, 0].float()],
    titles=["causal", "padding (second text)", "causal and padding"],
    keys=texts[1],
    ncols=3,
    annotate=True,
    fmt="{:.0f}",
    suptitle="Masks: 1 = the row (query) may look at the column (key)",
)
plt.show()

# %% [markdown]
# The effect on one head: the scores above the diagonal become $-\infty$ (grey) and their weights
# are exactly zero; every row still sums to one, spread over fewer tokens. The first token can
# only look at itself.

# %%
seed_everything(2)
q, k, v = (torch.randn(T, 4) for _ in range(3))
out, weights = explicit_attention(q, k, v, attn_mask=causal)
scores = (q @ k.T / math.sqrt(4)).masked_fill(~causal, float("-inf"))
fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
attention_heatmap(scores, texts[0], ax=axes[0], annotate=True, fmt="{:.1f}", vmin=None, cmap="RdBu_r",
                  title="masked scores")
attention_heatmap(weights, texts[0], ax=axes[1], annotate=True, title="weights = softmax(masked scores)")
plt.show()

# %% [markdown]
# **Checks.** PyTorch's kernel takes the causal rule as `is_causal=True` and a boolean `attn_mask`
# with the same convention (`True` = take part). Three facts should hold:
#
# 1. the written-out masked attention equals PyTorch's, for the causal and the padding mask;
# 2. causality: changing the *last* token changes no earlier output;
# 3. padding: the outputs of the short text's real tokens are the same as when it is run alone,
#    without padding — the filler has no influence.

# %% tags=["nbval-check-output"]
seed_everything(3)
B, n_heads, head_size = 2, 4, 8
q, k, v = (torch.randn(B, n_heads, T, head_size, device=device) for _ in range(3))

ours, _ = explicit_attention(q, k, v, attn_mask=causal.to(device))
theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
print(f"causal:  explicit == F.scaled_dot_product_attention within {ATOL}:", torch.allclose(ours, theirs, atol=ATOL))
ours_pad, _ = explicit_attention(q, k, v, attn_mask=padding.to(device))
theirs_pad = F.scaled_dot_product_attention(q, k, v, attn_mask=padding.to(device))
print(f"padding: explicit == F.scaled_dot_product_attention within {ATOL}:", torch.allclose(ours_pad, theirs_pad, atol=ATOL))

k2, v2 = k.clone(), v.clone()
k2[:, :, -1], v2[:, :, -1] = 100.0, -100.0  # change the last token beyond recognition
changed, _ = explicit_attention(q, k2, v2, attn_mask=causal.to(device))
print("causal: earlier outputs unchanged when the last token changes:", torch.equal(changed[:, :, :-1], ours[:, :, :-1]))

n_real = int(attention_mask[1].sum())
alone, _ = explicit_attention(q[1:, :, :n_real], k[1:, :, :n_real], v[1:, :, :n_real])
print(f"padding: the short text's {n_real} real tokens give the same outputs as without padding:",
      torch.allclose(ours_pad[1:, :, :n_real], alone, atol=ATOL))
assert torch.allclose(ours, theirs, atol=ATOL) and torch.allclose(ours_pad, theirs_pad, atol=ATOL)
assert torch.equal(changed[:, :, :-1], ours[:, :, :-1])
assert torch.allclose(ours_pad[1:, :, :n_real], alone, atol=ATOL)

# %% [markdown]
# The queries *at* the padded positions still produce outputs (they may look at the real tokens),
# but nothing reads them: later layers mask them too, and the loss or the pooling skips them.

# %% [markdown]
# ## 2.7 Multi-head attention: split, attend, merge
#
# One head produces one weighting of the tokens. A sentence has many relations at once — which
# word a pronoun refers to, which noun an adjective describes, what came just before — so a
# Transformer layer runs $h$ heads side by side, each with its own projections $W_Q^{(i)}, W_K^{(i)},
# W_V^{(i)}$ of size $d_{\text{model}} \times d_{\text{head}}$, where $d_{\text{head}} = d_{\text{model}}
# / h$. Their outputs are concatenated back to width $d_{\text{model}}$ and mixed by one more matrix:
#
# $$\operatorname{MultiHead}(X) = \operatorname{concat}(\text{head}_1, \dots, \text{head}_h)\, W_O, \qquad
# \text{head}_i = \operatorname{Attention}(X W_Q^{(i)}, X W_K^{(i)}, X W_V^{(i)}).$$
#
# Because the heads are narrower, $h$ heads cost about as much as one full-width head.
#
# **The bookkeeping.** Stacking the $h$ query matrices side by side gives one
# $d_{\text{model}} \times d_{\text{model}}$ matrix, so all queries of all heads come from *one*
# matrix product, with head $i$ owning features $i \cdot d_{\text{head}}$ to
# $(i+1) \cdot d_{\text{head}} - 1$. To let one batched attention call treat the heads like a batch,
# the feature axis is cut into (heads, head size) and the head axis moved in front of the tokens:
#
# $$(B, T, C) \xrightarrow{\text{view}} (B, T, h, d_{\text{head}}) \xrightarrow{\text{transpose}}
# (B, h, T, d_{\text{head}}).$$
#
# After attention the steps run backwards: transpose to $(B, T, h, d_{\text{head}})$ and flatten the
# last two axes to $(B, T, C)$.
#
# ### Exercise 2.4 — split the heads
#
# Write `split_heads(x, n_heads)`: `(B, T, C)` to `(B, n_heads, T, C // n_heads)`. (A `view`
# straight to `(B, n_heads, T, hs)` has the right shape but the wrong contents: it cuts the token
# axis, not the feature axis. The check catches that.)

# %% tags=["exercise"]
def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, n_heads, T, C // n_heads); head h holds features h*hs .. (h+1)*hs - 1."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, nh, T, hs)
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch02 import check_split_heads

check_split_heads(split_heads)

# %% [markdown]
# ### Exercise 2.5 — merge the heads
#
# Write `merge_heads(y)`: `(B, n_heads, T, hs)` to `(B, T, n_heads * hs)`, the inverse of
# `split_heads`. After a `transpose` the tensor's memory is no longer in row order, so use
# `.reshape` (or `.contiguous().view`).

# %% tags=["exercise"]
def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, nh * hs): the heads side by side along the features."""
    ### BEGIN SOLUTION
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, C)
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch02 import check_merge_heads

check_merge_heads(merge_heads)

# %% [markdown]
# On numbered features the split is easy to read: with two heads, head 0 gets features 0–3 of every
# token and head 1 features 4–7.

# %% tags=["nbval-check-output"]
x = torch.arange(16).view(1, 2, 8)  # (B=1, T=2, C=8): token 0 holds 0..7, token 1 holds 8..15
heads = x.view(1, 2, 2, 4).transpose(1, 2)  # (B, nh=2, T=2, hs=4)
print("x:", x.tolist())
print("head 0:", heads[0, 0].tolist())
print("head 1:", heads[0, 1].tolist())
print("merged back equals x:", torch.equal(heads.transpose(1, 2).reshape(1, 2, 8), x))

# %% [markdown]
# **Three implementations, one function.** `course_lib.attention` has multi-head attention in two
# forms: `MultiHeadAttentionPerHead`, a list of separate heads exactly as the formula reads, and
# `MultiHeadAttention`, one fused projection plus the split and merge above, which is what models
# use. PyTorch ships its own `nn.MultiheadAttention` with the same weight layout (its
# `in_proj_weight` stacks $W_Q, W_K, W_V$). Copy one set of weights into all three and compare, with a
# causal mask and with padding. Watch the conventions: PyTorch's module takes masks with `True`
# meaning *blocked*, the opposite of ours, so we pass the negation.

# %% tags=["nbval-check-output"]
seed_everything(4)
d_model, n_heads = 32, 4
fused = MultiHeadAttention(d_model, n_heads).to(device).eval()
per_head = per_head_from_fused(fused).eval()  # the same weights, cut into separate heads
torch_mha = nn.MultiheadAttention(d_model, n_heads, batch_first=True).to(device).eval()
with torch.no_grad():
    torch_mha.in_proj_weight.copy_(fused.qkv.weight)  # (3 C, C): [W_Q | W_K | W_V] stacked
    torch_mha.in_proj_bias.copy_(fused.qkv.bias)
    torch_mha.out_proj.weight.copy_(fused.proj.weight)
    torch_mha.out_proj.bias.copy_(fused.proj.bias)

x = torch.randn(2, T, d_model, device=device)
causal_d, padding_d = causal.to(device), padding.to(device)
with torch.no_grad():
    y_fused, w_fused = fused(x, is_causal=True, return_weights=True)  # weights (B, nh, T, T)
    y_heads = per_head(x, is_causal=True)
    y_torch, w_torch = torch_mha(x, x, x, attn_mask=~causal_d, need_weights=True, average_attn_weights=False)
    y_fused_pad = fused(x, attn_mask=padding_d)
    y_torch_pad, _ = torch_mha(x, x, x, key_padding_mask=attention_mask.to(device) == 0)
checks = {
    "MultiHeadAttention == MultiHeadAttentionPerHead (causal)": torch.allclose(y_fused, y_heads, atol=ATOL),
    "MultiHeadAttention == nn.MultiheadAttention (causal)": torch.allclose(y_fused, y_torch, atol=ATOL),
    "per-head weights == nn.MultiheadAttention's (causal)": torch.allclose(w_fused, w_torch, atol=ATOL),
    "MultiHeadAttention == nn.MultiheadAttention (padding)": torch.allclose(y_fused_pad, y_torch_pad, atol=ATOL),
}
for name, ok in checks.items():
    print(f"{name:<58} within {ATOL}: {ok}")
n_ours = sum(p.numel() for p in fused.parameters())
n_torch = sum(p.numel() for p in torch_mha.parameters())
print(f"parameters: ours {n_ours:,}, PyTorch's {n_torch:,}, formula 4 d^2 + 4 d = {4 * d_model**2 + 4 * d_model:,}")
assert all(checks.values()) and n_ours == n_torch == 4 * d_model**2 + 4 * d_model

# %% [markdown]
# ## 2.8 Grouped-query attention, briefly
#
# When a model generates text it keeps the keys and values of every past token of every layer, so
# that each new token computes only its own (the *KV cache*). That cache, not the weights, often
# fills the GPU memory when serving long texts. **Grouped-query attention** (GQA) lets a group of
# query heads share one key/value head: with $h$ query heads and $g$ key/value heads, the cache
# shrinks by $h / g$. **Multi-query attention** is the extreme $g = 1$. The attention itself is
# unchanged: each key/value head is simply repeated for the query heads of its group.
#
# `MultiHeadAttention` takes `n_kv_heads`. Below, eight query heads share two key/value heads, and the
# result equals (1) repeating the key/value heads and running ordinary attention, and (2) PyTorch's
# kernel with `enable_gqa=True`:

# %% tags=["nbval-check-output"]
seed_everything(5)
B, T_gqa, d_model, n_heads, n_kv = 2, 10, 64, 8, 2
hs = d_model // n_heads
gqa = MultiHeadAttention(d_model, n_heads, n_kv_heads=n_kv).to(device).eval()
x = torch.randn(B, T_gqa, d_model, device=device)
with torch.no_grad():
    q, k, v = gqa.qkv(x).split([n_heads * hs, n_kv * hs, n_kv * hs], dim=-1)
    q = q.view(B, T_gqa, n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T_gqa, n_kv, hs).transpose(1, 2)  # (B, nkv, T, hs)
    v = v.view(B, T_gqa, n_kv, hs).transpose(1, 2)  # (B, nkv, T, hs)
    repeated, _ = explicit_attention(q, repeat_kv(k, n_heads // n_kv), repeat_kv(v, n_heads // n_kv), is_causal=True)
    by_torch = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    by_hand = gqa.proj(repeated.transpose(1, 2).reshape(B, T_gqa, d_model))  # merge heads, project
    by_module = gqa(x, is_causal=True)
print("q", tuple(q.shape), "| k", tuple(k.shape), "| v", tuple(v.shape))
print(f"repeat k/v + attention == F.scaled_dot_product_attention(enable_gqa=True) within {ATOL}:",
      torch.allclose(repeated, by_torch, atol=ATOL))
print(f"MultiHeadAttention(n_kv_heads={n_kv}) == the same steps by hand within {ATOL}:",
      torch.allclose(by_module, by_hand, atol=ATOL))
assert torch.allclose(repeated, by_torch, atol=ATOL) and torch.allclose(by_module, by_hand, atol=ATOL)

# %% [markdown]
# What it would save on the shape of Llama 2 7B (its configuration is in `course_lib.gpt`), with a
# full context and 16-bit numbers. The cache holds a key and a value vector per token, per layer, per
# key/value head; the first row is the model as published, the others the same model with groups.
# The attention modules are built on PyTorch's `meta` device, which gives every tensor a shape but
# no memory, so their parameters can be counted for free.

# %% tags=["nbval-check-output"]
cfg = get_config("llama2-7b")
bytes_per_number = 2  # bf16
print(f"Llama 2 7B shape: {cfg.n_layer} layers, {cfg.n_head} query heads of size {cfg.head_dim}, "
      f"context {cfg.block_size}, published with {cfg.kv_heads} key/value heads")
print(f"{'key/value heads':>16} {'attention weights per layer':>28} {'KV cache per sequence':>22}")
for n_kv in (cfg.kv_heads, 8, 1):
    with torch.device("meta"):
        layer = MultiHeadAttention(cfg.d_model, cfg.n_head, n_kv_heads=n_kv, bias=False)
    n_weights = sum(p.numel() for p in layer.parameters())
    cache = 2 * cfg.n_layer * n_kv * cfg.head_dim * cfg.block_size * bytes_per_number  # keys and values
    print(f"{n_kv:>16} {n_weights / 1e6:>26.1f}M {cache / 2**30:>18.2f} GiB")

# %% [markdown] tags=["answer", "points=2"]
# ### Question 2.8a — what grouped-query attention saves
# Read the table above. By what factor do the KV cache and the attention weights of one layer shrink when
# Llama 2 7B's 32 key/value heads become 8, and then 1? Why do the two columns shrink by different factors?
#
# ### BEGIN SOLUTION
# The cache is proportional to the number of key/value heads: 2.00 GiB with 32, 0.50 GiB with 8 (a quarter)
# and 0.06 GiB with 1 (a thirty-second: 2.00 / 32 = 0.0625). The weights shrink much less, from 67.1M to
# 41.9M (about 0.62 of the original) and 34.6M (about 0.52), because only the key and value projections get
# narrower: the query and output projections still map $d = 4096$ features to 4096,
# $2d^2 \approx 33.6\text{M}$ parameters whatever the grouping, the floor the column approaches. So
# grouping is a remedy for the memory of serving long contexts, not for the size of the model: with 8
# groups four times as many sequences (or four times the context) fit in the same cache memory, for a
# saving of about 25.2M weights per layer.
#
# Rubric: 1 point for the cache shrinking in proportion to the key/value heads (2.00, 0.50, 0.06 GiB); 1
# point for the weights shrinking less (67.1M, 41.9M, 34.6M) because the query and output projections,
# about 33.6M, do not change.
# ### END SOLUTION

# %% [markdown]
# ## 2.9 Positions
#
# Nothing in attention knows where a token sits. Shuffle the tokens and the outputs are the same
# vectors, shuffled the same way (*permutation equivariance*); "dog bites man" and "man bites dog"
# would look alike:

# %% tags=["nbval-check-output"]
seed_everything(6)
mha = MultiHeadAttention(16, 2).eval()
x = torch.randn(1, 5, 16)
perm = torch.tensor([3, 0, 4, 1, 2])
with torch.no_grad():
    print("attention(shuffled x) == shuffled attention(x):", torch.allclose(mha(x[:, perm]), mha(x)[:, perm], atol=ATOL))

# %% [markdown]
# So position must be put in by hand. Three ways are in use:
#
# 1. **a learned table** (GPT-2, BERT): a trainable vector per position, added to the token vector;
# 2. **a fixed sinusoidal table** (the original Transformer): the same idea, computed by formula;
# 3. **rotary embeddings** (RoPE; Llama and most recent models): nothing is added; instead queries
#    and keys are *rotated* by an angle that grows with the position, inside every attention layer.
#
# **Sinusoidal positions.** Feature pair $(2i, 2i+1)$ of position $p$ holds a sine and a cosine of
# the angle $p\,\omega_i$, with frequencies falling geometrically across the features:
#
# $$PE_{p,\,2i} = \sin(p\,\omega_i), \qquad PE_{p,\,2i+1} = \cos(p\,\omega_i), \qquad
# \omega_i = 10000^{-2i/d}.$$
#
# The first features turn fast, so they tell neighbours apart; the last turn slowly, so they tell
# the start of a long text from its end — like the hands of a clock.

# %%
table = sinusoidal_positions(64, 128)  # (T, d)
fig = positional_encoding_figure(table, dims=(2, 16, 42))  # three sine features, fast to slow
plt.show()

# %% [markdown]
# Checked against the formula evaluated one entry at a time with Python's `math`:

# %% tags=["nbval-check-output"]
T_pe, d_pe = 64, 128


def pe_entry(p: int, j: int, d: int) -> float:
    """Entry (p, j) of the table: pair i = j // 2 turns at frequency 10000^(-2i/d)."""
    angle = p * 10000 ** (-2 * (j // 2) / d)
    return math.sin(angle) if j % 2 == 0 else math.cos(angle)


by_formula = torch.tensor([[pe_entry(p, j, d_pe) for j in range(d_pe)] for p in range(T_pe)])
print("sinusoidal_positions == the formula, entry by entry, within 1e-5:", torch.allclose(table, by_formula, atol=1e-5))
assert torch.allclose(table, by_formula, atol=1e-5)

# %% [markdown]
# Why sines and cosines? Because moving by $k$ positions is the same *rotation* of every
# (sin, cos) pair whatever the starting position, so the dot product of two position vectors,
# $PE_p \cdot PE_{p'} = \sum_i \cos\big((p - p')\,\omega_i\big)$, depends only on their distance
# $p - p'$: the matrix of dot products is constant along each diagonal.

# %% tags=["nbval-check-output"]
similarity = table @ table.T  # (T, T): PE_p . PE_p'
worst = max((torch.diagonal(similarity, offset).max() - torch.diagonal(similarity, offset).min()).item()
            for offset in range(-T_pe + 1, T_pe))
print("PE_p . PE_p' is the same along every diagonal (depends only on p - p'), within 1e-3:", worst < 1e-3)
assert worst < 1e-3

# %%
fig, ax = plt.subplots(figsize=(4.8, 4), layout="constrained")
attention_heatmap(similarity, ax=ax, vmin=None, cmap="viridis", axis_labels=False,
                  title="PE_p . PE_p' for 64 positions")
ax.set_xlabel("position p'")
ax.set_ylabel("position p")
plt.show()

# %% [markdown]
# **Rotary position embeddings (RoPE).** Instead of adding a vector, RoPE treats the features of a
# query or key as pairs $(x_j, x_{j + d/2})$ — points in a plane — and rotates pair $j$ of the token
# at position $m$ by the angle $m\,\theta_j$, with $\theta_j = 10000^{-2j/d}$. In complex numbers the
# pair is $z_j = x_j + i\,x_{j+d/2}$ and the rotation is a multiplication, $z_j \mapsto z_j\,e^{i m
# \theta_j}$. The dot product of a rotated query at $m$ and a rotated key at $n$ is the real part of
# $\sum_j q_j \bar k_j\, e^{i (m - n)\theta_j}$: the absolute positions cancel and only the **offset**
# $m - n$ remains. Every layer sees relative positions directly, and nothing is added to the token
# vectors.
#
# `course_lib.layers.RotaryEmbedding` computes the rotation with real cosines and sines. Three checks:
# it equals the complex-number form written from scratch, it equals the implementation in
# `transformers`' Llama, and scores depend only on the offset.

# %% tags=["nbval-check-output"]
from transformers import LlamaConfig  # a reference implementation; no weights are loaded
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

seed_everything(7)
head_dim, T_rope = 16, 12
rope = RotaryEmbedding(head_dim, max_seq_len=128)
q, k = torch.randn(1, 2, T_rope, head_dim), torch.randn(1, 2, T_rope, head_dim)  # (B, nh, T, hs)
q_rot, k_rot = rope(q, k)


def rotate_complex(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoPE as complex multiplication: pair (x_j, x_{j+d/2}) is z_j, rotated by e^{i m theta_j}."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())  # (..., T, d/2)
    m = torch.arange(x.shape[-2], dtype=torch.float64)[:, None]  # (T, 1) positions
    freqs = theta ** (-2 * torch.arange(half, dtype=torch.float64) / x.shape[-1])  # (d/2,)
    z = z * torch.polar(torch.ones_like(m * freqs), m * freqs)  # times e^{i m theta_j}
    return torch.cat([z.real, z.imag], dim=-1).float()  # back to (..., T, d)


hf_config = LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, max_position_embeddings=64)
cos, sin = LlamaRotaryEmbedding(hf_config)(q, torch.arange(T_rope)[None])
q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
print("RotaryEmbedding == the complex-number form within 1e-5:", torch.allclose(q_rot, rotate_complex(q), atol=1e-5))
print("RotaryEmbedding == transformers' Llama rotary embedding within 1e-5:",
      torch.allclose(q_rot, q_hf, atol=1e-5) and torch.allclose(k_rot, k_hf, atol=1e-5))

q0, k0 = torch.randn(1, 1, 1, head_dim), torch.randn(1, 1, 1, head_dim)


def rope_score(m: int, n: int) -> float:
    """Score of the query vector q0 placed at position m against the key vector k0 at position n."""
    q_m, _ = rope(q0, q0, offset=m)
    _, k_n = rope(k0, k0, offset=n)
    return (q_m * k_n).sum().item()


same = all(abs(rope_score(m, n) - rope_score(m + 20, n + 20)) < 1e-4 for m, n in [(5, 2), (3, 9), (7, 7)])
print("score at positions (m, n) == score at (m + 20, n + 20) within 1e-4:", same)
assert torch.allclose(q_rot, rotate_complex(q), atol=1e-5) and torch.allclose(q_rot, q_hf, atol=1e-5) and same

# %% [markdown]
# Left: two feature pairs of one query placed at positions 0 to 7 — each pair turns by a fixed angle
# per step, fast for the first pair, slowly for later ones. Right: the score of one query and one key
# as the offset between them varies, computed with the key at three different positions; the three
# curves lie exactly on top of each other.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
base = torch.zeros(1, 1, 1, head_dim)
base[..., 0] = 1.0  # pair 0 = features (0, d/2) starts at (1, 0)
base[..., 2] = 0.6  # pair 2 = features (2, 2 + d/2) starts at (0.6, 0)
circle = torch.linspace(0, 2 * math.pi, 200)
for pair, radius, marker in [(0, 1.0, "o"), (2, 0.6, "s")]:
    axes[0].plot(radius * circle.cos(), radius * circle.sin(), ":", color="grey", lw=0.8)
    points = [rope(base, base, offset=m)[0][0, 0, 0] for m in range(8)]  # the query rotated to position m
    xs = [float(p[pair]) for p in points]
    ys = [float(p[pair + head_dim // 2]) for p in points]
    axes[0].plot(xs, ys, marker, label=f"pair {pair}")
    for m in range(8) if pair == 0 else (0, 7):
        axes[0].annotate(f"m={m}", (xs[m], ys[m]), textcoords="offset points", xytext=(5, 3), fontsize=8)
axes[0].set_aspect("equal")
axes[0].set_xlim(-1.35, 1.35)
axes[0].set_ylim(-1.2, 1.2)
axes[0].set_title("a feature pair at positions m = 0..7")
axes[0].legend(fontsize=8, loc="lower right")
offsets = list(range(-30, 31))
for key_position, style in [(30, "-"), (50, "--"), (63, ":")]:
    scores_at = [rope_score(key_position + o, key_position) for o in offsets]
    axes[1].plot(offsets, scores_at, style, lw=2.5 if style == "-" else 1.5, label=f"key at position {key_position}")
axes[1].set_xlabel("offset m - n (query position minus key position)")
axes[1].set_ylabel("score q_m . k_n")
axes[1].set_title("RoPE scores depend only on the offset")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2.10 The Transformer block
#
# A GPT is a stack of identical **blocks**. Each block has two sub-layers, attention (tokens
# exchange information) and a feed-forward network or MLP (each token is transformed on its own,
# $d \to 4d \to d$ with a GELU between). Each sub-layer reads a *normalised* copy of the running
# vector and *adds* its result back — a residual connection:
#
# $$x \leftarrow x + \operatorname{Attention}(\operatorname{LN}_1(x)), \qquad
# x \leftarrow x + \operatorname{MLP}(\operatorname{LN}_2(x)).$$
#
# This is the **pre-LN** arrangement of GPT-2 and its successors. The original Transformer and BERT
# normalise after the addition instead ("post-LN": $x \leftarrow \operatorname{LN}(x +
# \text{sublayer}(x))$); notebook 2C's MiniLM is one of those. The residual path lets gradients flow
# straight through a deep stack, and the normalisation keeps each sub-layer's input on a steady
# scale. `course_lib.gpt.Block` is the pre-LN block; here it is taken apart, shapes printed at every
# step, on the course's "tiny" configuration:

# %% tags=["nbval-check-output"]
cfg = get_config("tiny")
seed_everything(8)
block = Block(cfg).to(device).eval()
x = torch.randn(2, 10, cfg.d_model, device=device)
with torch.no_grad():
    h1 = block.ln_1(x)  # (B, T, d): normalised copy
    a = block.attn(h1, is_causal=True)  # (B, T, d): attention, causal as in GPT
    x1 = x + a  # residual
    h2 = block.ln_2(x1)
    hidden = block.mlp.c_fc(h2)  # (B, T, 4d): the MLP's wide layer
    m = block.mlp(h2)  # (B, T, d)
    out = x1 + m  # residual
    steps = [("x", x), ("LN_1(x)", h1), ("attention", a), ("x + attention", x1), ("LN_2(.)", h2),
             ("MLP hidden (4d)", hidden), ("MLP out", m), ("block output", out)]
for name, t in steps:
    print(f"{name:<18} {tuple(t.shape)}")
with torch.no_grad():
    print(f"Block(x) == the steps above within {ATOL}:", torch.allclose(block(x), out, atol=ATOL))
    x_changed = x.clone()
    x_changed[:, -1] += 10.0
    print("earlier outputs unchanged when the last token changes:", torch.allclose(block(x_changed)[:, :-1], out[:, :-1], atol=ATOL))
assert torch.allclose(block(x), out, atol=ATOL)

# %% [markdown]
# Its parameters: two LayerNorms ($2d$ each: a scale and a shift), attention ($4d^2 + 4d$) and the MLP
# ($d \cdot 4d + 4d$ and $4d \cdot d + d$), in total $12d^2 + 13d$ — the same per-block count as
# chapter 1's formula.

# %% tags=["nbval-check-output"]
d = cfg.d_model
for name, module in block.named_children():
    print(f"{name:<6} {sum(p.numel() for p in module.parameters()):>7,}")
n_block = sum(p.numel() for p in block.parameters())
print(f"block  {n_block:>7,}   formula 12 d^2 + 13 d = {12 * d**2 + 13 * d:,}")
assert n_block == 12 * d**2 + 13 * d

# %% [markdown]
# **The reference.** A GPT is embeddings, a stack of these blocks, a final LayerNorm and an output
# layer. `course_lib.convert.gpt_to_hf_gpt2` copies the weights of the course's tiny GPT into
# `transformers`' `GPT2LMHeadModel` (built from a configuration; nothing is downloaded). If the blocks
# are right, the output of the first block and the final logits must agree:

# %% tags=["nbval-check-output"]
seed_everything(9)
gpt = GPT(cfg).to(device).eval()
hf_gpt2 = gpt_to_hf_gpt2(gpt).eval()
idx = torch.randint(0, cfg.vocab_size, (2, 16), device=device)
with torch.no_grad():
    reference = hf_gpt2(idx, output_hidden_states=True)
    embedded = gpt.transformer.wte(idx) + gpt.transformer.wpe(torch.arange(16, device=device))  # (B, T, d)
    after_block_0 = gpt.transformer.h[0](embedded)
    logits, _ = gpt(idx)
print("transformers GPT-2 built with", type(hf_gpt2).__name__, "| logits", tuple(logits.shape))
print(f"first block's output == GPT-2's hidden state after block 0 within {ATOL}:",
      torch.allclose(after_block_0, reference.hidden_states[1], atol=ATOL))
print(f"logits == GPT-2's logits within {ATOL}:", torch.allclose(logits, reference.logits, atol=ATOL))
assert torch.allclose(after_block_0, reference.hidden_states[1], atol=ATOL)
assert torch.allclose(logits, reference.logits, atol=ATOL)

# %% [markdown]
# ## Summary
#
# - A mask sets forbidden scores to $-\infty$ before the softmax. The causal mask (lower triangle)
#   keeps a decoder from seeing the future; the padding mask hides filler tokens. Both were checked:
#   the future and the filler have no influence at all.
# - Multi-head attention runs $h$ narrow heads in one matrix product: split `(B, T, C)` into
#   `(B, h, T, C/h)`, attend, merge back, project with $W_O$. It equals PyTorch's
#   `nn.MultiheadAttention` with the same weights (whose masks mean the opposite: `True` = blocked).
# - Grouped-query attention shares key/value heads among query heads, shrinking the KV cache by
#   the ratio of the head counts; the computation is ordinary attention with repeated keys and values.
# - Attention ignores order. Positions come from a learned or sinusoidal table added to the tokens,
#   or from rotary embeddings, which rotate queries and keys so that scores depend only on the offset.
# - A pre-LN block is $x + \operatorname{Attn}(\operatorname{LN}(x))$ then $x +
#   \operatorname{MLP}(\operatorname{LN}(x))$, with $12d^2 + 13d$ parameters; a GPT built from the
#   course's blocks gives `transformers`' GPT-2 logits.
#
# Next, notebook 2C opens a real pretrained model and looks at what its heads attend to.
