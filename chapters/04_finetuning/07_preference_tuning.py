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
# 1. preference pairs from the model itself: four sampled headlines per article, ranked by ROUGE-L
#    against the real headline; the best is chosen, the worst rejected (a reward model in miniature);
# 2. DPO with `course_lib.preference.dpo_loss` (checked against trl's in the tests), trained by the
#    Trainer on the LoRA adapters of the SFT model, the frozen blocks below them cached as in 4.6 and
#    the reference model's log-probabilities computed once, before training;
# 3. what it changes on held-out prompts: the reward margin, the win rate of its headlines over the
#    SFT model's under ROUGE-L, and the answers' length.

# %% tags=["imports"]
import functools
import math
import statistics

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from course_lib import pick, seed_everything
from course_lib.chat import ChatModel
from course_lib.chat_template import render_chat
from course_lib.datasets import bbc_news
from course_lib.env import cache_dir
from course_lib.frozen_trunk import (
    CachedDPOLoss,
    CachedSFTLoss,
    add_reference_logprobs,
    cached_examples,
    cached_pairs,
    check_frozen_below,
    pair_collate,
    sequence_logprobs,
    trunk_collate,
)
from course_lib.lora import apply_lora, mark_only_lora_trainable
from course_lib.metrics import bootstrap_interval, format_table, rouge_l
from course_lib.plots import use_course_style
from course_lib.post_training import (
    chat_sft_example,
    headline_messages,
    heldout_split,
    lead,
    load_adapter,
    preference_example,
)
from course_lib.preference import dpo_loss
from course_lib.smollm2 import load_smollm2, load_smollm2_tokenizer
from course_lib.trainer import TrainConfig, Trainer
from course_lib.training_plots import plot_curves, smooth

use_course_style()
seed_everything(0)
tokenizer = load_smollm2_tokenizer()
pad_id = tokenizer.token_to_id("<|endoftext|>")
N_TEST, N_WORDS = pick(6, 100), 40
train_articles, test_articles = heldout_split(bbc_news(dedupe=True), n_test=N_TEST, seed=0)  # as in 4.5, 4.6

# %% [markdown]
# ## 4.7.1 The SFT model
#
# The LoRA adapter trained in 4.6 is loaded when it is there (same layers, same rank); otherwise a
# short SFT run here makes one, the same way.

# %%
model = load_smollm2("cpu")
N_BLOCKS, RANK = pick(2, 6), 8
first = model.config.n_layer - N_BLOCKS
targets = [f"h.{i}.attn.{p}" for i in range(first, model.config.n_layer) for p in ("qkv", "proj")]
apply_lora(model, targets=targets, r=RANK, alpha=2 * RANK)
mark_only_lora_trainable(model)
check_frozen_below(model, first)  # blocks 0 .. first-1 never train: their output can be cached
sft_file = cache_dir("runs", "4.6-sft-lora", "fast" if N_TEST < 50 else "full") / "headline_adapter.pt"
if sft_file.is_file():
    load_adapter(model, sft_file)
    print(f"loaded the SFT adapter of 4.6 from {sft_file.name}")
else:
    sft_items = cached_examples(model, [chat_sft_example(headline_messages(a, N_WORDS), tokenizer)
                                        for a in train_articles[: pick(8, 960)]], first, progress=True)
    cfg = TrainConfig(max_steps=pick(2, 300), lr=1e-3, min_lr=1e-4, warmup_steps=pick(0, 10), weight_decay=0.0,
                      eval_every=10_000, log_every=1, save_every=None, device="cpu", progress=True,
                      out_dir=str(cache_dir("runs", "4.7-sft", "fast" if N_TEST < 50 else "full")))
    sft_loader = DataLoader(sft_items, batch_size=pick(2, 8), shuffle=True,
                            collate_fn=functools.partial(trunk_collate, pad_id=pad_id))
    Trainer(model, cfg, sft_loader, loss_fn=CachedSFTLoss(first)).fit()
chat_model = ChatModel(model, tokenizer, template=render_chat)

# %% [markdown]
# ## 4.7.2 Preference pairs from the model's own samples
#
# For each article the SFT model writes `K` headlines at temperature 1; ROUGE-L against the real
# headline ranks them, the best becomes *chosen* and the worst *rejected*. Both answers are the
# model's own, so DPO learns to move between things it already says, not to imitate text it would
# never write; an article whose samples all score the same gives no pair. The training articles
# are the other end of the pool from 4.6's SFT examples. A few held-out articles get pairs the same
# way, to measure the reward margin on prompts DPO never saw.

# %%
K = 4


def ranked_pair(article, seed):
    """(pair, best score, worst score), or None when the samples do not differ in score."""
    messages = headline_messages(article, N_WORDS, answer=False)
    samples = chat_model.sample(messages, n=K, max_new_tokens=24, temperature=1.0, seed=seed)
    scored = sorted((rouge_l(s, article.headline), s.strip()) for s in samples if s.strip())
    if len(scored) < 2 or scored[0][0] == scored[-1][0]:
        return None
    (worst_score, worst), (best_score, best) = scored[0], scored[-1]
    return preference_example(messages, best, worst, tokenizer), best_score, worst_score


def pairs_for(articles, seed0):
    found = [ranked_pair(a, seed0 + k) for k, a in enumerate(tqdm(articles, desc="sampling", unit="article"))]
    return [f for f in found if f is not None]


train_found = pairs_for(train_articles[-pick(6, 200):], seed0=0)
heldout_found = pairs_for(test_articles[: pick(6, 40)], seed0=10_000)
train_pairs = [p for p, _, _ in train_found]
heldout_pairs = [p for p, _, _ in heldout_found]
first_pair = train_pairs[0]
print("chosen:  ", repr(tokenizer.decode(first_pair["chosen"])))
print("rejected:", repr(tokenizer.decode(first_pair["rejected"])))
n_words = {side: statistics.mean(len(tokenizer.decode(p[side]).split()) for p in train_pairs)
           for side in ("chosen", "rejected")}
print(f"{len(train_pairs)} training pairs, {len(heldout_pairs)} held-out pairs; ROUGE-L of chosen "
      f"{statistics.mean(b for _, b, _ in train_found):.3f}, of rejected {statistics.mean(w for _, _, w in train_found):.3f}; "
      f"words: chosen {n_words['chosen']:.1f}, rejected {n_words['rejected']:.1f}")

# %% tags=["nbval-check-output"]
print("every pair's chosen answer differs from its rejected one:",
      all(p["chosen"] != p["rejected"] for p in train_pairs + heldout_pairs))
print("no held-out article is a training prompt:",
      not {tuple(p["prompt"]) for p in train_pairs} & {tuple(p["prompt"]) for p in heldout_pairs})

# %% [markdown]
# **Exercise.** How a batch of B pairs reaches the model: `preference_collate` makes 2B rows, the B
# chosen ones (prompt + chosen answer) first, then the B rejected ones, right-padded with `pad_id` to
# the longest row, with an attention mask (1 on real tokens) and an answer mask (1 on the answer's
# tokens only, which are the ones whose log-probabilities DPO sums). Write it, returning the three
# (2B, T) tensors. (The training below uses `pair_collate`, the same layout with the cached residual
# stream of each row added and the answer marked by its labels.)

# %% tags=["exercise"]
def collate_pairs(pairs, pad_id):
    """pairs: dicts of "prompt", "chosen", "rejected" id lists -> (input_ids, attention_mask, answer_mask)."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch04_real_llm import check_collate_pairs

check_collate_pairs(collate_pairs)

# %% [markdown]
# ## 4.7.3 DPO on the LoRA adapters
#
# The policy starts as the SFT model and trains the same LoRA adapters further. The reference is the
# SFT model as it is now: its log-probability of every answer is computed once, here, before training
# (`add_reference_logprobs`), so no second model is kept. At step 0 policy and reference agree, so
# every pair's loss is log 2. The SFT model's held-out headlines are written now too, before DPO
# changes the weights.

# %% [markdown]
# **Exercise.** The DPO loss from the four summed log-probabilities of a batch of pairs (each (B,)).

# %% [markdown]
# **Exercise.** The DPO loss from the four summed log-probabilities of a batch of pairs (each (B,)).

# %% tags=["exercise"]
def my_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """Mean over the batch of -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch04 import check_dpo_loss

check_dpo_loss(my_dpo_loss)

# %%
def headlines():
    return [chat_model.chat(headline_messages(a, N_WORDS, answer=False), max_new_tokens=24)
            for a in tqdm(test_articles, desc="headlines", unit="article")]


sft_lines = headlines()  # the SFT model, before DPO
train_items = cached_pairs(model, train_pairs, first, progress=True)
heldout_items = cached_pairs(model, heldout_pairs, first)
add_reference_logprobs(model, train_items + heldout_items, first)  # the SFT model is the reference

BETA = 0.1
loss_fn = CachedDPOLoss(first, beta=BETA)
loader = DataLoader(train_items, batch_size=pick(2, 4), shuffle=True, generator=torch.Generator().manual_seed(0),
                    collate_fn=functools.partial(pair_collate, pad_id=pad_id))
config = TrainConfig(max_steps=pick(2, 100), lr=3e-4, min_lr=3e-5, warmup_steps=pick(0, 5), weight_decay=0.0,
                     eval_every=10_000, log_every=1, save_every=None, device="cpu", progress=True,
                     out_dir=str(cache_dir("runs", "4.7-dpo", "fast" if N_TEST < 50 else "full")))
history = Trainer(model, config, loader, loss_fn=loss_fn).fit()
epochs = config.max_steps * loader.batch_size / len(train_items)
print(f"DPO loss {history[0]['train_loss']:.3f} -> {history[-1]['train_loss']:.3f} in {config.max_steps} steps "
      f"({epochs:.1f} passes over the pairs)")
losses = [h["train_loss"] for h in history]
fig = plot_curves({"each step (4 pairs)": losses, "mean of the last 10 steps": smooth(losses, 10)},
                  ylabel="DPO loss", hlines={"log 2 (policy = reference)": math.log(2)},
                  title="DPO on the model's own ranked samples")

# %% [markdown]
# ## 4.7.4 What DPO changed on held-out prompts
#
# The **reward margin** of a pair is beta times how much more the policy raised the chosen answer
# than the rejected one, relative to the reference. Then the headlines themselves: the win rate of
# the DPO model's headline over the SFT model's (ROUGE-L against the real one; a tie counts half),
# the paired difference of their scores, and their length in words.

# %%
@torch.no_grad()
def margins(items):
    """beta * (chosen log-ratio - rejected log-ratio) of each cached pair, policy against reference."""
    model.eval()
    batch = pair_collate(items, pad_id)
    policy = sequence_logprobs(model, batch, first)  # (2B,)
    ref = batch["ref_logp"]  # (2B,)
    b = len(items)
    return dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], beta=BETA).margins.tolist()


train_margins, test_margins = margins(train_items), margins(heldout_items)
dpo_lines = headlines()
sft_scores = [rouge_l(w, a.headline) for w, a in zip(sft_lines, test_articles)]
dpo_scores = [rouge_l(w, a.headline) for w, a in zip(dpo_lines, test_articles)]
lead_scores = [rouge_l(lead(a.body, 8), a.headline) for a in test_articles]
wins = [1.0 if d > s else 0.5 if d == s else 0.0 for d, s in zip(dpo_scores, sft_scores)]
diffs = [d - s for d, s in zip(dpo_scores, sft_scores)]  # paired: the same article's two scores
for s, d, a in list(zip(sft_lines, dpo_lines, test_articles))[:3]:
    print(f"real: {a.headline}\nSFT:  {s}\nDPO:  {d}\n")


def interval(scores):
    lo, hi = bootstrap_interval(scores, seed=0)
    mean = sum(scores) / len(scores)
    return mean, f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


format_table([
    {"measure": "reward margin (training pairs)", "value [95% CI]": interval(train_margins)[1]},
    {"measure": "pairs ranked right (training)", "value [95% CI]": interval([float(m > 0) for m in train_margins])[1]},
    {"measure": "reward margin (held-out pairs)", "value [95% CI]": interval(test_margins)[1]},
    {"measure": "pairs ranked right (held-out)", "value [95% CI]": interval([float(m > 0) for m in test_margins])[1]},
    {"measure": "win rate of DPO over SFT (ROUGE-L)", "value [95% CI]": interval(wins)[1]},
    {"measure": "ROUGE-L, DPO minus SFT (paired)",
     "value [95% CI]": interval(diffs)[1]},
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
# that makes better headlines is the win rate and the paired difference. Where the interval of the
# win rate contains 0.5, or the paired difference's contains 0, DPO did not measurably help here.

# %% [markdown]
# **Exercise.** The verdict below rests on the win rate's interval. Write both: one number per
# article (1 when the new headline scores higher, 0.5 for a tie, 0 when lower), their mean, and the
# percentile bootstrap interval of that mean the course uses everywhere, with NumPy:
# `rng = np.random.default_rng(seed)`, 2,000 resamples of the n numbers drawn as
# `rng.integers(0, n, size=(2000, n))`, and the 2.5% and 97.5% quantiles of the resampled means.

# %% tags=["exercise"]
def win_rate_interval(new_scores, old_scores, seed=0):
    """Per-item scores of two methods -> (win rate, low, high), a tie counting half."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "points=1", "raises-exception"]
from course_lib.exercises.ch04_real_llm import check_win_rate_interval

check_win_rate_interval(win_rate_interval)

# %% tags=["hide-input"]
def where(lo, hi, null):
    return "above" if lo > null else "below" if hi < null else "contains"


win_lo, win_hi = bootstrap_interval(wins, seed=0)
diff_lo, diff_hi = bootstrap_interval(diffs, seed=0)
win_side, diff_side = where(win_lo, win_hi, 0.5), where(diff_lo, diff_hi, 0.0)
if win_side == diff_side == "above":
    verdict = "DPO helped"
elif win_side == diff_side == "below":
    verdict = "DPO hurt"
elif win_side == diff_side == "contains":
    verdict = "DPO made no measurable difference"
else:
    verdict = "mixed: the two measures disagree, so no overall gain is established"
print(f"evaluated on {N_TEST} held-out articles: win rate of DPO over SFT {statistics.mean(wins):.2f} "
      f"[{win_lo:.2f}, {win_hi:.2f}] ({win_side} 0.5); paired ROUGE-L difference {statistics.mean(diffs):+.3f} "
      f"[{diff_lo:+.3f}, {diff_hi:+.3f}] ({diff_side} 0)")
print(f"verdict: {verdict}; mean held-out reward margin {statistics.mean(test_margins):.3f}")
print(f"RESULT headline rouge_l: baseline {statistics.mean(lead_scores):.3f} | "
      f"SFT {statistics.mean(sft_scores):.3f} | SFT+DPO {statistics.mean(dpo_scores):.3f}")

# %% [markdown] tags=["answer", "points=2"]
# ### Question 4.7a — what did DPO learn?
# Using the training pairs' statistics and the held-out table, say (1) whether DPO learned the
# preference it was shown, (2) whether that made the headlines better under ROUGE-L, citing the
# intervals that decide it, and (3) why pairs sampled from the model itself are a harder and more
# honest training signal than pairs whose rejected answer is some other article's headline.
#
# YOUR ANSWER HERE
