"""course_lib.layers against PyTorch's ops, numpy and transformers' Llama reference code."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.layers import (
    GELU,
    FeedForward,
    LayerNorm,
    LearnedPositions,
    RMSNorm,
    RotaryEmbedding,
    SinusoidalPositions,
    SwiGLU,
    rotate_half,
    sinusoidal_positions,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# fp32: the explicit formulas and the fused kernels round differently by a few ulps.
ATOL = 1e-6
RTOL = 1e-5
GRAD_ATOL = 5e-6


def close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, atol=atol, rtol=RTOL)


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 2 + 0.5).requires_grad_(True)


def _randomise(module: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 1.0)
    return module


def _grads(out, tensors):
    g = torch.Generator().manual_seed(7)
    return torch.autograd.grad(out, tensors, torch.randn(out.shape, generator=g), retain_graph=True)


# ------------------------------------------------------------------------------------------ norms


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_nn_layernorm(explicit, bias):
    ours = _randomise(LayerNorm(16, eps=1e-5, bias=bias, explicit=explicit))
    ref = nn.LayerNorm(16, eps=1e-5, bias=bias)
    ref.load_state_dict(ours.state_dict())
    x = _x(3, 5, 16)
    a, b = ours(x), ref(x)
    close(a, b)
    for ga, gb in zip(_grads(a, [x, ours.weight]), _grads(b, [x, ref.weight])):
        close(ga, gb, GRAD_ATOL)


@pytest.mark.parametrize("explicit", [False, True])
def test_rmsnorm_matches_torch_rms_norm(explicit):
    ours = _randomise(RMSNorm(16, eps=1e-6, explicit=explicit))
    x = _x(3, 5, 16)
    a = ours(x)
    b = F.rms_norm(x, (16,), ours.weight, eps=1e-6)
    close(a, b)
    for ga, gb in zip(_grads(a, [x, ours.weight]), _grads(b, [x, ours.weight])):
        close(ga, gb, GRAD_ATOL)


def test_rmsnorm_matches_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    ours = _randomise(RMSNorm(16, eps=1e-5))
    ref = LlamaRMSNorm(16, eps=1e-5)
    ref.load_state_dict(ours.state_dict())
    x = _x(4, 16)
    close(ours(x), ref(x))


def test_norm_errors_name_the_sizes():
    with pytest.raises(ValueError, match="built for 16 features.*last dimension is 8"):
        LayerNorm(16)(torch.randn(2, 8))
    with pytest.raises(ValueError, match="built for 16 features"):
        RMSNorm(16)(torch.randn(2, 8))


# ------------------------------------------------------------------------ activations and MLPs


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate, explicit):
    x = _x(1000)
    a, b = GELU(approximate, explicit)(x), F.gelu(x, approximate=approximate)
    close(a, b)
    close(*[_grads(o, [x])[0] for o in (a, b)], GRAD_ATOL)


def test_gelu_tanh_is_an_approximation_of_exact():
    x = torch.linspace(-6, 6, 1001)
    diff = (GELU("tanh")(x) - GELU("none")(x)).abs().max()
    assert 0 < diff < 1e-3  # the tanh form is close to, but not the same as, the erf form
    with pytest.raises(ValueError, match="'none' \\(exact\\) or 'tanh'"):
        GELU("fast")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_feedforward_is_linear_gelu_linear(approximate, bias):
    torch.manual_seed(0)
    ff = FeedForward(16, 40, bias=bias, approximate=approximate).eval()
    x = _x(2, 3, 16)
    ref = F.linear(
        F.gelu(F.linear(x, ff.c_fc.weight, ff.c_fc.bias), approximate=approximate), ff.c_proj.weight
    )
    if bias:
        ref = ref + ff.c_proj.bias
    close(ff(x), ref)
    assert FeedForward(16).c_fc.out_features == 64  # default d_ff = 4 d


def test_swiglu_matches_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    ours = SwiGLU(16, 40)
    ref = LlamaMLP(
        LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=2, hidden_act="silu")
    )
    with torch.no_grad():
        ref.gate_proj.weight.copy_(ours.w1.weight)
        ref.up_proj.weight.copy_(ours.w3.weight)
        ref.down_proj.weight.copy_(ours.w2.weight)
    x = _x(2, 3, 16)
    a, b = ours(x), ref(x)
    close(a, b)
    close(_grads(a, [x])[0], _grads(b, [x])[0], GRAD_ATOL)


# ------------------------------------------------------------------------------------- positions


def test_sinusoidal_matches_numpy_formula():
    T, d = 50, 16
    pe = np.zeros((T, d))
    for pos in range(T):
        for i in range(d // 2):
            angle = pos / (10000 ** (2 * i / d))
            pe[pos, 2 * i], pe[pos, 2 * i + 1] = math.sin(angle), math.cos(angle)
    np.testing.assert_allclose(
        sinusoidal_positions(T, d).numpy(), pe, atol=1e-5
    )  # fp32 sin/cos of angles <= 50


def test_sinusoidal_known_properties():
    T, d, shift = 64, 32, 5
    pe = sinusoidal_positions(T, d).double()
    assert torch.equal(pe[0, 0::2], torch.zeros(d // 2, dtype=torch.float64))  # sin(0)
    assert torch.equal(pe[0, 1::2], torch.ones(d // 2, dtype=torch.float64))  # cos(0)
    assert pe.abs().max() <= 1.0
    torch.testing.assert_close((pe**2).sum(-1), torch.full((T,), d / 2, dtype=torch.float64))  # sin^2+cos^2
    # PE[pos + shift] is a fixed rotation of PE[pos] in each (sin, cos) pair: the reason it encodes offsets.
    w = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    c, s = torch.cos(shift * w), torch.sin(shift * w)
    sin_p, cos_p = pe[:-shift, 0::2], pe[:-shift, 1::2]
    tol = 1e-5  # the table is fp32: sin/cos of angles up to 64 rad carry ~4e-6 of rounding
    torch.testing.assert_close(pe[shift:, 0::2], sin_p * c + cos_p * s, atol=tol, rtol=0)
    torch.testing.assert_close(pe[shift:, 1::2], cos_p * c - sin_p * s, atol=tol, rtol=0)
    with pytest.raises(ValueError, match="even d"):
        sinusoidal_positions(4, 7)


def test_position_modules_shapes_and_range_errors():
    pos = torch.arange(3, 7)
    learned, fixed = LearnedPositions(8, 6), SinusoidalPositions(8, 6)
    assert learned(pos).shape == (4, 6)
    torch.testing.assert_close(fixed(pos), sinusoidal_positions(8, 6)[3:7])
    assert len(list(fixed.parameters())) == 0 and "table" not in fixed.state_dict()
    for m in (learned, fixed):
        with pytest.raises(ValueError, match="position 8 is past the table's 8 positions.*block_size"):
            m(torch.arange(9))


def _hf_rope(head_dim: int, theta: float, positions: torch.Tensor, q, k):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
    )
    cos, sin = LlamaRotaryEmbedding(cfg)(q, positions[None])
    return apply_rotary_pos_emb(q, k, cos, sin)


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
@pytest.mark.parametrize("offset", [0, 9])
def test_rope_matches_transformers_llama(offset, theta):
    hs, T = 16, 6
    rope = RotaryEmbedding(hs, max_seq_len=32, theta=theta)
    q, k = _x(2, 4, T, hs, seed=1), _x(2, 2, T, hs, seed=2)  # GQA shapes: k has fewer heads
    ours = rope(q, k, offset=offset)
    ref = _hf_rope(hs, theta, torch.arange(offset, offset + T), q, k)
    for a, b in zip(ours, ref):
        close(a, b, 2e-6)  # cos/sin of angles up to ~15 rad in fp32, times values ~5
    g_ours = _grads(ours[0] + 0, [q])[0]
    g_ref = _grads(ref[0] + 0, [q])[0]
    close(g_ours, g_ref, GRAD_ATOL)


def test_rope_score_depends_only_on_relative_position():
    hs = 16
    rope = RotaryEmbedding(hs, max_seq_len=64)
    g = torch.Generator().manual_seed(0)
    q0, k0 = torch.randn(1, 1, 1, hs, generator=g), torch.randn(1, 1, 1, hs, generator=g)

    def score(m: int, n: int) -> torch.Tensor:
        qm, _ = rope(q0, q0, offset=m)
        _, kn = rope(k0, k0, offset=n)
        return (qm * kn).sum()

    for m, n in [(3, 1), (10, 2), (0, 5)]:
        for shift in (1, 7, 30):
            torch.testing.assert_close(score(m + shift, n + shift), score(m, n), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(5, 1), score(5, 2))  # ...and it does depend on m - n


def test_rope_preserves_norm_and_position_zero_is_identity():
    rope = RotaryEmbedding(8, max_seq_len=16)
    q = _x(1, 2, 5, 8)
    rq, _ = rope(q, q)
    close(rq.norm(dim=-1), q.norm(dim=-1), 5e-6)
    close(rq[..., 0, :], q[..., 0, :])
    x = torch.arange(4.0)
    assert torch.equal(rotate_half(x), torch.tensor([-2.0, -3.0, 0.0, 1.0]))


def test_rope_errors():
    with pytest.raises(ValueError, match="head_dim must be even"):
        RotaryEmbedding(7, 8)
    rope = RotaryEmbedding(8, 8)
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="positions 6..9.*larger max_seq_len"):
        rope(q, q, offset=6)
    with pytest.raises(ValueError, match="head_dim=8"):
        rope(torch.randn(1, 1, 4, 6), torch.randn(1, 1, 4, 6))
    assert len(rope.state_dict()) == 0  # the tables are recomputed, never stored in checkpoints
