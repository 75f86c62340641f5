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
# # 4.1 · Fine-tuning a pretrained GPT: a head, the top layers, or LoRA
#
# Chapter 3 pretrained a small GPT on BBC News: it learned to continue news text, and nothing else.
# Fine-tuning reuses what it learned for a new task, here telling the five BBC topics apart
# (business, entertainment, politics, sport, tech). The question of this notebook is **how much of
# the model to train**:
#
# 1. the data: test articles the GPT never saw, and a baseline without any neural network;
# 2. from a language model to a classifier: the hidden state of the last real token;
# 3. LoRA: a frozen weight plus a small trainable low-rank update;
# 4. four ways to fine-tune, measured side by side: accuracy, macro-F1, trainable parameters, time,
#    and memory;
# 5. the memory arithmetic behind "when to fine-tune what", from this 2-million-parameter model to
#    a 7-billion-parameter one.

# %% tags=["imports"]
import copy

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from course_lib import get_device, pick, pretrained, seed_everything
from course_lib.datasets import BBC_LABELS
from course_lib.finetuning import (
    finetune_classifier,
    prepare_for_finetuning,
    results_table,
)
from course_lib.heads import GPTClassifier
from course_lib.lm_data import make_classification_loader
from course_lib.metrics import accuracy, precision_recall_f1
from course_lib.model_costs import training_memory
from course_lib.plots import use_course_style
from course_lib.trainer import TrainConfig

use_course_style()
seed_everything(0)
device = get_device()
print("device:", device)

# %% [markdown]
# ## 4.1.1 The task, and a split that keeps the test honest
#
# `pretrained.bbc_gpt()` loads the model notebook 3.6 trained (or trains it, about ten minutes, if
# the cache is empty). Its pretraining held back 10% of the articles as validation text. Those
# articles are our **test set**: neither the tokenizer nor the GPT has seen a word of them, so the
# test measures the classifier on genuinely new text. (BBC News contains some duplicated
# articles; `bbc_topic_splits` drops any test article whose text also occurs among the training
# articles.) The remaining articles are split, stratified by topic, into training and validation.

# %%
recipe = pretrained.bbc_recipe()
gpt, tokenizer = pretrained.bbc_gpt(device=device)
train_articles, val_articles, test_articles = pretrained.bbc_topic_splits(recipe)
print(f"{recipe.mode} recipe: a GPT of {gpt.num_parameters():,} parameters, context {gpt.config.block_size} tokens")
print(f"articles: {len(train_articles)} train, {len(val_articles)} validation, {len(test_articles)} test")
for name, part in [("train", train_articles), ("test", test_articles)]:
    counts = np.bincount([a.label_id for a in part], minlength=len(BBC_LABELS))
    print(f"  {name:<5} " + ", ".join(f"{label} {n}" for label, n in zip(BBC_LABELS, counts)))

# %% [markdown]
# ## 4.1.2 A baseline without a neural network
#
# Before fine-tuning anything, measure what a classic method gets. TF-IDF turns an article into a
# long sparse vector, one entry per word, weighted up for words that are frequent in this article
# and rare across articles; a logistic regression on top learns one weight per word and topic.
# Topic classification is easy for it: "shares", "film", "minister", "match" and "software" nearly
# give the answer away.
#
# The GPT reads at most `block_size` tokens, the first 80 or so words of an article. To separate
# "the method" from "how much text it reads", the baseline is trained twice: on whole articles and
# on exactly the text the GPT sees.

# %%
block = gpt.config.block_size


def gpt_view(article):
    """The text the GPT reads: the article's first block_size tokens."""
    return tokenizer.decode(tokenizer.encode(article.text)[:block])


def tfidf_baseline(to_text):
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2))
    X_train = vectorizer.fit_transform([to_text(a) for a in train_articles])  # fitted on training text only
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(X_train, [a.label_id for a in train_articles])
    y_true = [a.label_id for a in test_articles]
    y_pred = clf.predict(vectorizer.transform([to_text(a) for a in test_articles]))
    return accuracy(y_true, y_pred), precision_recall_f1(y_true, y_pred, average="macro")["f1"]


baselines = {
    "TF-IDF + LR, whole article": tfidf_baseline(lambda a: a.text),
    f"TF-IDF + LR, first {block} tokens": tfidf_baseline(gpt_view),
}
for name, (acc, f1) in baselines.items():
    print(f"{name:<34} test accuracy {acc:.3f}   macro-F1 {f1:.3f}")

# %% [markdown]
# ## 4.1.3 From a language model to a classifier
#
# A GPT turns each token into a hidden vector of `d_model` numbers and, for its own task, maps the
# vector of position $t$ to next-token scores. For classification we keep the transformer, drop the
# next-token layer, and put a new **head** on top: one linear layer from `d_model` to the five
# topics. Which position's vector should it read? In a causal model position $t$ has seen tokens
# $0..t$ only, so the **last** real token is the only one that has read the whole text.
#
# Texts in a batch have different lengths and are padded to the longest. With padding on the right,
# the last real token of row $b$ sits at position `attention_mask[b].sum() - 1`; with padding on the
# left (used for generation) it is the last column. Write the pooling so that it works for both:
# the last position where the mask is 1.

# %% tags=["exercise"]
def last_token_pool(hidden, attention_mask):
    """hidden (B, T, d), attention_mask (B, T) of 0/1 -> (B, d): each row's last real token."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch04 import check_last_token_pool

check_last_token_pool(last_token_pool)

# %% [markdown]
# `course_lib.heads.GPTClassifier` is exactly this: the GPT's hidden states, `last_token_pool`, a
# dropout and a linear head. Padding on the right cannot change a prediction: the pads come after
# the last real token, and a causal model's earlier positions never look ahead. The check below
# classifies one article alone and padded inside a batch with a longer one:

# %% tags=["nbval-check-output"]
torch.manual_seed(0)
probe = GPTClassifier(copy.deepcopy(gpt), n_classes=len(BBC_LABELS)).to(device).eval()
short, long = tokenizer.encode("Shares in the bank rose."), tokenizer.encode("The film won three awards at the ceremony.")
padded = make_classification_loader([short, long], [0, 1], batch_size=2, pad_id=0, shuffle=False)
batch = {k: v.to(device) for k, v in next(iter(padded)).items()}
with torch.no_grad():
    alone = probe(torch.tensor([short], device=device))[0]
    in_batch = probe(batch["input_ids"], batch["attention_mask"])[0][:1]
print("logits shape:", tuple(in_batch.shape), "| the short text padded:", bool((batch["attention_mask"][0] == 0).any()))
print("same logits alone and padded:", torch.allclose(alone, in_batch, atol=1e-5))

# %% [markdown]
# ## 4.1.4 LoRA: a frozen weight plus a low-rank update
#
# Full fine-tuning changes every weight matrix $W$ ($d_\text{out} \times d_\text{in}$). LoRA
# (low-rank adaptation, Hu et al., 2021) freezes $W$ and learns the change as a product of two thin
# matrices:
#
# $$ y = W x + b + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\;
#    B \in \mathbb{R}^{d_\text{out} \times r},\; r \ll d. $$
#
# Only $A$ and $B$ train: $r (d_\text{in} + d_\text{out})$ numbers instead of
# $d_\text{in} d_\text{out}$. $B$ starts at zero, so the adapted model starts exactly as the
# pretrained one; $A$ starts random (as a Linear layer's weight would). The factor $\alpha / r$
# keeps the update's size comparable when you change the rank. After training, $\frac{\alpha}{r}BA$
# can be added into $W$ once ("merged"), so inference costs nothing extra.
#
# Write the layer. Keep the base layer as `self.base` and freeze it; name the new matrices
# `lora_A` and `lora_B`.

# %% tags=["exercise"]
class LoRALinear(torch.nn.Module):
    def __init__(self, base, r=8, alpha=16.0):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError()


# %% tags=["check", "points=2", "raises-exception"]
from course_lib.exercises.ch04 import check_lora_linear

check_lora_linear(LoRALinear)

# %% [markdown]
# ## 4.1.5 Four ways to fine-tune, measured
#
# `course_lib.finetuning.prepare_for_finetuning` sets up each mode on a fresh copy of the
# pretrained GPT:
#
# | mode | what trains |
# |---|---|
# | `head` | the new linear head only; the GPT is frozen |
# | `last_n` | the head, the last 2 of the 4 transformer blocks and the final LayerNorm |
# | `lora` | the head and rank-8 adapters on every attention projection (`qkv` and `proj`) |
# | `full` | everything |
#
# Each run uses the same data, batch size and number of steps; a frozen model tolerates (and
# needs) a larger learning rate than one whose every weight moves. Validation loss is measured
# every few steps and, with early stopping, the best weights are kept. The memory column is
# measured on one training batch (next section).

# %%
def encode(articles):
    return [tokenizer.encode(a.text)[:block] for a in articles], [a.label_id for a in articles]


batch_size = pick(fast=8, full=16)
(train_ids, train_y), (val_ids, val_y), (test_ids, test_y) = map(encode, (train_articles, val_articles, test_articles))
train_loader = make_classification_loader(train_ids, train_y, batch_size, pad_id=0, shuffle=True, seed=0)
val_loader = make_classification_loader(val_ids, val_y, 32, pad_id=0, shuffle=False)
test_loader = make_classification_loader(test_ids, test_y, 32, pad_id=0, shuffle=False)
steps = pick(fast=4, full=250)
print(f"{steps} steps of {batch_size} articles = {steps * batch_size / len(train_ids):.1f} passes over the training set")

settings = {  # mode -> (learning rate, extra arguments)
    "head": (1e-2, {}),
    "last_n": (1e-3, {"last_n": 2}),
    "lora": (2e-3, {"lora_r": 8, "lora_alpha": 16}),
    "full": (5e-4, {}),
}
results = {}
for mode, (lr, kwargs) in settings.items():
    seed_everything(0)
    model = GPTClassifier(copy.deepcopy(gpt), n_classes=len(BBC_LABELS), dropout=0.1)
    prepare_for_finetuning(model, mode, **kwargs)
    config = TrainConfig(
        max_steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=pick(fast=1, full=10), weight_decay=0.01,
        eval_every=pick(fast=2, full=25), eval_steps=None, early_stopping_patience=3, log_every=25,
        device=str(device), out_dir=str(recipe.run_dir.parent / f"finetune-{recipe.mode}-{mode}"),
    )  # fmt: skip
    results[mode] = finetune_classifier(model, mode, train_loader, val_loader, test_loader, config)

baseline_rows = [
    {"model": name, "trainable": "-", "share": "-", "test acc": f"{acc:.3f}", "macro-F1": f"{f1:.3f}",
     "time (s)": "-", "memory (MB)": "-"}
    for name, (acc, f1) in baselines.items()
]  # fmt: skip
results_table([*results.values(), *baseline_rows]).show()

# %% [markdown]
# Read the table from top to bottom: each mode trains more of the model than the one before. The
# trainable share is the fraction of the classifier's parameters that receive gradients.

# %%
for mode, r in results.items():
    print(f"{mode:<7} trains {r.trainable:>9,} of {r.total:,} parameters")

# %% tags=["nbval-check-output"]
counts = [results[m].trainable for m in ("head", "lora", "last_n", "full")]
print("head < lora < last_n < full:", counts == sorted(counts) and len(set(counts)) == 4)
print("LoRA adds r * (d_in + d_out) per adapted layer:",
      results["lora"].trainable - results["head"].trainable == 8 * gpt.config.n_layer * (
          (gpt.config.d_model + 3 * gpt.config.d_model) + (gpt.config.d_model + gpt.config.d_model)))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
names = list(results)
axes[0].bar(names, [results[m].accuracy for m in names], color="tab:blue", label="GPT, fine-tuned")
for (name, (acc, _)), style in zip(baselines.items(), ["--", ":"]):
    axes[0].axhline(acc, color="k", linestyle=style, label=name)
axes[0].set(ylabel="test accuracy", ylim=(0, 1), title="accuracy by fine-tuning mode")
axes[0].legend(loc="lower right", fontsize=8)
axes[1].bar(names, [results[m].trainable for m in names], color="tab:orange")
axes[1].set(yscale="log", ylabel="trainable parameters (log scale)", title="what each mode trains")
plt.tight_layout()
plt.show()

# %% [markdown]
# What to take from it, on this model (the run stored on this page: head 54%, last two blocks and
# LoRA 80% each, full fine-tuning 86%): training only a head on a frozen GPT is weak, because the
# last token's hidden state was shaped to predict the *next word*, not to summarise the topic; the
# model needs some freedom to re-purpose it. LoRA gets as far as unfreezing the top two blocks while
# training 1.9% of the parameters instead of 44%; full fine-tuning, the most expensive, does best.
#
# None of them reaches TF-IDF (94% on the same first 128 tokens, 98% on whole articles), and the
# reasons are plain: topic is a matter of *which words occur*, which a bag of words captures
# directly, and our GPT is small and was pretrained for ten minutes on about two thousand articles,
# so it knows little that the 1,725 labelled articles cannot teach a linear model. Pretraining pays
# off when the pretrained model has learned far more than the fine-tuning data can teach: notebook
# 4.2 shows it with a real pretrained encoder, which reaches the baseline's level with a frozen body.

# %% [markdown]
# ## 4.1.6 Memory: why parameter-efficient fine-tuning exists
#
# Training holds, besides the weights: a gradient for every trainable weight, the optimiser's
# state (AdamW keeps two running averages per trainable weight) and the **activations** that the
# backward pass needs. `measure_training_memory` counts each part on a real batch: weights and
# states from the parameters, activations by recording every tensor autograd saves during the
# forward pass.

# %%
parts = ["weights", "gradients", "optimizer", "activations"]
fig, ax = plt.subplots(figsize=(7, 3.6))
bottom = np.zeros(len(results))
for part in parts:
    values = np.array([getattr(r.memory, part) / 1e6 for r in results.values()])
    ax.bar(list(results), values, bottom=bottom, label=part)
    bottom += values
ax.set(ylabel="MB for one training step", title=f"measured training memory, batch of {batch_size} x up to {block} tokens")
ax.legend()
plt.show()
for mode, r in results.items():
    print(f"{mode:<7}" + "  ".join(f"{p} {getattr(r.memory, p) / 1e6:6.1f} MB" for p in parts))

# %% [markdown] tags=["answer", "points=2"]
# ### Question 4.1a — what LoRA saves, and what it does not
# `lora` trains 37,829 parameters and `last_n` 891,077, yet the measurement above gives `lora` more
# activation memory (74.3 MB) than `last_n` (54.2 MB). Explain why, and say which parts of the memory LoRA
# does shrink.
#
# YOUR ANSWER HERE

# %% [markdown]
# At this size everything fits anywhere. The arithmetic becomes decisive for a real large model.
# Take 7 billion parameters (the size of Llama 2 7B), trained with AdamW in mixed precision:

# %%
n = 7e9
full = training_memory(int(n), precision="bf16")
lora_trainable = 0.002 * n  # rank-8 adapters on the attention projections: roughly 0.1-0.5% of the weights
lora = training_memory(int(lora_trainable), precision="bf16")
frozen_weights = 2 * (n - lora_trainable)  # the frozen model in bf16: 2 bytes a weight, nothing else
print(f"full fine-tuning : {full.total / 1e9:6.0f} GB before activations "
      f"(weights {full.weights / 1e9:.0f}, gradients {full.gradients / 1e9:.0f}, "
      f"AdamW states {full.optimizer / 1e9:.0f}, fp32 master copy {full.master_weights / 1e9:.0f})")
print(f"LoRA             : {(lora.total + frozen_weights) / 1e9:6.0f} GB before activations "
      f"(frozen weights {frozen_weights / 1e9:.0f}, adapters and their states {lora.total / 1e9:.2f})")

# %% [markdown]
# Full fine-tuning of a 7B model needs about 112 GB before a single activation: several
# data-centre GPUs. LoRA needs about 14 GB plus activations, one large GPU; QLoRA goes further by
# storing the frozen weights in 4 bits (about 3.5 GB). Hence the rules of thumb:
#
# * **head only** (or features + a linear model): when the pretrained representation already
#   separates the classes, as for a sentence-embedding model and a topic task; cheapest by far.
# * **LoRA / adapters**: the default for large models. Near full fine-tuning's quality on most
#   tasks, a small fraction of the memory, and one base model can serve many tasks, each a few
#   megabytes of adapters.
# * **last-n layers**: a simple middle ground when LoRA is not available; lower layers hold
#   general features and upper layers task-specific ones.
# * **full fine-tuning**: when the task is far from the pretraining data (a new language, a new
#   domain) and the budget allows, or when the model is small, as here.

# %% [markdown]
# ## Summary
#
# * A classifier on a causal GPT reads the hidden state of the last real token; right padding
#   leaves it unchanged.
# * LoRA trains $r(d_\text{in}+d_\text{out})$ numbers per adapted matrix, starts as the pretrained
#   model ($B=0$) and can be merged away after training.
# * Measured here: the table above. On a small GPT pretrained on two thousand articles, fine-tuning
#   more of the model helps, and a TF-IDF model remains a strong competitor for topic
#   classification: always measure a simple baseline.
# * Memory, not compute, decides what can be fine-tuned: weights + gradients + optimiser states +
#   activations, and the middle two vanish for frozen weights.
