"""Scaled dot-product attention and multi-head attention, written out and fused side by side.

Read top to bottom: masks, the attention formula written by hand, the same formula through
PyTorch's fused kernel, a key/value cache for generation, multi-head attention with one fused
q/k/v projection (grouped-query and multi-query attention included), and finally the same
multi-head attention written as a list of separate heads, the way it is first taught.

Shapes: B batch, T sequence length, nh query heads, nkv key/value heads, hs head size,
C = d_model = nh * hs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.layers import Dropout

# PyTorch added grouped-query support to the fused kernel in 2.5; older builds repeat k/v instead.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2] if p.isdigit()) >= (2, 5)


# ----------------------------------------------------------------------------------------------
# Masks. Convention everywhere in this module: a boolean mask is True where a query MAY attend.


def causal_mask(T_q: int, T_k: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Boolean (T_q, T_k) mask, True where query i may look at key j.

    The queries are taken to be the LAST ``T_q`` of ``T_k`` positions (the situation in KV-cache
    decoding, where the keys include the cached past), so query i sits at position
    ``T_k - T_q + i`` and may attend to keys ``0 .. T_k - T_q + i``. With ``T_k == T_q`` this is
    the usual lower-triangular mask.
    """
    T_k = T_q if T_k is None else T_k
    if T_k < T_q:
        raise ValueError(
            f"causal_mask got T_k={T_k} < T_q={T_q}; the keys must include every query position "
            "(pass T_k >= T_q, e.g. the cached length plus the new tokens)"
        )
    ones = torch.ones(T_q, T_k, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=T_k - T_q)  # (T_q, T_k)


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Turn a (B, T) 0/1 tokenizer-style mask (1 = real token) into a (B, 1, 1, T) boolean mask.

    The two singleton dimensions broadcast over heads and query positions, so the result can be
    passed as ``attn_mask`` directly or combined (``&``) with :func:`causal_mask`.
    """
    if attention_mask.dim() != 2:
        raise ValueError(
            f"padding_mask expects a (B, T) tensor of 0/1, got shape {tuple(attention_mask.shape)}; "
            "pass the attention_mask your tokenizer returned for a batch"
        )
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)


def _check_mask_shape(attn_mask: Tensor, scores_shape: torch.Size) -> None:
    """Raise if ``attn_mask`` cannot broadcast to the (…, T_q, T_k) attention scores."""
    try:
        out = torch.broadcast_shapes(attn_mask.shape, scores_shape)
    except RuntimeError:
        out = None
    if out != scores_shape:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the attention scores of "
            f"shape {tuple(scores_shape)} (…, T_q, T_k); pass a (T_q, T_k) mask such as "
            "causal_mask(T_q, T_k), a (B, 1, 1, T_k) mask from padding_mask(), or one of the full shape"
        )


def _merge_masks(attn_mask: Tensor | None, is_causal: bool, T_q: int, T_k: int, device) -> Tensor | None:
    """One mask that holds both an explicit ``attn_mask`` and, when ``is_causal``, the causal rule."""
    if not is_causal:
        return attn_mask
    causal = causal_mask(T_q, T_k, device=device)  # (T_q, T_k)
    if attn_mask is None:
        return causal
    if attn_mask.dtype == torch.bool:
        return attn_mask & causal
    return attn_mask.masked_fill(~causal, float("-inf"))  # float mask: add -inf where causal forbids


# ----------------------------------------------------------------------------------------------
# The attention formula.


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat each key/value head ``n_rep`` times: (B, nkv, T, hs) -> (B, nkv * n_rep, T, hs).

    Grouped-query attention shares one k/v head among ``n_rep`` consecutive query heads;
    repeating makes the shapes match the queries so plain attention can run.
    """
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=-3)  # (B, nkv * n_rep, T, hs)


def explicit_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d_k) + mask) V, written out; returns (output, attention weights).

    q (…, T_q, hs), k and v (…, T_k, hs). ``attn_mask`` is boolean (True = may attend) or a float
    mask added to the scores; it must broadcast to (…, T_q, T_k). ``is_causal`` adds the causal
    rule of :func:`causal_mask` (queries are the last T_q positions).

    A query row whose keys are ALL masked (e.g. a padding query under a causal + padding mask)
    would be softmax over nothing, i.e. 0/0 = NaN. Here such a row gets all-zero weights, so its
    output is zero and its gradient is zero: the same values PyTorch's fused kernel returns on
    the CPU, and no NaN leaks into the loss. On every other row the result matches
    ``F.scaled_dot_product_attention``.
    """
    T_q, T_k = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (…, T_q, T_k)
    if attn_mask is not None:
        _check_mask_shape(attn_mask, scores.shape)
    mask = _merge_masks(attn_mask, is_causal, T_q, T_k, q.device)

    fully_masked = None
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
        fully_masked = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (…, T_q, 1)
        scores = scores.masked_fill(fully_masked, 0.0)  # any finite value: the row is zeroed below

    weights = torch.softmax(scores, dim=-1)  # (…, T_q, T_k), rows sum to 1
    if fully_masked is not None:
        weights = weights.masked_fill(fully_masked, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v  # (…, T_q, hs)
    return out, weights


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    explicit: bool = False,
    enable_gqa: bool = False,
) -> Tensor:
    """Scaled dot-product attention through the fused kernel, or written out when ``explicit``.

    Same arguments and mask conventions as :func:`explicit_attention`. ``enable_gqa`` lets k and v
    have fewer heads than q (grouped-query attention; the head count of q must be a multiple).
    Note ``dropout_p`` applies whenever it is > 0: pass 0.0 in evaluation, as modules here do.
    """
    T_q, T_k = q.size(-2), k.size(-2)
    n_q, n_kv = q.size(-3) if q.dim() >= 3 else 1, k.size(-3) if k.dim() >= 3 else 1
    if n_q != n_kv:
        if not enable_gqa or n_q % n_kv != 0:
            raise ValueError(
                f"q has {n_q} heads but k/v have {n_kv}; grouped-query attention needs enable_gqa=True "
                "and a query head count that is a multiple of the key/value head count"
            )
    if is_causal and T_q == 1:
        is_causal = False  # one query at the last position may attend to every key: no mask needed
    if attn_mask is not None:
        _check_mask_shape(attn_mask, torch.Size((*q.shape[:-1], T_k)))

    if explicit or (n_q != n_kv and not _SDPA_HAS_GQA):
        k, v = repeat_kv(k, n_q // n_kv), repeat_kv(v, n_q // n_kv)  # (B, nh, T_k, hs)
    if explicit:
        out, _ = explicit_attention(q, k, v, attn_mask, dropout_p, is_causal, scale)
        return out

    # The fused kernel's own is_causal is aligned to the top-left corner and refuses an extra mask,
    # so every case other than "square, causal, no mask" goes in as one explicit mask.
    if is_causal and (attn_mask is not None or T_q != T_k):
        attn_mask, is_causal = _merge_masks(attn_mask, True, T_q, T_k, q.device), False
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.to(q.dtype)
    kwargs = {"enable_gqa": True} if n_q != n_kv else {}
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs
    )


# ----------------------------------------------------------------------------------------------
# Key/value cache for generation.


class KVCache:
    """Keys and values of the past tokens of ONE attention layer, in buffers allocated once.

    Generation feeds one new token per step; without a cache every step recomputes k and v
    for the whole sequence. ``update`` writes the new k/v after the stored ones and returns
    views of everything stored so far, so no step copies the past again.
    """

    def __init__(
        self,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (B, nkv, max_len, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (B, nkv, max_len, hs)
        self.length = 0  # how many positions are filled

    @property
    def max_len(self) -> int:
        return self.k.size(2)

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v of shape (B, nkv, T_new, hs); return all stored k, v (B, nkv, length, hs)."""
        B, H, T, hs = k.shape
        if (B, H, hs) != (self.k.size(0), self.k.size(1), self.k.size(3)):
            raise ValueError(
                f"KVCache holds (B, nkv, hs) = {(self.k.size(0), self.k.size(1), self.k.size(3))} but got "
                f"{(B, H, hs)}; make a new cache for this batch size / model"
            )
        if self.length + T > self.max_len:
            raise ValueError(
                f"KVCache is full: {self.length} stored + {T} new > max_len {self.max_len}; "
                "allocate a larger cache or call reset()"
            )
        start, end = self.length, self.length + T
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        """Forget the stored positions (the buffers are reused)."""
        self.length = 0


class StaticKVCache(nn.Module):
    """Keys and values of ONE attention layer in fixed buffers, written at positions given as a tensor.

    :class:`KVCache` counts its length in Python and returns views that grow every step, so each
    step has new shapes. Here nothing changes shape between steps: ``update`` writes at ``positions``
    and returns the whole buffers, and the caller's attention mask hides the slots not yet written.
    A decode step built on it is one fixed graph: torch.compile compiles it once and CUDA graphs can
    replay it. The buffers are registered (not saved), so they move with ``.to()`` and keep their
    addresses, which graph replay needs.
    """

    def __init__(
        self,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    @property
    def max_len(self) -> int:
        return self.k.size(2)

    def update(self, k: Tensor, v: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, nkv, T, hs) at ``positions`` (T,); return all buffers (B, nkv, max_len, hs)."""
        B, H, T, hs = k.shape
        if (B, H, hs) != (self.k.size(0), self.k.size(1), self.k.size(3)) or positions.shape != (T,):
            raise ValueError(
                f"StaticKVCache holds (B, nkv, max_len, hs) = {tuple(self.k.shape)} but got k of shape "
                f"{tuple(k.shape)} at positions of shape {tuple(positions.shape)}; make a cache for this "
                "batch size / model and pass one position per new token"
            )
        self.k.index_copy_(2, positions, k.to(self.k.dtype))
        self.v.index_copy_(2, positions, v.to(self.v.dtype))
        return self.k, self.v


# ----------------------------------------------------------------------------------------------
# Multi-head attention, one fused projection.


def _check_heads(d_model: int, n_heads: int, n_kv_heads: int) -> None:
    if d_model <= 0 or n_heads <= 0 or n_kv_heads <= 0:
        raise ValueError(
            f"d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv_heads} must all be positive integers"
        )
    if d_model % n_heads != 0:
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}; each head gets d_model / n_heads "
            f"features, so pick n_heads among the divisors of {d_model} or change d_model"
        )
    if n_heads % n_kv_heads != 0:
        raise ValueError(
            f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}; in grouped-query attention "
            "each key/value head serves the same number of query heads, so pick n_kv_heads among the "
            f"divisors of {n_heads}"
        )


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection.

    ``n_kv_heads < n_heads`` gives grouped-query attention (``n_kv_heads == 1``: multi-query):
    query heads in a group of ``n_heads // n_kv_heads`` consecutive heads share one k/v head.
    The fused projection's output is laid out [q heads | k heads | v heads], the same as
    ``nn.MultiheadAttention.in_proj_weight`` and GPT-2's ``c_attn``.
    ``explicit`` picks the written-out attention instead of the fused kernel.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        explicit: bool = False,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        _check_heads(d_model, n_heads, n_kv_heads)
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout  # on the attention weights (training only)
        self.resid_dropout = Dropout(dropout)  # on the output
        self.explicit = explicit

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rope: nn.Module | None = None,
        kv_cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, C) -> (B, T, C); with ``return_weights`` also the (B, nh, T, T_k) weights.

        ``rope(q, k, offset)`` rotates queries and keys (see layers.RotaryEmbedding); ``kv_cache``
        supplies the past keys/values and receives the new ones. ``attn_mask`` covers all T_k keys
        (past + new) when a cache is used.
        """
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(
                f"MultiHeadAttention expects x of shape (B, T, {self.d_model}), got {tuple(x.shape)}; "
                "add a batch dimension with x[None] or check d_model"
            )
        B, T, C = x.shape
        nh, nkv, hs = self.n_heads, self.n_kv_heads, self.head_dim

        q, k, v = self.qkv(x).split([nh * hs, nkv * hs, nkv * hs], dim=-1)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)

        if rope is not None:
            offset = kv_cache.length if kv_cache is not None else 0
            q, k = rope(q, k, offset=offset)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, nkv, T_past + T, hs)

        dropout_p = self.dropout if self.training else 0.0
        if return_weights:  # the heatmap needs the weights, so the explicit path runs
            k, v = repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv)  # (B, nh, T_k, hs)
            y, weights = explicit_attention(q, k, v, attn_mask, dropout_p, is_causal)
        else:
            y = attention(q, k, v, attn_mask, dropout_p, is_causal, explicit=self.explicit, enable_gqa=True)

        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, nh * hs): heads side by side
        y = self.resid_dropout(self.proj(y))
        return (y, weights) if return_weights else y


# ----------------------------------------------------------------------------------------------
# The same computation, one module per head (for teaching).


class AttentionHead(nn.Module):
    """One attention head with its own query, key and value projections (explicit math)."""

    def __init__(self, d_model: int, head_dim: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, head_dim, bias=bias)
        self.key = nn.Linear(d_model, head_dim, bias=bias)
        self.value = nn.Linear(d_model, head_dim, bias=bias)
        self.dropout = dropout

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """x (B, T, C) -> (B, T, hs). ``attn_mask`` broadcasts as for one head: (T, T) or (B, 1, 1, T)."""
        q = self.query(x).unsqueeze(1)  # (B, 1, T, hs): a head axis of size one, so masks broadcast
        k = self.key(x).unsqueeze(1)  # (B, 1, T, hs)
        v = self.value(x).unsqueeze(1)  # (B, 1, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        out, _ = explicit_attention(q, k, v, attn_mask, dropout_p, is_causal)
        return out.squeeze(1)  # (B, T, hs)


class MultiHeadAttentionPerHead(nn.Module):
    """Multi-head attention as ``n_heads`` separate :class:`AttentionHead` modules, concatenated
    and projected. Computes exactly what :class:`MultiHeadAttention` computes, only slower."""

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        _check_heads(d_model, n_heads, n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.heads = nn.ModuleList(
            AttentionHead(d_model, self.head_dim, bias, dropout) for _ in range(n_heads)
        )
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        outs = []
        for h, head in enumerate(self.heads):
            mask = attn_mask
            if mask is not None and mask.dim() == 4 and mask.size(1) > 1:
                mask = mask[:, h : h + 1]  # (B, 1, T_q, T_k): this head's slice of a per-head mask
            outs.append(head(x, mask, is_causal))  # (B, T, hs)
        y = torch.cat(outs, dim=-1)  # (B, T, nh * hs)
        return self.resid_dropout(self.proj(y))

    @torch.no_grad()
    def load_from_fused(self, mha: MultiHeadAttention) -> MultiHeadAttentionPerHead:
        """Copy the weights of a fused :class:`MultiHeadAttention` into the separate heads.

        Grouped-query weights are accepted: each head receives a copy of its group's shared k/v.
        """
        if (mha.d_model, mha.n_heads) != (self.d_model, self.n_heads):
            raise ValueError(
                f"shapes differ: fused (d_model, n_heads) = {(mha.d_model, mha.n_heads)}, per-head = "
                f"{(self.d_model, self.n_heads)}; build the per-head module with the fused module's sizes"
            )
        nh, nkv, hs = mha.n_heads, mha.n_kv_heads, mha.head_dim
        w = mha.qkv.weight  # (out, C), rows [q heads | k heads | v heads]
        b = mha.qkv.bias
        for h, head in enumerate(self.heads):
            g = h // (nh // nkv)  # the k/v head this query head reads
            rows = {
                head.query: slice(h * hs, (h + 1) * hs),
                head.key: slice((nh + g) * hs, (nh + g + 1) * hs),
                head.value: slice((nh + nkv + g) * hs, (nh + nkv + g + 1) * hs),
            }
            for lin, r in rows.items():
                lin.weight.copy_(w[r])
                if b is not None:
                    lin.bias.copy_(b[r])
        self.proj.load_state_dict(mha.proj.state_dict())
        return self

    @torch.no_grad()
    def to_fused(self, explicit: bool = False) -> MultiHeadAttention:
        """A fused :class:`MultiHeadAttention` holding the same weights (stacks the heads' q, k, v)."""
        bias = self.proj.bias is not None
        mha = MultiHeadAttention(self.d_model, self.n_heads, bias=bias, explicit=explicit)
        mha.dropout = self.heads[0].dropout
        mha.resid_dropout.p = self.resid_dropout.p
        parts = [h.query for h in self.heads] + [h.key for h in self.heads] + [h.value for h in self.heads]
        mha.qkv.weight.copy_(torch.cat([p.weight for p in parts], dim=0))
        if bias:
            mha.qkv.bias.copy_(torch.cat([p.bias for p in parts], dim=0))
        mha.proj.load_state_dict(self.proj.state_dict())
        return mha.to(self.proj.weight.device, self.proj.weight.dtype)


def per_head_from_fused(mha: MultiHeadAttention) -> MultiHeadAttentionPerHead:
    """A :class:`MultiHeadAttentionPerHead` computing the same function as ``mha``."""
    ref = mha.qkv.weight
    per_head = MultiHeadAttentionPerHead(
        mha.d_model, mha.n_heads, bias=mha.qkv.bias is not None, dropout=mha.dropout
    )
    per_head.resid_dropout.p = mha.resid_dropout.p
    return per_head.to(ref.device, ref.dtype).load_from_fused(mha)


def fused_from_per_head(per_head: MultiHeadAttentionPerHead, explicit: bool = False) -> MultiHeadAttention:
    """A fused :class:`MultiHeadAttention` computing the same function as ``per_head``."""
    return per_head.to_fused(explicit=explicit)
