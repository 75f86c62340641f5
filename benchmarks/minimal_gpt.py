"""A minimal nanoGPT-style GPT-2, the yardstick for course_lib's GPT in the benchmarks.

nanoGPT's modules without its options and checks: one fused q/k/v Linear, PyTorch's fused attention,
an MLP with tanh GELU, learned positions, LayerNorm, tied embeddings, no dropout.
:func:`from_course_gpt` copies a course_lib GPT's weights into it, so both compute the same function
and a benchmark compares only their overheads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d, bias=bias)
        self.c_proj = nn.Linear(d, d, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, d: int, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d, bias=bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * d, d, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, bias=bias)
        self.attn = SelfAttention(d, n_head, bias)
        self.ln_2 = nn.LayerNorm(d, bias=bias)
        self.mlp = MLP(d, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class MinimalGPT(nn.Module):
    def __init__(
        self, vocab_size: int, block_size: int, n_layer: int, n_head: int, d: int, bias: bool = True
    ):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d)
        self.wpe = nn.Embedding(block_size, d)
        self.h = nn.ModuleList(Block(d, n_head, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=bias)
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, idx: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, d)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


@torch.no_grad()
def from_course_gpt(gpt: nn.Module) -> MinimalGPT:
    """A :class:`MinimalGPT` holding the weights of a GPT-2-style ``course_lib.gpt.GPT``."""
    c = gpt.config
    if (c.positions, c.norm, c.mlp, c.tie_weights, c.kv_heads, c.ff_dim, c.gelu_approximate) != (
        "learned", "layernorm", "gelu", True, c.n_head, 4 * c.d_model, "tanh"
    ):  # fmt: skip
        raise ValueError(f"MinimalGPT covers GPT-2-shaped configs only, got {c}")
    vocab = gpt.transformer.wte.weight.size(0)  # the padded table when the config pads
    ref = MinimalGPT(vocab, c.block_size, c.n_layer, c.n_head, c.d_model, c.bias)
    ref.wte.weight.copy_(gpt.transformer.wte.weight)
    ref.wpe.weight.copy_(gpt.transformer.wpe.weight)
    ref.ln_f.load_state_dict(gpt.transformer.ln_f.state_dict())
    for mine, theirs in zip(ref.h, gpt.transformer.h):
        mine.ln_1.load_state_dict(theirs.ln_1.state_dict())
        mine.ln_2.load_state_dict(theirs.ln_2.state_dict())
        mine.attn.c_attn.load_state_dict(theirs.attn.qkv.state_dict())
        mine.attn.c_proj.load_state_dict(theirs.attn.proj.state_dict())
        mine.mlp.c_fc.load_state_dict(theirs.mlp.c_fc.state_dict())
        mine.mlp.c_proj.load_state_dict(theirs.mlp.c_proj.state_dict())
    return ref.to(gpt.lm_head.weight.device)
