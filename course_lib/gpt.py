"""A GPT decoder: the configuration, the block, the model, its parameter count and generation.

One class covers GPT-2 (learned positions, LayerNorm, GELU MLP, tied embeddings) and the Llama
family (RoPE, RMSNorm, SwiGLU, grouped-query attention, untied head): the differences are
configuration fields, so the two can be compared line by line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.attention import KVCache, MultiHeadAttention, padding_mask
from course_lib.layers import (
    Dropout,
    FeedForward,
    LayerNorm,
    LearnedPositions,
    RMSNorm,
    RotaryEmbedding,
    SinusoidalPositions,
    SwiGLU,
    num_parameters,
)
from course_lib.lm_data import IGNORE_INDEX  # targets equal to it are left out of the loss

POSITIONS = ("learned", "rope", "sinusoidal")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


@dataclass
class GPTConfig:
    """Every number that fixes the shape of a GPT. Checked on creation."""

    vocab_size: int  # token ids 0 .. vocab_size - 1: rows of the embedding, columns of the output
    block_size: int  # context length: the most positions the model attends over at once
    n_layer: int  # number of transformer blocks
    n_head: int  # query heads per attention layer; head size = d_model // n_head
    d_model: int  # width of the residual stream (GPT-2 calls it n_embd)
    n_kv_head: int | None = None  # key/value heads: None = n_head (plain MHA), fewer = GQA, 1 = MQA
    d_ff: int | None = (
        None  # MLP hidden width: None = 4 d_model (gelu) or 8/3 d_model rounded up to 64 (swiglu)
    )
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches while training
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: True, Llama: False)
    positions: str = "learned"  # "learned" table (GPT-2), "rope" rotations (Llama) or fixed "sinusoidal"
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    mlp: str = "gelu"  # "gelu" two-layer MLP (GPT-2) or gated "swiglu" (Llama)
    tie_weights: bool = True  # the output layer reuses the token-embedding matrix (GPT-2: True)
    norm_eps: float = 1e-5  # epsilon inside the norms
    rope_theta: float = 10000.0  # RoPE base: larger = slower-turning angles, longer reach
    gelu_approximate: str = "tanh"  # GELU form for mlp="gelu": "tanh" (GPT-2's) or "none" (exact erf)
    pad_vocab_to: int | None = None  # GPUs: round the embedding/output rows up to a multiple (64, 128)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            _check_positive_int(name, getattr(self, name))
        for name in ("n_kv_head", "d_ff", "pad_vocab_to"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        for name, value, allowed in (
            ("positions", self.positions, POSITIONS),
            ("norm", self.norm, NORMS),
            ("mlp", self.mlp, MLPS),
            ("gelu_approximate", self.gelu_approximate, ("tanh", "none")),
        ):
            if value not in allowed:
                raise ValueError(f"GPTConfig.{name}={value!r} is not one of {allowed}; pick one of those")
        if self.d_model % self.n_head != 0:
            raise ValueError(
                f"GPTConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                f"pick n_head among the divisors of {self.d_model}"
            )
        if self.n_head % self.kv_heads != 0:
            raise ValueError(
                f"GPTConfig: n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}; "
                f"pick n_kv_head among the divisors of {self.n_head}"
            )
        if self.positions == "rope" and self.head_dim % 2 != 0:
            raise ValueError(
                f"GPTConfig: RoPE needs an even head size, got d_model / n_head = {self.head_dim}; "
                "change d_model or n_head"
            )
        if self.positions == "sinusoidal" and self.d_model % 2 != 0:
            raise ValueError(f"GPTConfig: sinusoidal positions need an even d_model, got {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout={self.dropout} must be in [0, 1); 0.0 turns dropout off")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(
                f"GPTConfig: norm_eps={self.norm_eps} and rope_theta={self.rope_theta} must be positive"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding and the output layer: vocab_size rounded up to a multiple of
        ``pad_vocab_to`` (GPT-2's 50257 -> 50304 for 64), which tensor cores multiply much faster.
        The extra rows are never read (no id points at them) and never predicted (their logits are
        -inf in the loss and cut off the logits the model returns)."""
        m = self.pad_vocab_to or 1
        return m * math.ceil(self.vocab_size / m)

    @property
    def kv_heads(self) -> int:
        """The key/value head count with the default resolved."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def ff_dim(self) -> int:
        """The MLP hidden width with the default resolved."""
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "swiglu":
            return 64 * math.ceil(8 * self.d_model / 3 / 64)  # ~ the parameters of a 4 d GELU MLP
        return 4 * self.d_model

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """The parameter count of ``GPT(self)``, computed from the shapes without building it.

        Same convention as :meth:`GPT.num_parameters`, which counts the built model's tensors.
        """
        c = self
        d, ff, hs = c.d_model, c.ff_dim, c.head_dim
        qkv_out = (c.n_head + 2 * c.kv_heads) * hs
        attn = d * qkv_out + d * d + ((qkv_out + d) if c.bias else 0)  # fused q/k/v + output projection
        if c.mlp == "swiglu":
            mlp = 3 * d * ff + ((2 * ff + d) if c.bias else 0)  # w1, w3: d -> ff; w2: ff -> d
        else:
            mlp = 2 * d * ff + ((ff + d) if c.bias else 0)  # c_fc, c_proj
        norm = d + (d if (c.norm == "layernorm" and c.bias) else 0)  # weight (+ bias)
        per_block = attn + mlp + 2 * norm

        token_table = c.padded_vocab_size * d
        position_table = c.block_size * d if c.positions == "learned" else 0
        head = 0 if c.tie_weights else c.padded_vocab_size * d
        total = token_table + position_table + c.n_layer * per_block + norm + head
        if exclude_embeddings:
            total -= position_table + (0 if c.tie_weights else token_table)
        return total

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Build from a plain dict (e.g. a checkpoint's); unknown or missing keys raise, naming them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown GPTConfig key(s) {unknown}; valid keys are {sorted(fields)}")
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in d]
        if missing:
            raise ValueError(f"GPTConfig needs {missing}; add them (required keys: {required})")
        return cls(**d)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"GPTConfig.{name}={value!r} must be a positive integer")


# ----------------------------------------------------------------------------------------------
# Named configurations.

_GPT2 = dict(vocab_size=50257, block_size=1024, bias=True, positions="learned", norm="layernorm", mlp="gelu")
_LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_weights=False)

CONFIGS: dict[str, dict[str, Any]] = {
    # CI and unit tests: ~120k parameters, trains in seconds. Byte-level vocabulary.
    "tiny": dict(vocab_size=256, block_size=64, n_layer=2, n_head=4, d_model=64),
    # Laptop pretraining: ~5M parameters; a few minutes per epoch of ~5 MB of text on a laptop CPU.
    "small": dict(vocab_size=8192, block_size=256, n_layer=4, n_head=8, d_model=256, dropout=0.1),
    # The four published GPT-2 sizes (OpenAI, 2019): 124M, 355M, 774M, 1.5B parameters.
    "gpt2": dict(_GPT2, n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": dict(_GPT2, n_layer=24, n_head=16, d_model=1024),
    "gpt2-large": dict(_GPT2, n_layer=36, n_head=20, d_model=1280),
    "gpt2-xl": dict(_GPT2, n_layer=48, n_head=25, d_model=1600),
    # Llama-style counterparts of "tiny" and "small": RoPE, RMSNorm, SwiGLU, GQA, no biases.
    "llama-tiny": dict(_LLAMA, vocab_size=256, block_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=64),
    "llama-small": dict(
        _LLAMA,
        vocab_size=8192,
        block_size=256,
        n_layer=4,
        n_head=8,
        n_kv_head=4,
        d_model=256,
        tie_weights=True,
    ),
    # The published Llama 2 7B shape (Touvron et al., 2023), for counting parameters, not for training.
    "llama2-7b": dict(
        _LLAMA, vocab_size=32000, block_size=4096, n_layer=32, n_head=32, d_model=4096, d_ff=11008
    ),
}


def get_config(name: str, **overrides: Any) -> GPTConfig:
    """The named configuration, with any field replaced by ``overrides``."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known configs are {sorted(CONFIGS)}")
    return GPTConfig.from_dict({**CONFIGS[name], **overrides})


# ----------------------------------------------------------------------------------------------
# The model.


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, eps=config.norm_eps)
    return LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


def make_mlp(config: GPTConfig) -> nn.Module:
    if config.mlp == "swiglu":
        return SwiGLU(config.d_model, config.ff_dim, bias=config.bias, dropout=config.dropout)
    return FeedForward(config.d_model, config.ff_dim, config.bias, config.dropout, config.gelu_approximate)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = MultiHeadAttention(
            config.d_model, config.n_head, config.kv_heads, bias=config.bias, dropout=config.dropout
        )
        self.ln_2 = make_norm(config)
        self.mlp = make_mlp(config)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=True, rope=rope, kv_cache=kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x  # (B, T, d)


class GPT(nn.Module):
    """Decoder-only transformer language model."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        parts: dict[str, nn.Module] = {"wte": nn.Embedding(c.padded_vocab_size, c.d_model)}
        if c.positions == "learned":
            parts["wpe"] = LearnedPositions(c.block_size, c.d_model)
        elif c.positions == "sinusoidal":
            parts["wpe"] = SinusoidalPositions(c.block_size, c.d_model)
        parts["drop"] = Dropout(c.dropout)
        parts["h"] = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        parts["ln_f"] = make_norm(c)
        self.transformer = nn.ModuleDict(parts)
        self.rope = RotaryEmbedding(c.head_dim, c.block_size, c.rope_theta) if c.positions == "rope" else None
        self.lm_head = nn.Linear(c.d_model, c.padded_vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one matrix: embed in, read out
        self.reset_parameters()

    # ------------------------------------------------------------------ initialisation and facts

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit norms, and the projections
        that write into the residual stream scaled by 1/sqrt(2 n_layer) (two per block)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding | LearnedPositions):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, LayerNorm | RMSNorm):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.c_proj.weight", "mlp.w2.weight")):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters of this model (a tied matrix counted once).

        ``exclude_embeddings`` drops the position table and the token table, except that a token
        table tied to the output layer stays, because it is also the output layer (nanoGPT's rule).
        """
        n = num_parameters(self)
        if exclude_embeddings:
            if self.config.positions == "learned":
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, T: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token: 6 N + 12 L T d.

        6 N: each non-embedding weight does a multiply-add (2 FLOPs) forward and twice that backward.
        12 L T d: the attention scores and weighted sums (Q K^T and A V) over a context of T, which
        have no weights and so are not in N. T defaults to block_size (Kaplan et al.; PaLM appendix B).
        """
        c = self.config
        T = c.block_size if T is None else T
        return 6 * self.num_parameters(exclude_embeddings=True) + 12 * c.n_layer * T * c.d_model

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over the hardware peak (e.g. 989e12 for
        an H100's dense bf16). A fraction in [0, 1]."""
        return self.flops_per_token() * tokens_per_second / peak_flops

    def set_explicit_attention(self, explicit: bool = True) -> GPT:
        """Run every attention layer through the written-out formula (True) or the fused kernel."""
        for block in self.transformer.h:
            block.attn.explicit = explicit
        return self

    def make_kv_caches(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[KVCache]:
        """One empty :class:`KVCache` per layer, sized for ``max_len`` (default block_size) positions."""
        ref = self.lm_head.weight
        c = self.config
        return [
            KVCache(
                batch_size,
                c.kv_heads,
                max_len or c.block_size,
                c.head_dim,
                device or ref.device,
                dtype or ref.dtype,
            )
            for _ in range(c.n_layer)
        ]

    # ------------------------------------------------------------------------------- forward

    def _check_idx(self, idx: Tensor, offset: int) -> None:
        c = self.config
        if idx.dim() != 2 or idx.dtype not in (torch.long, torch.int):
            raise ValueError(
                f"idx must be a (B, T) tensor of integer token ids, got shape {tuple(idx.shape)} and dtype "
                f"{idx.dtype}; add a batch dimension with idx[None] and use dtype torch.long"
            )
        T = idx.size(1)
        if offset + T > c.block_size:
            where = f"{offset} cached + {T} new = {offset + T}" if offset else f"T={T}"
            raise ValueError(
                f"sequence of {where} tokens is longer than block_size={c.block_size}; crop it to the last "
                f"{c.block_size} tokens (idx[:, -block_size:]) or build the model with a larger block_size"
            )

    def _embed_tokens(self, idx: Tensor) -> Tensor:
        """wte(idx): (B, T) -> (B, T, d), with a clear error for an id outside [0, vocab_size).

        The CPU lookup checks its own bounds (an IndexError), so there the ids are read only to
        explain that error. Elsewhere an out-of-range id aborts the device, and a padded table has
        rows past vocab_size that no id may read: there one min/max pass checks the ids first.
        """
        wte = self.transformer.wte
        if torch.compiler.is_compiling():
            return wte(idx)  # torch.export / torch.compile trace shapes; the id check needs the values
        if idx.device.type != "cpu" or wte.num_embeddings != self.config.vocab_size:
            self._check_ids(idx)
        try:
            return wte(idx)
        except IndexError:
            self._check_ids(idx)
            raise

    def _check_ids(self, idx: Tensor) -> None:
        if idx.numel() == 0:
            return
        lo, hi = (int(t) for t in torch.aminmax(idx))
        V = self.config.vocab_size
        if lo < 0 or hi >= V:
            raise ValueError(
                f"token ids must lie in [0, {V}), got min {lo}, max {hi}; "
                "the tokenizer and the model's vocab_size disagree"
            )

    def hidden_states(
        self, idx: Tensor, attention_mask: Tensor | None = None, kv_caches: list[KVCache] | None = None
    ) -> Tensor:
        """idx (B, T) -> (B, T, d_model) after the final norm (the input of the output layer).

        ``attention_mask`` (B, T_past + T) of 0/1 hides padding keys. ``kv_caches`` (one per layer,
        from :meth:`make_kv_caches`) hold the past; idx then holds only the new tokens.
        Positions count from column 0, padding included: pad on the right for learned or
        sinusoidal positions (with RoPE only relative positions matter, so left padding is harmless).
        """
        offset = kv_caches[0].length if kv_caches else 0
        self._check_idx(idx, offset)
        x = self._embed(idx, offset)  # (B, T, d)
        mask = self._key_mask(attention_mask, x.shape[0], offset + x.shape[1])
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, self.rope, kv_caches[i] if kv_caches else None)
        return self.transformer.ln_f(x)  # (B, T, d)

    # Training only the top blocks: the frozen bottom ones can run once and be cached
    # (course_lib.frozen_trunk). hidden_states(idx) == upper_hidden_states(residual_stream(idx, k), k).

    def residual_stream(self, idx: Tensor, n_blocks: int, attention_mask: Tensor | None = None) -> Tensor:
        """idx (B, T) -> the residual stream (B, T, d_model) after the first ``n_blocks`` blocks."""
        self._check_block_index(n_blocks)
        self._check_idx(idx, 0)
        x = self._embed(idx, 0)  # (B, T, d)
        mask = self._key_mask(attention_mask, *idx.shape)
        for block in self.transformer.h[:n_blocks]:
            x = block(x, mask, self.rope)
        return x

    def upper_hidden_states(self, x: Tensor, start: int, attention_mask: Tensor | None = None) -> Tensor:
        """The residual stream x (B, T, d) after ``start`` blocks -> the remaining blocks and the final
        norm: (B, T, d), the input of the output layer."""
        self._check_block_index(start)
        if x.dim() != 3 or x.shape[-1] != self.config.d_model:
            raise ValueError(
                f"x must be a (B, T, {self.config.d_model}) residual stream, got shape {tuple(x.shape)}"
            )
        mask = self._key_mask(attention_mask, x.shape[0], x.shape[1])
        for block in self.transformer.h[start:]:
            x = block(x, mask, self.rope)
        return self.transformer.ln_f(x)  # (B, T, d)

    def _check_block_index(self, k: int) -> None:
        if not isinstance(k, int) or not 0 <= k <= self.config.n_layer:
            raise ValueError(f"a block index must be an int in [0, {self.config.n_layer}], got {k!r}")

    def _embed(self, idx: Tensor, offset: int) -> Tensor:
        """Token embeddings plus learned/sinusoidal positions (RoPE acts inside attention): (B, T, d)."""
        x = self._embed_tokens(idx)  # (B, T, d)
        if "wpe" in self.transformer:
            pos = torch.arange(offset, offset + idx.size(1), device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # (B, T, d) + (T, d)
        return self.transformer.drop(x)

    def _key_mask(self, attention_mask: Tensor | None, B: int, T_k: int) -> Tensor | None:
        """The 0/1 attention_mask (B, T_k) as an additive mask over keys (B, 1, 1, T_k), checked."""
        if attention_mask is None:
            return None
        if attention_mask.shape != (B, T_k):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the input needs "
                f"({B}, {T_k}) (batch, cached + new positions); pass the tokenizer's mask for the whole "
                "sequence"
            )
        return padding_mask(attention_mask.to(self.lm_head.weight.device))  # (B, 1, 1, T_k)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        attention_mask: Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> (logits (B, T, V), mean cross-entropy over targets != -100, or None).

        With ``pad_vocab_to`` the output layer has padded_vocab_size rows; the logits of the padding
        rows are set to -inf before the loss (probability 0, no gradient) and cut off the result.
        """
        V = self.config.vocab_size
        logits = self.lm_head(self.hidden_states(idx, attention_mask, kv_caches))  # (B, T, V_padded)
        if targets is None:
            return logits[..., :V], None
        if targets.shape != idx.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} != idx shape {tuple(idx.shape)}; targets are idx "
                f"shifted by one, with {IGNORE_INDEX} where no loss is wanted"
            )
        if logits.size(-1) > V:
            logits[..., V:] = float("-inf")  # padding rows: never predicted, so the loss is the unpadded one
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
        return logits[..., :V], loss  # (B, T, V): a view, no copy

    # ------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
        repetition_penalty: float = 1.0,
    ) -> Tensor:
        """Append up to ``max_new_tokens`` sampled tokens to idx (B, T); returns (B, T + new).

        ``temperature=0`` is greedy decoding. With ``use_cache`` past keys/values are kept, so each
        step processes one token; once the cache holds block_size positions the remaining steps
        recompute the cropped window, exactly as without a cache. With ``eos_id``, a sequence that
        produced it is padded with it, and generation stops early when every sequence has.
        ``repetition_penalty`` > 1 makes tokens already in the sequence less likely
        (:func:`penalize_repetition`); 1 leaves the logits alone.
        """
        steps = self.generate_steps(
            idx, max_new_tokens, temperature, top_k, top_p, use_cache, eos_id, generator, repetition_penalty
        )
        return torch.cat([idx, *steps], dim=1)  # (B, T + new)

    def generate_steps(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
        repetition_penalty: float = 1.0,
    ) -> Iterator[Tensor]:
        """:meth:`generate` one step at a time: yields each new token column (B, 1) as it is sampled.

        The next step is computed only when the caller asks for it, so a caller that stops reading
        (a stop token, a closed connection) costs no further forward pass. Same arguments and the
        same tokens as :meth:`generate`; training mode is restored when the iterator ends or is closed.
        """
        was_training = self.training
        self.eval()
        try:
            yield from self._steps(
                idx, max_new_tokens, temperature, top_k, top_p, use_cache, eos_id, generator,
                repetition_penalty,
            )  # fmt: skip
        finally:
            self.train(was_training)

    @torch.no_grad()  # on a generator function: gradients off inside each step, not in the caller
    def _steps(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        use_cache: bool,
        eos_id: int | None,
        generator: torch.Generator | None,
        repetition_penalty: float = 1.0,
    ) -> Iterator[Tensor]:
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={repetition_penalty} must be > 0 (1 turns it off)")
        block = self.config.block_size
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        caches = None
        if use_cache and max_new_tokens > 0:
            # Room for the prompt and the new tokens only: a long-context model (SmolLM2: 8192
            # positions) would otherwise allocate and zero its whole context for every call.
            caches = self.make_kv_caches(idx.size(0), min(block, idx.size(1) + max_new_tokens))
            logits = self._last_logits(idx[:, -block:], caches)  # prefill: the whole prompt at once
        for step in range(max_new_tokens):
            if caches is None:
                logits = self._last_logits(idx[:, -block:])  # recompute every position of the window
            if repetition_penalty != 1.0:
                logits = penalize_repetition(logits, idx, repetition_penalty)
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
            if eos_id is not None:
                next_id = next_id.masked_fill(finished[:, None], eos_id)
                finished |= next_id[:, 0] == eos_id
            idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
            yield next_id
            if (eos_id is not None and bool(finished.all())) or step == max_new_tokens - 1:
                return
            if caches is not None:
                if caches[0].length >= caches[0].max_len:
                    caches = None  # cache full: continue without it (identical results, slower)
                else:
                    logits = self._last_logits(next_id, caches)  # one new position through the model

    def _last_logits(self, idx: Tensor, kv_caches: list[KVCache] | None = None) -> Tensor:
        """Logits (B, V) of the last position only: generation never needs the others."""
        h = self.hidden_states(idx, kv_caches=kv_caches)[:, -1, :]  # (B, d)
        return self.lm_head(h)[:, : self.config.vocab_size]  # (B, V): padding rows cut off


def penalize_repetition(logits: Tensor, idx: Tensor, penalty: float) -> Tensor:
    """Logits (B, V) with every token that occurs in its row of ``idx`` (B, T) made less likely.

    The CTRL rule (Keskar et al., 2019), also transformers' ``repetition_penalty``: a seen token's
    logit is divided by ``penalty`` when positive and multiplied by it when negative, so that
    ``penalty > 1`` always lowers it, however often the token occurred. Returns a new tensor.
    """
    seen = logits.gather(-1, idx)  # (B, T): the logit of each token already in the sequence
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, idx, seen)  # repeated ids write the same value


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick the next token from logits (B, V) -> (B, 1).

    temperature 0 = argmax; otherwise logits / temperature, then keep the ``top_k`` most likely
    tokens and/or the smallest set whose probability reaches ``top_p`` (nucleus), then sample.
    """
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (or None to keep every token)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (or None to keep every token)")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))  # top one always kept
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
