"""What makes a model "large": the arithmetic of parameters, memory, compute and data.

Rules of thumb used across the course (chapter 1 derives them):
- training compute C ~ 6 N D floating-point operations for N parameters and D tokens
  (2 N for the forward pass, 4 N for the backward pass, per token);
- a compute-optimal ("Chinchilla") model sees about 20 tokens per parameter (Hoffmann et al., 2022);
- training with AdamW keeps weights, gradients and two moment estimates per parameter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

BYTES_PER_VALUE = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "int8": 1, "int4": 0.5}
CHINCHILLA_TOKENS_PER_PARAMETER = 20
GIB = 1024**3


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes needed to train a model, by what they hold."""

    weights: float
    gradients: float
    optimizer: float
    master_weights: float = 0.0
    activations: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.master_weights + self.activations

    def as_gib(self) -> dict[str, float]:
        parts = ("weights", "gradients", "optimizer", "master_weights", "activations")
        return {k: getattr(self, k) / GIB for k in parts} | {"total": self.total / GIB}


def _bytes(dtype: str) -> float:
    if dtype not in BYTES_PER_VALUE:
        raise ValueError(f"unknown precision {dtype!r}; use one of {sorted(BYTES_PER_VALUE)}")
    return BYTES_PER_VALUE[dtype]


def training_memory(
    n_params: int,
    precision: str = "fp32",
    optimizer: str = "adamw",
    activations: float = 0.0,
) -> TrainingMemory:
    """Memory to train ``n_params`` parameters (activations passed in bytes, see :func:`activation_bytes`).

    ``precision`` ``"fp32"``: everything in 4-byte floats (16 bytes a parameter with AdamW).
    ``"bf16"`` or ``"fp16"``: mixed precision as usually done: 16-bit weights and gradients for the
    forward and backward passes plus an fp32 master copy and fp32 optimizer states (also 16 bytes a
    parameter: mixed precision saves activation memory and time, not weight memory).
    ``optimizer``: ``"adamw"`` (two states), ``"sgd-momentum"`` (one), ``"sgd"`` (none).
    """
    states = {"adamw": 2, "adam": 2, "sgd-momentum": 1, "sgd": 0}
    if optimizer not in states:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {sorted(states)}")
    width = _bytes(precision)
    master = 4 * n_params if width < 4 else 0.0
    return TrainingMemory(
        weights=width * n_params,
        gradients=width * n_params,
        optimizer=4 * states[optimizer] * n_params,
        master_weights=master,
        activations=activations,
    )


def inference_memory(n_params: int, precision: str = "bf16") -> float:
    """Bytes to hold the weights alone (what serving needs before the KV cache)."""
    return _bytes(precision) * n_params


def activation_bytes(
    n_layer: int, d_model: int, n_head: int, seq_len: int, batch_size: int, fused_attention: bool = True
) -> float:
    """Activations a transformer stores for the backward pass, 16-bit, no recomputation.

    Per layer about ``s b h (34 + 5 a s / h)`` bytes for sequence ``s``, batch ``b``, width ``h`` and
    ``a`` heads (Korthikanti et al., 2022). A fused (flash) attention kernel does not store the
    ``a s^2`` attention matrix, which removes the second term.
    """
    s, b, h, a = seq_len, batch_size, d_model, n_head
    per_layer = s * b * h * 34 + (0 if fused_attention else 5 * a * s * s * b)
    return float(n_layer * per_layer)


def training_flops(n_params: float, n_tokens: float) -> float:
    """Approximate training compute, 6 N D: 2 N FLOPs forward and 4 N backward, per token."""
    return 6.0 * n_params * n_tokens


def chinchilla_tokens(n_params: float) -> float:
    """Tokens a compute-optimal model of ``n_params`` parameters is trained on (about 20 per parameter)."""
    return CHINCHILLA_TOKENS_PER_PARAMETER * n_params


def measure_matmul_flops(
    device: torch.device | str = "cpu", n: int = 1024, dtype: torch.dtype = torch.float32, repeats: int = 10
) -> float:
    """Measured FLOP/s of an ``n x n`` by ``n x n`` matrix product (2 n^3 operations) on ``device``."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm-up: first calls pay for allocation and kernel selection
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    seconds = (time.perf_counter() - t0) / repeats
    return 2 * n**3 / seconds


def training_days(
    n_params: float, n_tokens: float, flops_per_second: float, utilisation: float = 0.4
) -> float:
    """Days to train at a sustained fraction ``utilisation`` of a measured or peak FLOP/s."""
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation is a fraction in (0, 1], got {utilisation}")
    return training_flops(n_params, n_tokens) / (flops_per_second * utilisation) / 86_400
