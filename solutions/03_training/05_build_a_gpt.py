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
# # 3.5 · Build a GPT, piece by piece
#
# Chapter 2 took attention apart; notebook 3.4 turned text into token ids. This notebook puts the
# pieces together into a GPT (the architecture of GPT-2), written by you, one part at a time, each
# checked as soon as it is written:
#
# 1. token and position embeddings, as table lookups;
# 2. one causal self-attention head, built on your chapter-2 functions, then multi-head attention;
# 3. LayerNorm and GELU from their formulas, the MLP, and the pre-norm residual block;
# 4. the model, its next-token loss, and `generate` with temperature and top-k.
#
# Your model must load the weights of `course_lib.gpt.GPT` and give the same logits (to within
# $10^{-5}$). Then it trains for a few hundred steps on BBC News with the course's `Trainer`, next to
# `course_lib`'s GPT trained in exactly the same way, and writes some text: your own code, trained.
#
# Shapes in the comments: B batch, T tokens, C or d = `d_model`, nh heads, hs head size, V vocabulary.

# %% tags=["imports"]
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import cache_dir, fast_mode, pick, pretrained, seed_everything
from course_lib.gpt import GPT, GPTConfig
from course_lib.lm_data import get_batch
from course_lib.plots import use_course_style
from course_lib.tokenizers import printable
from course_lib.trainer import TrainConfig, Trainer
from course_lib.training_plots import plot_curves

use_course_style()
seed_everything(0)
torch.set_num_threads(pick(1, 2))  # small matrices: more threads would mostly wait on each other
print("fast mode:", fast_mode())

# %% [markdown]
# ## 3.5.1 Your chapter-2 functions, again
#
# ### Exercise 3.5a — softmax, the causal mask and attention
# Write them again (or paste your chapter-2 answers): a numerically stable `softmax` over the last
# dimension; `causal_mask(T)`, a `(T, T)` boolean tensor, True where query $i$ may look at key $j$
# ($j \le i$); and `attention(q, k, v, mask=None)` $= \mathrm{softmax}(q k^\top / \sqrt{d_k}) v$, with
# the scores of masked-out (False) positions set to $-\infty$ before the softmax.

# %% tags=["exercise"]
def softmax(x):
    """Softmax over the last dimension, safe for large inputs."""
    ### BEGIN SOLUTION
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)
    ### END SOLUTION


def causal_mask(T):
    """(T, T) bool: True where query i may attend to key j, i.e. j <= i."""
    ### BEGIN SOLUTION
    return torch.tril(torch.ones(T, T, dtype=torch.bool))
    ### END SOLUTION


def attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d_k)) v, with False entries of mask hidden. q (..., T_q, d_k), k, v (..., T_k, .)"""
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores) @ v  # (..., T_q, d_v)
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch02 import check_causal_mask, check_scaled_dot_product_attention, check_softmax

check_softmax(softmax)
check_causal_mask(causal_mask)
check_scaled_dot_product_attention(attention)

# %% [markdown]
# ## 3.5.2 Embeddings are table lookups
#
# A GPT keeps two tables: `wte`, one row of $d$ numbers per token id ($V \times d$), and `wpe`, one row
# per position ($T_{max} \times d$, GPT-2's learned positions). The input of the first block is, for
# each position $t$, the row of its token plus the row of its position. Multiplying a one-hot vector by
# the table would give the same row; indexing fetches it directly.
#
# ### Exercise 3.5b — embed
# Write `embed(idx, wte, wpe)`: `idx` is `(B, T)` token ids, `wte` and `wpe` are plain tensors; return
# `(B, T, d)`.

# %% tags=["exercise"]
def embed(idx, wte, wpe):
    """Token rows plus position rows: idx (B, T) -> (B, T, d)."""
    ### BEGIN SOLUTION
    T = idx.size(1)
    return wte[idx] + wpe[:T]  # (B, T, d) + (T, d), broadcast over the batch
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_embed

check_embed(embed)

# %% [markdown]
# ## 3.5.3 One causal self-attention head
#
# A head projects every position's vector into a query, a key and a value (three `nn.Linear` layers
# of $d \to h_s$), then lets each position mix the values of itself and the positions before it,
# weighted by attention. "Before it" is the causal mask: when the model predicts token $t + 1$ from
# position $t$, it must not see tokens after $t$.
#
# ### Exercise 3.5c — `CausalHead`
# Complete the class: `query`, `key`, `value` are `nn.Linear(d_model, head_size)`; `forward(x)` maps
# `(B, T, d)` to `(B, T, head_size)` with your `attention` and `causal_mask`. The check loads
# `course_lib.attention.AttentionHead`'s weights into your head and compares.

# %% tags=["exercise"]
class CausalHead(nn.Module):
    def __init__(self, d_model, head_size):
        super().__init__()
        ### BEGIN SOLUTION
        self.query = nn.Linear(d_model, head_size)
        self.key = nn.Linear(d_model, head_size)
        self.value = nn.Linear(d_model, head_size)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        T = x.size(1)
        q, k, v = self.query(x), self.key(x), self.value(x)  # each (B, T, hs)
        return attention(q, k, v, causal_mask(T).to(x.device))  # (B, T, hs)
        ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_causal_head

check_causal_head(CausalHead)

# %% [markdown]
# ## 3.5.4 Multi-head attention
#
# $n_h$ heads of size $h_s = d / n_h$ run side by side, each free to attend to something different.
# GPT-2 computes all their queries, keys and values with **one** `nn.Linear(d, 3d)` called `qkv`,
# whose output is laid out `[q | k | v]`, each part holding the heads one after another; the heads'
# outputs are put side by side again and mixed by `proj`, an `nn.Linear(d, d)`. Chapter 2's
# split-and-merge exercise is the reshaping in the middle.
#
# ### Exercise 3.5d — `MultiHeadAttention`
# Complete the class: `qkv` and `proj` as above; `forward(x)` maps `(B, T, d)` to `(B, T, d)`, causal.
# The check loads `course_lib.attention.MultiHeadAttention`'s weights and compares.

# %% tags=["exercise"]
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head = n_head
        ### BEGIN SOLUTION
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=-1)  # each (B, T, C)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # each (B, nh, T, hs)
        y = attention(q, k, v, causal_mask(T).to(x.device))  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, nh * hs): heads side by side
        return self.proj(y)
        ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_multi_head_attention

check_multi_head_attention(MultiHeadAttention)

# %% [markdown]
# ## 3.5.5 LayerNorm and GELU, from their formulas
#
# **LayerNorm** rescales each position's vector to mean 0 and variance 1 over its $d$ features, then
# applies a learned gain $\gamma$ and shift $\beta$:
#
# $$\mathrm{LN}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot \gamma + \beta, \qquad
# \mu = \frac1d \sum_i x_i, \quad \sigma^2 = \frac1d \sum_i (x_i - \mu)^2 .$$
#
# Note the $\frac1d$ (the population variance, not the $\frac1{d-1}$ of `torch.var`'s default) and the
# $\epsilon = 10^{-5}$ *inside* the square root.
#
# ### Exercise 3.5e — `layer_norm`

# %% tags=["exercise"]
def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise the last dimension of x, then scale by weight and shift by bias."""
    ### BEGIN SOLUTION
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # (..., 1), divided by d
    return (x - mean) / torch.sqrt(var + eps) * weight + bias
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_layer_norm

check_layer_norm(layer_norm)

# %% [markdown]
# A module holds the two learned vectors, named `weight` and `bias` as in PyTorch and GPT-2:

# %%
class LayerNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))  # gamma
        self.bias = nn.Parameter(torch.zeros(d))  # beta
        self.eps = eps

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias, self.eps)


# %% [markdown]
# **GELU** is the MLP's non-linearity: $\mathrm{GELU}(x) = x\,\Phi(x)$, with $\Phi$ the standard normal
# distribution function, a smooth version of ReLU. GPT-2 used a tanh approximation of it, and to load
# GPT-2-style weights exactly we use the same:
#
# $$\mathrm{GELU}(x) \approx \tfrac12 x \left(1 + \tanh\!\left(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\right)\right).$$
#
# ### Exercise 3.5f — `gelu`

# %% tags=["exercise"]
def gelu(x):
    """GPT-2's tanh approximation of GELU."""
    ### BEGIN SOLUTION
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_gelu

check_gelu(gelu)

# %% tags=["raises-exception"]
x = torch.linspace(-4, 4, 200)
exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
ax1.plot(x, gelu(x), label="GELU (tanh form)")
ax1.plot(x, torch.relu(x), "--", label="ReLU")
ax1.legend()
ax1.set_title("GELU is a smooth ReLU")
ax2.plot(x, gelu(x) - exact)
ax2.set_title("tanh form minus the exact GELU")
fig.tight_layout()
plt.show()
print(f"largest gap between the tanh form and the exact GELU: {(gelu(x) - exact).abs().max():.1e}")

# %% [markdown]
# ## 3.5.6 The MLP and the block
#
# ### Exercise 3.5g — `MLP`
# Position by position, widen to $4d$ with `c_fc`, apply `gelu`, and come back to $d$ with `c_proj`
# (both `nn.Linear`, GPT-2's names).

# %% tags=["exercise"]
class MLP(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        ### BEGIN SOLUTION
        self.c_fc = nn.Linear(d_model, 4 * d_model)
        self.c_proj = nn.Linear(4 * d_model, d_model)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        return self.c_proj(gelu(self.c_fc(x)))  # (B, T, d) -> (B, T, 4d) -> (B, T, d)
        ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_mlp

check_mlp(MLP)

# %% [markdown]
# A **block** is attention (tokens exchange information) followed by the MLP (each token thinks on its
# own), each wrapped in a **residual connection**: the branch's output is *added* to its input, so the
# vector that flows through the model, the residual stream, is only ever nudged. GPT-2 normalises the
# *input of each branch* (pre-norm), not the sum, which keeps the stream itself untouched and makes deep
# stacks train stably:
#
# $$x \leftarrow x + \mathrm{attn}(\mathrm{LN}_1(x)), \qquad x \leftarrow x + \mathrm{mlp}(\mathrm{LN}_2(x)).$$
#
# ### Exercise 3.5h — `Block`
# `Block(config)` holds `ln_1`, `attn`, `ln_2`, `mlp` (your classes; `config` is a
# `course_lib.gpt.GPTConfig` with `d_model` and `n_head`).

# %% tags=["exercise"]
class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        ### BEGIN SOLUTION
        self.ln_1 = LayerNorm(config.d_model)
        self.attn = MultiHeadAttention(config.d_model, config.n_head)
        self.ln_2 = LayerNorm(config.d_model)
        self.mlp = MLP(config.d_model)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln_1(x))  # (B, T, d)
        x = x + self.mlp(self.ln_2(x))
        return x
        ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_block

check_block(Block)

# %% [markdown]
# ## 3.5.7 The model
#
# Embeddings, `n_layer` blocks, a final LayerNorm `ln_f`, and the output layer `lm_head`
# (`nn.Linear(d, V, bias=False)`) that turns each position's vector into $V$ scores, the **logits** of
# the next token. GPT-2 *ties* the output layer to the token table: `lm_head.weight` is `wte`'s weight,
# one $V \times d$ matrix used twice, which saves $V d$ parameters.
#
# ### Exercise 3.5i — `MyGPT`
# Lay the parts out under GPT-2's names, so that `course_lib`'s weights load:
# `self.transformer = nn.ModuleDict(dict(wte=..., wpe=..., h=..., ln_f=...))` with `wte`, `wpe` as
# `nn.Embedding` tables (read their `.weight` with your `embed`), `h` an `nn.ModuleList` of blocks,
# then `self.lm_head`, tied. `forward(idx, targets=None)` returns `(logits, loss)`: logits `(B, T, V)`,
# and, when `targets` (B, T) are given, the mean cross-entropy of the logits against them
# (`F.cross_entropy` on `(B*T, V)` and `(B*T,)`), else `None`. The check copies a `course_lib` GPT's
# weights into yours and compares logits and loss.

# %% tags=["exercise"]
class MyGPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        ### BEGIN SOLUTION
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),
                wpe=nn.Embedding(config.block_size, config.d_model),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=LayerNorm(config.d_model),
            )
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix in and out
        ### END SOLUTION

    def forward(self, idx, targets=None):
        ### BEGIN SOLUTION
        t = self.transformer
        x = embed(idx, t.wte.weight, t.wpe.weight)  # (B, T, d)
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
        ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_gpt

check_gpt(MyGPT)

# %% [markdown]
# One more time by hand, at the size trained below: `course_lib`'s GPT with its own random
# initialisation, its state dict loaded into yours, the same input:

# %%
recipe = pretrained.bbc_recipe()
train_docs, val_docs = pretrained.bbc_documents(recipe)
tokenizer = pretrained.bbc_tokenizer(recipe, train_docs)
train_ids, val_ids = pretrained.bbc_tokens(recipe, tokenizer, (train_docs, val_docs))
config = GPTConfig(
    vocab_size=tokenizer.vocab_size,
    block_size=pick(32, 64),
    n_layer=pick(2, 4),
    n_head=4,
    d_model=pick(32, 128),
)
torch.manual_seed(1337)
reference = GPT(config)
x, y = get_batch(val_ids, 4, config.block_size, torch.Generator().manual_seed(0), device="cpu")
print(f"{len(train_ids):,} training and {len(val_ids):,} validation tokens, vocabulary {tokenizer.vocab_size}")

# %% tags=["nbval-check-output"]
with torch.no_grad():
    ref_loss0 = reference(x, y)[1].item()
print(f"course_lib's untrained GPT starts within 0.1 of ln V: {abs(ref_loss0 - math.log(config.vocab_size)) < 0.1}")
assert abs(ref_loss0 - math.log(config.vocab_size)) < 0.1

# %% [markdown]
# From here on, cells that run your classes and functions stop with `NotImplementedError` until you
# have solved the exercises they use (they are tagged `raises-exception`, so the notebook carries on).

# %% tags=["raises-exception"]
mine = MyGPT(config)
print(mine.load_state_dict(reference.state_dict()))
with torch.no_grad():
    ref_logits, ref_loss = reference(x, y)
    my_logits, my_loss = mine(x, y)
gap = (my_logits - ref_logits).abs().max().item()
print(f"largest logit difference {'<=' if gap <= 1e-5 else '>'} 1e-5; the losses agree to 1e-5: "
      f"{abs(my_loss.item() - ref_loss.item()) <= 1e-5}")
assert gap <= 1e-5

# %% tags=["raises-exception"]
n_params = sum(p.numel() for p in mine.parameters())
print(f"{n_params:,} parameters (the tied {config.vocab_size} x {config.d_model} table counted once); "
      f"course_lib counts {reference.num_parameters():,}")
print(f"loss of the untrained model {my_loss.item():.3f}, ln V = {math.log(config.vocab_size):.3f}")

# %% [markdown]
# ## 3.5.8 The next-token loss
#
# A GPT reads a sequence and, at *every* position $t$, predicts token $t + 1$. For a sequence of $T$
# tokens, the logits at positions $0 \dots T-2$ are scored against tokens $1 \dots T-1$; the last
# position has nothing to predict yet, and the first token is never a target. (`get_batch` does this
# shift once, when it cuts the windows `x` and `y`; inside the model the targets are already aligned.)
#
# ### Exercise 3.5j — `next_token_loss`
# Given `logits` (B, T, V) computed from `idx` (B, T), return the mean cross-entropy of the predictions
# of positions $0 \dots T-2$ against tokens $1 \dots T-1$.

# %% tags=["exercise"]
def next_token_loss(logits, idx):
    """Mean cross-entropy of logits[:, t] predicting idx[:, t + 1]."""
    ### BEGIN SOLUTION
    V = logits.size(-1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1))
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_next_token_loss

check_next_token_loss(next_token_loss)

# %% tags=["raises-exception"]
with torch.no_grad():
    shifted_inside = next_token_loss(mine(x)[0], x)  # positions 0..T-2 of x predict tokens 1..T-1
    logits_short, _ = mine(x[:, :-1])  # the same pairs, shifted before the model
    shifted_outside = F.cross_entropy(logits_short.flatten(0, 1), x[:, 1:].flatten())
print("the two ways give the same loss:", abs(shifted_inside.item() - shifted_outside.item()) < 1e-5)
assert abs(shifted_inside.item() - shifted_outside.item()) < 1e-5

# %% [markdown]
# They agree because the model is causal: the logits at position $t$ depend only on tokens $0 \dots t$,
# so dropping the last input token changes none of the earlier predictions.

# %% [markdown]
# ## 3.5.9 Generating text
#
# To write, the model predicts a distribution for the next token, one token is **sampled** from it and
# appended, and the longer sequence goes back in. Two knobs shape the distribution:
#
# - **temperature** $\tau$: the logits are divided by $\tau$ before the softmax. $\tau < 1$ sharpens the
#   distribution (safer, more repetitive), $\tau > 1$ flattens it (more surprising, more errors);
# - **top-k**: only the $k$ highest-scoring tokens keep their scores, the rest get $-\infty$
#   (probability 0), which cuts off the long tail of unlikely tokens.
#
# The model has seen at most `block_size` positions, so only the last `block_size` tokens go in.
#
# ### Exercise 3.5k — `generate`
# Write `generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None)`. Each step:
# `logits, _ = model(idx[:, -block_size:])` (the model's `config.block_size`); the last position's
# logits divided by the temperature; with `top_k`, every logit below the $k$-th largest of its row set to
# `-inf` (`torch.topk`); `probs = torch.softmax(logits, dim=-1)`; one draw per row with
# `torch.multinomial(probs, 1, generator=generator)`; append it. Return `(B, T + max_new_tokens)`. (The
# check compares draws with the same random generator, so draw exactly once per step in this way.)

# %% tags=["exercise"]
@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    """Append max_new_tokens sampled tokens to idx (B, T)."""
    ### BEGIN SOLUTION
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])  # (B, T', V)
        logits = logits[:, -1, :] / temperature  # (B, V)
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        next_id = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    return idx
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_generate

check_generate(generate)

# %% [markdown]
# Before training, the model's probabilities are close to uniform, and so is its text:

# %%
def write(model, prompt, n_tokens=40, temperature=0.8, top_k=50, seed=0):
    """Continue the prompt with your generate, reproducibly."""
    model.eval()
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, idx, n_tokens, temperature=temperature, top_k=top_k, generator=g)
    return printable(tokenizer.decode(out[0].tolist()))


# %% tags=["raises-exception"]
print(write(mine, "The government", n_tokens=pick(10, 30)))

# %% [markdown]
# ## 3.5.10 Training your GPT
#
# Your model goes into the course's `Trainer` (notebooks 3.2 and 3.6 use it too): AdamW, warmup and
# cosine decay of the learning rate, gradient clipping, random windows of the BBC training tokens from
# `get_batch`, a validation estimate every few steps. `course_lib`'s GPT, starting from the *same*
# weights (your model loaded them above), is trained with the same settings and the same seed, so it
# sees the same batches: any difference in the two loss curves comes from the arithmetic of the two
# implementations. (Weight decay is off: the Trainer decides which parameters to decay by module type,
# and your modules are not `course_lib`'s.)

# %%
train_config = dict(
    max_steps=pick(20, 300),
    batch_size=pick(4, 16),
    lr=1e-3,
    min_lr=1e-4,
    warmup_steps=pick(2, 30),
    weight_decay=0.0,
    grad_clip=1.0,
    eval_every=pick(10, 50),
    eval_steps=pick(2, 8),
    log_every=pick(5, 10),
    save_every=None,
    amp="off",  # full precision, so the two runs can be compared number by number
    progress=False,
    seed=1337,
)
B, T = train_config["batch_size"], config.block_size


def train_batch(step, generator):
    return get_batch(train_ids, B, T, generator, device="cpu")


def val_batch(step, generator):
    return get_batch(val_ids, B, T, generator, device="cpu")


# %% tags=["raises-exception"]
runs = {}
for name, model in [("your GPT", mine), ("course_lib GPT", reference)]:
    out_dir = cache_dir("runs", "build-a-gpt", "mine" if model is mine else "library")
    trainer = Trainer(model, TrainConfig(**train_config, out_dir=str(out_dir)), train_batch, val_batch)
    t0 = time.perf_counter()
    trainer.fit()
    runs[name] = (trainer.history_columns(), time.perf_counter() - t0)
    print(f"{name}: {trainer.step} steps in {runs[name][1]:.0f} s on {trainer.device}")

# %% tags=["raises-exception"]
fig, ax = plt.subplots(figsize=(7.5, 3.8))
curves = {}
for name, (hist, _) in runs.items():
    steps = hist["step"]
    curves[f"{name}, train"] = (steps, hist["train_loss"])
    curves[f"{name}, val"] = (steps, hist["val_loss"])
plot_curves(curves, ylabel="loss (nats per token)", hlines={"uniform guess, ln V": math.log(config.vocab_size)},
            styles={"your GPT, val": "o-", "course_lib GPT, val": "x--", "course_lib GPT, train": "--"},
            ax=ax, title="Your GPT and course_lib's, trained identically on BBC News")
plt.show()


def finite(values):
    return [v for v in values if not math.isnan(v)]


mine_train, ref_train = (finite(runs[n][0]["train_loss"]) for n in runs)
mine_val, ref_val = (finite(runs[n][0]["val_loss"]) for n in runs)
gap_train = max(abs(a - b) for a, b in zip(mine_train, ref_train))
gap_val = max(abs(a - b) for a, b in zip(mine_val, ref_val))
print(f"final train loss: yours {mine_train[-1]:.4f}, course_lib's {ref_train[-1]:.4f}; "
      f"final validation estimate: yours {mine_val[-1]:.4f}, course_lib's {ref_val[-1]:.4f}")
print(f"largest difference over the whole run: {gap_train:.1e} (train), {gap_val:.1e} (validation)")

# %% [markdown]
# The curves lie on top of each other. They are not bit-for-bit equal: `course_lib` computes LayerNorm
# and attention with PyTorch's fused kernels, your code with separate operations, so the float32
# rounding differs in the last digits, and a few hundred optimiser steps carry those differences along.

# %% tags=["raises-exception"]
print("your loss curve follows course_lib's to within 0.01 nats:", gap_train < 0.01 and gap_val < 0.01)
assert gap_train < 0.01 and gap_val < 0.01

# %% [markdown]
# ### Exercise 3.5l — an experiment: the validation loss of your trained model
# The validation points of the curve are estimates from a few random windows. Score your trained model
# on the first `n_val` tokens of the validation stream instead, every target exactly once: use
# `course_lib.lm_data.eval_windows(ids, block_size, batch_size)`, which yields `(x, y)` windows with the
# targets already scored by an earlier window set to -100 (`ignore_index`), sum the cross-entropies
# (`reduction="sum"`) and divide by the number of scored targets. Report it as `my_val_loss`.

# %% tags=["exercise", "experiment", "raises-exception"]
from course_lib.lm_data import eval_windows

n_val = pick(2_000, 50_000)
val_part = val_ids[:n_val]
windows = eval_windows(val_part, config.block_size, 16, device=next(mine.parameters()).device)  # (x, y) batches
my_val_loss = None  # your number
### BEGIN SOLUTION
mine.eval()
total, count = 0.0, 0
with torch.no_grad():
    for xb, yb in windows:
        logits, _ = mine(xb)
        total += F.cross_entropy(logits.flatten(0, 1), yb.flatten(), ignore_index=-100, reduction="sum").item()
        count += int((yb != -100).sum())
my_val_loss = total / count
### END SOLUTION
print(f"validation loss of your trained GPT: {my_val_loss:.4f} nats per token "
      f"(perplexity {math.exp(my_val_loss):.1f}; the uniform guess: {math.log(config.vocab_size):.3f})")

# %% tags=["check"]
from course_lib.exercises.ch03 import check_reported_val_loss

check_reported_val_loss(my_val_loss, mine, val_part, config.block_size)

# %% [markdown]
# ## 3.5.11 Your GPT writes
#
# A model of about a million parameters, trained for a few minutes: expect English-looking words and
# phrases, BBC-like openings, and little sense beyond a few words. Lower temperatures repeat
# themselves; higher ones wander off:

# %% tags=["raises-exception"]
for temperature in (0.5, 0.8, 1.2):
    text = write(mine, "The government", n_tokens=pick(15, 50), temperature=temperature, seed=1)
    print(f"temperature {temperature}:", text.replace("\n", " "), end="\n\n")

# %% [markdown] tags=["answer"]
# ### Question 3.5m — what made the two runs agree
# Your GPT and `course_lib`'s gave nearly the same loss at every step. List what had to be identical for
# that to happen (at least three things besides the architecture), and say which single change to your
# model would have kept its logits at step 0 identical but made the two curves part (hint: look at how
# the output layer is built).
#
# ### BEGIN SOLUTION
# The same initial weights (the state dict was copied), the same batches in the same order (same
# Trainer seed, same `get_batch` windows), the same optimiser settings and schedule (AdamW, learning
# rate, warmup, clipping; no weight decay, so the parameter grouping cannot differ), the same precision
# (amp off) and no dropout. Untying `lm_head` from `wte` would keep the step-0 logits identical (both
# matrices start as the same copied values) but from the first update on the two matrices would receive
# different gradients and move apart, whereas in the tied model they are one parameter, so the curves
# would part.
#
# Rubric: 1 point for three or more of the shared conditions (the copied initial weights, the same batches
# in the same order, the same optimiser settings and schedule, the same precision, no dropout) together
# with untying `lm_head` from `wte` as the change, for the reason that two separate matrices start equal
# but receive different gradients from the first update on. Half a point when one of the two parts is
# missing.
# ### END SOLUTION

# %% [markdown]
# ## Summary
#
# - Embeddings are lookups: token row plus position row.
# - A causal head is three projections and masked attention; multi-head attention runs $n_h$ of them
#   through one fused `qkv` projection, then mixes them with `proj`.
# - LayerNorm (population variance, $\epsilon$ inside the root) and GELU (GPT-2's tanh form) are a line
#   each; the block is pre-norm with two residual connections.
# - The model ties its output layer to the token table; its loss scores position $t$ against token
#   $t + 1$; `generate` samples with temperature and top-k from the last `block_size` tokens.
# - Your model loads `course_lib`'s weights, gives its logits to $10^{-5}$, and trains along the same
#   loss curve.
#
# Notebook 3.6 pretrains `course_lib`'s GPT (the same architecture) for longer, with counting baselines
# to beat, and notebook 3.7 makes such runs faster and larger.
