"""Text from a trained GPT: sampling a continuation, and two measures of a set of samples.

- :func:`generate_text` -- prompt in, continuation out, reproducible by seed (chapter 5.1, the
  ``generate`` command, the generation widget);
- :func:`distinct_n` -- how varied the samples are (unique n-grams over all n-grams);
- :func:`continuation_nll` -- how likely the model itself finds them (nats per token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from course_lib.lm_data import IGNORE_INDEX
from course_lib.tokenizers import ENDOFTEXT, printable


def _end_of_text_id(tokenizer: Any) -> int | None:
    try:
        return tokenizer.token_to_id(ENDOFTEXT)
    except (KeyError, ValueError):
        return None


@torch.no_grad()
def generate_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 60,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> str:
    """The continuation of ``prompt`` that ``model`` (a :class:`course_lib.gpt.GPT`) samples; the prompt
    itself is not repeated.

    Sampling is :meth:`GPT.generate` (``temperature=0`` is greedy; ``top_k`` / ``top_p`` of None keep
    every token) with a generator seeded by ``seed``, so the same settings give the same text. A prompt
    longer than the model's window is refused (generation would silently drop its start). When the
    tokenizer has ``<|endoftext|>`` the text stops there. Control characters are hidden
    (:func:`course_lib.tokenizers.printable`).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty; type at least one character for the model to continue")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    block = getattr(getattr(model, "config", None), "block_size", None)  # a GPT's window
    if block is not None and len(ids) > block:
        raise ValueError(
            f"the prompt is {len(ids)} tokens but the model reads at most {block} (its block_size); shorten "
            f"it, e.g. to its last {block} tokens: tokenizer.decode(tokenizer.encode(prompt)[-{block}:])"
        )
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = _end_of_text_id(tokenizer)
    out = model.generate(idx, max_new_tokens, temperature, top_k, top_p, eos_id=eos, generator=generator)
    new = out[0, len(ids) :].tolist()
    if eos is not None and eos in new:
        new = new[: new.index(eos)]
    text = tokenizer.decode(ids + new)  # decoded together, so a character split across the seam survives
    prefix = tokenizer.decode(ids)
    return printable(text[len(prefix) :] if text.startswith(prefix) else tokenizer.decode(new))


def distinct_n(sequences: Sequence[Sequence[int]], n: int = 2) -> float:
    """Distinct-n: the number of different n-grams over the total number of n-grams, pooled over all
    ``sequences`` (token-id lists). 1.0 = no n-gram repeats; a model stuck in a loop scores near 0."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
    if not grams:
        raise ValueError(f"no sequence has {n} tokens, so there are no {n}-grams to count")
    return len(set(grams)) / len(grams)


@torch.no_grad()
def continuation_nll(model: nn.Module, idx: torch.Tensor, n_prompt: int) -> float:
    """Mean negative log-likelihood per token (nats) that ``model``, at temperature 1, gives the tokens of
    ``idx`` (B, T) from position ``n_prompt`` on, each predicted from everything before it."""
    if idx.dim() != 2 or not 1 <= n_prompt < idx.size(1):
        raise ValueError(
            f"idx must be (B, T) with 1 <= n_prompt < T, got shape {tuple(idx.shape)} and n_prompt={n_prompt}"
        )
    if idx.size(1) - 1 > model.config.block_size:
        raise ValueError(
            f"{idx.size(1)} tokens do not fit the model's window of {model.config.block_size} + 1; "
            "use a shorter prompt or fewer new tokens"
        )
    was_training = model.training
    model.eval()
    targets = idx[:, 1:].clone()  # (B, T-1): position t predicts token t + 1
    targets[:, : n_prompt - 1] = IGNORE_INDEX  # the prompt's own tokens are not scored
    _, loss = model(idx[:, :-1], targets)
    model.train(was_training)
    return float(loss)


__all__ = ["continuation_nll", "distinct_n", "generate_text"]
