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


def test_fit_power_law_recovers_exponent_and_matches_numpy_lstsq():
    import numpy as np

    x = np.array([1e5, 3e5, 1e6, 3e6])
    y = 7.0 * x**-0.08 * np.exp(np.array([0.01, -0.01, 0.005, 0.0]))  # a little noise
    a, b = model_costs.fit_power_law(x, y)
    A = np.stack([np.ones(4), np.log(x)], axis=1)
    (log_a_ref, b_ref), *_ = np.linalg.lstsq(A, np.log(y), rcond=None)
    assert b == pytest.approx(b_ref, abs=1e-9) and a == pytest.approx(np.exp(log_a_ref), rel=1e-9)
    assert b == pytest.approx(-0.08, abs=0.01)
    a2, b2 = model_costs.fit_power_law([2.0, 4.0], [3.0, 12.0])  # exact: y = 0.75 x^2
    assert (a2, b2) == (pytest.approx(0.75), pytest.approx(2.0))


def test_fit_power_law_needs_positive_pairs():
    with pytest.raises(ValueError, match="positive"):
        model_costs.fit_power_law([1.0, -2.0], [1.0, 2.0])


def test_measured_training_throughput_leaves_the_model_alone():
    import torch

    from course_lib.gpt import GPT, get_config

    torch.manual_seed(0)
    model = GPT(get_config("tiny", vocab_size=64, block_size=16, n_layer=1, n_head=2, d_model=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rate = model_costs.measure_training_tokens_per_second(model, batch_size=4, block_size=16, steps=2)
    assert 100 < rate < 1e9  # tokens/s of a 1-layer toy model on any CPU
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="steps"):
        model_costs.measure_training_tokens_per_second(model, batch_size=4, block_size=16, steps=0)


def test_measured_memory_bandwidth_is_plausible():
    rate = model_costs.measure_memory_bandwidth("cpu", n_bytes=16 * 2**20, repeats=2)
    assert 1e8 < rate < 1e13  # between 0.1 GB/s and 10 TB/s on any CPU
