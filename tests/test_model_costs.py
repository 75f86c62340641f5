"""The arithmetic of scale: memory per parameter, 6ND, Chinchilla tokens, a measured matmul rate."""

from __future__ import annotations

import pytest

from course_lib import model_costs


@pytest.mark.parametrize(
    "precision, optimizer, bytes_per_param",
    [
        ("fp32", "adamw", 4 + 4 + 8),  # weights, gradients, two fp32 moments
        ("bf16", "adamw", 2 + 2 + 8 + 4),  # 16-bit weights/grads, fp32 moments, fp32 master copy
        ("fp32", "sgd-momentum", 4 + 4 + 4),
        ("fp32", "sgd", 4 + 4),
    ],
)
def test_training_memory_per_parameter(precision, optimizer, bytes_per_param):
    n = 124_439_808
    mem = model_costs.training_memory(n, precision, optimizer)
    assert mem.total == bytes_per_param * n
    assert mem.as_gib()["total"] == pytest.approx(bytes_per_param * n / 2**30)


def test_unknown_precision_or_optimizer_names_the_choices():
    with pytest.raises(ValueError, match="bf16"):
        model_costs.training_memory(10, "fp8")
    with pytest.raises(ValueError, match="adamw"):
        model_costs.training_memory(10, optimizer="lion")


def test_compute_and_data_rules_of_thumb():
    assert model_costs.training_flops(1e9, 2e10) == 1.2e20
    assert model_costs.chinchilla_tokens(70e9) == 1.4e12  # Chinchilla: 70B parameters, 1.4T tokens
    days = model_costs.training_days(1e9, 2e10, flops_per_second=1e15, utilisation=0.5)
    assert days == pytest.approx(1.2e20 / 5e14 / 86400)
    with pytest.raises(ValueError, match="fraction"):
        model_costs.training_days(1, 1, 1, utilisation=0)


def test_fused_attention_removes_the_quadratic_activation_term():
    args = dict(n_layer=12, d_model=768, n_head=12, seq_len=1024, batch_size=8)
    plain, fused = (
        model_costs.activation_bytes(**args, fused_attention=False),
        model_costs.activation_bytes(**args),
    )
    assert plain - fused == 12 * 5 * 12 * 1024**2 * 8


def test_measured_matmul_rate_is_plausible():
    rate = model_costs.measure_matmul_flops("cpu", n=256, repeats=3)
    assert 1e7 < rate < 1e14  # between a very old CPU and a very large one
