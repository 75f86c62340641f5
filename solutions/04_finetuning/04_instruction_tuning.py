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
# # 4.4 · Instruction tuning: teaching the GPT to follow a request
#
# A pretrained GPT continues text. Ask it "Write a headline for this article:" and it will happily
# continue the article, or write another one. **Instruction tuning** fine-tunes it on examples of
# requests followed by good answers, so that it learns to answer. Chat models are made this way
# (with many thousands of kinds of requests, then usually preference tuning on top); here there is
# one kind of request, built from BBC News, where every article comes with its real headline:
#
#     Write a headline for this article:
#     <the first sentences of the article>
#     Headline: <the real headline><|endoftext|>
#
# 1. building the examples, and **prompt masking**: the loss counts the answer only (exercise);
# 2. the pretrained GPT's headlines before tuning, scored with ROUGE-L against the real ones
#    (exercise);
# 3. instruction tuning, with and without prompt masking, and the loss that skips the prompt
#    (exercise);
# 4. the headlines after tuning, next to a simple baseline.

# %% tags=["imports"]
import copy

import matplotlib.pyplot as plt
import numpy as np

from course_lib import get_device, pick, pretrained, seed_everything
from course_lib.instruct import (
    completion_share,
    headline_example,
    headline_scores,
    instruction_loader,
    instruction_loss,
)
from course_lib.lm_data import IGNORE_INDEX
from course_lib.metrics import rouge_l
from course_lib.plots import use_course_style
from course_lib.tokenizers import printable
from course_lib.trainer import TrainConfig, Trainer
from course_lib.training_plots import plot_train_val

use_course_style()
seed_everything(0)
device = get_device()

# %% [markdown]
# ## 4.4.1 The examples
#
# The held-out articles are again the test articles of notebooks 4.1 and 4.2: the GPT never saw
# them, nor their headlines, during pretraining. Every other article becomes a training (or
# validation) example. The context is only `block_size` tokens, so the article is cut to what fits
# after the instruction, while room is always kept for a headline of up to 24 tokens.

# %%
recipe = pretrained.bbc_recipe()
gpt, tokenizer = pretrained.bbc_gpt(device=device)
train_articles, val_articles, test_articles = pretrained.bbc_topic_splits(recipe)
block = gpt.config.block_size
train_examples = [headline_example(a.headline, a.body, tokenizer, block) for a in train_articles]
val_examples = [headline_example(a.headline, a.body, tokenizer, block) for a in val_articles]
print(f"{len(train_examples)} training and {len(val_examples)} validation examples, "
      f"{len(test_articles)} held-out articles")

ids, labels = train_examples[0]
print("\n" + printable(tokenizer.decode(ids)))

# %% [markdown]
# ## 4.4.2 Prompt masking
#
# Training on the whole sequence would spend most of the loss on predicting the *article*, which
# the model already does, and teach it to write articles after "Write a headline". What we want is
# the answer given the prompt: $\log p(\text{headline} \mid \text{prompt})$. So the labels copy the
# sequence, and every position of the prompt gets the label `-100` (`IGNORE_INDEX`), which
# `F.cross_entropy` skips.
#
# Write the masking for labels aligned with the input (the GPT's loss then shifts by one token;
# `course_lib.lm_data.prompt_completion_example` does both layouts):

# %% tags=["exercise"]
def mask_prompt(prompt_ids, completion_ids, eos_id):
    """(input_ids, labels): prompt + completion + [eos], with -100 over the prompt in labels."""
    ### BEGIN SOLUTION
    input_ids = list(prompt_ids) + list(completion_ids) + [eos_id]
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids) + [eos_id]
    return input_ids, labels
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04 import check_mask_prompt

check_mask_prompt(mask_prompt)

# %% [markdown]
# In the example above, only the tokens in brackets carry a loss. Across the training set that is
# a small share of all positions, so the few headline tokens decide the gradient:

# %%
shown = [f"[{printable(tokenizer.decode([t]))}]" if t != IGNORE_INDEX else "" for t in labels]
print("tokens with a loss:", "".join(shown))
print(f"share of positions with a loss, over the training set: {completion_share(train_examples):.1%}")

# %% tags=["nbval-check-output"]
print("every example fits the context:", all(len(i) <= block for i, _ in train_examples + val_examples))
print("every example ends with <|endoftext|> as its last label:",
      all(lab[-1] == tokenizer.token_to_id("<|endoftext|>") for _, lab in train_examples))
print("the prompt never carries a loss:", all(lab[0] == IGNORE_INDEX for _, lab in train_examples))

# %% [markdown]
# ## 4.4.3 Before tuning
#
# `write_headline` puts an article into the same prompt and decodes greedily (always the most
# likely next token) until `<|endoftext|>` or a newline. The score is **ROUGE-L**: the longest
# common subsequence of words between the written and the real headline, as an F1 of its precision
# (share of the written words) and recall (share of the real words). It rewards using the right
# words in the right order; it knows nothing of meaning, so read the headlines too.

# %% [markdown]
# **Exercise.** Write ROUGE-L yourself. Split both texts into words with `rouge_tokens` (lower-cased
# runs of letters and digits), find the length of their longest common subsequence (words in the
# same order, gaps allowed: "oil prices rise" and "oil firm prices climb" share "oil prices") with a
# table filled row by row, then return $F_1 = 2PR/(P+R)$ with $P$ = LCS / words written and
# $R$ = LCS / words in the real headline, and 0 when nothing is shared. The check compares with
# `course_lib.metrics.rouge_l` on seven pairs, an empty headline among them.

# %% tags=["exercise"]
from course_lib.metrics import rouge_tokens  # noqa: F401 (your answer splits the texts with it)


def rouge_l_f1(candidate, reference):
    """ROUGE-L F1 between a written and a real headline, in [0, 1]."""
    ### BEGIN SOLUTION
    cand, ref = rouge_tokens(candidate), rouge_tokens(reference)
    table = np.zeros((len(cand) + 1, len(ref) + 1), dtype=int)  # table[i, j]: LCS of cand[:i] and ref[:j]
    for i, word in enumerate(cand, start=1):
        for j, other in enumerate(ref, start=1):
            table[i, j] = table[i - 1, j - 1] + 1 if word == other else max(table[i - 1, j], table[i, j - 1])
    common = int(table[-1, -1])
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04 import check_rouge_l

check_rouge_l(rouge_l_f1)

# %%
n_scored = pick(fast=4, full=len(test_articles))
scored = test_articles[:n_scored]
before, rouge_before = headline_scores(gpt, tokenizer, scored, progress=True)


def lead_baseline(article, n_words=8):
    """A classic summarisation baseline: the article's first words."""
    return " ".join(article.body.split()[:n_words])


rouge_lead = float(np.mean([rouge_l(lead_baseline(a), a.headline) for a in scored]))
for a, written in list(zip(scored, before))[:3]:
    print(f"real   : {a.headline}\nwritten: {written}\n")
print(f"ROUGE-L on {n_scored} held-out articles: pretrained GPT {rouge_before:.3f}, "
      f"first-8-words baseline {rouge_lead:.3f}")


# %% [markdown]
# ## 4.4.4 Instruction tuning
#
# Full fine-tuning (the model is small), `instruction_loss` as the loss: the GPT's cross-entropy
# over the label positions that are not `-100`. The validation loss is measured on the validation
# examples, and early stopping keeps the best weights. A second run trains on the same examples
# without the mask, every position carrying a loss, to see what the mask is for.

# %% [markdown]
# **Exercise.** Write that loss. The labels here are already shifted (`labels[b, t]` is the token
# that should follow `input_ids[b, t]`), so the loss is the mean, over every position of the batch
# whose label is not `-100`, of $-\log \mathrm{softmax}(\text{logits}[b, t])[\text{labels}[b, t]]$.
# Use `log_softmax` and `gather`, not `F.cross_entropy`: a `-100` is not a valid index, so
# swap it for any valid one before gathering and leave those positions out of the mean. The check
# compares with `F.cross_entropy(..., ignore_index=-100)`, including a row that is all prompt.

# %% tags=["exercise"]
def masked_lm_loss(logits, labels):
    """Mean cross-entropy of logits (B, T, V) against labels (B, T) over the labels that are not -100."""
    ### BEGIN SOLUTION
    keep = labels != IGNORE_INDEX  # (B, T) positions that carry a loss
    safe = labels.masked_fill(~keep, 0)  # (B, T) any valid index under the mask
    logp = logits.log_softmax(dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return -(logp * keep).sum() / keep.sum()
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04 import check_masked_lm_loss

check_masked_lm_loss(masked_lm_loss)

# %%
steps = pick(fast=3, full=250)
batch_size = pick(fast=4, full=16)


def tune(examples, name):
    seed_everything(0)
    model = copy.deepcopy(gpt).train()
    config = TrainConfig(
        max_steps=steps, lr=5e-4, min_lr=5e-5, warmup_steps=pick(fast=0, full=20), weight_decay=0.1,
        eval_every=pick(fast=3, full=25), eval_steps=None, early_stopping_patience=4, log_every=25,
        device=str(device), out_dir=str(recipe.run_dir.parent / f"instruct-{recipe.mode}-{name}"),
    )  # fmt: skip
    pad = tokenizer.token_to_id("<|endoftext|>")
    trainer = Trainer(model, config, instruction_loader(examples, batch_size, pad),
                      instruction_loader(val_examples, 32, pad, shuffle=False), loss_fn=instruction_loss)  # fmt: skip
    trainer.fit()
    return model.eval(), trainer


def unmasked(example):
    ids, labels = example
    return ids, ids[1:] + [labels[-1]]  # every position predicts its next token


tuned, tuned_trainer = tune(train_examples, "masked")
tuned_unmasked, unmasked_trainer = tune([unmasked(e) for e in train_examples], "unmasked")
fig = plot_train_val({"prompt masked": tuned_trainer.history_columns()}, x_key="step", xlabel="step",
                     title="instruction tuning: loss on the headline tokens")  # fmt: skip
plt.show()

# %% [markdown]
# (The unmasked run's training loss is over all tokens, so it is not comparable and not drawn; its
# validation loss is still measured on headline tokens only, the validation examples being masked.)

# %%
print(f"best validation loss on headline tokens: masked {tuned_trainer.best_val:.3f}, "
      f"unmasked {unmasked_trainer.best_val:.3f}")

# %% [markdown]
# ## 4.4.5 After tuning

# %%
after, rouge_after = headline_scores(tuned, tokenizer, scored, progress=True)
after_unmasked, rouge_unmasked = headline_scores(tuned_unmasked, tokenizer, scored)
for a, b, c in list(zip(scored, before, after))[:6]:
    print(f"real   : {a.headline}\nbefore : {b}\nafter  : {c}\n")

rows = [("pretrained GPT, no tuning", rouge_before), ("first 8 words of the article", rouge_lead),
        ("instruction-tuned, loss on all tokens", rouge_unmasked), ("instruction-tuned, prompt masked", rouge_after)]  # fmt: skip
print(f"{'ROUGE-L F1 on ' + str(n_scored) + ' held-out articles':<44}")
for name, score in rows:
    print(f"  {name:<40} {score:.3f}")
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.barh([r[0] for r in rows], [r[1] for r in rows], color=["tab:gray", "tab:gray", "tab:orange", "tab:blue"])
ax.set(xlabel="mean ROUGE-L F1 against the real headline", title="headlines for articles the GPT never saw")
plt.show()

# %% [markdown] tags=["answer", "points=2"]
# ### Question 4.4a — did the tuning work?
# Read the samples and the ROUGE-L table above. What did instruction tuning change, and what did it not?
# Does the table show that masking the prompt helps?
#
# ### BEGIN SOLUTION
# It changed the form: before tuning the GPT continued the article ("Williams, who has been nominated for
# best film."), after it writes one short, headline-shaped line and stops ("Robinson returns Ireland
# victory"). It did not make the headlines about the article: the real one was "Spirit awards hail
# Sideways", and ROUGE-L only moves from 0.018 to 0.034 (masked), far below the 0.169 of simply copying the
# article's first eight words. Masked tuning scores 0.034 against 0.019 without masking, and its best
# validation loss on headline tokens is 3.426 against 3.449, but each is one run with one seed on 210
# articles and no interval, so the table does not show that masking helps here.
#
# Rubric: 1 point for the format learned but not the content (0.034 against the 0.169 baseline, or a sample
# pair); 1 point for declining to conclude on masking from one run each without an interval (0.034 against
# 0.019).
# ### END SOLUTION

# %% tags=["nbval-check-output"]
print("one headline per held-out article:", len(after) == len(scored) == len(before))
print("ROUGE-L of a headline with itself:", rouge_l(scored[0].headline, scored[0].headline))

# %% [markdown]
# What happened (the run stored on this page): before tuning, the GPT continues the prompt with
# more article-like text; after tuning it writes a short, headline-shaped line that stops where a
# headline stops. That is what instruction tuning teaches: the **format and the task**. What it
# cannot add is knowledge or skill the model lacks. A 2-million-parameter model pretrained for ten
# minutes on two thousand articles writes plausible headline phrases, but mostly not about *this*
# article: the table above shows it far below simply copying the article's first eight words.
# This notebook is a contrast, not the main result: notebooks 4.5 to 4.7 post-train a real chat
# model (SmolLM2-135M-Instruct) on the same task, with bootstrap intervals on every score.
#
# Masked and unmasked tuning are one run each with one seed, scored on a few hundred articles
# without intervals: the difference between them in the table is not evidence that masking helps
# here. (Masking is still the standard choice: it spends the gradient on the answer, not on
# re-predicting the prompt.)
#
# Automatic scores are cheap and repeatable but blind to meaning: a headline with the right words
# in the wrong sense scores well, a good paraphrase scores zero. That is why model builders also run
# **human evaluations**, people rating or ranking outputs without knowing which model wrote them;
# the cheapest version is the one above: read a sample of the outputs.

# %% [markdown]
# ## Summary
#
# * Instruction examples are prompt + answer + end token; the labels mask the prompt with `-100`,
#   so the loss is $-\log p(\text{answer} \mid \text{prompt})$.
# * Tuning teaches the format of the answer quickly; the content is limited by what pretraining
#   put into the model.
# * Automatic scores such as ROUGE-L are cheap and repeatable, compare against a trivial baseline,
#   and read the outputs as well.
