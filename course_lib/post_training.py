"""Post-training a chat model: chat-format SFT examples, held-out splits, label log-likelihood
classification, a DPO loss for the Trainer, and LoRA adapters on disk.

An SFT example is a conversation whose last message is the assistant's answer. The prompt is the
conversation before it in the chat template, ending with ``<|im_start|>assistant\\n``; the completion is
the answer followed by ``<|im_end|>``. Labels put ``IGNORE_INDEX`` over the prompt (prompt masking), so
the loss only teaches the answer. The course's GPT wants labels already shifted by one (``shift=True``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from course_lib.chat_template import IM_END, SMOLLM2_SYSTEM_PROMPT, check_messages, render_chat
from course_lib.lm_data import IGNORE_INDEX, pad_collate, prompt_completion_example
from course_lib.lora import load_lora_state_dict, lora_state_dict
from course_lib.preference import check_preference_pair, completion_logprobs, dpo_loss

HEADLINE_REQUEST = "Write a short headline for this news article.\n\n"
TOPIC_REQUEST = "Which topic is this news article about: business, entertainment, politics, sport or tech? "
TOPICS = ("business", "entertainment", "politics", "sport", "tech")


# ----------------------------------------------------------------------------------------------------------
# Data: held-out split and chat-format examples


def lead(text: str, n_words: int) -> str:
    """The first ``n_words`` words of ``text`` (the lead-N baseline, and the article part of a prompt)."""
    return " ".join(text.split()[:n_words])


def heldout_split(articles: Sequence[Any], n_test: int, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """(train, test) articles: ``n_test`` drawn at random, then every training article whose body or
    headline equals a held-out one's is dropped, so no test text is ever trained on."""
    if not 0 < n_test < len(articles):
        raise ValueError(f"n_test must be between 1 and {len(articles) - 1}, got {n_test}")
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    test = [articles[i] for i in order[:n_test]]
    seen = {a.body.strip() for a in test} | {a.headline.strip() for a in test}
    train = [
        articles[i]
        for i in order[n_test:]
        if articles[i].body.strip() not in seen and articles[i].headline.strip() not in seen
    ]
    return train, test


def headline_messages(article: Any, n_words: int = 60, answer: bool = True) -> list[dict[str, str]]:
    """The headline task as a chat: the request with the article's lead, and (``answer``) the headline."""
    messages = [{"role": "user", "content": HEADLINE_REQUEST + lead(article.body, n_words)}]
    if answer:
        messages.append({"role": "assistant", "content": article.headline.strip()})
    return messages


def topic_messages(article: Any, n_words: int = 60, answer: bool = True) -> list[dict[str, str]]:
    """The topic task as a chat; the answer is the label word (``sport`` for BBC's ``sport``)."""
    messages = [{"role": "user", "content": TOPIC_REQUEST + "\n\n" + lead(article.body, n_words)}]
    if answer:
        messages.append({"role": "assistant", "content": article.label})
    return messages


def chat_prompt_ids(
    messages: Sequence[Mapping[str, str]], tokenizer: Any, system_prompt: str | None = SMOLLM2_SYSTEM_PROMPT
) -> list[int]:
    """Token ids of ``messages`` in the chat template, ending with the assistant's turn opener."""
    return tokenizer.encode(render_chat(messages, add_generation_prompt=True, system_prompt=system_prompt))


def chat_sft_example(
    messages: Sequence[Mapping[str, str]],
    tokenizer: Any,
    system_prompt: str | None = SMOLLM2_SYSTEM_PROMPT,
    shift: bool = True,
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a conversation whose last message is the answer; the prompt is masked.

    The completion is the answer's tokens and ``<|im_end|>``; with ``shift=True`` labels[t] is the token
    after input_ids[t] (course_lib's GPT), as :func:`course_lib.lm_data.prompt_completion_example` makes it.
    """
    messages = check_messages(messages)
    if messages[-1]["role"] != "assistant":
        raise ValueError(
            f"the last message is a {messages[-1]['role']!r} message; an SFT example ends with the "
            "assistant's answer, which is what the loss teaches"
        )
    if len(messages) < 2:
        raise ValueError("an SFT example needs a prompt before the assistant's answer")
    prompt = chat_prompt_ids(messages[:-1], tokenizer, system_prompt)
    answer = tokenizer.encode(messages[-1]["content"])
    return prompt_completion_example(prompt, answer, tokenizer.token_to_id(IM_END), shift=shift)


def masked_share(example: tuple[list[int], list[int]]) -> float:
    """The share of an example's label positions that are masked (the prompt's share)."""
    _, labels = example
    return sum(t == IGNORE_INDEX for t in labels) / max(len(labels), 1)


# ----------------------------------------------------------------------------------------------------------
# Classification by the likelihood of each label


def _answer_batch(
    prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], pad_id: int
) -> dict[str, Tensor]:
    """Right-padded prompt+answer ids (B, T), attention mask (B, T) and answer mask (B, T)."""
    rows = [[*p, *a] for p, a in zip(prompts, answers)]
    batch = pad_collate([(r, 0) for r in rows], pad_id=pad_id)
    answer_mask = torch.zeros_like(batch["input_ids"])
    for b, (p, a) in enumerate(zip(prompts, answers)):
        answer_mask[b, len(p) : len(p) + len(a)] = 1
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "answer_mask": answer_mask,
    }


@torch.no_grad()
def label_logprobs(
    model: nn.Module, prompt_ids: Sequence[int], label_ids: Sequence[Sequence[int]], pad_id: int = 0
) -> Tensor:
    """Summed log-probability of each label's tokens after one prompt: (L,). The prompt is shared."""
    if not label_ids or any(len(ids) == 0 for ids in label_ids):
        raise ValueError("every label needs at least one token")
    device = next(model.parameters()).device
    batch = _answer_batch([prompt_ids] * len(label_ids), label_ids, pad_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    return completion_logprobs(model, batch["input_ids"], batch["answer_mask"], batch["attention_mask"]).cpu()


def classify_by_loglik(
    model: nn.Module, prompts: Sequence[Sequence[int]], label_ids: Sequence[Sequence[int]], pad_id: int = 0
) -> list[int]:
    """For each prompt, the index of the label whose tokens are most likely after it."""
    return [int(label_logprobs(model, p, label_ids, pad_id).argmax()) for p in prompts]


# ----------------------------------------------------------------------------------------------------------
# DPO: preference pairs as batches, and the loss for the Trainer


def preference_example(
    messages: Sequence[Mapping[str, str]],
    chosen: str,
    rejected: str,
    tokenizer: Any,
    system_prompt: str | None = SMOLLM2_SYSTEM_PROMPT,
) -> dict[str, list[int]]:
    """One preference pair as token ids: the prompt, and each answer followed by ``<|im_end|>``."""
    prompt = chat_prompt_ids(messages, tokenizer, system_prompt)
    check_preference_pair(tokenizer.decode(prompt), chosen, rejected)
    end = tokenizer.token_to_id(IM_END)
    return {
        "prompt": prompt,
        "chosen": [*tokenizer.encode(chosen), end],
        "rejected": [*tokenizer.encode(rejected), end],
    }


def preference_collate(pairs: Sequence[Mapping[str, list[int]]], pad_id: int) -> dict[str, Tensor]:
    """B pairs -> (2B, T) ``input_ids``, ``attention_mask``, ``answer_mask``: chosen rows, then rejected."""
    prompts = [p["prompt"] for p in pairs] * 2
    answers = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    return _answer_batch(prompts, answers, pad_id)


class DPOLoss:
    """``loss_fn(model, batch)`` for the Trainer: DPO against a frozen ``reference`` model.

    The reference's log-probabilities are computed under no_grad; ``last`` keeps the latest
    :class:`~course_lib.preference.DPOOutput` for logging rewards and margins.
    """

    def __init__(self, reference: nn.Module, beta: float = 0.1) -> None:
        self.reference = reference.eval().requires_grad_(False)
        self.beta = beta
        self.last = None

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        ids, att, ans = batch["input_ids"], batch["attention_mask"], batch["answer_mask"]  # (2B, T)
        policy = completion_logprobs(model, ids, ans, att)  # (2B,)
        with torch.no_grad():
            ref = completion_logprobs(self.reference, ids, ans, att)  # (2B,)
        b = ids.shape[0] // 2
        self.last = dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], beta=self.beta)
        return self.last.loss


# ----------------------------------------------------------------------------------------------------------
# LoRA adapters on disk


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the model's LoRA tensors (only those) to ``path`` with torch.save; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(lora_state_dict(model), path)
    return path


def load_adapter(model: nn.Module, path: str | Path) -> None:
    """Swap in the LoRA tensors saved at ``path`` (the model must carry the same LoRA layers, unmerged)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}; write one with save_adapter(model, path)")
    load_lora_state_dict(model, torch.load(path, map_location="cpu", weights_only=True))


__all__ = [
    "DPOLoss",
    "HEADLINE_REQUEST",
    "TOPICS",
    "TOPIC_REQUEST",
    "chat_prompt_ids",
    "chat_sft_example",
    "classify_by_loglik",
    "heldout_split",
    "headline_messages",
    "label_logprobs",
    "lead",
    "load_adapter",
    "masked_share",
    "preference_collate",
    "preference_example",
    "save_adapter",
    "topic_messages",
]
