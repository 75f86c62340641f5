"""The pieces of a transformer block other than attention: norms, activations, feed-forward
networks and the three ways of telling the model where a token is.

Each normalisation and activation has the explicit math and PyTorch's fused op side by side,
picked by an ``explicit`` flag, so the taught formula and the fast path cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# Normalisation.


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias.

    ``bias=False`` drops the additive term (as in nanoGPT's optional-bias LayerNorm).
    """

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True, explicit: bool = False) -> None:
        super().__init__()
        self.d, self.eps, self.explicit = d, eps, explicit
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        _check_last_dim(x, self.d, "LayerNorm")
        if not self.explicit:
            return F.layer_norm(x, (self.d,), self.weight, self.bias, self.eps)
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1), population variance
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, bias={self.bias is not None}, explicit={self.explicit}"


class RMSNorm(nn.Module):
    """RMSNorm (Llama): x / sqrt(mean(x^2) + eps) * weight. No centring, no bias.

    The statistics are computed in float32 and the result cast back, as Llama does, so it is
    stable in half precision.
    """

    def __init__(self, d: int, eps: float = 1e-6, explicit: bool = False) -> None:
        super().__init__()
        self.d, self.eps, self.explicit = d, eps, explicit
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        _check_last_dim(x, self.d, "RMSNorm")
        if not self.explicit:
            y = F.rms_norm(x.float(), (self.d,), eps=self.eps).to(x.dtype)
            return self.weight * y
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., d)
        return self.weight * y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, explicit={self.explicit}"


def _check_last_dim(x: Tensor, d: int, name: str) -> None:
    if x.size(-1) != d:
        raise ValueError(
            f"{name} was built for {d} features but the input's last dimension is {x.size(-1)} "
            f"(shape {tuple(x.shape)}); build it with d={x.size(-1)} or check the input"
        )


# ----------------------------------------------------------------------------------------------
# Activations, dropout and feed-forward networks.


class GELU(nn.Module):
    """GELU(x) = x * Phi(x). ``approximate="none"``: exact, with erf; ``"tanh"``: GPT-2's approximation
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def __init__(self, approximate: str = "none", explicit: bool = False) -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate={approximate!r} is unknown; use 'none' (exact) or 'tanh'")
        self.approximate, self.explicit = approximate, explicit

    def forward(self, x: Tensor) -> Tensor:
        if not self.explicit:
            return F.gelu(x, approximate=self.approximate)
        if self.approximate == "tanh":
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}, explicit={self.explicit}"


class Dropout(nn.Dropout):
    """``nn.Dropout`` that hands its input back untouched when it cannot drop anything (p = 0 or
    evaluation mode) without calling into PyTorch, so a model built with dropout 0 pays nothing for it."""

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        return F.dropout(x, self.p, True, self.inplace)


class FeedForward(nn.Module):
    """GPT-2's MLP: Linear(d, d_ff) -> GELU -> Linear(d_ff, d) -> dropout. Names match GPT-2."""

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        approximate: str = "tanh",
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.c_fc = nn.Linear(d_model, d_ff, bias=bias)
        self.act = GELU(approximate)
        self.c_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, d) -> (B, T, d_ff) -> (B, T, d)


class SwiGLU(nn.Module):
    """Llama's gated MLP: w2(silu(w1 x) * w3 x).

    w1 is Llama's ``gate_proj``, w3 its ``up_proj`` and w2 its ``down_proj``. Three matrices instead
    of two, so ``d_ff`` is usually about 8/3 d instead of 4 d to keep the parameter count.
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)  # gate
        self.w3 = nn.Linear(d_model, d_ff, bias=bias)  # up
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)  # down
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))  # (B, T, d_ff) gated -> (B, T, d)


# ----------------------------------------------------------------------------------------------
# Positions.


class LearnedPositions(nn.Module):
    """A trainable vector per position (GPT-2's ``wpe``): positions (...,) -> (..., d)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, d_model).normal_(std=0.02))

    def forward(self, positions: Tensor) -> Tensor:
        return _lookup(lambda p: F.embedding(p, self.weight), positions, self.max_len)


def sinusoidal_positions(T: int, d: int, base: float = 10000.0) -> Tensor:
    """The fixed (T, d) table of "Attention Is All You Need":

    PE[pos, 2i] = sin(pos / base^(2i/d)),  PE[pos, 2i+1] = cos(pos / base^(2i/d)).
    """
    if d % 2 != 0:
        raise ValueError(f"sinusoidal_positions needs an even d (a sin and a cos per frequency), got d={d}")
    pos = torch.arange(T, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    angles = pos * inv_freq  # (T, d/2)
    table = torch.empty(T, d)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table  # (T, d)


class SinusoidalPositions(nn.Module):
    """The sinusoidal table as a module with the same call as :class:`LearnedPositions` (no weights)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_positions(max_len, d_model), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return _lookup(lambda p: self.table[p], positions, self.max_len)  # (..., d)


def _lookup(table: Callable[[Tensor], Tensor], positions: Tensor, max_len: int) -> Tensor:
    """``table(positions)`` with a clear error for a position past the table's ``max_len`` rows.

    On the CPU the lookup checks its own bounds (an IndexError), so the check below runs only to
    explain that error and costs nothing otherwise; on a GPU an out-of-range index would abort the
    device, so the check runs first.
    """
    if torch.compiler.is_compiling():
        return table(positions)  # torch.export / torch.compile trace shapes; the check needs the values
    if positions.device.type != "cpu":
        _check_positions(positions, max_len)
    try:
        return table(positions)
    except IndexError:
        _check_positions(positions, max_len)
        raise


def _check_positions(positions: Tensor, max_len: int) -> None:
    if torch.compiler.is_compiling():
        return  # torch.export / torch.compile trace shapes; this check needs the values
    if positions.numel() and int(positions.max()) >= max_len:
        raise ValueError(
            f"position {int(positions.max())} is past the table's {max_len} positions; "
            "crop the sequence or build the model with a larger block_size"
        )


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension (Llama's convention)."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., hs/2) each
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., T, hs) by the angles whose cos/sin are given, each (T, hs)."""
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) for queries and keys of shape (B, nh, T, hs).

    Feature pair (j, j + hs/2) of position m is rotated by the angle m * theta^(-2j/hs). Rotating
    q at m and k at n makes q.k depend on m - n only. The pairing of the two halves ("rotate_half")
    is the one transformers' Llama uses, so Llama weights load without permuting q/k rows.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RoPE rotates feature pairs, so head_dim must be even; got head_dim={head_dim}")
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hs/2,)
        t = torch.arange(max_seq_len, dtype=torch.float32)  # (T,)
        angles = torch.outer(t, inv_freq)  # (T, hs/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, hs): both halves of a pair share an angle
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """Rotate q (B, nh, T, hs) and k (B, nkv, T, hs) as positions offset .. offset + T - 1."""
        T = q.size(-2)
        if q.size(-1) != self.head_dim or k.size(-1) != self.head_dim:
            raise ValueError(
                f"RotaryEmbedding was built for head_dim={self.head_dim} but got q {tuple(q.shape)}, "
                f"k {tuple(k.shape)}; build it with the attention's head size"
            )
        if offset + T > self.max_seq_len:
            raise ValueError(
                f"RoPE table has {self.max_seq_len} positions but positions {offset}..{offset + T - 1} "
                "were asked for; crop the sequence or build it with a larger max_seq_len (block_size)"
            )
        cos = self.cos[offset : offset + T].to(q.dtype)  # (T, hs)
        sin = self.sin[offset : offset + T].to(q.dtype)  # (T, hs)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, theta={self.theta}"


def num_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """How many numbers ``module`` learns: every parameter, or with ``trainable_only`` those that receive
    gradients (``parameters()`` yields a tied tensor once, so it is counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
