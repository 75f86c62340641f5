"""Preference tuning: Direct Preference Optimisation (DPO) written out.

A preference pair is one prompt with two answers, ``chosen`` (preferred) and ``rejected``. DPO
(Rafailov et al., 2023) trains a policy pi directly on such pairs, with a frozen copy of the starting
model as the reference pi_ref. For each pair, with log-probabilities summed over the answer's tokens,

    r_chosen   = beta * (log pi(chosen | prompt)   - log pi_ref(chosen | prompt))     "implicit reward"
    r_rejected = beta * (log pi(rejected | prompt) - log pi_ref(rejected | prompt))
    loss       = -log sigmoid(r_chosen - r_rejected)

so the loss falls as the policy raises the chosen answer *relative to the reference* more than the
rejected one. ``beta`` sets how far the policy may drift from the reference: the implicit KL penalty of
the RLHF objective DPO is derived from. Two variants are here too: ``"ipo"`` (Azar et al., 2023) regresses
the per-token margin onto 1 / (2 beta) instead of pushing it to infinity, and ``"hinge"`` (as in SLiC).

:func:`completion_logprobs` gives the summed log-probabilities of answers under a causal LM;
:func:`dpo_loss` turns four of them into the loss and the statistics worth watching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


@dataclass
class DPOOutput:
    """The mean loss and the per-pair statistics DPO is judged by (all (B,) except ``loss``)."""

    loss: Tensor  # scalar, differentiable
    chosen_rewards: Tensor  # beta * (log pi - log pi_ref) of the chosen answers
    rejected_rewards: Tensor  # the same for the rejected answers
    margins: Tensor  # chosen_rewards - rejected_rewards

    @property
    def accuracy(self) -> float:
        """Share of pairs whose chosen answer has the larger implicit reward."""
        return (self.chosen_rewards > self.rejected_rewards).float().mean().item()


def check_preference_pair(prompt: str, chosen: str, rejected: str) -> None:
    """Raise ValueError for a pair DPO cannot learn from (empty answers, or chosen == rejected)."""
    for name, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not isinstance(text, str):
            raise ValueError(f"a preference pair's {name} must be a string, got {type(text).__name__}")
    if not chosen.strip() or not rejected.strip():
        raise ValueError("a preference pair needs a non-empty chosen and rejected answer")
    if chosen.strip() == rejected.strip():
        raise ValueError(
            f"chosen and rejected answers are the same ({chosen[:60]!r}): the pair's DPO gradient is zero; "
            "drop the pair or pick a different rejected answer"
        )


def completion_logprobs(
    model: nn.Module, input_ids: Tensor, completion_mask: Tensor, attention_mask: Tensor | None = None
) -> Tensor:
    """Summed log-probabilities of the completion tokens: input_ids (B, T), completion_mask (B, T) -> (B,).

    ``completion_mask[b, t]`` is 1 where token t belongs to the answer (0 over the prompt and padding).
    Token t is predicted by the logits at position t - 1, so the first token never counts.
    ``model(idx, attention_mask=...)`` must return logits (B, T, V) first (course_lib's GPT does).
    """
    if input_ids.shape != completion_mask.shape:
        raise ValueError(
            f"completion_mask shape {tuple(completion_mask.shape)} != "
            f"input_ids shape {tuple(input_ids.shape)}"
        )
    out = model(input_ids, attention_mask=attention_mask)
    logits = out[0] if isinstance(out, tuple) else out  # (B, T, V)
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V): predictions for tokens 1..T-1
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    return (token_logp * completion_mask[:, 1:].to(token_logp.dtype)).sum(-1)  # (B,)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
) -> DPOOutput:
    """The DPO loss from summed answer log-probabilities, each (B,).

    ``loss_type="ipo"`` uses per-token averages, so it needs ``chosen_tokens`` and ``rejected_tokens``
    (the answers' token counts, (B,)).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}; 0.1 is a common start")
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    shapes = {t.shape for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"the four log-probability tensors must share one (B,) shape, got {sorted(shapes)}")
    chosen_logratio = policy_chosen - ref_chosen  # (B,) log pi/pi_ref of the chosen answers
    rejected_logratio = policy_rejected - ref_rejected  # (B,)
    if loss_type == "sigmoid":
        per_pair = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio))
    elif loss_type == "hinge":
        per_pair = torch.relu(1 - beta * (chosen_logratio - rejected_logratio))
    else:  # ipo: squared distance of the per-token margin from 1 / (2 beta)
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("loss_type='ipo' needs chosen_tokens and rejected_tokens (answer lengths)")
        margin = chosen_logratio / chosen_tokens.clamp(min=1) - rejected_logratio / rejected_tokens.clamp(
            min=1
        )
        per_pair = (margin - 1 / (2 * beta)) ** 2
    chosen_rewards = beta * chosen_logratio.detach()
    rejected_rewards = beta * rejected_logratio.detach()
    return DPOOutput(per_pair.mean(), chosen_rewards, rejected_rewards, chosen_rewards - rejected_rewards)


__all__ = ["DPOOutput", "DPO_LOSS_TYPES", "check_preference_pair", "completion_logprobs", "dpo_loss"]
