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
# # 5.7 · Quantizing the real model: Q8_0, Q4_1, Q4_0 on SmolLM2
#
# Notebook 5.4 quantized small course models to int8. Real LLMs are shipped much smaller still:
# the SmolLM2-135M-Instruct file this course loads is a **GGUF** file (llama.cpp's format) whose
# large matrices are stored in **4 bits** per weight plus a little overhead. This notebook
#
# 1. opens that file and decodes one 4-bit block by hand, with the course's own dequantizer;
# 2. writes the block quantizers you need (exercises): Q8_0, Q4_1, and the nibble order of 4-bit blocks;
# 3. quantizes the whole model again, with `course_lib`'s own quantizers, to Q8_0, Q4_1 and Q4_0,
#    and measures for each (plus PyTorch's dynamic int8 and float32) the size, the perplexity on
#    held-out BBC News text, and the accuracy on a small topic task.

# %% tags=["imports"]
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from course_lib import pick, pretrained, seed_everything
from course_lib.compress import (
    fake_quantize_gguf,
    gguf_size_bytes,
    gguf_weights,
    model_size_bytes,
    quantize_dynamic_int8,
)
from course_lib.gguf_file import GGUFFile, dequantize, quantize
from course_lib.metrics import accuracy_interval, format_table, lm_perplexity
from course_lib.plots import use_course_style
from course_lib.smollm2 import gguf_path, load_smollm2, load_smollm2_tokenizer

use_course_style()
seed_everything(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 5.7.1 What is in the file
#
# A GGUF file holds metadata (the architecture, the tokenizer) and then every tensor's bytes, each
# with a **type**. Here are the types of SmolLM2's tensors and how many values each type holds:

# %% tags=["nbval-check-output"]
gguf = GGUFFile(gguf_path())
by_type: dict[str, list[int]] = {}
for info in gguf.tensors.values():
    counts = by_type.setdefault(info.type.name, [0, 0, 0])
    counts[0] += 1
    counts[1] += info.n_elements
    counts[2] += info.nbytes
display(
    format_table(
        [
            {"type": t, "tensors": n, "values": f"{v:,}", "bytes": f"{b:,}", "bits per value": f"{8 * b / v:.2f}"}
            for t, (n, v, b) in sorted(by_type.items())
        ]
    )
)
file_mb = gguf_path().stat().st_size / 1e6
print(f"file size: {file_mb:.1f} MB for {sum(v for _, v, _ in by_type.values()) / 1e6:.1f} M values")

# %% [markdown]
# The big matrices are **Q4_1** and the small norm weights stay float32. All the block types that
# `course_lib` implements cut a row of weights into **blocks of 32 values**, and store per block:
#
# | type | per block | value | bytes per 32 values | bits per value |
# |---|---|---|---|---|
# | Q8_0 | scale `d` (float16), 32 int8 `q` | `q * d` | 2 + 32 = 34 | 8.5 |
# | Q4_0 | scale `d` (float16), 32 four-bit `q` (0..15) | `(q - 8) * d` | 2 + 16 = 18 | 4.5 |
# | Q4_1 | scale `d`, minimum `m` (float16), 32 four-bit `q` | `q * d + m` | 2 + 2 + 16 = 20 | 5.0 |
#
# The scale is per block, so one outlier weight only coarsens the 31 values of its own block. Q4_1
# spends 2 more bytes per block on a minimum, so its 16 levels span exactly the block's range
# `[min, max]`; Q4_0's levels are symmetric around zero. The table above agrees: its Q4_1 row is
# 5.00 bits per value.
#
# Here is the first block of the first attention matrix, decoded by hand: 20 bytes.

# %% tags=["nbval-check-output"]
name = "blk.0.attn_q.weight"
info = gguf.info(name)
raw = gguf.raw(name)  # uint8, all the tensor's bytes
block = raw[:20]
d = block[0:2].view(np.float16)[0]  # scale
m = block[2:4].view(np.float16)[0]  # minimum
qs = block[4:20]  # 16 bytes = 32 four-bit codes
q = np.concatenate([qs & 0x0F, qs >> 4])  # low nibbles: values 0..15, high nibbles: values 16..31
by_hand = q.astype(np.float32) * np.float32(d) + np.float32(m)  # (32,)
library = dequantize(raw, info.type, info.shape)[0, :32]
print(f"{name}: {info.type.name}, shape {info.shape}, {info.nbytes:,} bytes")
print(f"d = {float(d):.6f}, m = {float(m):.6f}, codes = {q.tolist()}")
print("by hand == course_lib's dequantizer:", bool(np.array_equal(by_hand, library)))

# %% [markdown]
# ## 5.7.2 Exercises: writing the blocks
#
# **Exercise 1 (Q8_0).** Write `q8_0_block(x)`: 32 float32 values -> `(d, q)`, with `d` the largest
# absolute value divided by 127 and `q = round(x / d)` as `int8` (halves away from zero, as C's
# `roundf`). An all-zero block has `d = 0` and all `q = 0`.

# %% tags=["exercise"]
def q8_0_block(x):
    """One Q8_0 block: x (32,) float32 -> (d float, q (32,) int8) with x ~= q * d."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch05_real_llm import check_q8_0_block

check_q8_0_block(q8_0_block)

# %% [markdown]
# **Exercise 2 (Q4_1).** Write `q4_1_block(x)` -> `(d, m, q)`: the minimum `m`, the scale `d` that
# spreads the range `max - m` over the 16 codes, and the codes `q` (`uint8`, 0..15) rounded to the
# nearest level.

# %% tags=["exercise"]
def q4_1_block(x):
    """One Q4_1 block: x (32,) float32 -> (d, m, q (32,) uint8 in 0..15) with x ~= q * d + m."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch05_real_llm import check_q4_1_block

check_q4_1_block(q4_1_block)

# %% [markdown]
# **Exercise 3 (the nibble order).** A 4-bit block keeps two codes per byte. Write
# `unpack_nibbles(qs)`: 16 bytes -> the 32 codes in the block's order. (The cell that decoded the
# real block above shows the rule; the check tries bytes where the wrong order shows.)

# %% tags=["exercise"]
def unpack_nibbles(qs):
    """qs (16,) uint8 -> q (32,) uint8 in 0..15: byte j holds value j (low 4 bits) and j + 16 (high)."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch05_real_llm import check_unpack_nibbles

check_unpack_nibbles(unpack_nibbles)

# %% [markdown]
# ## 5.7.3 How much error each block type adds
#
# `course_lib.gguf_file.quantize` and `dequantize` implement all three types (tested to give the
# same bytes and values as the `gguf` package that llama.cpp ships). The first feed-forward matrix is
# stored as Q4_1; dequantized to float32, quantizing its values to Q4_1 again gives back exactly the
# same values; Q8_0 and Q4_0 move them. Here is the error on one matrix, as a share of the weights'
# own spread:

# %% tags=["nbval-check-output"]
w = gguf.dequantize("blk.0.ffn_gate.weight")  # (1536, 576): the first feed-forward matrix
errors = {}
for t in ("Q8_0", "Q4_1", "Q4_0"):
    back = dequantize(quantize(w, t), t, w.shape)
    errors[t] = float(np.sqrt(np.mean((back - w) ** 2)) / w.std())
    print(f"{t}: RMS error = {errors[t]:.4f} x the weights' standard deviation")

# %% [markdown]
# ## 5.7.4 The whole model, five ways
#
# Five versions of SmolLM2: **f32** (the file's weights as float32: the reference), **q8_0**,
# **q4_1**, **q4_0** (every Linear and embedding weight sent through that block type and back with
# `fake_quantize_gguf`: the model still computes in float32, so this measures the *accuracy* of a
# file of that type, not its speed), and PyTorch's **dynamic int8** from notebook 5.4 (int8
# weights and int8 matrix products on the fly).
#
# **Held-out text.** The BBC News test articles of chapter 4's topic split
# (`pretrained.bbc_topic_splits(pretrained.bbc_recipe(fast=False)).test`: the last 10 % of a fixed
# shuffle of the articles, with any article whose text is also in the training part removed). No
# chapter-4 fine-tuning trained on them. (SmolLM2 itself was trained on web text by its authors; we
# cannot rule out that some BBC articles were in it, so the perplexities compare the versions, they
# do not measure SmolLM2 on unseen text.)
#
# **Task.** Topic classification without training: the model reads the start of an article and
# `Topic (business, entertainment, politics, sport or tech):`, and its answer is whichever of the
# five topic words it gives the highest probability as the next token.

# %%
test_articles = pretrained.bbc_topic_splits(pretrained.bbc_recipe(fast=False)).test
tokenizer = load_smollm2_tokenizer()
model = load_smollm2("cpu")
WINDOW = 256
N_WINDOWS = pick(1, 6)  # windows of held-out text for the perplexity
N_TASK = pick(3, 30)  # articles for the topic task
PROMPT_TOKENS = pick(32, 96)  # article tokens each task prompt shows

stream = []
for a in test_articles:
    stream += tokenizer.encode(a.text + "\n\n")
    if len(stream) > N_WINDOWS * WINDOW:
        break
windows = [torch.tensor(stream[i * WINDOW : (i + 1) * WINDOW + 1]) for i in range(N_WINDOWS)]  # (W + 1,) each

TOPICS = ["business", "entertainment", "politics", "sport", "tech"]
topic_ids = [tokenizer.encode(" " + t) for t in TOPICS]
assert all(len(i) == 1 for i in topic_ids), "each topic word must be one token"
topic_ids = [i[0] for i in topic_ids]
rng = np.random.default_rng(0)
task = [test_articles[i] for i in rng.permutation(len(test_articles))[:N_TASK]]  # a fixed sample
prompts = [
    tokenizer.decode(tokenizer.encode(a.text)[:PROMPT_TOKENS])
    + "\n\nTopic (business, entertainment, politics, sport or tech):"
    for a in task
]
print(f"{len(test_articles)} held-out articles; perplexity on {N_WINDOWS} x {WINDOW} tokens, task on {N_TASK} articles")


@torch.no_grad()
def topic_accuracy(m) -> tuple[int, int]:
    """(correct, total) on the topic task: the topic word of highest next-token probability."""
    correct = 0
    for prompt, a in zip(prompts, task):
        idx = torch.tensor([tokenizer.encode(prompt)])  # (1, T)
        logits = m(idx)[0][0, -1]  # (V,) the next token after the prompt
        correct += TOPICS[int(logits[topic_ids].argmax())] == a.label
    return correct, len(task)


def evaluate(m) -> dict:
    """Log-perplexity of each window, and the task accuracy."""
    log_ppl = np.array([math.log(lm_perplexity(m, w, WINDOW)) for w in windows])  # (N_WINDOWS,)
    return {"log_ppl": log_ppl, "task": topic_accuracy(m)}


# %% [markdown]
# Each version is built, measured and dropped in turn (one 135M-parameter copy at a time):

# %%
results, sizes = {}, {}
for name in ["f32", "q8_0", "q4_1", "q4_0"]:
    m = model if name == "f32" else fake_quantize_gguf(model, name)
    if name in ("q8_0", "q4_1"):  # which weights come back unchanged: those the file stores as this type
        same = [k for k in gguf_weights(model) if torch.equal(m.get_parameter(k), model.get_parameter(k))]
        print(f"{name}: {len(same)} of {len(gguf_weights(model))} weights unchanged, e.g. {same[:1]}")
    sizes[name] = gguf_size_bytes(model, name)
    results[name] = evaluate(m)
    del m
qmodel = quantize_dynamic_int8(model)
sizes["dynamic int8"] = model_size_bytes(qmodel)
results["dynamic int8"] = evaluate(qmodel)
del qmodel

# %% [markdown]
# ## 5.7.5 The results
#
# Perplexity is `exp` of the mean log-perplexity over the windows. Because every version reads
# the same windows, the change against f32 is a *paired* difference: the interval is the mean
# difference in log-perplexity over windows +- 2 standard errors (turned into a percentage).

# %%
rows, base = [], results["f32"]["log_ppl"]
for name, r in results.items():
    ppl = math.exp(r["log_ppl"].mean())
    diff = r["log_ppl"] - base  # (N_WINDOWS,)
    se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    lo, hi = (math.exp(diff.mean() - 2 * se) - 1) * 100, (math.exp(diff.mean() + 2 * se) - 1) * 100
    c, n = r["task"]
    alo, ahi = accuracy_interval(c, n)
    rows.append(
        {
            "version": name,
            "size (MB)": f"{sizes[name] / 1e6:.0f}",
            "perplexity": f"{ppl:.2f}",
            "vs f32 (95% interval)": "-" if name == "f32" else f"{lo:+.1f}% .. {hi:+.1f}%",
            "topic accuracy": f"{c}/{n} ({alo:.0%} .. {ahi:.0%})",
        }
    )
display(format_table(rows))
ppl = {name: math.exp(r["log_ppl"].mean()) for name, r in results.items()}
print(
    f"RESULT quantization perplexity: f32 {ppl['f32']:.2f} | q8_0 {ppl['q8_0']:.2f} | "
    f"q4_1 {ppl['q4_1']:.2f} | q4_0 {ppl['q4_0']:.2f}"
)

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for name in results:
    ax.scatter(sizes[name] / 1e6, ppl[name], s=50)
    ax.annotate(name, (sizes[name] / 1e6, ppl[name]), textcoords="offset points", xytext=(6, 4))
ax.set_xlabel("size of the weights (MB)")
ax.set_ylabel("perplexity on held-out BBC text")
ax.set_title("SmolLM2-135M: size against perplexity")
ax.set_xlim(0, max(sizes.values()) / 1e6 * 1.15)
plt.show()

# %% [markdown]
# ## 5.7.6 What the numbers say

# %%
q4_0_change = (ppl["q4_0"] / ppl["f32"] - 1) * 100
q8_change = (ppl["q8_0"] / ppl["f32"] - 1) * 100
print(f"f32 -> q8_0: size x {sizes['q8_0'] / sizes['f32']:.2f}, perplexity {q8_change:+.1f}%")
print(f"f32 -> q4_1: size x {sizes['q4_1'] / sizes['f32']:.2f}, perplexity {(ppl['q4_1'] / ppl['f32'] - 1) * 100:+.1f}%")
print(f"f32 -> q4_0: size x {sizes['q4_0'] / sizes['f32']:.2f}, perplexity {q4_0_change:+.1f}%")
print(f"dynamic int8 stores {sizes['dynamic int8'] / 1e6:.0f} MB: its tied embedding stays float32 next to an int8 copy in lm_head")

# %% [markdown]
# * The **f32** model *is* the file, widened to float32. The file stores every matrix as Q4_1
#   except the token embedding (tied to the output layer), which it keeps as Q8_0 (the table in
#   5.7.1). So re-quantizing to Q4_1 gives back every Q4_1 matrix unchanged and moves only the
#   embedding, and Q8_0 gives back only the embedding (the counts printed above). Q8_0, with 256
#   levels per block, moves the weights very little (the RMS error in 5.7.3); compare its
#   perplexity change and interval in the table.
# * Of the block formats, **Q4_0** is the one that costs: its 16 levels are symmetric around zero,
#   so a block whose values are not centred wastes some of them; the table shows the perplexity
#   change and its interval. Whether the topic accuracy changes is within the intervals of so few
#   articles.
# * PyTorch's **dynamic int8** costs far more perplexity than any block format, Q4_0 included,
#   although it keeps 8 bits per weight. It is a different trade: it is what PyTorch can *run* in
#   int8 on a CPU, and it quantizes more than the weights. Each weight row shares one scale (576
#   or 1,536 values, where a block format gives every 32 values their own), and each layer's
#   *input* is rounded to 8 bits on the fly with one scale for the whole tensor, so a few large
#   activations, which language models are known to have in some features, squeeze every other
#   value into a handful of levels. The block formats touch only the weights; llama.cpp's kernels
#   dequantize each block on the fly inside the matrix product and keep the activations in
#   floating point.
#
# How we know the block formats are right: the course's tests (`tests/test_gguf_file.py` in the
# course repository) check that the bytes `course_lib` writes equal those of the `gguf` package,
# and that re-quantizing every tensor of the real file gives back the file's own bytes.
#
# ## Summary
#
# - A GGUF file stores each matrix in blocks of 32 values: Q8_0 with one scale per block, Q4_0
#   with one scale and 16 levels around zero, Q4_1 with a scale and a minimum. The exercises wrote
#   the blocks; the course's quantizers reproduce the file byte for byte.
# - On SmolLM2, Q8_0 costs next to no perplexity, Q4_1 (the file's own format) some and Q4_0 more;
#   PyTorch's dynamic int8, which also rounds each layer's input, costs far more than any of them
#   (the table and the `RESULT` line of 5.7.5).
# - Size falls with bits per weight; what a format costs is measured, not assumed: a perplexity
#   on held-out text with an interval, and a task score.
