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
# 1. the **pipeline** that turns data into a deployed model, with data cleaning and augmentation
#    shown on the course's data;
# 2. the **model families** the rest of the course builds on, each as a tiny runnable example
#    (the gates of an LSTM and a GRU written out, and one small run);
# 3. **parameters**: counting them for real configurations (GPT-2, Llama 2) and checking the count
#    against the published sizes;
# 4. **memory**: what training and serving such models needs;
# 5. **compute and data**: the $6ND$ rule and the "Chinchilla" tokens-per-parameter rule;
# 6. **your machine and the hardware of large models**: measured matrix-multiply speed and memory
#    bandwidth next to published figures for GPUs and TPUs, and what they mean for training time.
#
# Everything here runs in a minute or two on a laptop CPU.

# %% tags=["imports"]
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from course_lib import choose_device, model_costs, pick, pretrained, seed_everything
from course_lib.attention import MultiHeadAttention, causal_mask
from course_lib.datasets import bbc_news, chinese_reviews, digits, shift_images
from course_lib.gpt import GPT, get_config
from course_lib.mlp_cnn import MLP, DigitCNN, RecurrentClassifier, lstm_cell
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
# **Cleaning and augmentation, on the course's own data.** Raw data is rarely ready to train on.
# Two examples from the data sets of later chapters: the Chinese product reviews (chapter 4) repeat
# most reviews two or three times, and some even appear with both labels; BBC News (chapters 3-5)
# holds articles whose text occurs twice. Left in, duplicates let a model be tested on copies of
# its training examples, and contradictory labels teach it noise. `datasets.chinese_reviews()`
# removes both by default:

# %% tags=["nbval-check-output"]
raw_reviews, raw_labels = chinese_reviews(dedupe=False)
clean_reviews, clean_labels = chinese_reviews()
in_both = len(set(r for r, y in zip(raw_reviews, raw_labels) if y == 1) & set(r for r, y in zip(raw_reviews, raw_labels) if y == 0))
print(f"Chinese reviews: {len(raw_reviews):,} lines, {len(set(raw_reviews)):,} distinct, {in_both} with both labels; "
      f"{len(clean_reviews):,} kept after cleaning")
bbc_texts = [article.text for article in bbc_news()]
print(f"BBC News: {len(bbc_texts):,} articles, {len(bbc_texts) - len(set(bbc_texts))} of them exact copies of another")

# %% [markdown]
# **Augmentation** goes the other way: it makes new training examples from old ones by changes
# that do not alter the label. A handwritten digit moved by a pixel is still the same digit
# (`datasets.shift_images`); for text, the counterparts are replacing words by synonyms or
# translating to another language and back.

# %%
digit_images, digit_labels = digits()
original = digit_images[:1]  # (1, 8, 8)
shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
fig, axes = plt.subplots(1, len(shifts), figsize=(7, 1.8))
for ax, (dx, dy) in zip(axes, shifts):
    ax.imshow(shift_images(original, dx, dy)[0], cmap="gray_r")
    ax.set_title("original" if (dx, dy) == (0, 0) else f"dx={dx}, dy={dy}", fontsize=9)
    ax.axis("off")
fig.suptitle(f"One digit ({digit_labels[0]}) and four shifted copies", fontsize=10)
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

# %% tags=["nbval-check-output"]
x_digits = torch.rand(32, 64)  # a batch of 32 flattened 8x8 images
mlp = MLP([64, 128, 10])
print("MLP:", tuple(x_digits.shape), "->", tuple(mlp(x_digits).shape))

# %% [markdown]
# **Convolutional network (CNN).** A small filter slides over the image, so the same weights look for
# the same pattern everywhere (an edge, a stroke), and pooling shrinks the map. The output at
# position $(i, j)$ of a convolution is $\sum_{c,u,v} W_{c,u,v}\, x_{c,\,i+u,\,j+v} + b$. Used for
# images, audio and any data on a grid.

# %% tags=["nbval-check-output"]
cnn = DigitCNN()
images = torch.rand(32, 1, 8, 8)
print("CNN:", tuple(images.shape), "->", tuple(cnn(images).shape))

# %% [markdown]
# **Recurrent network (RNN, LSTM, GRU).** Reads a sequence one step at a time and carries a hidden
# state forward: a plain RNN computes $h_t = \tanh(W x_t + U h_{t-1} + b)$. Gradients then pass
# through the same multiplication once per step, so over long sequences they shrink or explode.
# The **LSTM** adds a memory cell $c_t$ and three gates, each a sigmoid between 0 and 1:
#
# $$\begin{aligned}
# i_t &= \sigma(W_i x_t + U_i h_{t-1} + b_i), & f_t &= \sigma(W_f x_t + U_f h_{t-1} + b_f), & o_t &= \sigma(W_o x_t + U_o h_{t-1} + b_o),\\
# g_t &= \tanh(W_g x_t + U_g h_{t-1} + b_g), & c_t &= f_t \odot c_{t-1} + i_t \odot g_t, & h_t &= o_t \odot \tanh(c_t):
# \end{aligned}$$
#
# the forget gate $f$ decides what the memory keeps, the input gate $i$ what it writes, the output
# gate $o$ what it shows. The **GRU** does the same with two gates: an update gate $z_t$ mixes old and
# new, $h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}$, and a reset gate $r_t$ decides how much of
# $h_{t-1}$ the candidate $n_t = \tanh(W_n x_t + b_n + r_t \odot (U_n h_{t-1} + b'_n))$ sees.
# `course_lib.mlp_cnn.lstm_cell` and `gru_cell` write these out; one step equals PyTorch's `nn.LSTM`.
# Step $t$ cannot start before step $t-1$ has finished, which makes long sequences slow to train on
# parallel hardware.

# %% tags=["nbval-check-output"]
lstm = nn.LSTM(input_size=16, hidden_size=32, batch_first=True)
sequence = torch.randn(4, 10, 16)  # (batch, time steps, features)
outputs, (h_last, c_last) = lstm(sequence)
print("LSTM:", tuple(sequence.shape), "->", tuple(outputs.shape), "| final hidden state", tuple(h_last.shape))
h, c = torch.zeros(4, 32), torch.zeros(4, 32)
for t in range(sequence.shape[1]):  # the same 10 steps with the written-out cell and nn.LSTM's weights
    h, c = lstm_cell(sequence[:, t], h, c, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
print("written-out LSTM cell == nn.LSTM after 10 steps (within 1e-5):", torch.allclose(h, h_last[0], atol=1e-5))
assert torch.allclose(h, h_last[0], atol=1e-5)

# %% [markdown]
# What do the gates buy? One small run: each sequence is 15 random symbols out of 8, and the task
# is to name the **first** symbol after reading all 15, so the answer must be carried across 14
# steps. The same budget for each kind: 32 hidden units, Adam, the same batches; accuracy on 1,000
# new sequences (a guess scores 1/8 = 12.5%).

# %%
def first_symbol_batch(n, generator, length=15, vocab=8):
    x = torch.randint(0, vocab, (n, length), generator=generator)  # (n, length)
    return x, x[:, 0]


rnn_steps = pick(fast=30, full=400)
test_x, test_y = first_symbol_batch(1000, torch.Generator().manual_seed(1))
memory_accuracy = {}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # many tiny sequential steps: one thread is fastest
for kind in ("rnn", "lstm", "gru"):
    torch.manual_seed(0)
    net = RecurrentClassifier(kind, vocab_size=8, n_hidden=32, n_classes=8)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(rnn_steps):
        x, y = first_symbol_batch(64, g)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        memory_accuracy[kind] = (net(test_x).argmax(-1) == test_y).float().mean().item()
torch.set_num_threads(threads)
print(f"{rnn_steps} steps of 64 sequences each; accuracy on 1,000 new sequences:")
for kind, acc in memory_accuracy.items():
    print(f"  {kind.upper():<5} {acc:.1%}")

# %% [markdown]
# In this run (one seed, one setting) the GRU learned to carry the first symbol across all 14 steps,
# the plain RNN only partly, and the LSTM had not yet started within 400 steps: it is still at the
# level of a guess (the figures above). Gates make long memory *possible*; when a network starts to
# use it depends on the initialisation and the learning rate (the LSTM's forget gate starts half
# closed; a common remedy sets its bias to 1). A single run like this one ranks nothing; chapter 3
# shows how to compare models fairly, with several seeds and intervals.

# %% [markdown]
# **Transformer.** Every position looks at every other position *at once* through attention
# (chapter 2), so a whole sequence is processed in parallel; positional information is added
# because attention by itself ignores order. Stacks of attention + feed-forward blocks are what every
# large language model is made of.

# %% tags=["nbval-check-output"]
attn = MultiHeadAttention(d_model=32, n_heads=4)
tokens = torch.randn(4, 10, 32)  # (batch, positions, features)
print("attention:", tuple(tokens.shape), "->", tuple(attn(tokens).shape))

# %% [markdown]
# **BERT versus GPT.** Both are stacks of Transformer blocks; the difference is *which positions may
# look at which*. BERT (an *encoder*) lets every token see the whole sentence, which suits
# understanding tasks: classification, search, tagging. GPT (a *decoder*) lets a token see only
# itself and the tokens before it — a **causal mask** — so it can be trained to predict the next
# token and then generate text one token at a time. A `1` below means "row may look at column".

# %% tags=["nbval-check-output"]
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

# %% tags=["nbval-check-output"]
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

# %% tags=["nbval-check-output"]
with torch.device("meta"):
    gpt2_on_meta = GPT(get_config("gpt2"))
real = sum(p.numel() for p in gpt2_on_meta.parameters())
print(f"GPT-2 built on the meta device: {real:,} parameters; the formula says {counts['gpt2']:,}")

# %% [markdown]
# Where do the parameters sit? The embedding table grows with $V d$ (vocabulary times width), the
# blocks with about $12 d^2 L$, so the answer depends on the vocabulary against the width and depth.
# Next to the published models, the plot shows two small ones: notebook 3.6's GPT (a 1,024-token
# vocabulary) and a 2-block model of width 128 with GPT-2's 50,257-token vocabulary.

# %%
shapes = {
    "GPT-2 vocab, d=128, L=2": get_config("gpt2", n_layer=2, n_head=4, d_model=128),
    "notebook 3.6's GPT": pretrained.bbc_recipe(fast=False).gpt_config(pretrained.bbc_recipe(fast=False).vocab_size),
    **{name: get_config(name) for name in counts},
}
embedding_share = {}
for name, cfg in shapes.items():
    emb = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_weights else 2)
    emb += cfg.block_size * cfg.d_model if cfg.positions == "learned" else 0
    embedding_share[name] = emb / cfg.num_parameters()
names, shares = list(embedding_share), np.array(list(embedding_share.values()))
fig, ax = plt.subplots(figsize=(7, 3.6))
ax.barh(names, 1 - shares, label="blocks (attention + MLP + norms)")
ax.barh(names, shares, left=1 - shares, label="embeddings")
ax.invert_yaxis()
ax.set_xlabel("share of all parameters")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)  # below the axes, clear of the bars
ax.set_title("Where the parameters are")
plt.show()
for name, share in embedding_share.items():
    print(f"{name:<26} {shapes[name].num_parameters():>15,} parameters, {share:6.1%} in embeddings")

# %% [markdown]
# A small model with a large vocabulary is mostly embedding table (the top bar). With a small
# vocabulary, as in notebook 3.6, the blocks hold most of the parameters even in a small model. In
# GPT-2 124M the embeddings hold about a third, and their share falls as the models grow wider and
# deeper ($d^2 L$ outgrows $V d$); Llama 2 7B, whose output layer is a second $V \times d$ matrix,
# still keeps most of its parameters in the blocks.

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

# %% tags=["nbval-check-output"]
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

# %% tags=["nbval-check-output"]
print(f"compute-optimal tokens per parameter: {model_costs.CHINCHILLA_TOKENS_PER_PARAMETER}")
print(f"{'model':<12} {'tokens (Chinchilla)':>20} {'training FLOPs':>15}")
for name, n in counts.items():
    tokens = model_costs.chinchilla_tokens(n)
    print(f"{name:<12} {tokens:>20.3g} {model_costs.training_flops(n, tokens):>15.3g}")

# %% [markdown] tags=["answer", "points=2"]
# ### Question 1.5a — what a larger model costs to train
# Llama 2 7B has about 54 times the parameters of GPT-2 124M (the parameter table of 1.3). Using the table
# above, how many times the training compute does it need when both are trained compute-optimally, and why
# is that factor so much larger than 54? By the same rule, what would a model ten times larger than Llama 2
# 7B cost?
#
# YOUR ANSWER HERE

# %% [markdown]
# ### Exercise 1.3 — a compute-optimal plan
# The two rules also work the other way round. Given a budget of $C$ FLOPs, $C = 6ND$ and
# $D = rN$ ($r$ tokens per parameter) leave one unknown: $C = 6 r N^2$. Write
# `compute_optimal_plan(flops, tokens_per_parameter=20)`, returning the pair `(n_params, n_tokens)`.
# The check compares it with a numerical solution of `model_costs.training_flops(N, D) == C` on six
# budgets, two of them at other ratios than 20.

# %% tags=["exercise"]
def compute_optimal_plan(flops: float, tokens_per_parameter: float = 20.0) -> tuple[float, float]:
    """(parameters, tokens) that spend `flops` with 6 N D FLOPs at `tokens_per_parameter` tokens each."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch01 import check_compute_optimal_plan

check_compute_optimal_plan(compute_optimal_plan)

# %% [markdown]
# Two published models, planned again with their own budgets. Chinchilla itself was trained with 70
# billion parameters on 1.4 trillion tokens, 20 tokens per parameter, so its plan gives it back.
# GPT-3 (Brown et al., 2020) spent its budget on 175 billion parameters and 300 billion tokens. (The
# cell runs your function, so it stops with `NotImplementedError` until you have solved the exercise.)

# %% tags=["raises-exception"]
published_runs = {"Chinchilla": (70e9, 1.4e12), "GPT-3": (175e9, 300e9)}  # (parameters, training tokens)
print(f"{'model':<11} {'FLOPs (6ND)':>12} {'N published':>12} {'D published':>12} {'N planned':>10} {'D planned':>10}")
for name, (n, d) in published_runs.items():
    budget = model_costs.training_flops(n, d)
    n_plan, d_plan = compute_optimal_plan(budget)
    print(f"{name:<11} {budget:>12.3g} {n:>12.3g} {d:>12.3g} {n_plan:>10.3g} {d_plan:>10.3g}")
gpt3_plan = compute_optimal_plan(model_costs.training_flops(*published_runs["GPT-3"]))
print(f"GPT-3's plan: {gpt3_plan[0] / 175e9:.2f} x its parameters, {gpt3_plan[1] / 300e9:.1f} x its tokens")

# %% [markdown]
# By the rule, GPT-3's budget would have been better spent on a model of under a third of its size,
# trained on more than three times the tokens (the last line): GPT-3 was large for its data.

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
# Arithmetic is one of four resources. A model's weights must also be **held in memory** and
# **moved** to the arithmetic units: each step of generating a token reads every weight once, so
# memory bandwidth often limits speed more than FLOP/s do. Checkpoints and training data live on
# **storage**, and a run spread over many machines exchanges gradients over the **network** at every
# step (notebook 3.7). Here is the memory bandwidth of this machine, measured by copying a large
# tensor, next to the processors large models are trained on:

# %%
bandwidth = model_costs.measure_memory_bandwidth(device, n_bytes=pick(fast=32, full=512) * 2**20)
print(f"this machine ({device.type}): {best / 1e12:.3f} TFLOP/s (fp32 matmul), memory bandwidth "
      f"{bandwidth / 1e9:,.1f} GB/s, {torch.get_num_threads()} threads")

# %% [markdown]
# | processor | dense 16-bit compute | memory | memory bandwidth | link between chips |
# |---|---|---|---|---|
# | NVIDIA A100 SXM (2020) | 312 TFLOP/s (bf16) | 80 GB HBM2e | 2.0 TB/s | NVLink 600 GB/s |
# | NVIDIA H100 SXM (2022) | 989 TFLOP/s (bf16) | 80 GB HBM3 | 3.35 TB/s | NVLink 900 GB/s |
# | Google TPU v4 (2021) | 275 TFLOP/s (bf16) | 32 GB HBM2 | 1.2 TB/s | inter-chip links in a 3D torus |
# | Google TPU v5p (2023) | 459 TFLOP/s (bf16) | 95 GB HBM2e | 2.76 TB/s | inter-chip links, 4,800 Gbit/s |
#
# (Vendors' data sheets; a laptop CPU reaches well under one TFLOP/s, as measured above.) Storage and
# network figures of the same era: an NVMe SSD reads a few GB/s, a data-centre network link carries
# 400 Gbit/s (50 GB/s), while a GPU's own memory moves several TB/s. That ladder explains the
# engineering of large runs: keep the weights and activations in GPU memory (chapter 1's memory
# sums decide how many GPUs a model needs), stream the data from storage ahead of time, and
# overlap the gradient exchange with computation.

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
recipe = pretrained.bbc_recipe()  # notebook 3.6's run: this model, these steps, these batches
gpt36 = GPT(recipe.gpt_config(recipe.vocab_size))
run = recipe.train_config()
n36 = gpt36.num_parameters()
tokens36 = run.max_steps * run.batch_size * run.grad_accum_steps * gpt36.config.block_size
plans = [
    ("notebook 3.6's GPT and its run", n36, tokens36),
    ("GPT-2 124M, compute-optimal", counts["gpt2"], model_costs.chinchilla_tokens(counts["gpt2"])),
    ("Llama-2-7B shape, compute-optimal", counts["llama2-7b"], model_costs.chinchilla_tokens(counts["llama2-7b"])),
]
print(f"{'plan':<36} {'parameters':>14} {'tokens':>9} {'this machine':>18} {'one H100':>12}")
for label, n, d in plans:
    here = model_costs.training_days(n, d, best, utilisation=UTILISATION)
    h100 = model_costs.training_days(n, d, H100_BF16_PEAK, utilisation=UTILISATION)
    print(f"{label:<36} {n:>14,} {d:>9.3g} {duration(here):>18} {duration(h100):>12}")

# %% [markdown]
# The first row is a run this course really does: notebook 3.6 trains exactly that model for
# exactly that many tokens. Instead of assuming a utilisation, we can measure: a few training steps
# of that model (forward, backward and AdamW, on batches of the same shape) give its throughput on
# this machine, and the run's length follows. Notebook 3.6 prints the throughput of the whole run
# next to this prediction.

# %%
measured = model_costs.measure_training_tokens_per_second(gpt36, run.batch_size, gpt36.config.block_size,
                                                    steps=pick(fast=2, full=5), device=device)
flops_per_token = gpt36.flops_per_token()
print(f"notebook 3.6's GPT: {n36:,} parameters, {tokens36:,} training tokens "
      f"({run.max_steps} steps of {run.batch_size} x {gpt36.config.block_size})")
print(f"measured here: {measured:,.0f} tokens/s, so the run takes about {duration(tokens36 / measured / 86_400)}")
print(f"that is {measured * flops_per_token / 1e9:,.1f} GFLOP/s of training ({flops_per_token / 1e6:.1f} MFLOP per "
      f"token), {measured * flops_per_token / best:.0%} of the best matrix-multiply rate measured above")

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
