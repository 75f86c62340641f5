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
# # 4.5 · Meet a real chat model: SmolLM2-135M-Instruct, and an honest evaluation
#
# The GPT of chapter 3 learned BBC News and nothing else. **SmolLM2-135M-Instruct** is a real chat
# model: pretrained on trillions of tokens, then instruction tuned and preference tuned by Hugging
# Face. Its weights come with the course (a GGUF file) and load into the course's own GPT class: the
# same Llama-style blocks (RMSNorm, rotary positions, grouped-query attention, SwiGLU) built in
# chapter 2. This notebook:
#
# 1. counts its parameters and memory with the chapter-1 formulas;
# 2. shows the chat template token by token, and has a few chats;
# 3. builds a **held-out** BBC set, disjoint from every text the next notebooks train on;
# 4. measures the model *before* any tuning of ours: headline writing (ROUGE-L, next to copying the
#    first 8 words) and topic classification (by generation, and by the likelihood of each label),
#    each with a bootstrap 95% interval.
#
# Evaluation comes first: without these numbers, the fine-tuning of 4.6 and 4.7 could not be judged.

# %% tags=["imports"]
import torch

from course_lib import pick, seed_everything
from course_lib.chat import ChatModel
from course_lib.chat_template import render_chat
from course_lib.datasets import bbc_news
from course_lib.metrics import bootstrap_interval, format_table, rouge_l
from course_lib.model_costs import inference_memory, training_memory
from course_lib.post_training import (
    TOPICS,
    chat_prompt_ids,
    classify_by_loglik,
    headline_messages,
    heldout_split,
    lead,
    topic_messages,
)
from course_lib.smollm2 import load_smollm2, load_smollm2_tokenizer
from course_lib.tokenizers import printable

seed_everything(0)
torch.set_num_threads(max(1, torch.get_num_threads()))
model = load_smollm2("cpu")
tokenizer = load_smollm2_tokenizer()
chat_model = ChatModel(model, tokenizer, template=render_chat, name="smollm2")
print(model.config)

# %% [markdown]
# ## 4.5.1 Size and memory
#
# The count below is the built model's; the memory uses chapter 1's formulas: 4 bytes a parameter
# to run in fp32, 16 bytes a parameter (weights, gradients, two AdamW states) to train all of it.

# %%
n_params = model.num_parameters()
n_embed = model.transformer.wte.weight.numel()
print(f"{n_params / 1e6:.1f} M parameters, of which {n_embed / 1e6:.1f} M in the (tied) token embedding")
print(f"inference, fp32: {inference_memory(n_params, 'fp32') / 2**20:.0f} MiB; "
      f"bf16: {inference_memory(n_params, 'bf16') / 2**20:.0f} MiB")
print(f"full fine-tuning with AdamW, fp32, before activations: "
      f"{training_memory(n_params).total / 2**20:.0f} MiB")


# %% [markdown]
# **Exercise.** Chapter 1 counted GPT-2's parameters from its shape; count a Llama-style model's the
# same way. What differs: grouped-query attention (the keys and values have only `n_kv_head` heads of
# size `d_model / n_head`), SwiGLU's three matrices of `d_model x d_ff`, RMSNorm's weight without a
# bias, no biases in the linear layers, and rotary positions, which have no parameters. The check's
# first case is SmolLM2's own shape: your count must equal the one printed above.

# %% tags=["exercise"]
def llama_parameters(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, tied):
    """Parameters of a Llama-style model; ``tied``: the output layer reuses the token embedding."""
    ### BEGIN SOLUTION
    kv_width = n_kv_head * (d_model // n_head)  # k and v each project d_model -> kv_width
    attention = d_model * (d_model + 2 * kv_width) + d_model * d_model  # q, k, v, then the output
    mlp = 3 * d_model * d_ff  # gate, up and down projections
    block = attention + mlp + 2 * d_model  # two RMSNorm weights
    embeddings = vocab_size * d_model * (1 if tied else 2)
    return embeddings + n_layer * block + d_model  # + the final RMSNorm
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04_real_llm import check_llama_parameters

check_llama_parameters(llama_parameters)

# %% [markdown]
# ## 4.5.2 The chat template, token by token
#
# A chat is one string in ChatML: each message between `<|im_start|>role` and `<|im_end|>`. The
# model never sees roles as anything else than these tokens; the generation prompt ends with
# `<|im_start|>assistant` and a newline, so the most likely next tokens are an answer.

# %%
messages = [{"role": "user", "content": "What is the capital of France?"}]
ids = tokenizer.encode(render_chat(messages))
print(len(ids), "tokens:")
print([printable(tokenizer.decode([i])) for i in ids])  # one string per token; "\n" is a newline token

# %% [markdown]
# **Exercise.** Write the template yourself for the case without a default system prompt: each
# message, then the assistant's opener.

# %% tags=["exercise"]
def to_chatml(messages):
    """ChatML text of ``messages`` (dicts with "role" and "content"), ending with the assistant opener."""
    ### BEGIN SOLUTION
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04 import check_to_chatml

check_to_chatml(to_chatml)

# %%
for question in pick(["What is the capital of France?"],
                     ["What is the capital of France?", "Give me two tips for sleeping well.",
                      "Write a haiku about autumn."]):
    answer = chat_model.chat([{"role": "user", "content": question}], max_new_tokens=pick(16, 60))
    print(f"> {question}\n{answer}\n")

# %% [markdown]
# ## 4.5.3 A held-out set
#
# `bbc_news(dedupe=True)` drops articles whose body repeats an earlier one. `heldout_split` then
# draws the test articles and drops from the training pool every article whose body *or headline*
# equals a held-out one, so no test text is trained on in 4.6 or 4.7 (the same seed there).

# %%
articles = bbc_news(dedupe=True)
N_TEST = pick(6, 100)
train_articles, test_articles = heldout_split(articles, n_test=N_TEST, seed=0)
test_texts = {a.body for a in test_articles} | {a.headline for a in test_articles}
print(f"{len(articles)} articles: {len(test_articles)} held out, {len(train_articles)} for training")

# %% tags=["nbval-check-output"]
print("no held-out body or headline in the training pool:",
      not any(a.body in test_texts or a.headline in test_texts for a in train_articles))

# %% [markdown]
# ## 4.5.4 Headlines, zero-shot
#
# The model gets the request and the article's first 60 words; its answer is compared with the
# real headline by ROUGE-L. The **lead-8 baseline** copies the first 8 words of the article.

# %%
def interval(scores):
    lo, hi = bootstrap_interval(scores, seed=0)
    mean = sum(scores) / len(scores)
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


zero_shot = [chat_model.chat(headline_messages(a, answer=False), max_new_tokens=24) for a in test_articles]
zs_scores = [rouge_l(w, a.headline) for w, a in zip(zero_shot, test_articles)]
lead_scores = [rouge_l(lead(a.body, 8), a.headline) for a in test_articles]
for w, a in list(zip(zero_shot, test_articles))[:3]:
    print(f"real:      {a.headline}\nzero-shot: {w}\nlead-8:    {lead(a.body, 8)}\n")

# %% [markdown]
# ## 4.5.5 Topics: by generation and by label likelihood
#
# Asked which topic an article is about, the model may answer with anything; its answer counts when
# the first topic word in it is the right one. The alternative needs no parsing: compute the
# log-probability of each of the five label words after the prompt, and pick the most likely.

# %% [markdown]
# **Exercise.** The heart of label log-likelihood classification: given the logits of a batch of
# prompt + answer sequences, sum the log-probabilities of the answer tokens only. Remember which
# position's logits predict which token.

# %% tags=["exercise"]
def answer_logprobs(logits, input_ids, answer_mask):
    """logits (B, T, V), input_ids (B, T), answer_mask (B, T) -> (B,) summed answer log-probabilities."""
    ### BEGIN SOLUTION
    logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V): predictions of tokens 1..T-1
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    return (token_logp * answer_mask[:, 1:]).sum(-1)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch04 import check_answer_logprobs

check_answer_logprobs(answer_logprobs)

# %%
def first_topic(answer):
    words = answer.lower().replace(".", " ").replace(",", " ").split()
    return next((w for w in words if w in TOPICS), "none")


generated = [first_topic(chat_model.chat(topic_messages(a, answer=False), max_new_tokens=8))
             for a in test_articles]
gen_correct = [float(g == a.label) for g, a in zip(generated, test_articles)]
label_ids = [tokenizer.encode(t) for t in TOPICS]
prompts = [chat_prompt_ids(topic_messages(a, answer=False), tokenizer) for a in test_articles]
picked = classify_by_loglik(model, prompts, label_ids)
ll_correct = [float(TOPICS[k] == a.label) for k, a in zip(picked, test_articles)]

# %% [markdown]
# ## 4.5.6 Summary
#
# Means over the held-out articles with bootstrap 95% intervals (2,000 resamples of the articles).
# Overlapping intervals mean the data cannot tell the two apart.

# %%
format_table([
    {"task": "headline ROUGE-L", "method": "lead-8 baseline", "score [95% CI]": interval(lead_scores)},
    {"task": "headline ROUGE-L", "method": "zero-shot SmolLM2", "score [95% CI]": interval(zs_scores)},
    {"task": "topic accuracy", "method": "generation", "score [95% CI]": interval(gen_correct)},
    {"task": "topic accuracy", "method": "label log-likelihood", "score [95% CI]": interval(ll_correct)},
])

# %%
print(f"evaluated on {N_TEST} held-out articles")
print(f"topic accuracy: generation {sum(gen_correct) / N_TEST:.3f}, "
      f"label log-likelihood {sum(ll_correct) / N_TEST:.3f}")
print(f"RESULT headline rouge_l: zero-shot {sum(zs_scores) / N_TEST:.3f} | "
      f"baseline {sum(lead_scores) / N_TEST:.3f}")

# %% [markdown] tags=["answer", "points=2"]
# ### Question 4.5a — what does the untuned model know?
# Read the summary table. (1) Does zero-shot SmolLM2 write better or worse headlines than copying the
# article's first eight words? (2) Five topics are equally likely to be guessed at random: is either
# way of asking the model for the topic better than guessing? Cite the intervals.
#
# ### BEGIN SOLUTION
# (1) Neither can be said: zero-shot ROUGE-L is 0.133 [0.114, 0.152] and lead-8 0.154 [0.131, 0.180];
# the means favour lead-8 but the intervals overlap. (2) Guessing gets 1 in 5, 0.2, right. Generation
# scores 0.040 [0.010, 0.080], far *below* guessing: an answer counts only when the first of the five
# topic words in it is the right one, and an answer in words of its own ("economy", "finance") or with
# none counts as wrong, so this measures how seldom the model answers in the requested words as much
# as what it knows. Label log-likelihood
# scores 0.270 [0.180, 0.360]: its interval contains 0.2, so on 100 articles it is not shown to beat
# guessing either. The untuned model is a weak baseline on both tasks, which is what 4.6 starts from.
#
# Rubric: 1 point for (1), overlap so no winner, with the numbers; 1 point for (2), comparing both
# accuracies with chance 0.2 (generation below it and why that can happen; the likelihood interval
# containing 0.2).
# ### END SOLUTION
