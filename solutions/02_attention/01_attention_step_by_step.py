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
# # 2A · Attention, step by step
#
# Inside a Transformer, the vector of every token is updated by looking at the other tokens of the
# same text. *Attention* is the rule that decides how much each of them contributes. The rule fits
# on one line,
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}}\right) V,$$
#
# and this notebook takes that line apart with numbers small enough to follow by hand:
#
# - **2.1** one query against three keys, every number printed;
# - **2.2** the normaliser $Z$, and why the fraction it makes *is* the softmax; a softmax that does
#   not overflow (exercise);
# - **2.3** all queries at once as matrix products, where $Q$, $K$ and $V$ come from, and the formula
#   as code (exercise), checked against PyTorch's own kernel;
# - **2.4** why the scores are divided by $\sqrt{d_k}$: an experiment with random vectors, and the
#   entropy of a row of weights as a measure of how spread it is (exercise);
# - **2.5** the same mathematics through a fused kernel, and what that buys.
#
# The next notebook (2B) adds masks, several heads and positions; the last (2C) looks inside a real
# pretrained model.

# %% tags=["imports"]
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import choose_device, get_device, model_costs, pick, seed_everything
from course_lib.attention import attention, explicit_attention
from course_lib.plots import attention_heatmap, use_course_style

use_course_style()
seed_everything(0)
device = get_device()
print("device:", choose_device())

# %% [markdown]
# ## 2.1 One query, three keys
#
# Attention is a **weighted average**. Each token offers two vectors: a **key** $k_j$, which says
# what the token is about, and a **value** $v_j$, the information it hands over. The token being
# updated brings a **query** $q$, which says what it is looking for. Then:
#
# 1. score every key against the query with a dot product, scaled by the square root of the key
#    length $d_k$: $s_j = q \cdot k_j / \sqrt{d_k}$ (section 2.4 explains the scaling);
# 2. make the scores positive with the exponential, $e^{s_j}$;
# 3. divide by their sum $Z = \sum_j e^{s_j}$, so the weights $\alpha_j = e^{s_j} / Z$ add up to one;
# 4. return the weighted average of the values, $\sum_j \alpha_j v_j$.
#
# A key that points the same way as the query gets a large score and so a large share of the
# average. Here are three tokens, A, B and C, with two-dimensional keys and values:

# %% tags=["nbval-check-output"]
q = torch.tensor([2.0, 1.0])  # what the token being updated is looking for
keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # one row per token: A, B, C
values = torch.tensor([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0]])  # what each token hands over
d_k = keys.shape[1]

scores = []
for name, k in zip("ABC", keys):
    dot = float(q @ k)
    s = dot / math.sqrt(d_k)
    scores.append(s)
    print(f"token {name}: q.k = {dot:.0f}, score s = {dot:.0f}/sqrt({d_k}) = {s:.4f}, exp(s) = {math.exp(s):.4f}")

Z = sum(math.exp(s) for s in scores)
weights = [math.exp(s) / Z for s in scores]
output = sum(w * v for w, v in zip(weights, values))
print(f"Z = {Z:.4f}")
print("weights:", [round(w, 4) for w in weights], "sum:", round(sum(weights), 6))
print("output = sum_j weight_j * value_j =", [round(x, 4) for x in output.tolist()])

# %% [markdown]
# Token C's key $(1, 1)$ agrees best with the query $(2, 1)$, so C gets the largest weight and the
# output leans towards C's value. No token is ignored completely: every $e^{s_j}$ is positive.
# Attention is a *soft* choice among the tokens, and that softness is what makes it differentiable,
# so the queries, keys and values can be learned by gradient descent.

# %% [markdown]
# ## 2.2 The normaliser $Z$ is the softmax
#
# Some texts write attention with the normaliser in plain view,
#
# $$\operatorname{Attention}(Q, K, V) = \frac{\exp\!\left(Q K^\top / \sqrt{d_k}\right)}{Z}\, V,
# \qquad Z_i = \sum_j \exp\!\left(q_i \cdot k_j / \sqrt{d_k}\right),$$
#
# where the exponential is taken entry by entry and row $i$ is divided by its own $Z_i$. That
# fraction is exactly the definition of the **softmax** of a row of scores,
#
# $$\operatorname{softmax}(s)_j = \frac{e^{s_j}}{\sum_{j'} e^{s_{j'}}},$$
#
# so the two ways of writing attention are the same formula. The weights of 2.1 are PyTorch's
# softmax of the scores:

# %% tags=["nbval-check-output"]
by_hand = torch.tensor(weights)
by_torch = torch.softmax(torch.tensor(scores), dim=-1)
print("by hand:   ", by_hand.numpy().round(4))
print("softmax(s):", by_torch.numpy().round(4))
print("equal within 1e-6:", torch.allclose(by_hand, by_torch, atol=1e-6))
assert torch.allclose(by_hand, by_torch, atol=1e-6)

# %% [markdown]
# Two properties of the softmax matter below.
#
# - **Adding the same number to every score changes nothing**: $e^{s_j + c} = e^c e^{s_j}$, and the
#   factor $e^c$ appears in $Z$ too, so it cancels.
# - **A score of $-\infty$ gets weight exactly zero**, because $e^{-\infty} = 0$. Masks (notebook 2B)
#   use this to hide tokens.
#
# The first property is the key to computing a softmax safely. A 32-bit float has a largest value
# (printed below), so $e^{s}$ overflows to infinity once $s$ passes its logarithm, and
# $\infty / \infty$ is *not a number* (`nan`).

# %% tags=["nbval-check-output"]
largest = torch.finfo(torch.float32).max
print(f"largest float32: {largest:.3e}; exp(s) overflows for s above log(largest) = {math.log(largest):.2f}")
big = torch.tensor([1000.0, 1001.0, 1002.0])
naive = big.exp() / big.exp().sum()
print("naive exp(s) / sum exp(s):", naive)
shifted = big - big.max()  # the same scores moved down by a constant: [-2, -1, 0]
print("after subtracting the max:", shifted.exp() / shifted.exp().sum())
print("with -inf in the row:     ", torch.softmax(torch.tensor([0.0, float("-inf"), 1.0]), dim=-1))

# %% [markdown]
# ### Exercise 2.1 — a softmax that never overflows
#
# Write `softmax(x)`, the softmax along the **last** dimension of a tensor of any shape, without
# calling `torch.softmax`. Subtract each row's maximum first: by the first property the result is
# unchanged, and now the largest exponent is $e^0 = 1$. The check tries small and huge scores,
# batches, and rows with $-\infty$ entries.

# %% tags=["exercise"]
def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax along the last dimension, stable for large scores and -inf entries."""
    ### BEGIN SOLUTION
    shifted = x - x.amax(dim=-1, keepdim=True)  # the largest entry of each row becomes 0
    e = shifted.exp()
    return e / e.sum(dim=-1, keepdim=True)
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch02 import check_softmax

check_softmax(softmax)

# %% [markdown]
# ## 2.3 All queries at once: matrices
#
# A text of $T$ tokens has $T$ queries, and each one does the computation of 2.1. Stacking the
# queries as the rows of a matrix $Q$ ($T_q \times d_k$), the keys as the rows of $K$
# ($T_k \times d_k$) and the values as the rows of $V$ ($T_k \times d_v$) turns all of them into three
# steps:
#
# $$S = \frac{Q K^\top}{\sqrt{d_k}} \;(T_q \times T_k), \qquad
# A = \operatorname{softmax}_{\text{rows}}(S) \;(T_q \times T_k), \qquad O = A V \;(T_q \times d_v).$$
#
# Entry $S_{ij}$ is the score of query $i$ against key $j$; row $i$ of $A$ holds the weights of query
# $i$; row $i$ of $O$ is its weighted average of the values.
#
# **Where $Q$, $K$ and $V$ come from.** In *self*-attention, the queries, keys and values are all
# computed from the same token vectors $X$ ($T \times d_{\text{model}}$), each by its own learned
# matrix: $Q = X W_Q$, $K = X W_K$, $V = X W_V$. Training tunes these three matrices so that the
# scores pick out useful tokens. Here are the shapes for five tokens:

# %% tags=["nbval-check-output"]
seed_everything(0)
T, d_model, d_k = 5, 8, 4
X = torch.randn(T, d_model)  # five token vectors
W_Q, W_K, W_V = (nn.Linear(d_model, d_k, bias=False) for _ in range(3))
with torch.no_grad():
    Q, K, V = W_Q(X), W_K(X), W_V(X)  # each (T, d_k)
    S = Q @ K.T / math.sqrt(d_k)  # (T, T): scores, query i against key j
    A = torch.softmax(S, dim=-1)  # (T, T): each row sums to 1
    O = A @ V  # (T, d_k): one weighted average per query
for name, t in [("X", X), ("Q", Q), ("K", K), ("V", V), ("S = QK^T/sqrt(d_k)", S), ("A = softmax(S)", A), ("O = AV", O)]:
    print(f"{name:<20} {tuple(t.shape)}")
print("rows of A sum to 1:", torch.allclose(A.sum(dim=-1), torch.ones(T)))

# %% [markdown]
# The attention matrix $A$ drawn as a heatmap: row $i$ shows where query $i$ looks. (The projection
# matrices are random here, so the pattern means nothing yet; notebook 2C shows trained ones.)

# %%
image = attention_heatmap(A, [f"t{j}" for j in range(T)], annotate=True, title="A = softmax(QK^T / sqrt(d_k))")
plt.show()

# %% [markdown]
# ### Exercise 2.2 — scaled dot-product attention
#
# Write `scaled_dot_product_attention(q, k, v, mask=None)` for tensors whose **last two** dimensions
# are (tokens, features), so the same code serves one sequence `(T, d)` and a batch of heads
# `(B, heads, T, d)`. Use `k.transpose(-2, -1)` for $K^\top$ and your own arithmetic or
# `torch.softmax` for the rows.
#
# `mask`, when given, is boolean and broadcasts to the scores: `True` where query $i$ may look at key
# $j$. Set the other scores to $-\infty$ **before** the softmax (`scores.masked_fill(~mask,
# float("-inf"))`), so they get weight zero and the remaining weights still add up to one.
# Notebook 2B builds real masks; the check already tries a causal and a padding mask.

# %% tags=["exercise"]
def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) v over the last two dimensions; mask True = may attend."""
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k)
    return weights @ v  # (..., T_q, d_v)
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch02 import check_scaled_dot_product_attention

check_scaled_dot_product_attention(scaled_dot_product_attention)

# %% [markdown]
# **The same as PyTorch's.** `course_lib.attention` keeps two versions side by side:
# `explicit_attention`, the three steps above written out, and `attention`, which calls PyTorch's
# fused kernel `F.scaled_dot_product_attention`. Both must agree with PyTorch's kernel, in the
# outputs and in the gradients that training uses. The tolerance covers float32 rounding: the
# kernels add the same numbers in different orders.

# %% tags=["nbval-check-output"]
ATOL = 1e-5  # float32, values of order 1: a few rounding steps of difference are expected
seed_everything(1)
B, n_heads, T, head_size = 2, 4, 9, 16
q, k, v = (torch.randn(B, n_heads, T, head_size, device=device, requires_grad=True) for _ in range(3))

reference = F.scaled_dot_product_attention(q, k, v)
written_out, weights = explicit_attention(q, k, v)
fused = attention(q, k, v)
print("shapes: q", tuple(q.shape), "-> output", tuple(reference.shape), "| weights", tuple(weights.shape))
print(f"explicit_attention == F.scaled_dot_product_attention within {ATOL}:", torch.allclose(written_out, reference, atol=ATOL))
print(f"attention (fused)  == F.scaled_dot_product_attention within {ATOL}:", torch.allclose(fused, reference, atol=ATOL))
upstream = torch.randn_like(reference)
grads_ref = torch.autograd.grad(reference, (q, k, v), upstream)
grads_ours = torch.autograd.grad(written_out, (q, k, v), upstream)
same_grads = all(torch.allclose(a, b, atol=ATOL) for a, b in zip(grads_ours, grads_ref))
print(f"gradients for q, k, v equal within {ATOL}:", same_grads)
assert torch.allclose(written_out, reference, atol=ATOL) and torch.allclose(fused, reference, atol=ATOL) and same_grads

# %% [markdown]
# ## 2.4 Why divide by $\sqrt{d_k}$?
#
# Suppose the entries of a query and a key are independent, with mean 0 and variance 1 (roughly what
# a freshly initialised, normalised network produces). Their dot product $q \cdot k = \sum_{i=1}^{d_k}
# q_i k_i$ is a sum of $d_k$ independent terms, each with mean 0 and variance
# $\mathbb{E}[q_i^2]\,\mathbb{E}[k_i^2] = 1$. Variances of independent terms add, so
#
# $$\operatorname{Var}(q \cdot k) = d_k, \qquad \operatorname{Var}\!\left(\frac{q \cdot k}{\sqrt{d_k}}\right) = 1 .$$
#
# Without the scaling, wider heads make larger scores. Let us measure it on random vectors:

# %%
g = torch.Generator().manual_seed(0)
dims = [4, 16, 64, 256, 1024]
n_pairs = 4000
print(f"{'d_k':>6} {'Var(q.k)':>10} {'Var(q.k)/d_k':>13} {'Var(q.k/sqrt(d_k))':>19}")
var_raw, var_scaled = [], []
for d in dims:
    qs, ks = torch.randn(n_pairs, d, generator=g), torch.randn(n_pairs, d, generator=g)
    dots = (qs * ks).sum(dim=-1)  # n_pairs dot products
    var_raw.append(dots.var().item())
    var_scaled.append((dots / math.sqrt(d)).var().item())
    print(f"{d:>6} {var_raw[-1]:>10.1f} {var_raw[-1] / d:>13.2f} {var_scaled[-1]:>19.2f}")
assert all(0.9 < v / d < 1.1 for v, d in zip(var_raw, dims)), "Var(q.k) should be close to d_k"

# %% [markdown]
# The variance grows in step with $d_k$, as predicted, and the scaled scores keep a variance near
# one. Why do large scores hurt? Because the softmax **saturates**: when the scores of a row are far
# apart, the largest one takes almost all the weight, and the softmax barely changes when the scores
# move a little. That means its gradient is almost zero, and the queries and keys stop learning.
#
# The gradient of a softmax $p = \operatorname{softmax}(s)$ is its Jacobian
# $\partial p_i / \partial s_j = p_i(\delta_{ij} - p_j)$, i.e. $J = \operatorname{diag}(p) - p p^\top$.
# If $p$ is nearly one-hot, every entry of $J$ is nearly zero. First a check of the formula against
# PyTorch's automatic differentiation:

# %% tags=["nbval-check-output"]
s = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
p = torch.softmax(s, dim=-1)
J_formula = torch.diag(p) - torch.outer(p, p)
J_autograd = torch.autograd.functional.jacobian(lambda x: torch.softmax(x, dim=-1), s)
print("softmax Jacobian: diag(p) - p p^T equals autograd's within 1e-12:", torch.allclose(J_formula, J_autograd, atol=1e-12))
assert torch.allclose(J_formula, J_autograd, atol=1e-12)

# %% [markdown]
# Now the experiment. For each $d_k$, take rows of 16 random keys and one random query, and compute
# the softmax of the raw and of the scaled scores. For each row measure how saturated it is (its
# largest weight: $1/16$ for an even spread, 1 for one-hot) and how much gradient reaches the scores
# (the length of $J^\top g$ for a random upstream gradient $g$, computed by autograd). A row whose
# gradient is below $10^{-3}$ is, for training, a dead row: its query and keys learn nothing from it.

# %%
n_rows, n_keys = 2000, 16
DEAD = 1e-3  # a row passing less gradient than this teaches its query and keys (almost) nothing
stats = {kind: {"max_weight": [], "grad": [], "dead": []} for kind in ("raw", "scaled")}
for d in dims:
    qs = torch.randn(n_rows, 1, d, generator=g)
    ks = torch.randn(n_rows, n_keys, d, generator=g)
    raw = (qs @ ks.transpose(-2, -1)).squeeze(1)  # (n_rows, n_keys)
    upstream = torch.randn(n_rows, n_keys, generator=g)
    for kind, sc in [("raw", raw), ("scaled", raw / math.sqrt(d))]:
        sc = sc.clone().requires_grad_(True)
        p = torch.softmax(sc, dim=-1)
        (grad,) = torch.autograd.grad((p * upstream).sum(), sc)  # J^T g for every row
        grad_size = grad.norm(dim=-1)  # (n_rows,)
        stats[kind]["max_weight"].append(p.max(dim=-1).values.median().item())
        stats[kind]["grad"].append(grad_size.median().item())
        stats[kind]["dead"].append((grad_size < DEAD).float().mean().item())

print(f"{'d_k':>6} | {'largest weight':^17} | {'gradient size':^19} | {'dead rows':^15}")
print(f"{'':>6} | {'raw':>7} {'scaled':>9} | {'raw':>8} {'scaled':>10} | {'raw':>6} {'scaled':>8}")
raw_stats, scaled_stats = stats["raw"], stats["scaled"]
for i, d in enumerate(dims):
    weights_i = f"{raw_stats['max_weight'][i]:>7.3f} {scaled_stats['max_weight'][i]:>9.3f}"
    grads_i = f"{raw_stats['grad'][i]:>8.1e} {scaled_stats['grad'][i]:>10.1e}"
    dead_i = f"{raw_stats['dead'][i]:>6.0%} {scaled_stats['dead'][i]:>8.0%}"
    print(f"{d:>6} | {weights_i} | {grads_i} | {dead_i}")
print("(medians over the rows; dead = gradient below 1e-3)")
assert raw_stats["dead"][-1] > 0.5 and max(scaled_stats["dead"]) < 0.01

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
axes[0].loglog(dims, var_raw, "o-", label="q.k")
axes[0].loglog(dims, var_scaled, "s-", label="q.k / sqrt(d_k)")
axes[0].loglog(dims, dims, ":", color="grey", label="d_k")
axes[0].set_title("variance of the score")
axes[1].semilogx(dims, raw_stats["max_weight"], "o-", label="raw")
axes[1].semilogx(dims, scaled_stats["max_weight"], "s-", label="scaled")
axes[1].axhline(1 / n_keys, color="grey", ls=":", label=f"even spread (1/{n_keys})")
axes[1].set_ylim(0, 1.05)
axes[1].set_title("largest softmax weight (median row)")
axes[2].semilogx(dims, [100 * x for x in raw_stats["dead"]], "o-", label="raw")
axes[2].semilogx(dims, [100 * x for x in scaled_stats["dead"]], "s-", label="scaled")
axes[2].set_ylabel("% of rows")
axes[2].set_title("rows with gradient below 1e-3")
for ax in axes:
    ax.set_xlabel("d_k (key length)")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown] tags=["answer", "points=2"]
# ### Question 2.4a — why a saturated softmax stops learning
# In the table above, at $d_k = 1024$ the raw scores give a median largest weight of 1.000, a median
# gradient of 1.0e-05 and 66% dead rows, while the scaled scores give 0.225, 2.7e-01 and 0%. Explain (1)
# why a row whose largest weight is close to 1 passes almost no gradient back to its scores, using the
# softmax Jacobian $\mathrm{diag}(p) - pp^\top$ from 2.4, and (2) why the scaled columns hardly change with
# $d_k$.
#
# ### BEGIN SOLUTION
# (1) When $p$ is almost one-hot, every entry of $\mathrm{diag}(p) - pp^\top$ is nearly zero: the diagonal
# entries $p_i(1 - p_i)$ vanish both for the winner ($p_i \approx 1$) and for the others ($p_i \approx 0$),
# and the off-diagonal entries $-p_i p_j$ vanish because one of the two factors is about 0. So $J^\top g$
# is tiny whatever the upstream gradient $g$: a small change of any score no longer changes the weights,
# and the query and keys of that row learn nothing (a median of 1.0e-05 at $d_k = 1024$, 66% of the rows
# below 1e-3). (2) Dividing by $\sqrt{d_k}$ holds the variance of the scores at about 1 for every width
# (1.01 or 1.00 in the variance table), and a sum of many products comes ever closer to a normal
# distribution, so the 16 scores of a row are spread alike at every width. The softmax of alike scores is
# alike: a median largest weight of 0.204 at $d_k = 4$ and 0.224 to 0.225 from 16 on, between an even 1/16
# and one-hot, and a gradient of 2.6e-01 to 2.8e-01 throughout.
#
# Rubric: 1 point for (1): the Jacobian's entries $p_i(1 - p_i)$ and $-p_i p_j$ all near zero for a one-hot
# row, tied to the 1.0e-05 gradient or the 66% dead rows; 1 point for (2): the scaling holds the score
# variance at about 1 (the 1.01 column), so the softmax has the same spread (about 0.225) at every $d_k$.
# ### END SOLUTION

# %% [markdown]
# Without the scaling, wide heads make the softmax close to a hard choice of one token, and for a
# growing share of rows almost no gradient reaches the queries and keys. With the scaling, the spread of the scores, the softness of the weights and the size of the gradient all
# stay the same whatever the width. The factor $1/\sqrt{d_k}$ is not a tuned hyperparameter: it is
# the one number that undoes the growth of the variance.

# %% [markdown]
# ### Exercise 2.2b — the entropy of a row of weights
#
# The largest weight describes a row by one number. The **entropy** of the row,
# $H = -\sum_j \alpha_j \ln \alpha_j$, uses all of them: it is $\ln n$ when the weight is spread
# evenly over $n$ keys and $0$ when one key takes it all; $e^H$ reads as "the number of keys the
# query really looks at". Write `attention_entropy(A)`, the entropy in nats of every row of `A`
# along its last dimension. Masked keys have a weight of exactly zero, and they contribute nothing
# (the limit of $\alpha \ln \alpha$ as $\alpha \to 0$ is $0$), so the check includes one-hot rows
# and a causal map.

# %% tags=["exercise"]
def attention_entropy(A: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of A (last dimension): shape A.shape[:-1]."""
    ### BEGIN SOLUTION
    terms = torch.where(A > 0, A * A.clamp_min(torch.finfo(A.dtype).tiny).log(), torch.zeros_like(A))
    return -terms.sum(dim=-1)
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch02 import check_attention_entropy

check_attention_entropy(attention_entropy)

# %% [markdown]
# The experiment of 2.4 again, with new random rows of 16 keys, measured by entropy: how many keys
# does a query look at, $e^H$, for raw and scaled scores? (The cell runs your function, so it stops
# with `NotImplementedError` until you have solved the exercise.)

# %% tags=["raises-exception"]
g_entropy = torch.Generator().manual_seed(1)
print(f"{'d_k':>6} {'keys looked at, raw':>20} {'scaled':>8}   (median e^H over {n_rows} rows of {n_keys} keys)")
keys_seen = {"raw": [], "scaled": []}
for d in dims:
    qs = torch.randn(n_rows, 1, d, generator=g_entropy)
    ks = torch.randn(n_rows, n_keys, d, generator=g_entropy)
    raw = (qs @ ks.transpose(-2, -1)).squeeze(1)  # (n_rows, n_keys)
    for kind, sc in [("raw", raw), ("scaled", raw / math.sqrt(d))]:
        keys_seen[kind].append(attention_entropy(torch.softmax(sc, dim=-1)).exp().median().item())
    print(f"{d:>6} {keys_seen['raw'][-1]:>20.2f} {keys_seen['scaled'][-1]:>8.2f}")
assert keys_seen["raw"][-1] < 1.5 < min(keys_seen["scaled"])

# %% [markdown]
# With scaled scores a query spreads its weight over several of the 16 keys, the same number
# whatever $d_k$; with raw scores the number falls towards one key as the heads get wider (the
# table above).

# %% [markdown]
# ## 2.5 The same mathematics, a faster kernel
#
# The written-out version stores the whole $T \times T$ matrix of scores for every head, and walks
# through memory three times (scores, softmax, weighted sum). A *fused* kernel such as the one
# behind `F.scaled_dot_product_attention` processes the keys in blocks and keeps a running maximum
# and a running sum for the softmax (the shift of 2.2, applied block by block), so it never stores
# the full matrix. The result is the same up to rounding, as checked in 2.3; the time and memory are
# not. The timings below depend on your machine (learner mode tries longer sequences).

# %%
seq_lens = pick(fast=[64, 128, 256], full=[128, 256, 512, 1024, 2048])
B, n_heads, head_size = 1, 8, 64


def best_time(fn, *args, repeats: int = 7) -> float:
    """Fastest of several runs of fn(*args) after one warm-up run, in seconds (waits for the GPU if any)."""
    fn(*args)  # warm-up: the first call pays for memory allocation and thread start-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


times = {"explicit": [], "fused": []}
with torch.no_grad():
    for T in seq_lens:
        q, k, v = (torch.randn(B, n_heads, T, head_size, device=device) for _ in range(3))
        times["explicit"].append(best_time(explicit_attention, q, k, v))
        times["fused"].append(best_time(attention, q, k, v))
for T, te, tf in zip(seq_lens, times["explicit"], times["fused"]):
    scores_mb = B * n_heads * T * T * 4 / 2**20
    print(f"T = {T:>5}: explicit {te * 1e3:8.2f} ms, fused {tf * 1e3:8.2f} ms; the explicit score matrix takes {scores_mb:7.1f} MiB")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.loglog(seq_lens, [t * 1e3 for t in times["explicit"]], "o-", label="explicit_attention (written out)")
ax.loglog(seq_lens, [t * 1e3 for t in times["fused"]], "s-", label="F.scaled_dot_product_attention (fused)")
ax.set_xscale("log", base=2)
ax.set_xticks(seq_lens, labels=[str(T) for T in seq_lens])
ax.set_xticks([], minor=True)
ax.set_xlabel("sequence length T")
ax.set_ylabel("milliseconds (log scale)")
ax.set_title(f"Attention of {n_heads} heads of size {head_size} on {device.type}")
ax.legend()
plt.show()
long = [i for i, T in enumerate(seq_lens) if T >= seq_lens[-3]]  # the three longest sequences
for name, t in times.items():
    _, exponent = model_costs.fit_power_law([seq_lens[i] for i in long], [t[i] for i in long])
    print(f"{name}: time grows as T^{exponent:.2f} over the three longest sequences")

# %% [markdown]
# The memory of the score matrix grows with $T^2$: double the text, four times the memory. The
# work grows with $T^2$ as well ($T^2$ scores, each a dot product of length $d_k$), but the time
# follows it only once that work dominates. For short sequences the fixed costs of each call
# (starting threads, allocating memory, dispatching each operation) are of the same order as the
# arithmetic, so the first points of the plot are nearly flat; the exponents printed above,
# fitted to the three longest sequences, show how close to 2 the growth is there, on this machine.
# That quadratic growth is why long-context models depend on fused kernels (which save the memory
# and the memory traffic, though not the arithmetic), and why the course keeps the explicit version
# only for teaching and for the heatmaps, which need the weights themselves.
#
# ## Summary
#
# - Attention returns, for each query, a weighted average of the values; the weights are the
#   softmax of the query's scaled dot products with the keys.
# - Writing the normaliser $Z_i = \sum_j e^{s_{ij}}$ explicitly gives exactly the softmax, so the
#   "$\exp(QK^\top/\sqrt{d_k})/Z$" and "$\operatorname{softmax}$" forms are one formula.
# - A softmax is computed safely by subtracting each row's maximum first; $-\infty$ scores get
#   weight zero, which is how masks work.
# - As matrices: $S = QK^\top/\sqrt{d_k}$, $A = \operatorname{softmax}(S)$, $O = AV$, with
#   $Q$, $K$, $V$ learned projections of the same tokens; the written-out version equals PyTorch's
#   kernel in outputs and gradients.
# - Dot products of random vectors have variance $d_k$; dividing by $\sqrt{d_k}$ keeps the softmax
#   from saturating and its gradient from vanishing.
#
# Next, notebook 2B: masks, multi-head attention, positions and the complete Transformer block.
