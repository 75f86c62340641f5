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
# # 1 · What makes a model "large"
#
# A large model is not a different kind of program from the small networks of a textbook. It is the
# same few operations — matrix products, a non-linearity, a normalisation, attention — repeated
# many times, with very many learned numbers, trained on a great deal of data with a great deal of
# arithmetic. This chapter makes each of those four words concrete with numbers you compute:
#
# 1. the **pipeline** that turns data into a deployed model;
# 2. the **model families** the rest of the course builds on, each as a tiny runnable example;
# 3. **parameters**: counting them for real configurations (GPT-2, Llama 2) and checking the count
#    against the published sizes;
# 4. **memory**: what training and serving such models needs;
# 5. **compute and data**: the $6ND$ rule and the "Chinchilla" tokens-per-parameter rule;
# 6. **your machine**: its measured matrix-multiply speed, and what that means for training time.
#
# Everything here runs in seconds on a laptop CPU.

# %% tags=["imports"]
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from course_lib import choose_device, model_costs, pick, seed_everything
from course_lib.attention import MultiHeadAttention, causal_mask
from course_lib.gpt import GPT, get_config
from course_lib.mlp_cnn import MLP, DigitCNN
from course_lib.plots import pipeline_diagram, use_course_style

use_course_style()
seed_everything(0)
print("device:", choose_device())

# %% [markdown]
# ## 1.1 The pipeline: from data to a deployed model
#
# Building a model follows the same loop whatever its size. Data is collected, cleaned, normalised
# and split into training, validation and test sets. A model family is chosen. A **base model** is
# either trained from scratch on a large general corpus (*pretraining*, usually self-supervised:
# predict the next word) or, far more often, loaded already pretrained. It is then adapted to a task
# with a smaller labelled data set (*fine-tuning*), evaluated on data it never saw, and the loop
# repeats until it is good enough to compress and deploy.
#
# Re-using what a model learned on one task for another is **transfer learning**; pretraining and
# fine-tuning are its two halves, and chapters 3 and 4 of this course are exactly those two halves.

# %%
fig = pipeline_diagram()
plt.show()

# %% [markdown]
# ## 1.2 Model families, each as one small computation
#
# The families the course meets differ in *how information flows between the parts of an input*.
# Each cell below builds a tiny instance and pushes a batch through it; the printed shapes are the
# point (they are checked when the notebook is re-run).
#
# **Multi-layer perceptron (MLP).** Every input feature feeds every unit of the next layer,
# $h = \sigma(Wx + b)$, layer after layer. Good for fixed-size feature vectors; it knows nothing
# about which features are neighbours.

# %%
# NBVAL_CHECK_OUTPUT
x_digits = torch.rand(32, 64)  # a batch of 32 flattened 8x8 images
mlp = MLP([64, 128, 10])
print("MLP:", tuple(x_digits.shape), "->", tuple(mlp(x_digits).shape))

# %% [markdown]
# **Convolutional network (CNN).** A small filter slides over the image, so the same weights look for
# the same pattern everywhere (an edge, a stroke), and pooling shrinks the map. The output at
# position $(i, j)$ of a convolution is $\sum_{c,u,v} W_{c,u,v}\, x_{c,\,i+u,\,j+v} + b$. Used for
# images, audio and any data on a grid.

# %%
# NBVAL_CHECK_OUTPUT
cnn = DigitCNN()
images = torch.rand(32, 1, 8, 8)
print("CNN:", tuple(images.shape), "->", tuple(cnn(images).shape))

# %% [markdown]
# **Recurrent network (RNN, LSTM, GRU).** Reads a sequence one step at a time and carries a hidden
# state forward; the LSTM and GRU add gates that decide what to keep. Step $t$ cannot start before
# step $t-1$ has finished, which makes long sequences slow to train on parallel hardware.

# %%
# NBVAL_CHECK_OUTPUT
lstm = nn.LSTM(input_size=16, hidden_size=32, batch_first=True)
sequence = torch.randn(4, 10, 16)  # (batch, time steps, features)
outputs, (h_last, c_last) = lstm(sequence)
print("LSTM:", tuple(sequence.shape), "->", tuple(outputs.shape), "| final hidden state", tuple(h_last.shape))

# %% [markdown]
# **Transformer.** Every position looks at every other position *at once* through attention
# (chapter 2), so a whole sequence is processed in parallel; positional information is added
# because attention by itself ignores order. Stacks of attention + feed-forward blocks are what every
# large language model is made of.

# %%
# NBVAL_CHECK_OUTPUT
attn = MultiHeadAttention(d_model=32, n_heads=4)
tokens = torch.randn(4, 10, 32)  # (batch, positions, features)
print("attention:", tuple(tokens.shape), "->", tuple(attn(tokens).shape))

# %% [markdown]
# **BERT versus GPT.** Both are stacks of Transformer blocks; the difference is *which positions may
# look at which*. BERT (an *encoder*) lets every token see the whole sentence, which suits
# understanding tasks: classification, search, tagging. GPT (a *decoder*) lets a token see only
# itself and the tokens before it — a **causal mask** — so it can be trained to predict the next
# token and then generate text one token at a time. A `1` below means "row may look at column".

# %%
# NBVAL_CHECK_OUTPUT
T = 5
print("BERT (bidirectional):\n", torch.ones(T, T, dtype=torch.int64).numpy())
print("GPT (causal):\n", causal_mask(T).to(torch.int64).numpy())

# %% [markdown]
# | family | information flows | typical use |
# |---|---|---|
# | MLP | every feature to every unit | tabular features, the last layers of other models |
# | CNN | local windows, shared weights | images, audio, grids |
# | RNN / LSTM / GRU | step by step through time | streaming signals, small sequence models |
# | Transformer encoder (BERT) | all positions to all positions | classification, search, extraction |
# | Transformer decoder (GPT) | each position to the past | generation, chat, code |

# %% [markdown]
# ## 1.3 Counting parameters
#
# A GPT-2 style model with vocabulary $V$, context length $T$, $L$ blocks and width $d$ has:
#
# - token embeddings $V d$ and learned position embeddings $T d$;
# - per block: two LayerNorms ($2d$ each), the attention projections $W_{qkv}$ ($d \times 3d$ plus
#   bias $3d$) and $W_o$ ($d \times d$ plus $d$), and the MLP ($d \times 4d + 4d$ and $4d \times d + d$);
# - a final LayerNorm ($2d$); the output layer **shares** the token embedding matrix (weight tying),
#   so it adds nothing.
#
# ### Exercise 1.1 — a parameter counter
# Write `gpt2_parameter_count(vocab_size, block_size, n_layer, d_model)` from the list above. The
# check compares it with `course_lib.gpt.GPTConfig.num_parameters` on six shapes, from GPT-2 1.5B down to
# models with a handful of weights.

# %% tags=["exercise"]
def gpt2_parameter_count(vocab_size: int, block_size: int, n_layer: int, d_model: int) -> int:
    """Parameters of a GPT-2 style decoder with tied input/output embeddings."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch01 import check_gpt2_parameter_count

check_gpt2_parameter_count(gpt2_parameter_count)

# %% [markdown]
# Now the real configurations. `GPTConfig.num_parameters` works from the configuration alone, so it counts
# a 7-billion-parameter model without allocating a single weight. The published sizes are the
# names the models were released under; the check is that our count rounds to them.

# %%
# NBVAL_CHECK_OUTPUT
published = {  # name -> size the model was published as
    "gpt2": 124e6,
    "gpt2-medium": 355e6,
    "gpt2-large": 774e6,
    "gpt2-xl": 1.5e9,
    "llama2-7b": 6.7e9,
}
counts = {name: get_config(name).num_parameters() for name in published}
print(f"{'model':<12} {'parameters':>15} {'published':>10} {'difference':>10}")
for name, n in counts.items():
    rel = n / published[name] - 1
    print(f"{name:<12} {n:>15,} {published[name] / 1e6:>9,.0f}M {rel:>+10.1%}")
assert all(abs(counts[k] / published[k] - 1) < 0.04 for k in published), "a count is far from its published size"

# %% [markdown]
# A count from the formula is only as good as the formula. Building GPT-2 on PyTorch's `meta`
# device creates every module with shapes but no memory, so we can count the tensors of the real
# model too:

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):
    gpt2_on_meta = GPT(get_config("gpt2"))
real = sum(p.numel() for p in gpt2_on_meta.parameters())
print(f"GPT-2 built on the meta device: {real:,} parameters; the formula says {counts['gpt2']:,}")

# %% [markdown]
# Where do the parameters sit? For small models the embedding table dominates; as width and depth
# grow, the blocks take over, because they grow with $d^2 L$ while the embeddings grow with $d$.

# %%
names = list(counts)
embedding_share = []
for name in names:
    cfg = get_config(name)
    emb = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_weights else 2)
    emb += cfg.block_size * cfg.d_model if cfg.positions == "learned" else 0
    embedding_share.append(emb / counts[name])
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.barh(names, [1 - s for s in embedding_share], label="blocks (attention + MLP + norms)")
ax.barh(names, embedding_share, left=[1 - s for s in embedding_share], label="embeddings")
ax.set_xlabel("share of all parameters")
ax.legend(loc="lower right")
ax.set_title("Where the parameters are")
plt.show()

# %% [markdown]
# ## 1.4 Memory
#
# Training with AdamW keeps, for every parameter: the weight, its gradient and the optimizer's two
# running moments. In fp32 that is four 4-byte numbers. Mixed precision (bf16 or fp16) runs the
# forward and backward passes in 16-bit numbers but keeps an fp32 *master* copy of the weights and
# fp32 optimizer states, so weight memory does not shrink; what shrinks is activation memory and
# time. On top of that come the **activations**, the intermediate values stored during the forward
# pass for use in the backward pass, which grow with batch size and sequence length.
#
# ### Exercise 1.2 — the memory of training
# Write `adamw_training_bytes(n_params)`: bytes of weights, gradients and AdamW states, all fp32.

# %% tags=["exercise"]
def adamw_training_bytes(n_params: int) -> int:
    """Bytes to train n_params parameters with AdamW in fp32 (activations not included)."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch01 import check_adamw_training_bytes

check_adamw_training_bytes(adamw_training_bytes)

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'model':<12} {'serve bf16':>11} {'train fp32':>11} {'train mixed':>12}   (GiB, activations not included)")
for name, n in counts.items():
    serve = model_costs.inference_memory(n, "bf16") / model_costs.GIB
    fp32 = model_costs.training_memory(n, "fp32").total / model_costs.GIB
    mixed = model_costs.training_memory(n, "bf16").total / model_costs.GIB
    print(f"{name:<12} {serve:>11.1f} {fp32:>11.1f} {mixed:>12.1f}")

# %% [markdown]
# Activations depend on how the model is run. The plot uses the estimate in `model_costs.activation_bytes`
# for GPT-2 124M with 16-bit activations, with and without a fused attention kernel that avoids
# storing the $T \times T$ attention matrix:

# %%
cfg = get_config("gpt2")
seq_lens = [128, 256, 512, 1024]
batch = 8
state = model_costs.training_memory(counts["gpt2"], "bf16").total / model_costs.GIB
fig, ax = plt.subplots(figsize=(7, 3.5))
for fused, style in [(False, "o-"), (True, "s--")]:
    act = [
        model_costs.activation_bytes(cfg.n_layer, cfg.d_model, cfg.n_head, s, batch, fused_attention=fused) / model_costs.GIB
        for s in seq_lens
    ]
    ax.plot(seq_lens, act, style, label=f"activations, {'fused' if fused else 'explicit'} attention")
ax.axhline(state, color="grey", ls=":", label="weights + gradients + AdamW (mixed precision)")
ax.set_xlabel("sequence length (tokens)")
ax.set_ylabel("GiB")
ax.set_title(f"Training memory of GPT-2 124M, batch {batch}")
ax.legend()
plt.show()

# %% [markdown]
# ## 1.5 Compute and data
#
# Each token costs about $2N$ floating-point operations in the forward pass (one multiply and one
# add per weight) and about $4N$ in the backward pass, so training on $D$ tokens costs
#
# $$C \approx 6 N D \ \text{FLOPs}.$$
#
# For a fixed compute budget, is it better to train a bigger model on less data or a smaller one on
# more? Hoffmann et al. (2022, "Chinchilla") found that parameters and tokens should grow together,
# at a roughly constant number of tokens per parameter:

# %%
# NBVAL_CHECK_OUTPUT
print(f"compute-optimal tokens per parameter: {model_costs.CHINCHILLA_TOKENS_PER_PARAMETER}")
print(f"{'model':<12} {'tokens (Chinchilla)':>20} {'training FLOPs':>15}")
for name, n in counts.items():
    tokens = model_costs.chinchilla_tokens(n)
    print(f"{name:<12} {tokens:>20.3g} {model_costs.training_flops(n, tokens):>15.3g}")

# %% [markdown]
# Compute grows with the *square* of model size along the compute-optimal line, because both $N$ and
# $D$ grow:

# %%
n_grid = np.logspace(6, 11, 50)
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.loglog(n_grid, model_costs.training_flops(n_grid, model_costs.chinchilla_tokens(n_grid)), label="compute-optimal 6ND")
for name, n in counts.items():
    ax.scatter([n], [model_costs.training_flops(n, model_costs.chinchilla_tokens(n))], zorder=3)
    ax.annotate(name, (n, model_costs.training_flops(n, model_costs.chinchilla_tokens(n))), textcoords="offset points",
                xytext=(5, -10), fontsize=8)
ax.set_xlabel("parameters N")
ax.set_ylabel("training FLOPs")
ax.set_title("Compute to train a compute-optimal model")
plt.show()

# %% [markdown]
# ## 1.6 Your machine
#
# How fast is the computer you are reading this on? A matrix product of two $n \times n$ matrices
# costs $2n^3$ operations, and it is the operation large models spend nearly all their time in. We
# time it for a few sizes (learner mode measures larger matrices; the numbers differ from machine to
# machine and run to run).

# %%
device = choose_device().device
sizes = pick(fast=[64, 128, 256], full=[128, 256, 512, 1024, 2048])
rates = [model_costs.measure_matmul_flops(device, n, repeats=pick(3, 10)) for n in sizes]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(sizes, [r / 1e9 for r in rates], "o-")
ax.set_xscale("log", base=2)
ax.set_xlabel("matrix size n")
ax.set_ylabel("GFLOP/s (fp32)")
ax.set_title(f"Measured matrix-multiply speed on {device.type}")
plt.show()
best = max(rates)
print(f"best measured: {best / 1e9:,.1f} GFLOP/s")

# %% [markdown]
# With that figure, training time follows from $6ND$ divided by the rate we can sustain. Real
# training keeps only part of the peak busy (memory traffic, communication, the non-matmul work), so
# we assume a utilisation below one. For comparison, the same sum for one NVIDIA H100 at its
# data-sheet dense bf16 peak:

# %%
H100_BF16_PEAK = 989e12  # FLOP/s, NVIDIA's data sheet (H100 SXM, dense bf16)
UTILISATION = 0.4  # the fraction of peak a well-tuned training run sustains, roughly


def duration(days: float) -> str:
    """A number of days in the unit a person would use."""
    seconds = days * 86_400
    for unit, size in [("years", 365 * 86_400), ("days", 86_400), ("hours", 3600), ("min", 60)]:
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


print(f"assumed utilisation {UTILISATION:.0%}; H100 peak {H100_BF16_PEAK / 1e12:,.0f} TFLOP/s")
small = get_config("small").num_parameters()
plans = [
    ("the course's 'small' GPT on 5M tokens", small, 5e6),  # about the size of chapter 3's BBC corpus
    ("GPT-2 124M, compute-optimal", counts["gpt2"], model_costs.chinchilla_tokens(counts["gpt2"])),
    ("Llama-2-7B shape, compute-optimal", counts["llama2-7b"], model_costs.chinchilla_tokens(counts["llama2-7b"])),
]
print(f"{'plan':<40} {'this machine':>16} {'one H100':>12}")
for label, n, d in plans:
    here = model_costs.training_days(n, d, best, utilisation=UTILISATION)
    h100 = model_costs.training_days(n, d, H100_BF16_PEAK, utilisation=UTILISATION)
    print(f"{label:<40} {duration(here):>16} {duration(h100):>12}")

# %% [markdown]
# This is why the course trains small models for real on a laptop, and reads large ones: the code is
# the same, and only the four numbers of this chapter — parameters, memory, compute, data — change.
#
# ## Summary
#
# - A large model is many repeats of a few simple operations; "large" is measured in parameters,
#   training tokens, floating-point operations and bytes of memory.
# - Parameters follow from the configuration; the count of GPT-2 and Llama 2 shapes matches their
#   published sizes.
# - Training with AdamW costs the same bytes per parameter before activations in fp32 and in mixed
#   precision (the memory table above); activations come on top and grow with batch and sequence.
# - Training compute is about $6ND$; compute-optimal training grows data with model size.
#
# Next, chapter 2 opens the one operation that made Transformers possible: attention.
