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
# # 4.6 · Supervised fine-tuning of SmolLM2 with LoRA
#
# Notebook 4.5 measured SmolLM2-135M-Instruct on held-out BBC articles before any tuning. Here it is
# fine-tuned to write BBC-style headlines (and name topics) from chat-format examples:
#
# 1. the examples: a conversation whose last message is the answer, the prompt masked from the loss;
# 2. LoRA on the attention of the last blocks only: the frozen blocks below run once per example, and
#    their output is cached, so a training step runs the last blocks alone;
# 3. training with the course's Trainer (checkpoints, resume), then ROUGE-L with bootstrap intervals
#    next to the zero-shot model and the lead-8 baseline, and paired intervals of the differences;
# 4. merging the adapters into the weights, and swapping adapters;
# 5. what it cost on this CPU: trainable parameters, memory, time per step, tokens seen, for full
#    fine-tuning of the last blocks and for LoRA of several ranks.

# %% tags=["imports"]
import functools
import statistics
import time

import torch
from torch.utils.data import DataLoader

from course_lib import pick, seed_everything
from course_lib.chat import ChatModel
from course_lib.chat_template import render_chat
from course_lib.datasets import bbc_news
from course_lib.env import cache_dir
from course_lib.frozen_trunk import CachedSFTLoss, cached_examples, check_frozen_below, trunk_collate
from course_lib.instruct import instruction_loss
from course_lib.lm_data import IGNORE_INDEX, pad_collate
from course_lib.lora import apply_lora, lora_state_dict, mark_only_lora_trainable, merge_lora, unmerge_lora
from course_lib.metrics import bootstrap_interval, format_table, rouge_l
from course_lib.model_costs import training_memory
from course_lib.plots import use_course_style
from course_lib.post_training import (
    chat_sft_example,
    headline_messages,
    heldout_split,
    lead,
    load_adapter,
    masked_share,
    save_adapter,
    topic_messages,
)
from course_lib.smollm2 import load_smollm2, load_smollm2_tokenizer
from course_lib.tokenizers import printable
from course_lib.trainer import TrainConfig, Trainer
from course_lib.training_plots import plot_curves, smooth

use_course_style()
seed_everything(0)
model = load_smollm2("cpu")
tokenizer = load_smollm2_tokenizer()
N_TEST = pick(6, 100)
N_TRAIN = pick(8, 960)
train_articles, test_articles = heldout_split(bbc_news(dedupe=True), n_test=N_TEST, seed=0)  # as in 4.5
print(f"{len(train_articles)} articles to train on, {len(test_articles)} held out")

# %% [markdown]
# ## 4.6.1 Chat-format examples with the prompt masked
#
# Each article gives a headline conversation and a topic conversation. Only the answer and its
# closing `<|im_end|>` carry a loss; everything before them is `IGNORE_INDEX`. Articles are cut to
# their first 40 words to keep sequences short on a CPU.

# %% [markdown]
# **Exercise.** Build one example from token ids, with labels already shifted as the course's GPT
# wants them (`labels[t]` is the token after `input_ids[t]`) and -100 wherever that token is in the
# prompt. `end_id` is the `<|im_end|>` that closes the answer.

# %% tags=["exercise"]
def sft_labels(prompt_ids, answer_ids, end_id):
    """(input_ids, labels) of prompt + answer + [end_id], shifted by one, the prompt masked."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch04 import check_sft_labels

check_sft_labels(sft_labels)

# %%
N_WORDS = 40
pool = train_articles[:N_TRAIN]
examples = [chat_sft_example(headline_messages(a, N_WORDS), tokenizer) for a in pool]
examples += [chat_sft_example(topic_messages(a, N_WORDS), tokenizer) for a in pool[: N_TRAIN // 4]]
ids, labels = examples[0]
print(printable(tokenizer.decode(ids)))
answer = [t for t in labels if t != IGNORE_INDEX]
print("trained on:", repr(tokenizer.decode(answer)))
lengths = [len(i) for i, _ in examples]
print(f"{len(examples)} examples, {statistics.mean(lengths):.0f} tokens on average (max {max(lengths)}); "
      f"{statistics.mean(masked_share(e) for e in examples):.0%} of label positions masked")

# %% tags=["nbval-check-output"]
end_id = tokenizer.token_to_id("<|im_end|>")
print("every example's last label is <|im_end|>:", all(lab[-1] == end_id for _, lab in examples))
print("every example's first label is masked:", all(lab[0] == IGNORE_INDEX for _, lab in examples))

# %% [markdown]
# **Exercise.** The loss these labels feed (the course's GPT computes it inside `instruction_loss`):
# the mean next-token cross-entropy over the positions whose label is not `IGNORE_INDEX`. The labels
# are already shifted, so `logits[b, t]` predicts `labels[b, t]`. Write it from `log_softmax`, without
# `cross_entropy`, and mind what the mean is over: every kept position of the batch counts once.

# %% tags=["exercise"]
def sft_loss(logits, labels):
    """logits (B, T, V), labels (B, T) with -100 where masked -> the mean loss over unmasked labels."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch04_real_llm import check_sft_loss

check_sft_loss(sft_loss)

# %% [markdown]
# ## 4.6.2 Zero-shot headlines (the model before tuning)

# %%
def headlines(m):
    chat_model = ChatModel(m, tokenizer, template=render_chat)
    return [chat_model.chat(headline_messages(a, N_WORDS, answer=False), max_new_tokens=24)
            for a in test_articles]


def interval(scores):
    lo, hi = bootstrap_interval(scores, seed=0)
    mean = sum(scores) / len(scores)
    return mean, f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


zero_shot = headlines(model)
zs_scores = [rouge_l(w, a.headline) for w, a in zip(zero_shot, test_articles)]
lead_scores = [rouge_l(lead(a.body, 8), a.headline) for a in test_articles]

# %% [markdown]
# ## 4.6.3 LoRA on the last blocks, trained with the Trainer
#
# LoRA adds `B @ A` (rank r) to the attention projections of the last `N_BLOCKS` blocks; every other
# weight is frozen. So the residual stream entering the first adapted block is a fixed function of
# each example's tokens: `cached_examples` runs the frozen blocks once per example and keeps it, and
# `CachedSFTLoss` runs only the adapted blocks, and the output layer only at the answer's positions
# (the unmasked share printed above). The loss and the gradients are the ones the whole model gives
# (the tests check both to 1e-5); section 4.6.5 measures what it saves.
# The Trainer writes its checkpoint to `out_dir`; `resume=True` continues an interrupted run.

# %%
N_BLOCKS, RANK = pick(2, 6), 8
first = model.config.n_layer - N_BLOCKS
targets = [f"h.{i}.attn.{p}" for i in range(first, model.config.n_layer) for p in ("qkv", "proj")]
apply_lora(model, targets=targets, r=RANK, alpha=2 * RANK)
n_trainable = mark_only_lora_trainable(model)
before = {k: v.clone() for k, v in lora_state_dict(model).items()}
print(f"LoRA r={RANK} on {len(targets)} layers: {n_trainable:,} trainable parameters "
      f"({n_trainable / model.num_parameters():.3%} of the model)")

check_frozen_below(model, first)  # caching is exact only if nothing below block `first` trains
t0 = time.perf_counter()
items = cached_examples(model, examples, start=first, progress=True)
cache_s = time.perf_counter() - t0
print(f"blocks 0-{first - 1} run once for {len(items)} examples in {cache_s:.0f} s "
      f"({sum(i['residual'].numel() for i in items) * 4 / 2**20:.0f} MiB kept)")

pad_id = tokenizer.token_to_id("<|endoftext|>")
loader = DataLoader(items, batch_size=pick(2, 8), shuffle=True, generator=torch.Generator().manual_seed(0),
                    collate_fn=functools.partial(trunk_collate, pad_id=pad_id))
out_dir = cache_dir("runs", "4.6-sft-lora", "fast" if N_TRAIN < 100 else "full")
config = TrainConfig(max_steps=pick(2, 300), lr=1e-3, min_lr=1e-4, warmup_steps=pick(0, 10),
                     weight_decay=0.0, eval_every=10_000, log_every=1, save_every=None, device="cpu",
                     out_dir=str(out_dir), progress=True)
t0 = time.perf_counter()
history = Trainer(model, config, loader, loss_fn=CachedSFTLoss(first)).fit()
train_s = time.perf_counter() - t0
epochs = config.max_steps * loader.batch_size / len(items)
print(f"{config.max_steps} steps ({epochs:.1f} passes over the examples) in {train_s:.0f} s; "
      f"loss {history[0]['train_loss']:.3f} -> {history[-1]['train_loss']:.3f}")
losses = [h["train_loss"] for h in history]  # one per step
fig = plot_curves({"each step (8 examples)": losses, "mean of the last 20 steps": smooth(losses, 20)},
                  ylabel="cross-entropy on the answer tokens", title="SFT with LoRA: training loss")

# %%
sft = headlines(model)
sft_scores = [rouge_l(w, a.headline) for w, a in zip(sft, test_articles)]
for z, s, a in list(zip(zero_shot, sft, test_articles))[:3]:
    print(f"real:      {a.headline}\nzero-shot: {z}\nSFT:       {s}\n")


# %% [markdown]
# ## 4.6.4 Merging and swapping adapters
#
# Merging adds `B @ A * alpha / r` into each frozen weight: the merged model computes the same
# function with no extra matrix products. Saved adapters are a few hundred KB; loading the initial
# (untrained) adapter gives the original model back.

# %% [markdown]
# **Exercise.** The merged weight of one layer: from the frozen `W` (out, in), the adapter's `A`
# (r, in) and `B` (out, r), `alpha` and `r`, return the weight the merged layer multiplies by.

# %% tags=["exercise"]
def merge_lora_weight(W, A, B, alpha, r):
    """W (out, in), A (r, in), B (out, r) -> the merged weight (out, in), a new tensor."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch04_real_llm import check_merge_lora_weight

check_merge_lora_weight(merge_lora_weight)

# %%
x = torch.tensor([examples[0][0]])
with torch.no_grad():
    adapted = model(x)[0]
    merge_lora(model)
    merged = model(x)[0]
    unmerge_lora(model)
print(f"merged vs adapter logits: max |difference| = {(merged - adapted).abs().max():.2e}")
assert torch.allclose(merged, adapted, atol=1e-4)

tuned_file = save_adapter(model, out_dir / "headline_adapter.pt")
torch.save(before, out_dir / "untrained_adapter.pt")
load_adapter(model, out_dir / "untrained_adapter.pt")
with torch.no_grad():
    base_again = model(x)[0]
load_adapter(model, tuned_file)
with torch.no_grad():
    tuned_again = model(x)[0]
print(f"adapter file: {tuned_file.stat().st_size / 1024:.0f} KB")
print(f"tuned adapter swapped back in vs before: max |difference| {(tuned_again - adapted).abs().max():.2e}")
print(f"untrained adapter vs tuned adapter: max |difference| {(base_again - adapted).abs().max():.2e}")

# %% [markdown]
# ## 4.6.5 What it cost on this CPU
#
# One optimizer step on the same batch for each way of training: all weights of the last blocks,
# or LoRA of rank 4, 8 and 16 on their attention, each through the whole model; then LoRA r=8 on the
# cached residual stream, as trained above. Memory is the chapter-1 formula (fp32, AdamW): the frozen
# weights once, the trainable ones with gradients and two optimizer states, before activations. Time
# is the median of a few steps on a shared machine: read it as a rough figure.

# %%
def step_seconds(m, batch, repeats, loss_fn=instruction_loss):
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        t = time.perf_counter()
        opt.zero_grad()
        loss_fn(m, batch).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:]), len(params)


B = loader.batch_size  # the same B examples, whole and cached
batch, cached_batch = pad_collate(examples[:B], pad_id), trunk_collate(items[:B], pad_id)
tokens = int(batch["attention_mask"].sum())
rows = []
runs = [("full, last blocks", None), ("LoRA r=4", 4), ("LoRA r=8", 8), ("LoRA r=16", 16),
        ("LoRA r=8, cached", 8)]
for name, rank in runs:
    m = load_smollm2("cpu").train()
    if rank is None:
        m.requires_grad_(False)
        for i in range(first, m.config.n_layer):
            m.transformer.h[i].requires_grad_(True)
    else:
        apply_lora(m, targets=targets, r=rank, alpha=2 * rank)
        mark_only_lora_trainable(m)
    n_train = sum(p.numel() for p in m.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in m.parameters())
    memory = training_memory(n_train).total + 4 * (n_all - n_train)
    if name.endswith("cached"):
        seconds, _ = step_seconds(m, cached_batch, pick(1, 3), loss_fn=CachedSFTLoss(first))
    else:
        seconds, _ = step_seconds(m, batch, repeats=pick(1, 3))
    rows.append({"training": name, "trainable params": f"{n_train:,}", "memory (MiB)": f"{memory / 2**20:.0f}",
                 "s / step": f"{seconds:.2f}", "tokens / s": f"{tokens / seconds:.0f}"})
    del m
format_table(rows)

# %%
tokens_seen = config.max_steps * tokens
print(f"the SFT run saw about {tokens_seen:,} tokens ({config.max_steps} steps of ~{tokens} tokens), "
      f"in {train_s:.0f} s on this CPU after {cache_s:.0f} s of caching; on one GPU the same run takes "
      f"seconds, and a full run (all {len(train_articles)} articles, LoRA on every block) a few minutes")

# %% [markdown]
# ## 4.6.6 Summary
#
# Means over the held-out articles with bootstrap 95% intervals. All three methods are scored on the
# same articles, so the sharper test of "SFT beats X" is **paired**: the per-article difference
# (SFT's score minus X's on the same article), resampled as a whole. Much of the article-to-article
# spread (some headlines are easy for every method) cancels in the difference. The claim holds where
# the difference's interval lies above 0.

# %%
zs_mean, zs_text = interval(zs_scores)
lead_mean, lead_text = interval(lead_scores)
sft_mean, sft_text = interval(sft_scores)
format_table([{"method": "lead-8 baseline", "ROUGE-L [95% CI]": lead_text},
              {"method": "zero-shot SmolLM2", "ROUGE-L [95% CI]": zs_text},
              {"method": f"SFT, LoRA r={RANK}, last {N_BLOCKS} blocks", "ROUGE-L [95% CI]": sft_text}])

# %%
paired = {}
for name, other in [("lead-8", lead_scores), ("zero-shot", zs_scores)]:
    diffs = [s - o for s, o in zip(sft_scores, other)]
    lo, hi = bootstrap_interval(diffs, seed=0)
    paired[name] = (statistics.mean(diffs), lo, hi)
format_table([{"paired difference": f"SFT - {name}", "mean [95% CI]": f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]",
               "SFT wins on": f"{sum(s > o for s, o in zip(sft_scores, other))} of {N_TEST}"}
              for (name, (m, lo, hi)), other in zip(paired.items(), [lead_scores, zs_scores])])

# %% tags=["hide-input"]
for name, (m, lo, hi) in paired.items():
    verdict = "beats" if lo > 0 else "loses to" if hi < 0 else "is not distinguishable from"
    print(f"SFT {verdict} {name}: paired difference {m:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]")
print(f"evaluated on {N_TEST} held-out articles, trained {config.max_steps} steps")
print(f"RESULT headline rouge_l: zero-shot {zs_mean:.3f} | baseline {lead_mean:.3f} | SFT {sft_mean:.3f}")

# %% [markdown]
# **Reading the tables.** The separate intervals of the first table are wide because headlines differ
# in difficulty; the paired intervals remove that shared part, which is why they can settle a
# comparison the first table leaves open. The samples above also show what ROUGE-L rewards and
# misses: a tuned headline can share the words of the real one while stating something the article
# does not say.

# %% [markdown] tags=["answer", "points=2"]
# ### Question 4.6a — what does this evaluation establish?
# Using both summary tables, say (1) whether this run shows that SFT writes headlines that score
# higher than the lead-8 baseline and than the zero-shot model, citing the interval that decides each
# comparison; (2) why the paired intervals can settle a comparison the separate ones leave open; and
# (3) one thing a higher ROUGE-L does not show about the tuned headlines.
#
# YOUR ANSWER HERE
