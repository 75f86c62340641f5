"""course_lib.attention against PyTorch's own attention (scaled_dot_product_attention, MultiheadAttention)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import (
    KVCache,
    MultiHeadAttention,
    MultiHeadAttentionPerHead,
    attention,
    causal_mask,
    explicit_attention,
    fused_from_per_head,
    padding_mask,
    per_head_from_fused,
    repeat_kv,
)
from course_lib.layers import RotaryEmbedding

# fp32 tolerances: the explicit and fused kernels sum in different orders (a few ulps of values ~1).
ATOL = 2e-6
RTOL = 1e-5
# Gradients accumulate more rounding (two matmuls + softmax backward).
GRAD_ATOL = 5e-6

B, NH, T, HS = 2, 4, 7, 8


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=RTOL)


def qkv(*shape: int, seed: int = 0, requires_grad: bool = True) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g).requires_grad_(requires_grad) for _ in range(3)]


def grads(out: torch.Tensor, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(99)
    upstream = torch.randn(out.shape, generator=g)
    return torch.autograd.grad(out, tensors, upstream, retain_graph=True)


# ---------------------------------------------------------------------------------------- masks


def test_causal_mask_square_is_lower_triangular():
    assert torch.equal(causal_mask(5), torch.ones(5, 5).tril().bool())


@pytest.mark.parametrize("T_q,T_k", [(1, 6), (3, 6), (6, 6)])
def test_causal_mask_with_offset_is_the_last_rows(T_q, T_k):
    # Queries are the last T_q positions of a T_k sequence, as in KV-cache decoding.
    assert torch.equal(causal_mask(T_q, T_k), causal_mask(T_k)[-T_q:])


def test_causal_mask_rejects_fewer_keys_than_queries():
    with pytest.raises(ValueError, match="T_k=2 < T_q=3"):
        causal_mask(3, 2)


def test_padding_mask_shape_and_values():
    am = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pm = padding_mask(am)
    assert pm.shape == (2, 1, 1, 3) and pm.dtype == torch.bool
    assert torch.equal(pm[:, 0, 0], am.bool())
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        padding_mask(torch.ones(3))


# ------------------------------------------------------------------- the formula vs PyTorch's kernel


def _bool_mask(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(B, NH, T, T, generator=g) > 0.4
    m[..., 0] = True  # every row attends to something: no degenerate rows here
    return m


def _float_mask(seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(B, 1, T, T, generator=g)
    m[..., 1] = float("-inf")
    return m


VARIANTS = {
    "plain": dict(),
    "causal": dict(is_causal=True),
    "bool_mask": dict(attn_mask=_bool_mask()),
    "float_mask": dict(attn_mask=_float_mask()),
    "padding_mask": dict(attn_mask=padding_mask(torch.tensor([[1] * T, [1] * 4 + [0] * 3]))),
    "square_mask": dict(attn_mask=causal_mask(T)),
    "scale": dict(scale=0.3),
    "causal_scale": dict(is_causal=True, scale=1.7),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_explicit_attention_matches_sdpa_forward_and_backward(name):
    kwargs = VARIANTS[name]
    q, k, v = qkv(B, NH, T, HS)
    ours, weights = explicit_attention(q, k, v, **kwargs)
    ref = F.scaled_dot_product_attention(q, k, v, **kwargs)
    close(ours, ref)
    for g_ours, g_ref in zip(grads(ours, [q, k, v]), grads(ref, [q, k, v])):
        close(g_ours, g_ref, GRAD_ATOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, NH, T))  # rows are distributions


def test_explicit_causal_weights_are_zero_above_the_diagonal():
    q, k, v = qkv(B, NH, T, HS)
    _, w = explicit_attention(q, k, v, is_causal=True)
    assert torch.all(w.masked_select(~causal_mask(T)) == 0)


def test_causal_plus_mask_equals_the_merged_mask():
    q, k, v = qkv(B, NH, T, HS)
    pm = padding_mask(torch.tensor([[1] * T, [1] * 5 + [0] * 2]))
    ours, _ = explicit_attention(q, k, v, attn_mask=pm, is_causal=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=pm & causal_mask(T))
    close(ours, ref)
    close(attention(q, k, v, attn_mask=pm, is_causal=True), ref)


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_fully_masked_rows_give_zeros_not_nan(mask_kind):
    q, k, v = qkv(B, NH, T, HS)
    m = torch.ones(T, T, dtype=torch.bool)
    m[2] = False  # query 2 may attend to nothing
    mask = m if mask_kind == "bool" else torch.zeros(T, T).masked_fill(~m, float("-inf"))
    out, w = explicit_attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert torch.all(out[..., 2, :] == 0) and torch.all(w[..., 2, :] == 0)
    gq, gk, gv = grads(out, [q, k, v])
    assert all(torch.isfinite(g).all() for g in (gq, gk, gv))
    assert torch.all(gq[..., 2, :] == 0)
    # The fused CPU kernel returns the same zeros; the other rows are ordinary attention.
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


@pytest.mark.parametrize("T_q", [1, 3])
def test_causal_with_offset_matches_last_rows_of_full_attention(T_q):
    # Queries = last T_q positions; this is what the KV cache relies on.
    q, k, v = qkv(B, NH, T, HS, requires_grad=False)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for explicit in (False, True):
        part = attention(q[..., -T_q:, :], k, v, is_causal=True, explicit=explicit)
        close(part, full[..., -T_q:, :])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_attention_fused_and_explicit_paths_agree(name):
    kwargs = VARIANTS[name]
    q, k, v = qkv(B, NH, T, HS)
    a = attention(q, k, v, explicit=False, **kwargs)
    b = attention(q, k, v, explicit=True, **kwargs)
    close(a, b)
    for ga, gb in zip(grads(a, [q, k, v]), grads(b, [q, k, v])):
        close(ga, gb, GRAD_ATOL)


@pytest.mark.parametrize("n_kv", [1, 2])
def test_attention_gqa_equals_repeated_kv(n_kv):
    q, _, _ = qkv(B, NH, T, HS)
    _, k, v = qkv(B, n_kv, T, HS, seed=5)
    ref = F.scaled_dot_product_attention(
        q, repeat_kv(k, NH // n_kv), repeat_kv(v, NH // n_kv), is_causal=True
    )
    for explicit in (False, True):
        out = attention(q, k, v, is_causal=True, explicit=explicit, enable_gqa=True)
        close(out, ref)
        for ga, gb in zip(grads(out, [q, k, v]), grads(ref, [q, k, v])):
            close(ga, gb, GRAD_ATOL)


def test_attention_rejects_head_mismatch_without_gqa():
    q, _, _ = qkv(B, 4, T, HS)
    _, k, v = qkv(B, 2, T, HS)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        attention(q, k, v)
    _, k3, v3 = qkv(B, 3, T, HS)
    with pytest.raises(ValueError, match="multiple"):
        attention(q, k3, v3, enable_gqa=True)


@pytest.mark.parametrize("bad_shape", [(T + 1, T), (3, 1, T, T), (B, NH, T, T + 2)])
def test_mask_shape_error_names_shapes_and_fix(bad_shape):
    q, k, v = qkv(B, NH, T, HS, requires_grad=False)
    mask = torch.ones(bad_shape, dtype=torch.bool)
    for fn in (explicit_attention, attention):
        with pytest.raises(ValueError, match=r"does not broadcast.*padding_mask"):
            fn(q, k, v, attn_mask=mask)


# ------------------------------------------------------------------------------- multi-head attention

D, H = 32, 4


def _copy_to_torch_mha(mha: MultiHeadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(D, H, bias=mha.qkv.bias is not None, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv.weight)
        ref.out_proj.weight.copy_(mha.proj.weight)
        if mha.qkv.bias is not None:
            ref.in_proj_bias.copy_(mha.qkv.bias)
            ref.out_proj.bias.copy_(mha.proj.bias)
    return ref.eval()


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("masking", ["none", "causal", "key_padding", "causal_and_padding"])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_matches_torch_multihead_attention(explicit, masking, bias):
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, bias=bias, explicit=explicit).eval()
    ref = _copy_to_torch_mha(mha)
    x = torch.randn(B, T, D, requires_grad=True)
    am = torch.tensor([[1] * T, [1] * 4 + [0] * 3])  # right padding: no query loses every key

    kw, ref_kw = {}, {}
    if masking in ("causal", "causal_and_padding"):
        kw["is_causal"] = True
        ref_kw["attn_mask"] = ~causal_mask(T)  # torch's convention: True = NOT allowed
    if masking in ("key_padding", "causal_and_padding"):
        kw["attn_mask"] = padding_mask(am)
        ref_kw["key_padding_mask"] = am == 0

    out, w = mha(x, return_weights=True, **kw)
    out_ref, w_ref = ref(x, x, x, need_weights=True, average_attn_weights=False, **ref_kw)
    close(out, out_ref)
    close(w, w_ref)
    close(mha(x, **kw), out_ref)  # the path without weights too

    g = torch.randn(B, T, D)
    (gx, gw) = torch.autograd.grad(mha(x, **kw), [x, mha.qkv.weight], g)
    (gx_ref, gw_ref) = torch.autograd.grad(out_ref, [x, ref.in_proj_weight], g)
    close(gx, gx_ref, GRAD_ATOL)
    close(gw, gw_ref, GRAD_ATOL)


def _gqa_reference(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """GQA written independently: separate q/k/v matmuls, k/v heads repeated, SDPA, projection."""
    nh, nkv, hs = mha.n_heads, mha.n_kv_heads, mha.head_dim
    W, b = mha.qkv.weight, mha.qkv.bias
    Wq, Wk, Wv = W[: nh * hs], W[nh * hs : (nh + nkv) * hs], W[(nh + nkv) * hs :]
    bq, bk, bv = b[: nh * hs], b[nh * hs : (nh + nkv) * hs], b[(nh + nkv) * hs :]
    Bx, Tx, _ = x.shape
    q = (x @ Wq.T + bq).view(Bx, Tx, nh, hs).transpose(1, 2)
    k = (x @ Wk.T + bk).view(Bx, Tx, nkv, hs).transpose(1, 2)
    v = (x @ Wv.T + bv).view(Bx, Tx, nkv, hs).transpose(1, 2)
    k = torch.cat([k[:, g : g + 1].expand(-1, nh // nkv, -1, -1) for g in range(nkv)], dim=1)
    v = torch.cat([v[:, g : g + 1].expand(-1, nh // nkv, -1, -1) for g in range(nkv)], dim=1)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return mha.proj(y.transpose(1, 2).reshape(Bx, Tx, nh * hs))


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_gqa_matches_repeated_kv_reference(n_kv, explicit):
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, n_kv_heads=n_kv, explicit=explicit).eval()
    assert mha.qkv.weight.shape == ((H + 2 * n_kv) * (D // H), D)
    x = torch.randn(B, T, D, requires_grad=True)
    out, ref = mha(x, is_causal=True), _gqa_reference(mha, x)
    close(out, ref)
    g = torch.randn(B, T, D)
    for a, b in zip(
        torch.autograd.grad(out, [x, mha.qkv.weight], g), torch.autograd.grad(ref, [x, mha.qkv.weight], g)
    ):
        close(a, b, GRAD_ATOL)


@pytest.mark.skipif(
    "enable_gqa" not in (F.scaled_dot_product_attention.__doc__ or ""), reason="torch < 2.5 has no enable_gqa"
)
def test_gqa_matches_sdpa_enable_gqa():
    torch.manual_seed(0)
    q = torch.randn(B, H, T, D // H)
    k, v = torch.randn(B, 2, T, D // H), torch.randn(B, 2, T, D // H)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    close(attention(q, k, v, is_causal=True, explicit=True, enable_gqa=True), ref)


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_per_head_form_equals_fused_form(n_kv):
    torch.manual_seed(0)
    fused = MultiHeadAttention(D, H, n_kv_heads=n_kv).eval()
    per_head = per_head_from_fused(fused).eval()
    assert len(per_head.heads) == H
    x = torch.randn(B, T, D)
    pm = padding_mask(torch.tensor([[1] * T, [1] * 5 + [0] * 2]))
    close(per_head(x, is_causal=True), fused(x, is_causal=True))
    close(per_head(x, attn_mask=pm), fused(x, attn_mask=pm))
    per_head_mask = _bool_mask()  # (B, nh, T, T): a different mask for every head
    close(per_head(x, attn_mask=per_head_mask), fused(x, attn_mask=per_head_mask))


def test_fused_from_per_head_round_trip_and_gradients():
    torch.manual_seed(0)
    per_head = MultiHeadAttentionPerHead(D, H).eval()
    fused = fused_from_per_head(per_head).eval()
    x = torch.randn(B, T, D)
    out_p, out_f = per_head(x, is_causal=True), fused(x, is_causal=True)
    close(out_p, out_f)
    g = torch.randn(B, T, D)
    (gp,) = torch.autograd.grad(out_p, [per_head.heads[1].key.weight], g)
    (gf,) = torch.autograd.grad(out_f, [fused.qkv.weight], g)
    hs = D // H
    close(gp, gf[(H + 1) * hs : (H + 2) * hs], GRAD_ATOL)  # head 1's key rows in the fused matrix
    with pytest.raises(ValueError, match="shapes differ"):
        MultiHeadAttentionPerHead(D, 2).load_from_fused(fused)


def test_dropout_is_identity_in_eval_mode_and_active_in_training():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, dropout=0.5).eval()
    plain = MultiHeadAttention(D, H, dropout=0.0).eval()
    plain.load_state_dict(mha.state_dict())
    x = torch.randn(B, T, D)
    for explicit in (False, True):
        mha.explicit = plain.explicit = explicit
        torch.testing.assert_close(mha(x, is_causal=True), plain(x, is_causal=True), atol=0, rtol=0)
    mha.train()
    assert not torch.allclose(mha(x, is_causal=True), plain(x, is_causal=True))


@pytest.mark.parametrize("n_kv", [1, 4])
def test_mha_explicit_and_fused_paths_agree(n_kv):
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, n_kv_heads=n_kv).eval()
    x = torch.randn(B, T, D)
    mha.explicit = True
    a = mha(x, is_causal=True)
    mha.explicit = False
    b = mha(x, is_causal=True)
    close(a, b)


@pytest.mark.parametrize("use_rope", [False, True])
@pytest.mark.parametrize("n_kv", [1, 2, 4])
@pytest.mark.parametrize("explicit", [False, True])
def test_kv_cache_decoding_equals_full_causal_forward(use_rope, n_kv, explicit):
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, n_kv_heads=n_kv, explicit=explicit).eval()
    rope = RotaryEmbedding(D // H, max_seq_len=16) if use_rope else None
    x = torch.randn(B, T, D)
    full = mha(x, is_causal=True, rope=rope)
    cache = KVCache(B, n_kv, max_len=16, head_dim=D // H)
    steps = [mha(x[:, :3], is_causal=True, rope=rope, kv_cache=cache)]  # prefill 3 tokens
    steps += [mha(x[:, t : t + 1], is_causal=True, rope=rope, kv_cache=cache) for t in range(3, T)]
    close(torch.cat(steps, dim=1), full)
    assert cache.length == T


def test_kv_cache_errors_and_reset():
    cache = KVCache(1, 2, max_len=4, head_dim=8)
    cache.update(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match="full.*max_len 4"):
        cache.update(torch.randn(1, 2, 2, 8), torch.randn(1, 2, 2, 8))
    with pytest.raises(ValueError, match="new cache"):
        cache.update(torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8))
    cache.reset()
    k, _ = cache.update(torch.ones(1, 2, 4, 8), torch.ones(1, 2, 4, 8))
    assert k.shape == (1, 2, 4, 8)


def test_constructor_errors_name_numbers_and_fix():
    with pytest.raises(ValueError, match=r"d_model=30 is not divisible by n_heads=4.*divisors of 30"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match=r"n_heads=4 is not divisible by n_kv_heads=3.*divisors of 4"):
        MultiHeadAttention(32, 4, n_kv_heads=3)
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttentionPerHead(30, 4)


def test_forward_input_errors():
    mha = MultiHeadAttention(D, H)
    with pytest.raises(ValueError, match=r"\(B, T, 32\)"):
        mha(torch.randn(T, D))
    with pytest.raises(ValueError, match="does not broadcast"):
        mha(torch.randn(B, T, D), attn_mask=torch.ones(T + 1, T + 1, dtype=torch.bool))


def test_return_weights_shape_and_rows():
    mha = MultiHeadAttention(D, H, n_kv_heads=2).eval()
    out, w = mha(torch.randn(B, T, D), is_causal=True, return_weights=True)
    assert out.shape == (B, T, D) and w.shape == (B, H, T, T)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, T))
    assert torch.all(w.masked_select(~causal_mask(T)) == 0)
