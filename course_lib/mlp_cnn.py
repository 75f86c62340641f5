"""The classic models of the first chapters: a neuron, an MLP, a small CNN and a dense binary classifier.

Convolution and max pooling are also written out by hand (``conv2d_explicit``, ``max_pool2d_explicit``)
so the chapter can show the sums that ``F.conv2d`` and ``F.max_pool2d`` compute; ``DigitCNN`` runs
on either, picked by one flag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "identity": lambda x: x,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    if a < 0 or b < 0:
        raise ValueError(f"{what} must be non-negative, got {v!r}")
    return a, b


# ----------------------------------------------------------------------------- neuron and MLP


class Neuron(nn.Module):
    """One artificial neuron: ``sigma(w . x + b)``, x of shape (B, n_inputs) -> (B,)."""

    def __init__(self, n_inputs: int, activation: str = "sigmoid") -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_inputs) / n_inputs**0.5)
        self.b = nn.Parameter(torch.zeros(()))
        self.activation = activation
        self.sigma = get_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.w.numel():
            raise ValueError(
                f"Neuron expects {self.w.numel()} inputs in the last dim, got shape {tuple(x.shape)}; "
                "reshape the input or build Neuron(n_inputs=...) to match"
            )
        return self.sigma(x @ self.w + self.b)  # (B, n) @ (n,) -> (B,)


class MLP(nn.Module):
    """A stack of ``sigma(W x + b)`` layers; the last layer has no activation (it returns logits).

    ``sizes=[64, 128, 10]`` means 64 inputs, one hidden layer of 128 units and 10 outputs.
    """

    def __init__(self, sizes: Sequence[int] = (64, 128, 10), activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(
                f"MLP sizes must list at least 2 positive widths (in, ..., out), got {list(sizes)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.sizes = [int(s) for s in sizes]
        self.activation = activation
        self.sigma = get_activation(activation)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.sizes[0]:
            raise ValueError(
                f"MLP expects {self.sizes[0]} input features, got shape {tuple(x.shape)}; "
                "flatten images first (x.flatten(1)) or change sizes[0]"
            )
        for layer in self.layers[:-1]:
            x = self.dropout(self.sigma(layer(x)))  # (B, d_i) -> (B, d_{i+1})
        return self.layers[-1](x)  # (B, n_out) logits


class DenseBinary(nn.Module):
    """The Keras-style dense binary classifier: in -> 1024 -> 1024 -> 1, ReLU between, sigmoid on top.

    ``forward`` returns probabilities (B,). Train on :meth:`logits` with
    ``F.binary_cross_entropy_with_logits``, which is the numerically stable form of sigmoid + BCE.
    """

    def __init__(self, n_inputs: int, hidden: Sequence[int] = (1024, 1024), dropout: float = 0.0) -> None:
        super().__init__()
        self.body = MLP([n_inputs, *hidden, 1], activation="relu", dropout=dropout)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)  # (B, 1) -> (B,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))  # (B,) probabilities of class 1


# ----------------------------------------------------------------------------- convolution by hand


def conv2d_explicit(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
) -> torch.Tensor:
    """2-D convolution (really cross-correlation, as in PyTorch) written as its sum.

    out[b, o, i, j] = bias[o] + sum_{c, u, v} weight[o, c, u, v] * x_pad[b, c, i*s + u, j*s + v]

    The loop runs over the kernel offsets (u, v); each step multiplies one strided slice of the
    input by the (O, C) matrix ``weight[:, :, u, v]``. Same result and gradients as ``F.conv2d``.
    """
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"conv2d_explicit wants x (B, C, H, W) and weight (O, C, kH, kW), got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}; add a batch/channel dim with x[None] or x[:, None]"
        )
    B, C, H, W = x.shape
    O, C_w, kH, kW = weight.shape
    if C != C_w:
        raise ValueError(f"x has {C} channels but weight expects {C_w}; use weight of shape (O, {C}, kH, kW)")
    sH, sW = _pair(stride, "stride")
    pH, pW = _pair(padding, "padding")
    if sH < 1 or sW < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    x = F.pad(x, (pW, pW, pH, pH))  # zeros around the image              (B, C, H+2pH, W+2pW)
    H_out = (H + 2 * pH - kH) // sH + 1
    W_out = (W + 2 * pW - kW) // sW + 1
    if H_out < 1 or W_out < 1:
        raise ValueError(f"kernel {kH}x{kW} is larger than the padded input {H + 2 * pH}x{W + 2 * pW}")
    out = x.new_zeros(B, O, H_out, W_out)
    for u in range(kH):
        for v in range(kW):
            patch = x[
                :, :, u : u + sH * (H_out - 1) + 1 : sH, v : v + sW * (W_out - 1) + 1 : sW
            ]  # (B,C,Ho,Wo)
            out = out + torch.einsum("bchw,oc->bohw", patch, weight[:, :, u, v])  # (B, O, Ho, Wo)
    if bias is not None:
        out = out + bias.view(1, O, 1, 1)
    return out


def max_pool2d_explicit(
    x: torch.Tensor,
    kernel_size: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
) -> torch.Tensor:
    """2-D max pooling written out: the maximum over each (kH, kW) window, like ``F.max_pool2d``.

    Every window position (u, v) contributes one strided slice; the slices are stacked on a new
    last axis and the max is taken over it, so the gradient flows to the winning input only.
    """
    if x.dim() != 4:
        raise ValueError(f"max_pool2d_explicit wants x (B, C, H, W), got {tuple(x.shape)}")
    kH, kW = _pair(kernel_size, "kernel_size")
    sH, sW = _pair(kernel_size if stride is None else stride, "stride")
    pH, pW = _pair(padding, "padding")
    if pH > kH // 2 or pW > kW // 2:
        raise ValueError(f"padding {padding!r} must be at most half the kernel size {kernel_size!r}")
    H, W = x.shape[-2:]
    x = F.pad(x, (pW, pW, pH, pH), value=float("-inf"))  # padding never wins the max
    H_out = (H + 2 * pH - kH) // sH + 1
    W_out = (W + 2 * pW - kW) // sW + 1
    windows = [
        x[:, :, u : u + sH * (H_out - 1) + 1 : sH, v : v + sW * (W_out - 1) + 1 : sW]  # (B, C, Ho, Wo)
        for u in range(kH)
        for v in range(kW)
    ]
    return torch.stack(windows, dim=-1).max(dim=-1).values  # (B, C, Ho, Wo, kH*kW) -> (B, C, Ho, Wo)


# ----------------------------------------------------------------------------- the digits CNN


class DigitCNN(nn.Module):
    """A small CNN for greyscale digits (8x8 sklearn digits or 28x28 MNIST-style images).

    conv3x3 -> [BatchNorm] -> ReLU -> maxpool2 -> conv3x3 -> [BatchNorm] -> ReLU -> maxpool2
    -> flatten -> dropout -> Linear. ``explicit=True`` runs the hand-written convolution and pooling
    (same weights, same result) instead of the PyTorch kernels.
    """

    def __init__(
        self,
        image_size: int = 8,
        n_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        batchnorm: bool = False,
        dropout: float = 0.25,
        explicit: bool = False,
    ) -> None:
        super().__init__()
        if image_size < 4 or image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two 2x2 poolings), got {image_size}")
        c1, c2 = channels
        self.image_size = image_size
        self.explicit = explicit
        self.conv1 = nn.Conv2d(1, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1) if batchnorm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(c2) if batchnorm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        side = image_size // 4
        self.fc = nn.Linear(c2 * side * side, n_classes)

    def _conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if self.explicit:
            return conv2d_explicit(x, conv.weight, conv.bias, stride=1, padding=1)
        return F.conv2d(x, conv.weight, conv.bias, stride=1, padding=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d_explicit(x, 2) if self.explicit else F.max_pool2d(x, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.image_size
        if x.dim() == 2 and x.shape[1] == S * S:  # flat pixels, as sklearn returns them
            x = x.view(-1, 1, S, S)  # (B, S*S) -> (B, 1, S, S)
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, S, S):
            raise ValueError(
                f"DigitCNN(image_size={S}) expects images (B, 1, {S}, {S}) or flat (B, {S * S}), got "
                f"{tuple(x.shape)}; reshape with x.view(-1, 1, {S}, {S}) or build DigitCNN(image_size=...)"
            )
        x = self._pool(torch.relu(self.bn1(self._conv(self.conv1, x))))  # (B, c1, S/2, S/2)
        x = self._pool(torch.relu(self.bn2(self._conv(self.conv2, x))))  # (B, c2, S/4, S/4)
        x = self.dropout(x.flatten(1))  # (B, c2 * S/4 * S/4)
        return self.fc(x)  # (B, n_classes) logits
