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
# # 5.1 · Generating text
#
# Chapter 3 pretrained a small GPT on BBC News. A language model only ever predicts a probability
# for every possible next token; *generating* text means choosing one of those tokens, appending
# it and asking again. How that choice is made (the **decoding** strategy) changes the text as much
# as the model does. This notebook:
#
# 1. loads chapter 3's model and checks that generation is reproducible;
# 2. shows greedy decoding and why it loops, and a **repetition penalty** against the loops (an
#    exercise);
# 3. shows how **temperature** reshapes the next-token distribution;
# 4. explains **top-k** and **top-p** (nucleus) sampling (two exercises: the top-k filter and the
#    nucleus mask) and measures how many tokens a nucleus keeps on real text;
# 5. measures the trade-off between how likely and how varied the generated text is, for several
#    settings, against real articles;
# 6. puts it all in a panel with a prompt box and sliders.

# %% tags=["imports"]
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from course_lib import get_device, pick, pretrained, seed_everything
from course_lib.generation import continuation_nll, distinct_n, generate_text
from course_lib.metrics import format_table
from course_lib.plots import use_course_style
from course_lib.tokenizers import printable
from course_lib.widgets import generation_panel

use_course_style()
seed_everything(0)
torch.set_num_threads(1)  # a 2M-parameter model: one core is as fast as several, and leaves the rest free
device = get_device()

# %% [markdown]
# ## 5.1.1 The model
#
# `pretrained.bbc_gpt()` loads the GPT that notebook 3.6 trained and cached (or trains it with the
# same recipe if the cache is empty: minutes on a CPU in learner mode, seconds in fast
# mode). The validation articles were never seen in training; we take prompts from them.

# %%
model, tokenizer = pretrained.bbc_gpt(device=device)
recipe = pretrained.bbc_recipe()
_, val_docs = pretrained.bbc_documents(recipe)
print(f"{model.num_parameters():,} parameters, vocabulary {tokenizer.vocab_size:,} tokens, "
      f"context window {model.config.block_size} tokens; {len(val_docs)} validation articles")

# %% [markdown]
# `course_lib.generation.generate_text` wraps `GPT.generate` (chapter 2's KV-cached loop): it
# encodes the prompt, samples with a random generator seeded by `seed`, stops at the end-of-article
# token and returns only the new text. The same settings and seed always give the same text, which
# makes the comparisons below fair:

# %% tags=["nbval-check-output"]
prompt = "The government said"
a = generate_text(model, tokenizer, prompt, 30, temperature=1.0, seed=1)
b = generate_text(model, tokenizer, prompt, 30, temperature=1.0, seed=1)
c = generate_text(model, tokenizer, prompt, 30, temperature=1.0, seed=2)
print("same seed, same text:", a == b)
print("another seed, another text:", a != c)

# %% [markdown]
# The model reads at most `block_size` tokens. `generate_text` refuses a longer prompt with a
# message that says what to do, rather than silently dropping its beginning:

# %%
try:
    generate_text(model, tokenizer, "The government said " * model.config.block_size, 10)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## 5.1.2 Greedy decoding
#
# The simplest rule takes the most likely token every time (`temperature=0`). It needs no random
# numbers, and it tends to fall into loops: once a phrase is likely, repeating it makes it likelier
# still, and nothing random ever pushes the model out again.

# %%
prompts = ["The government said", "Shares in the company", "The film, which stars"]
for p in prompts:
    print(f"{p} ->{printable(generate_text(model, tokenizer, p, 50, temperature=0.0))!r}\n")

# %% [markdown]
# A common fix keeps decoding greedy but makes every token that is already in the text less
# likely: the **repetition penalty** of CTRL (Keskar et al., 2019), also in Hugging Face's
# `generate`. With a penalty $\theta > 1$, the logit $z_i$ of a token that has occurred becomes
# $z_i / \theta$ if it is positive and $z_i \cdot \theta$ if it is negative: either way smaller.
#
# ### Exercise 5.1.1 — a repetition penalty
# Write `repetition_penalty(logits, previous_ids, penalty)`: `logits` is a (B, V) float tensor of
# next-token logits, `previous_ids` a (B, T) long tensor of the ids each row has so far, `penalty`
# a number $\ge 1$. Return new (B, V) logits in which every token that occurs in its row's ids is
# penalised by the rule above, once however often it occurred; all other logits stay as they are.
# The check compares with the rule of transformers' `RepetitionPenaltyLogitsProcessor`.

# %% tags=["exercise"]
def repetition_penalty(logits, previous_ids, penalty):
    """(B, V) logits with every token already in the row's previous_ids (B, T) made less likely."""
    ### BEGIN SOLUTION
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, previous_ids, True)  # (B, V)
    smaller = torch.where(logits > 0, logits / penalty, logits * penalty)  # (B, V)
    return torch.where(seen, smaller, logits)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05 import check_repetition_penalty

check_repetition_penalty(repetition_penalty)

# %% [markdown]
# Greedy decoding with the penalty is the greedy loop above with one more step: predict, penalise what is
# already there, take the most likely token, append. `GPT.generate` does it with its
# `repetition_penalty` argument, the rule of the exercise (so the cell runs before the exercise is
# done). The cell prints distinct-2 (the share of different token pairs among
# all token pairs of the 50 new tokens: 1 means nothing repeats; 5.1.5 uses it again) without and
# with a penalty of 1.3.

# %%
def greedy_with_penalty(prompt: str, n_new: int, penalty: float) -> list[int]:
    """The n_new token ids greedy decoding adds to prompt, with a repetition penalty (1: none)."""
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)  # (1, T)
    out = model.generate(ids, n_new, temperature=0.0, repetition_penalty=penalty)  # (1, T + n_new)
    return out[0, ids.shape[1]:].tolist()


distinct2 = {1.0: [], 1.3: []}
for p in prompts:
    for theta in distinct2:
        new = greedy_with_penalty(p, 50, theta)
        distinct2[theta].append(distinct_n([new], 2))
        print(f"penalty {theta}: distinct-2 {distinct2[theta][-1]:.2f}  {p} ->{printable(tokenizer.decode(new))!r}")
    print()
plain, penalised = np.mean(distinct2[1.0]), np.mean(distinct2[1.3])
display(Markdown(
    f"Over the {len(prompts)} prompts the mean distinct-2 goes from {plain:.2f} without the penalty to "
    f"{penalised:.2f} with it ({'more' if penalised > plain else 'not more'} varied)."
))

# %% [markdown]
# The penalty is blunt. A token stays penalised by the same factor however long ago it occurred, so
# once most likely tokens have been used the old order returns and a loop can start again (look at
# the ends of the texts above); and it also punishes words that *should* repeat (names, "the",
# "said"), because it cannot tell which repetitions are wrong. Sampling, next, adds variety in a
# different way.

# %% [markdown]
# ## 5.1.3 Temperature
#
# Sampling draws the next token at random with the model's probabilities. Before the softmax the
# logits $z_i$ are divided by a **temperature** $T$:
#
# $$p_i = \frac{e^{z_i / T}}{\sum_j e^{z_j / T}}.$$
#
# $T = 1$ is the model's own distribution; $T < 1$ sharpens it towards the most likely tokens
# ($T \to 0$ is greedy); $T > 1$ flattens it, giving unlikely tokens more chances. The entropy
# $H = -\sum_i p_i \ln p_i$ in the titles measures the spread: $\ln V$ would be a uniform guess
# over all $V$ tokens.

# %%
def token_label(i: int) -> str:
    """A token id as readable text for plot labels: spaces as a middle dot, newlines as \\n."""
    return printable(tokenizer.decode([i])).replace(" ", "·").replace("\n", "\\n")


context = "The Prime Minister said the"
with torch.no_grad():
    logits = model(torch.tensor([tokenizer.encode(context)], device=device))[0][0, -1].float().cpu()  # (V,)
top = torch.topk(logits, 12).indices
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharey=True, layout="constrained")
for ax, T in zip(axes, (0.5, 1.0, 1.5)):
    probs = torch.softmax(logits / T, dim=-1)
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum())
    ax.bar(range(len(top)), probs[top].numpy())
    ax.set_xticks(range(len(top)), [token_label(int(i)) for i in top], rotation=70)
    ax.set_title(f"T = {T}\nH = {entropy:.2f} nats, top-12 mass {float(probs[top].sum()):.2f}", fontsize=10)
axes[0].set_ylabel("probability")
fig.suptitle(f"The next token after {context!r} (ln V = {math.log(tokenizer.vocab_size):.2f})")
plt.show()

# %% [markdown]
# ## 5.1.4 Top-k and top-p
#
# Even at $T = 1$ the many unlikely tokens of the vocabulary together hold real probability (in
# the figure above, everything outside the twelve bars: one minus the top-12 mass in each title),
# and one bad draw from that tail can derail a sentence. Two rules cut the tail off before sampling:
#
# - **top-k** keeps the $k$ most likely tokens;
# - **top-p** (nucleus sampling) keeps the smallest set of most likely tokens whose probabilities
#   add up to at least $p$.
#
# The difference matters because the model is sometimes sure and sometimes not. After
# *"Prime Minister Tony"* one token is nearly certain; at the start of a sentence many are
# plausible. A fixed $k$ is too many in the first case and too few in the second; a nucleus adapts.
#
# Both are written as filters on the logits: a token that is cut gets the logit $-\infty$, so the
# softmax gives it probability exactly 0 and the rest share the probability among themselves.
#
# ### Exercise 5.1.2 — the top-k filter
# Write `top_k_logits(logits, k)`: `logits` is a (B, V) float tensor, `k` a positive integer.
# Return (B, V) logits in which every logit smaller than its row's $k$-th largest is replaced by
# $-\infty$ (`float("-inf")`); the others stay. Tokens tied with the $k$-th largest are kept, and a
# `k` larger than V keeps everything. The check compares with the top-k rule of
# `course_lib.gpt.sample_next_token`.

# %% tags=["exercise"]
def top_k_logits(logits, k):
    """(B, V) logits with everything below the row's k-th largest set to -inf."""
    ### BEGIN SOLUTION
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05 import check_top_k_logits

check_top_k_logits(top_k_logits)

# %% [markdown]
# The nucleus is the same idea with a threshold on probability mass instead of a count.
#
# ### Exercise 5.1.3 — the nucleus
# Write `nucleus_mask(probs, p)`: `probs` is a (B, V) tensor whose rows are next-token
# distributions (each sums to 1), `p` a number in (0, 1]. Return a bool tensor of the same shape,
# `True` for the tokens top-p sampling keeps in each row: the smallest set of most likely tokens
# whose probabilities add up to at least `p`. The token that takes the running total to `p` or past
# it is part of the set, and the most likely token always is. The check compares with the rule of
# `course_lib.gpt.sample_next_token`, which `GPT.generate` uses.

# %% tags=["exercise"]
def nucleus_mask(probs, p):
    """(B, V) bool: True for the tokens of each row that top-p sampling keeps."""
    ### BEGIN SOLUTION
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V) most likely first
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V) probability ranked above each token
    keep_sorted = mass_before < p  # (B, V) in probability order
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to vocabulary order
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05 import check_nucleus_mask

check_nucleus_mask(nucleus_mask)

# %% [markdown]
# We measure the nucleus size for $p = 0.9$ at every position of some validation articles (the
# same rule as the exercise, written inline):

# %%
n_articles = pick(fast=2, full=20)
T_ctx = model.config.block_size
windows = [tokenizer.encode(doc)[:T_ctx] for doc in val_docs[:n_articles]]
windows = torch.tensor([w for w in windows if len(w) == T_ctx], device=device)  # (n, T)
with torch.no_grad():
    probs = torch.softmax(model(windows)[0].float(), dim=-1)  # (n, T, V): the next-token distributions
sorted_probs = probs.sort(dim=-1, descending=True).values
nucleus = ((sorted_probs.cumsum(-1) - sorted_probs) < 0.9).sum(-1).flatten().cpu().float()  # kept at p = 0.9
print(f"{len(nucleus):,} positions: nucleus size for p = 0.9 has median {int(nucleus.median())}, "
      f"10th percentile {int(nucleus.quantile(0.1))}, 90th percentile {int(nucleus.quantile(0.9))}, "
      f"range {int(nucleus.min())} to {int(nucleus.max())} of {tokenizer.vocab_size:,} tokens; "
      f"{float((nucleus == 1).float().mean()):.0%} of positions keep a single token")
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.hist(nucleus.numpy(), bins=np.logspace(0, math.log10(tokenizer.vocab_size), 30))
ax.set_xscale("log")
ax.set_xlabel("tokens in the nucleus (p = 0.9)")
ax.set_ylabel("positions")
ax.set_title("How many tokens top-p keeps on real validation text")
plt.show()

# %% [markdown]
# The spread is wide: a fixed top-k can be right on average and wrong at most positions.
#
# ## 5.1.5 Likely or varied: measuring the trade-off
#
# Two numbers describe a set of generated continuations:
#
# - **distinct-2**: the share of different token pairs among all token pairs in the samples
#   (1 = nothing repeats, close to 0 = stuck in a loop);
# - the **negative log-likelihood** (NLL, nats per token) the model itself, at $T = 1$, gives the
#   generated tokens: low means text the model finds typical.
#
# Each setting continues the same prompts: the first 16 tokens of validation articles. As a
# reference we score the articles' *real* continuations the same way. Real text is not the most
# likely text: people choose surprising words all the time.

# %%
n_prompts, n_prompt_tokens, n_new = pick(fast=4, full=64), 16, pick(fast=16, full=60)
streams = [tokenizer.encode(doc) for doc in val_docs[: 2 * n_prompts]]
streams = [s for s in streams if len(s) >= n_prompt_tokens + n_new][:n_prompts]
prompt_ids = torch.tensor([s[:n_prompt_tokens] for s in streams], device=device)  # (n, 16)
real = torch.tensor([s[: n_prompt_tokens + n_new] for s in streams], device=device)  # (n, 16 + n_new)

settings = {
    "greedy": dict(temperature=0.0),
    "greedy, penalty 1.3": dict(temperature=0.0, repetition_penalty=1.3),
    "T = 0.7": dict(temperature=0.7),
    "T = 1.0 (pure sampling)": dict(temperature=1.0),
    "T = 1.0, top-k 40": dict(temperature=1.0, top_k=40),
    "T = 1.0, top-p 0.9": dict(temperature=1.0, top_p=0.9),
    "T = 1.5": dict(temperature=1.5),
    "T = 1.5, top-p 0.9": dict(temperature=1.5, top_p=0.9),
}
rows, samples = [], {}
for name, kw in settings.items():
    g = torch.Generator(device=device).manual_seed(0)
    out = model.generate(prompt_ids, n_new, generator=g, **kw)  # (n, 16 + n_new)
    new = out[:, n_prompt_tokens:].tolist()
    samples[name] = out[0, n_prompt_tokens:].tolist()
    rows.append({"decoding": name, "distinct-2": distinct_n(new, 2),
                 "NLL (nats/token)": continuation_nll(model, out, n_prompt_tokens)})
rows.append({"decoding": "real continuation", "distinct-2": distinct_n(real[:, n_prompt_tokens:].tolist(), 2),
             "NLL (nats/token)": continuation_nll(model, real, n_prompt_tokens)})
format_table(rows, floatfmt=".3f").show()

# %%
fig, ax = plt.subplots(figsize=(7, 5.2))
markers = iter("osD^vP<>Xh")
for r in rows:  # one legend entry per setting: labels beside the points would overlap where points crowd
    is_real = r["decoding"] == "real continuation"
    ax.scatter(r["NLL (nats/token)"], r["distinct-2"], s=140 if is_real else 60, zorder=3, label=r["decoding"],
               marker="*" if is_real else next(markers), color="black" if is_real else None)
ax.set_xlabel("NLL under the model (nats/token): lower = more typical for the model")
ax.set_ylabel("distinct-2: higher = more varied")
ax.set_title(f"{len(streams)} prompts x {n_new} new tokens per setting")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9)  # below the axes
fig.tight_layout()
plt.show()

# %% [markdown]
# How to read it; the cell below states the figures of this run from the table:
#
# - Greedy decoding should have the lowest NLL and the lowest distinct-2: very "likely", very
#   repetitive. This is the loop of 5.1.2, now measured.
# - Raising the temperature moves along a line from repetitive-and-likely to
#   varied-and-unlikely: at high temperature the model produces text it would itself find improbable.
# - The real continuations sit in between: human text is more varied than greedy text and
#   less predictable than the model's favourite phrases. A setting whose point lies close to the
#   real one produces text that is, by these two measures, statistically like real text.
# - Truncation (top-k, top-p) lowers the NLL of samples at the same temperature, because the
#   unlikely tail is never drawn.
# - The repetition penalty should move greedy decoding towards more variety without sampling at all,
#   by making the tokens already used less likely.

# %%
by_name = {r["decoding"]: r for r in rows}
real_row = by_name["real continuation"]


def gap_to_real(r: dict) -> float:
    """Distance to the real continuations' point, each axis as a relative difference."""
    return math.hypot(r["NLL (nats/token)"] / real_row["NLL (nats/token)"] - 1,
                      r["distinct-2"] / real_row["distinct-2"] - 1)


generated = [r for r in rows if r is not real_row]
closest = sorted(generated, key=gap_to_real)
lowest_nll = min(generated, key=lambda r: r["NLL (nats/token)"])["decoding"]
least_varied = min(generated, key=lambda r: r["distinct-2"])["decoding"]
t1, t1_p = by_name["T = 1.0 (pure sampling)"], by_name["T = 1.0, top-p 0.9"]
greedy, penalised = by_name["greedy"], by_name["greedy, penalty 1.3"]
display(Markdown(
    f"In this run the lowest NLL is **{lowest_nll}**'s ({by_name[lowest_nll]['NLL (nats/token)']:.2f} nats/token) "
    f"and the lowest distinct-2 **{least_varied}**'s ({by_name[least_varied]['distinct-2']:.3f}); the real "
    f"continuations score {real_row['NLL (nats/token)']:.2f} and {real_row['distinct-2']:.3f}. "
    f"Closest to them: **{closest[0]['decoding']}**, then {closest[1]['decoding']} "
    f"(relative distances {gap_to_real(closest[0]):.3f} and {gap_to_real(closest[1]):.3f}). "
    f"Top-p 0.9 at T = 1 changes the NLL from {t1['NLL (nats/token)']:.2f} to {t1_p['NLL (nats/token)']:.2f}; "
    f"the repetition penalty moves greedy decoding's distinct-2 from {greedy['distinct-2']:.3f} to "
    f"{penalised['distinct-2']:.3f} and its NLL from {greedy['NLL (nats/token)']:.2f} to "
    f"{penalised['NLL (nats/token)']:.2f}. "
    f"These are {len(streams)} prompts and one sampling seed: neighbours whose distances differ in the "
    "second decimal can swap places with another seed. Nucleus sampling with *p* around 0.9 is also a "
    "common default for large models."
))

# %% [markdown]
# None of this makes a model this small (the first cell printed its size) write sensible news: it
# produces plausible phrases and the BBC's style, not facts. Here is one sample per setting, for
# the first prompt:

# %%
print("prompt:", repr(printable(tokenizer.decode(prompt_ids[0].tolist()))), "\n")
for name, ids in samples.items():
    print(f"{name:<24} {printable(tokenizer.decode(ids))!r}\n")

# %% [markdown]
# ## 5.1.6 A generation panel
#
# `course_lib.widgets.generation_panel` puts the prompt and every knob of this notebook in one
# place. Edit the prompt, move the sliders and press **Generate**. Settings to try: temperature 0
# (greedy), then 0.3, 0.8 and 1.5 with everything else fixed; top-k 1 (greedy again) and top-k 5;
# top-p 0.5 against 1.0; the same settings with different seeds. A prompt in the style of the
# training data ("Shares in", "The film") works better than a question: this model has only read
# news articles.
#
# (On the course website the panel shows its first result only; run the notebook to use it.)

# %%
panel = generation_panel(model, tokenizer, prompt="The government said", max_new_tokens=60,
                         temperature=0.8, top_k=50)
display(panel.widget)

# %% [markdown]
# ## Summary
#
# - Generation repeats one step: predict a distribution over the next token, choose one, append.
#   The choice rule matters as much as the model.
# - Greedy decoding is deterministic and loops. Temperature trades likelihood for variety;
#   top-k and top-p cut off the unlikely tail, and top-p adapts to how sure the model is (5.1.4
#   printed the range of its nucleus on real text); the exercises wrote the top-k filter and the
#   nucleus mask. A repetition penalty breaks greedy loops, at the price of also punishing
#   repetitions that are right.
# - Measured on validation prompts, real text lies between greedy decoding (too repetitive, too
#   predictable) and high-temperature sampling (too random); 5.1.5 names the setting closest to it.
# - A small model trained for minutes on a CPU writes fluent-looking fragments, not reliable
#   content. The same decoding rules apply unchanged to the largest models.
