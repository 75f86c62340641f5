"""Turning a sequence model into a classifier: pooling, a classification head and freezing helpers.

A transformer returns one vector per token, (B, T, d). A classifier needs one vector per text, (B, d):
- a causal GPT sees the whole text only at its LAST real token, so we take that one
  (:func:`last_token_pool`);
- a bidirectional encoder sees everything everywhere, so we average the real tokens (:func:`mean_pool`).
Padding must never change the answer, so both poolings read the attention mask.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCK_LIST_NAMES = ("blocks", "layers", "layer", "h")  # what transformer stacks are usually called


def _check_hidden_and_mask(hidden: torch.Tensor, attention_mask: torch.Tensor, who: str) -> None:
    if hidden.dim() != 3:
        raise ValueError(f"{who} expects hidden states (B, T, d), got shape {tuple(hidden.shape)}")
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"{who}: attention_mask shape {tuple(attention_mask.shape)} does not match hidden (B, T) = "
            f"{tuple(hidden.shape[:2])}; pass the mask the tokenizer returned for this batch"
        )


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last NON-pad token of each row: (B, T, d) -> (B, d).

    Works for right padding (``1 1 1 0 0``) and left padding (``0 0 1 1 1``): the index taken is the
    largest position whose mask is 1.
    """
    _check_hidden_and_mask(hidden, attention_mask, "last_token_pool")
    B, T, _ = hidden.shape
    mask = attention_mask.long()  # (B, T) 0/1
    if not torch.compiler.is_compiling() and not bool(mask.any(dim=1).all()):  # tracing sees no values
        raise ValueError("last_token_pool: a row of attention_mask is all zeros; every text needs >= 1 token")
    positions = torch.arange(T, device=hidden.device)  # (T,)
    last = (mask * positions).max(dim=1).values  # (B,) index of the last real token
    return hidden[torch.arange(B, device=hidden.device), last]  # (B, d)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of the real (mask = 1) token vectors of each row: (B, T, d) -> (B, d)."""
    _check_hidden_and_mask(hidden, attention_mask, "mean_pool")
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    summed = (hidden * mask).sum(dim=1)  # (B, d) padding contributes zeros
    count = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1) number of real tokens
    return summed / count


class ClassificationHead(nn.Module):
    """dropout -> Linear(d_model, n_classes): pooled vector (B, d) -> logits (B, n_classes)."""

    def __init__(self, d_model: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}; a binary task has n_classes=2")
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, n_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(pooled))  # (B, n_classes)


def _loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    return None if labels is None else F.cross_entropy(logits, labels)


def _ones_like_ids(input_ids: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(input_ids, dtype=torch.long)


class GPTClassifier(nn.Module):
    """A causal GPT with a classification head on its last real token.

    ``gpt`` needs ``hidden_states(idx, attention_mask=None) -> (B, T, d)`` and ``config.d_model``.
    Use right padding (the default of the course tokenizers): a causal model's last real token
    never sees the pad tokens after it, so padding cannot change the prediction.
    """

    def __init__(self, gpt: nn.Module, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not hasattr(gpt, "hidden_states"):
            raise TypeError(
                f"GPTClassifier needs a model with hidden_states(idx, attention_mask); {type(gpt).__name__} "
                "has none. Pass a course_lib.gpt.GPT"
            )
        self.gpt = gpt
        self.head = ClassificationHead(gpt.config.d_model, n_classes, dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) ids -> (logits (B, n_classes), cross-entropy loss or None when no labels)."""
        if attention_mask is None:
            attention_mask = _ones_like_ids(input_ids)
        hidden = self.gpt.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, d)
        logits = self.head(last_token_pool(hidden, attention_mask))  # (B, n_classes)
        return logits, _loss(logits, labels)


class EncoderClassifier(nn.Module):
    """A bidirectional encoder (e.g. :class:`course_lib.encoder.Encoder`) with mean pooling and a head."""

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassificationHead(encoder.config.d_model, n_classes, dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) ids -> (logits (B, n_classes), cross-entropy loss or None when no labels)."""
        if attention_mask is None:
            attention_mask = _ones_like_ids(input_ids)
        hidden = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = self.head(mean_pool(hidden, attention_mask))  # (B, d) -> (B, n_classes)
        return logits, _loss(logits, labels)


# ----------------------------------------------------------------------------- freezing


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module``; returns it for chaining."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Let every parameter of ``module`` train again; returns it."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer's stack of blocks: the one ``nn.ModuleList`` named blocks/layers/layer/h."""
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES
    ]
    if len(found) != 1:
        lists = [n for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
        what = "no" if not found else "more than one"
        raise ValueError(
            f"found {what} block list named one of {BLOCK_LIST_NAMES}; the model's ModuleLists are {lists}. "
            "Unfreeze the blocks you want directly with unfreeze(model.<path>[i])"
        )
    return found[0]


def unfreeze_last_blocks(model: nn.Module, n: int) -> list[str]:
    """Make the last ``n`` transformer blocks trainable (the rest is untouched); returns their names.

    Typical use: ``freeze(clf.gpt); unfreeze_last_blocks(clf, 2)`` trains the top two blocks
    and the (new, never frozen) head.
    """
    name, blocks = find_blocks(model)
    if not 0 <= n <= len(blocks):
        raise ValueError(f"n must be between 0 and the number of blocks ({len(blocks)}), got {n}")
    chosen = list(range(len(blocks) - n, len(blocks)))
    for i in chosen:
        unfreeze(blocks[i])
    return [f"{name}.{i}" for i in chosen]
