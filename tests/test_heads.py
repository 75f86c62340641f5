"""Pooling, classification heads and freezing helpers, checked against loops and padding invariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.encoder import Encoder, EncoderConfig
from course_lib.gpt import GPT, GPTConfig
from course_lib.heads import (
    ClassificationHead,
    EncoderClassifier,
    GPTClassifier,
    find_blocks,
    freeze,
    last_token_pool,
    mean_pool,
    unfreeze_last_blocks,
)
from course_lib.layers import num_parameters

POOL_ATOL = 1e-6  # fp32 sums of a few numbers in a different order
INVARIANCE_ATOL = 1e-5  # same model, extra masked tokens: only summation order changes


def _mask(lengths: list[int], T: int, side: str) -> torch.Tensor:
    m = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        if side == "right":
            m[i, :n] = 1
        else:
            m[i, T - n :] = 1
    return m


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("lengths", [[5, 3, 1], [7, 7, 7], [2, 6, 4]])
def test_last_token_pool_equals_gather_at_explicit_indices(side, lengths):
    torch.manual_seed(0)
    T = 7
    hidden = torch.randn(len(lengths), T, 4)
    mask = _mask(lengths, T, side)
    # the last real token's index, written down from the padding convention
    idx = torch.tensor([n - 1 if side == "right" else T - 1 for n in lengths])
    expected = hidden.gather(1, idx.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)  # (B, d)
    assert torch.equal(last_token_pool(hidden, mask), expected)


@pytest.mark.parametrize("side", ["right", "left"])
def test_mean_pool_equals_python_loop(side):
    torch.manual_seed(1)
    lengths, T, d = [4, 1, 6], 6, 5
    hidden = torch.randn(len(lengths), T, d)
    mask = _mask(lengths, T, side)
    expected = torch.stack(
        [sum(hidden[b, t] for t in range(T) if mask[b, t]) / int(mask[b].sum()) for b in range(len(lengths))]
    )
    torch.testing.assert_close(mean_pool(hidden, mask), expected, atol=POOL_ATOL, rtol=0)


def test_pool_errors():
    with pytest.raises(ValueError, match="all zeros"):
        last_token_pool(torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="does not match hidden"):
        mean_pool(torch.randn(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\(B, T, d\)"):
        last_token_pool(torch.randn(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="n_classes=2"):
        ClassificationHead(8, 1)


class StandInGPT(nn.Module):
    """A causal toy: hidden state t is the running mean of embeddings 0..t (sees only the past)."""

    def __init__(self, vocab: int = 20, d_model: int = 8) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"d_model": d_model})()
        self.wte = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(3))

    def hidden_states(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.wte(idx)  # (B, T, d)
        counts = torch.arange(1, idx.size(1) + 1, dtype=x.dtype).view(1, -1, 1)
        x = x.cumsum(dim=1) / counts
        for block in self.blocks:
            x = x + torch.tanh(block(x))
        return x


def _tiny_gpt(**overrides):
    """A tiny course GPT."""
    cfg = dict(vocab_size=20, block_size=16, n_layer=2, n_head=2, d_model=8, dropout=0.0)
    return GPT(GPTConfig(**{**cfg, **overrides}))


@pytest.mark.parametrize(
    "make_gpt",
    [StandInGPT, _tiny_gpt, lambda: _tiny_gpt(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1)],
    ids=["stand-in", "gpt2-style", "llama-style"],
)
def test_gpt_classifier_is_invariant_to_right_padding(make_gpt):
    torch.manual_seed(2)
    clf = GPTClassifier(make_gpt(), n_classes=3).eval()
    ids = torch.randint(1, 20, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, 3:] = 0  # the second text is 3 tokens long
    padded_ids = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)  # 4 more pads, right
    padded_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, _ = clf(ids, mask)
        b, _ = clf(padded_ids, padded_mask)
        short, _ = clf(ids[1:, :3])  # the second text alone, no padding at all
    torch.testing.assert_close(a, b, atol=INVARIANCE_ATOL, rtol=0)
    torch.testing.assert_close(a[1:], short, atol=INVARIANCE_ATOL, rtol=0)


def test_gpt_classifier_pools_the_course_gpt_last_token():
    torch.manual_seed(6)
    clf = GPTClassifier(_tiny_gpt(), n_classes=2).eval()
    ids = torch.randint(0, 20, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        logits, _ = clf(ids, mask)
        hidden = clf.gpt.hidden_states(ids, mask)  # (B, T, d)
        expected = clf.head(torch.stack([hidden[0, 3], hidden[1, 5]]))
    torch.testing.assert_close(logits, expected, atol=0, rtol=0)
    freeze(clf.gpt)
    assert unfreeze_last_blocks(clf, 1) == ["gpt.transformer.h.1"]
    n_block = sum(p.numel() for p in clf.gpt.transformer.h[1].parameters())
    assert num_parameters(clf, trainable_only=True) == n_block + 8 * 2 + 2


def test_gpt_classifier_loss_and_gradients():
    torch.manual_seed(3)
    clf = GPTClassifier(StandInGPT(), n_classes=4)
    ids = torch.randint(0, 20, (3, 6))
    labels = torch.tensor([0, 3, 1])
    logits, loss = clf(ids, labels=labels)
    assert logits.shape == (3, 4)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels))
    loss.backward()
    assert clf.head.out.weight.grad is not None and clf.gpt.wte.weight.grad is not None
    assert clf(ids)[1] is None
    with pytest.raises(TypeError, match="hidden_states"):
        GPTClassifier(nn.Linear(3, 3), 2)


def test_encoder_classifier_is_invariant_to_padding():
    torch.manual_seed(4)
    cfg = EncoderConfig(vocab_size=30, max_position=16, n_layer=2, n_head=2, d_model=16, d_ff=32, dropout=0.0)
    clf = EncoderClassifier(Encoder(cfg), n_classes=2).eval()
    ids = torch.randint(1, 30, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0  # second text is 4 tokens long
    padded_ids = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, _ = clf(ids, mask)
        b, _ = clf(padded_ids, padded_mask)
        # the pooled vector equals the mean over the real tokens of a run WITHOUT any padding
        alone = clf.encoder(ids[1:, :4]).mean(dim=1)
        pooled = mean_pool(clf.encoder(padded_ids, padded_mask), padded_mask)[1:]
    torch.testing.assert_close(a, b, atol=INVARIANCE_ATOL, rtol=0)
    torch.testing.assert_close(pooled, alone, atol=INVARIANCE_ATOL, rtol=0)
    logits, loss = clf(ids, mask, labels=torch.tensor([0, 1]))
    assert logits.shape == (2, 2) and loss.ndim == 0


def test_freeze_and_unfreeze_last_blocks():
    torch.manual_seed(5)
    clf = GPTClassifier(StandInGPT(d_model=8), n_classes=3)
    block_params = 8 * 8 + 8  # one Linear(8, 8) block
    head_params = 8 * 3 + 3
    assert num_parameters(clf, trainable_only=True) == 20 * 8 + 3 * block_params + head_params
    freeze(clf.gpt)
    assert num_parameters(clf, trainable_only=True) == head_params
    assert unfreeze_last_blocks(clf, 2) == ["gpt.blocks.1", "gpt.blocks.2"]
    assert num_parameters(clf, trainable_only=True) == head_params + 2 * block_params
    assert not clf.gpt.blocks[0].weight.requires_grad and not clf.gpt.wte.weight.requires_grad
    assert unfreeze_last_blocks(clf, 0) == []
    assert find_blocks(clf)[0] == "gpt.blocks"
    with pytest.raises(ValueError, match="between 0 and the number of blocks"):
        unfreeze_last_blocks(clf, 4)
    with pytest.raises(ValueError, match="found no block list"):
        unfreeze_last_blocks(nn.Sequential(nn.Linear(2, 2)), 1)


def test_unfreeze_last_blocks_on_the_encoder():
    cfg = EncoderConfig(vocab_size=30, max_position=16, n_layer=3, n_head=2, d_model=16, d_ff=32)
    clf = EncoderClassifier(Encoder(cfg), n_classes=2)
    freeze(clf.encoder)
    names = unfreeze_last_blocks(clf, 1)
    assert names == ["encoder.blocks.2"]
    per_block = sum(p.numel() for p in clf.encoder.blocks[2].parameters())
    assert num_parameters(clf, trainable_only=True) == per_block + sum(
        p.numel() for p in clf.head.parameters()
    )
