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
# # 4.7 · Preference tuning with DPO
#
# Supervised fine-tuning (4.6) shows the model good answers. **Preference tuning** shows it pairs:
# for one prompt, an answer to prefer (*chosen*) and one to avoid (*rejected*). Direct Preference
# Optimisation (DPO) raises the chosen answer's log-probability relative to a frozen reference model
# (the SFT model) more than the rejected one's; `beta` sets how far it may drift.
#
# 1. preference pairs built offline from the data: the real headline (chosen) against an off-topic
#    headline of another article or an overlong copy of the article's start (rejected);
# 2. DPO with `course_lib.preference.dpo_loss` (checked against trl's in the tests), trained by the
#    Trainer on LoRA adapters on top of the SFT model;
# 3. what it changes on held-out prompts: the reward margin, the win rate of its headlines over the
#    SFT model's under ROUGE-L, and the answers' length.

# %% tags=["imports"]
import copy
import functools
import random
import statistics

import torch
from torch.utils.data import DataLoader

from course_lib import pick, seed_everything
from course_lib.chat import ChatModel
from course_lib.chat_template import render_chat
from course_lib.datasets import bbc_news
from course_lib.env import cache_dir
from course_lib.instruct import instruction_loader, instruction_loss
from course_lib.lora import apply_lora, mark_only_lora_trainable
from course_lib.metrics import bootstrap_interval, format_table, rouge_l
from course_lib.post_training import (
    DPOLoss,
    chat_sft_example,
    headline_messages,
    heldout_split,
    lead,
    load_adapter,
    preference_collate,
    preference_example,
)
from course_lib.preference import completion_logprobs, dpo_loss
from course_lib.smollm2 import load_smollm2, load_smollm2_tokenizer
from course_lib.trainer import TrainConfig, Trainer

seed_everything(0)
tokenizer = load_smollm2_tokenizer()
pad_id = tokenizer.token_to_id("<|endoftext|>")
N_TEST, N_WORDS = pick(6, 100), 40
train_articles, test_articles = heldout_split(bbc_news(dedupe=True), n_test=N_TEST, seed=0)  # as in 4.5, 4.6

# %% [markdown]
# ## 4.7.1 The SFT model
#
# The LoRA adapter trained in 4.6 is loaded when it is there (same layers, same rank); otherwise a
# short SFT run here makes one.

# %%
model = load_smollm2("cpu")
N_BLOCKS, RANK = pick(2, 6), 8
first = model.config.n_layer - N_BLOCKS
targets = [f"h.{i}.attn.{p}" for i in range(first, model.config.n_layer) for p in ("qkv", "proj")]
apply_lora(model, targets=targets, r=RANK, alpha=2 * RANK)
mark_only_lora_trainable(model)
sft_file = cache_dir("runs", "4.6-sft-lora", "fast" if N_TEST < 50 else "full") / "headline_adapter.pt"
if sft_file.is_file():
    load_adapter(model, sft_file)
    print(f"loaded the SFT adapter of 4.6 from {sft_file.name}")
else:
    examples = [chat_sft_example(headline_messages(a, N_WORDS), tokenizer) for a in train_articles[: pick(8, 480)]]
    cfg = TrainConfig(max_steps=pick(2, 120), lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=0.0,
                      eval_every=10_000, log_every=1, save_every=None, device="cpu", progress=False,
                      out_dir=str(cache_dir("runs", "4.7-sft")))
    Trainer(model, cfg, instruction_loader(examples, pick(2, 8), pad_id), loss_fn=instruction_loss).fit()
reference = copy.deepcopy(model).eval()  # the SFT model, frozen: DPO measures every change against it

# %% [markdown]
# ## 4.7.2 Preference pairs, built offline
#
# Chosen: the real headline. Rejected, alternately: the headline of a random article on another
# topic (fluent, but about something else) or the first 25 words of the article (a long copy, the
# failure the lead-8 baseline shows is tempting). `preference_example` refuses a pair whose two
# answers are the same.

# %%
def make_pair(article, k, pool, rng):
    if k % 2 == 0:
        other = rng.choice([a for a in pool if a.label != article.label])
        rejected = other.headline
    else:
        rejected = lead(article.body, 25)
    messages = headline_messages(article, N_WORDS, answer=False)
    return preference_example(messages, article.headline.strip(), rejected, tokenizer)


rng = random.Random(0)
dpo_pool = train_articles[-pick(8, 240):]  # the other end of the pool from the SFT examples
train_pairs = [make_pair(a, k, train_articles, rng) for k, a in enumerate(dpo_pool)]
test_pairs = [make_pair(a, k, train_articles, rng) for k, a in enumerate(test_articles)]
print(tokenizer.decode(train_pairs[0]["chosen"]), "||", tokenizer.decode(train_pairs[0]["rejected"]))
print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs")

# %% tags=["nbval-check-output"]
print("every pair's chosen answer differs from its rejected one:",
      all(p["chosen"] != p["rejected"] for p in train_pairs + test_pairs))
print("no held-out article's headline is chosen in a training pair:",
      not {tuple(p["chosen"]) for p in train_pairs} & {tuple(p["chosen"]) for p in test_pairs})

# %% [markdown]
# **Exercise.** How a batch of B pairs reaches the model: `preference_collate` makes 2B rows, the B
# chosen ones (prompt + chosen answer) first, then the B rejected ones, right-padded with `pad_id` to
# the longest row, with an attention mask (1 on real tokens) and an answer mask (1 on the answer's
# tokens only, which are the ones whose log-probabilities DPO sums). Write it, returning the three
# (2B, T) tensors.

# %% tags=["exercise"]
def collate_pairs(pairs, pad_id):
    """pairs: dicts of "prompt", "chosen", "rejected" id lists -> (input_ids, attention_mask, answer_mask)."""
    ### BEGIN SOLUTION
    prompts = [p["prompt"] for p in pairs] * 2
    answers = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    T = max(len(q) + len(a) for q, a in zip(prompts, answers))
    input_ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)  # (2B, T)
    attention_mask = torch.zeros(len(prompts), T, dtype=torch.long)
    answer_mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, (q, a) in enumerate(zip(prompts, answers)):
        input_ids[i, : len(q) + len(a)] = torch.tensor(q + a)
        attention_mask[i, : len(q) + len(a)] = 1
        answer_mask[i, len(q) : len(q) + len(a)] = 1
    return input_ids, attention_mask, answer_mask
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04_real_llm import check_collate_pairs

check_collate_pairs(collate_pairs)

# %% [markdown]
# ## 4.7.3 DPO on the LoRA adapters
#
# The policy starts as the SFT model and trains the same LoRA adapters further; `DPOLoss` gives the
# Trainer `loss_fn(model, batch)`. At step 0 policy and reference agree, so every pair's loss is
# log 2.

# %% [markdown]
# **Exercise.** The DPO loss from the four summed log-probabilities of a batch of pairs (each (B,)).

# %% tags=["exercise"]
def my_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """Mean over the batch of -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""
    ### BEGIN SOLUTION
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # (B,)
    return -torch.nn.functional.logsigmoid(margin).mean()
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04 import check_dpo_loss

check_dpo_loss(my_dpo_loss)

# %%
BETA = 0.1
loss_fn = DPOLoss(reference, beta=BETA)
collate = functools.partial(preference_collate, pad_id=pad_id)
loader = DataLoader(train_pairs, batch_size=pick(2, 4), shuffle=True, collate_fn=collate,
                    generator=torch.Generator().manual_seed(0))
config = TrainConfig(max_steps=pick(2, 80), lr=5e-4, min_lr=5e-5, warmup_steps=pick(0, 5), weight_decay=0.0,
                     eval_every=10_000, log_every=1, save_every=None, device="cpu", progress=False,
                     out_dir=str(cache_dir("runs", "4.7-dpo", "fast" if N_TEST < 50 else "full")))
history = Trainer(model, config, loader, loss_fn=loss_fn).fit()
print(f"DPO loss {history[0]['train_loss']:.3f} -> {history[-1]['train_loss']:.3f} in {config.max_steps} steps")

# %% [markdown]
# ## 4.7.4 What DPO changed on held-out prompts
#
# The **reward margin** of a pair is beta times how much more the policy raised the chosen answer
# than the rejected one, relative to the reference. Then the headlines themselves: the win rate of
# the DPO model's headline over the SFT model's (ROUGE-L against the real one; a tie counts half),
# and their length in words.

# %%
@torch.no_grad()
def margins(pairs):
    out = []
    model.eval()
    for pair in pairs:
        b = preference_collate([pair], pad_id)
        args = (b["input_ids"], b["answer_mask"], b["attention_mask"])
        pol, ref = completion_logprobs(model, *args), completion_logprobs(reference, *args)
        out.append(dpo_loss(pol[:1], pol[1:], ref[:1], ref[1:], beta=BETA).margins.item())
    return out


def headlines(m):
    chat_model = ChatModel(m, tokenizer, template=render_chat)
    return [chat_model.chat(headline_messages(a, N_WORDS, answer=False), max_new_tokens=24) for a in test_articles]


test_margins = margins(test_pairs)
sft_lines, dpo_lines = headlines(reference), headlines(model)
sft_scores = [rouge_l(w, a.headline) for w, a in zip(sft_lines, test_articles)]
dpo_scores = [rouge_l(w, a.headline) for w, a in zip(dpo_lines, test_articles)]
lead_scores = [rouge_l(lead(a.body, 8), a.headline) for a in test_articles]
wins = [1.0 if d > s else 0.5 if d == s else 0.0 for d, s in zip(dpo_scores, sft_scores)]
for s, d, a in list(zip(sft_lines, dpo_lines, test_articles))[:3]:
    print(f"real: {a.headline}\nSFT:  {s}\nDPO:  {d}\n")


def interval(scores):
    lo, hi = bootstrap_interval(scores, seed=0)
    mean = sum(scores) / len(scores)
    return mean, f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


format_table([
    {"measure": "reward margin (held-out pairs)", "value [95% CI]": interval(test_margins)[1]},
    {"measure": "win rate of DPO over SFT (ROUGE-L)", "value [95% CI]": interval(wins)[1]},
    {"measure": "SFT headline length (words)", "value [95% CI]": interval([len(w.split()) for w in sft_lines])[1]},
    {"measure": "DPO headline length (words)", "value [95% CI]": interval([len(w.split()) for w in dpo_lines])[1]},
    {"measure": "ROUGE-L lead-8", "value [95% CI]": interval(lead_scores)[1]},
    {"measure": "ROUGE-L SFT", "value [95% CI]": interval(sft_scores)[1]},
    {"measure": "ROUGE-L SFT+DPO", "value [95% CI]": interval(dpo_scores)[1]},
])


# %% [markdown]
# ## 4.7.5 Summary
#
# A positive held-out reward margin says DPO learned the preference on prompts it never saw; whether
# that makes better headlines is the win rate and the ROUGE-L intervals. Where the interval of the
# win rate contains 0.5, or the ROUGE-L intervals overlap, DPO did not measurably help here.

# %% [markdown]
# **Exercise.** The verdict below rests on the win rate's interval. Write both: one number per
# article (1 when the new headline scores higher, 0.5 for a tie, 0 when lower), their mean, and the
# percentile bootstrap interval of that mean the course uses everywhere, with NumPy:
# `rng = np.random.default_rng(seed)`, 2,000 resamples of the n numbers drawn as
# `rng.integers(0, n, size=(2000, n))`, and the 2.5% and 97.5% quantiles of the resampled means.

# %% tags=["exercise"]
def win_rate_interval(new_scores, old_scores, seed=0):
    """Per-item scores of two methods -> (win rate, low, high), a tie counting half."""
    ### BEGIN SOLUTION
    import numpy as np

    wins = np.array([1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new_scores, old_scores)])
    rng = np.random.default_rng(seed)
    means = wins[rng.integers(0, len(wins), size=(2000, len(wins)))].mean(axis=1)  # (2000,)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(wins.mean()), float(lo), float(hi)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04_real_llm import check_win_rate_interval

check_win_rate_interval(win_rate_interval)

# %%
win_lo, win_hi = bootstrap_interval(wins, seed=0)
win_mean = sum(wins) / len(wins)
verdict = "helped" if win_lo > 0.5 else "hurt" if win_hi < 0.5 else "made no measurable difference"
print(f"evaluated on {N_TEST} held-out articles; DPO {verdict} (win rate {win_mean:.2f}, "
      f"95% CI [{win_lo:.2f}, {win_hi:.2f}]); mean reward margin {statistics.mean(test_margins):.3f}")
print(f"RESULT headline rouge_l: baseline {statistics.mean(lead_scores):.3f} | "
      f"SFT {statistics.mean(sft_scores):.3f} | SFT+DPO {statistics.mean(dpo_scores):.3f}")
