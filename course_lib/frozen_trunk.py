"""Training only the top blocks of a model: run the frozen blocks below once and keep their output.

When fine-tuning touches only the last blocks (LoRA there, or those blocks in full), everything below
them is frozen, so the residual stream entering block ``start`` is a fixed function of the tokens. It can
be computed once per example, under ``no_grad``, and kept: every training step then runs blocks
``start ..`` only, and nothing below them needs activations stored for a backward pass. SFT and DPO score
only the answer's tokens, so the output layer (576 x 49,152 for SmolLM2, as costly per token as a
quarter of its blocks) runs only at those positions too. Both steps compute the same numbers as the full
model, to float rounding (tested).

An item is one token row: ``input_ids`` (T,), ``residual`` (T, d_model) and ``labels`` (T,) shifted as
the course's GPT wants them (``labels[t]`` is the token after ``input_ids[t]``; ``IGNORE_INDEX`` where no
loss is taken). :func:`trunk_collate` pads items into a batch; :class:`CachedSFTLoss` and
:class:`CachedDPOLoss` are ``loss_fn(model, batch)`` for the Trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.lm_data import IGNORE_INDEX, pad_collate, prompt_completion_example
from course_lib.preference import DPOOutput, dpo_loss

Item = dict[str, Any]


def check_frozen_below(model: nn.Module, start: int) -> None:
    """Raise ValueError if the embeddings or any of the first ``start`` blocks would train: caching their
    output would silently freeze them."""
    below = [model.transformer.wte, *model.transformer.h[:start]]
    if "wpe" in model.transformer:
        below.append(model.transformer.wpe)
    for module in below:
        for name, p in module.named_parameters():
            if p.requires_grad:
                raise ValueError(
                    f"parameter {name!r} below block {start} requires grad, so its output cannot be "
                    "cached; freeze it (requires_grad_(False)) or cache fewer blocks (start <= the first "
                    "trained block)"
                )


@torch.no_grad()
def cache_residuals(
    model: nn.Module,
    rows: Sequence[Sequence[int]],
    start: int,
    batch_size: int = 16,
    progress: bool = False,
) -> list[Tensor]:
    """The residual stream entering block ``start`` for each row of token ids: a (len(row), d) tensor each.

    Rows are run in batches of similar length, right-padded; a causal model's real positions never
    see the padding after them, so each result equals the row run alone (to float rounding).
    """
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("cache_residuals needs at least one row, and no empty row")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list[Tensor | None] = [None] * len(rows)
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"caching blocks 0-{start - 1}", unit="batch")
    try:
        for chunk in batches:
            batch = pad_collate([(rows[i], 0) for i in chunk], pad_id=0)  # right-padded (B, T)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            x = model.residual_stream(ids, start, mask)  # (B, T, d)
            for b, i in enumerate(chunk):
                out[i] = x[b, : len(rows[i])].cpu().clone()
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def cached_examples(
    model: nn.Module,
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    start: int,
    batch_size: int = 16,
    progress: bool = False,
) -> list[Item]:
    """(input ids, shifted labels) examples (e.g. :func:`~course_lib.post_training.chat_sft_example`) ->
    items carrying the residual stream entering block ``start``."""
    for k, (ids, labels) in enumerate(examples):
        if len(ids) != len(labels):
            raise ValueError(
                f"example {k} has {len(ids)} input ids but {len(labels)} labels; give one per token"
            )
    residuals = cache_residuals(model, [ids for ids, _ in examples], start, batch_size, progress)
    return [
        {"input_ids": torch.as_tensor(ids), "residual": r, "labels": torch.as_tensor(labels)}
        for (ids, labels), r in zip(examples, residuals)
    ]


def cached_pairs(
    model: nn.Module,
    pairs: Sequence[Mapping[str, Sequence[int]]],
    start: int,
    batch_size: int = 16,
    progress: bool = False,
) -> list[dict[str, Item]]:
    """Preference pairs (``prompt``, ``chosen``, ``rejected`` id lists, as
    :func:`~course_lib.post_training.preference_example` makes them) -> ``{"chosen": item, "rejected":
    item}``, each row prompt + answer with labels on the answer's tokens only."""
    rows = [  # each answer ends with its <|im_end|>, the example's closing token
        prompt_completion_example(p["prompt"], p[side][:-1], p[side][-1], shift=True)
        for p in pairs
        for side in ("chosen", "rejected")
    ]
    items = cached_examples(model, rows, start, batch_size, progress)
    return [{"chosen": items[2 * k], "rejected": items[2 * k + 1]} for k in range(len(pairs))]


def trunk_collate(items: Sequence[Item], pad_id: int = 0) -> dict[str, Tensor]:
    """Right-pad items into ``input_ids``, ``labels``, ``attention_mask`` (B, T) and ``residual`` (B, T, d);
    any other key (a number per item, such as ``ref_logp``) is stacked into (B,)."""
    batch = pad_collate(items, pad_id)  # input_ids, attention_mask, labels (B, T); checks the lengths
    B, T = batch["input_ids"].shape
    d = items[0]["residual"].shape[-1]
    batch["residual"] = torch.zeros(B, T, d, dtype=items[0]["residual"].dtype)
    for b, it in enumerate(items):
        n = len(it["input_ids"])
        if it["residual"].shape != (n, d):
            raise ValueError(
                f"item {b}: input_ids ({n},) and residual {tuple(it['residual'].shape)} disagree; "
                f"expected residual ({n}, {d})"
            )
        batch["residual"][b, :n] = it["residual"]
    for key in items[0].keys() - batch.keys():
        batch[key] = torch.stack([torch.as_tensor(it[key]) for it in items])  # (B,)
    return batch


def pair_collate(pairs: Sequence[Mapping[str, Item]], pad_id: int = 0) -> dict[str, Tensor]:
    """B cached pairs -> one batch of 2B rows: the B chosen rows first, then the B rejected ones."""
    return trunk_collate([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], pad_id)


def scored_token_logprobs(model: nn.Module, batch: Mapping[str, Tensor], start: int) -> tuple[Tensor, Tensor]:
    """(log-probability of each scored label (N,), the row it belongs to (N,)), from a cached batch.

    Blocks ``start ..`` run on every position (attention needs them all); the output layer and the
    softmax only where ``labels != IGNORE_INDEX``.
    """
    h = model.upper_hidden_states(batch["residual"], start, batch["attention_mask"])  # (B, T, d)
    labels = batch["labels"]  # (B, T)
    keep = labels != IGNORE_INDEX  # (B, T)
    if not bool(keep.any()):
        raise ValueError("no label in this batch is scored (all are IGNORE_INDEX): nothing to learn from")
    V = model.config.vocab_size
    logits = model.lm_head(h[keep])[:, :V]  # (N, V): only the positions that carry a loss
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, labels[keep][:, None]).squeeze(-1)  # (N,)
    rows = keep.nonzero()[:, 0]  # (N,)
    return logp, rows


def sequence_logprobs(model: nn.Module, batch: Mapping[str, Tensor], start: int) -> Tensor:
    """Summed log-probability of each row's scored labels: (B,). The cached twin of
    :func:`course_lib.preference.completion_logprobs`."""
    logp, rows = scored_token_logprobs(model, batch, start)
    sums = torch.zeros(batch["labels"].shape[0], dtype=logp.dtype, device=logp.device)  # (B,)
    return sums.index_add(0, rows, logp)


class CachedSFTLoss:
    """``loss_fn(model, batch)`` for the Trainer: mean cross-entropy over the scored labels of a cached
    batch, equal to :func:`course_lib.instruct.instruction_loss` on the same examples."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        logp, _ = scored_token_logprobs(model, batch, self.start)
        return -logp.mean()


@torch.no_grad()
def add_reference_logprobs(
    reference: nn.Module, pairs: Sequence[Mapping[str, Item]], start: int, batch_size: int = 16
) -> None:
    """Store each row's summed log-probability under the frozen ``reference`` as ``ref_logp`` (in place).

    DPO's reference model never changes, so its log-probabilities are computed once here instead of
    in every step (trl's ``precompute_ref_log_probs``).
    """
    was_training = reference.training
    reference.eval()
    rows = [p[side] for p in pairs for side in ("chosen", "rejected")]
    try:
        for k in range(0, len(rows), batch_size):
            keys = ("input_ids", "residual", "labels")
            chunk = [{key: r[key] for key in keys} for r in rows[k : k + batch_size]]
            logps = sequence_logprobs(reference, trunk_collate(chunk), start)  # (b,)
            for r, lp in zip(rows[k : k + batch_size], logps):
                r["ref_logp"] = lp.item()
    finally:
        reference.train(was_training)


class CachedDPOLoss:
    """``loss_fn(model, batch)`` for the Trainer: DPO on a :func:`pair_collate` batch whose rows carry
    ``ref_logp`` (:func:`add_reference_logprobs`). ``last`` keeps the latest DPOOutput."""

    def __init__(self, start: int, beta: float = 0.1) -> None:
        self.start = start
        self.beta = beta
        self.last: DPOOutput | None = None

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        if "ref_logp" not in batch:
            raise KeyError(
                "the batch has no 'ref_logp'; run add_reference_logprobs(reference, pairs, start) first"
            )
        policy = sequence_logprobs(model, batch, self.start)  # (2B,)
        ref = batch["ref_logp"].to(policy)  # (2B,)
        b = policy.shape[0] // 2
        self.last = dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], beta=self.beta)
        return self.last.loss


__all__ = [
    "CachedDPOLoss",
    "CachedSFTLoss",
    "add_reference_logprobs",
    "cache_residuals",
    "cached_examples",
    "cached_pairs",
    "check_frozen_below",
    "scored_token_logprobs",
    "pair_collate",
    "sequence_logprobs",
    "trunk_collate",
]
