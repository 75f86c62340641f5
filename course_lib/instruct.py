"""Instruction tuning a causal GPT: (instruction + input -> answer) examples with the prompt masked out.

The task here is "write the headline of a BBC News article". One example is

    prompt      "Write a headline for this article:\\n<the article's first sentences>\\nHeadline:"
    completion  " <the real headline>" followed by <|endoftext|>

tokenized and joined; the labels copy the completion and put ``IGNORE_INDEX`` over the prompt, so the
loss only teaches the model to *answer*, not to reproduce articles
(:func:`course_lib.lm_data.prompt_completion_example`). The article is cut, never the headline, so the
example fits the model's context.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from course_lib.lm_data import IGNORE_INDEX, pad_collate, prompt_completion_example
from course_lib.metrics import rouge_l
from course_lib.tokenizers import ENDOFTEXT, printable

INSTRUCTION = "Write a headline for this article:"


def headline_prompt(body: str, tokenizer: Any, max_body_tokens: int) -> list[int]:
    """The prompt's token ids: the instruction, the body's first ``max_body_tokens`` tokens, "Headline:"."""
    if max_body_tokens < 1:
        raise ValueError(f"max_body_tokens must be >= 1, got {max_body_tokens}; the context is too short")
    body_ids = tokenizer.encode(body.strip())[:max_body_tokens]
    return tokenizer.encode(INSTRUCTION + "\n") + body_ids + tokenizer.encode("\nHeadline:")


def body_budget(tokenizer: Any, block_size: int, max_headline_tokens: int = 24) -> int:
    """How many body tokens a prompt keeps so that prompt + headline + <|endoftext|> fit ``block_size``.

    Training and generation both cut the body to this length, so the model sees the same kind of prompt.
    """
    fixed = len(tokenizer.encode(INSTRUCTION + "\n")) + len(tokenizer.encode("\nHeadline:"))
    return block_size - fixed - max_headline_tokens - 1


def headline_example(
    headline: str, body: str, tokenizer: Any, block_size: int, max_headline_tokens: int = 24
) -> tuple[list[int], list[int]]:
    """(input ids, shifted labels) for one article, shorter than ``block_size``, the prompt masked.

    The headline is cut to ``max_headline_tokens`` and the body to :func:`body_budget`.
    """
    eos = tokenizer.token_to_id(ENDOFTEXT)
    completion = tokenizer.encode(" " + headline.strip())[:max_headline_tokens]
    prompt = headline_prompt(body, tokenizer, body_budget(tokenizer, block_size, max_headline_tokens))
    return prompt_completion_example(prompt, completion, eos, shift=True)


def instruction_loader(
    examples: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    pad_id: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
) -> DataLoader:
    """Right-padded batches ``{"input_ids", "attention_mask", "labels"}``; padded labels are ignored."""
    items = [(list(ids), list(labels)) for ids, labels in examples]  # pad_collate takes (ids, labels) pairs
    collate = functools.partial(pad_collate, pad_id=pad_id)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(items, batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)


def instruction_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the completion tokens only (labels != IGNORE_INDEX).

    Right padding sits after every real token, so a causal model's real positions never see it.
    """
    _, loss = model(batch["input_ids"], batch["labels"])
    return loss


def completion_share(examples: Sequence[tuple[list[int], list[int]]]) -> float:
    """The fraction of label positions that carry a loss: how little of each example is the answer."""
    total = sum(len(labels) for _, labels in examples)
    kept = sum(sum(1 for t in labels if t != IGNORE_INDEX) for _, labels in examples)
    return kept / max(total, 1)


@torch.no_grad()
def write_headline(model: nn.Module, tokenizer: Any, body: str, max_headline_tokens: int = 24) -> str:
    """The model's headline for ``body``: greedy decoding after the prompt, to <|endoftext|> or a newline."""
    budget = body_budget(tokenizer, model.config.block_size, max_headline_tokens)
    prompt = headline_prompt(body, tokenizer, budget)
    idx = torch.tensor([prompt], device=next(model.parameters()).device)
    eos = tokenizer.token_to_id(ENDOFTEXT)
    out = model.generate(idx, max_headline_tokens + 1, temperature=0.0, eos_id=eos)[0, len(prompt) :].tolist()
    if eos in out:
        out = out[: out.index(eos)]
    return printable(tokenizer.decode(out)).split("\n")[0].strip()


def headline_scores(
    model: nn.Module, tokenizer: Any, articles: Sequence[Any], progress: bool = False, **kwargs: Any
) -> tuple[list[str], float]:
    """(the model's headlines, mean ROUGE-L F1 against the real ones) for articles with .headline/.body."""
    from tqdm.auto import tqdm

    written = [
        write_headline(model, tokenizer, a.body, **kwargs)
        for a in tqdm(articles, desc="headlines", disable=not progress)
    ]
    scores = [rouge_l(w, a.headline) for w, a in zip(written, articles)]
    return written, sum(scores) / max(len(scores), 1)


__all__ = [
    "INSTRUCTION",
    "body_budget",
    "completion_share",
    "headline_example",
    "headline_prompt",
    "headline_scores",
    "instruction_loader",
    "instruction_loss",
    "write_headline",
]
