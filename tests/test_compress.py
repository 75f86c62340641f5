"""Compression: the from-scratch int8 quantizer against torch's, distillation loss against F.kl_div,
magnitude pruning against torch.nn.utils.prune, structured neuron pruning against ln_structured."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune

from course_lib.compress import (
    INT8_MAX,
    QuantLinear,
    apply_masks,
    dequantize_tensor,
    distill,
    distillation_loss,
    magnitude_prune,
    measure_latency,
    median_time,
    model_size_bytes,
    prunable_weights,
    prune_mlp_neurons,
    quantize_dynamic_int8,
    quantize_linears,
    quantize_tensor_int8,
    sparsity,
)
from course_lib.layers import num_parameters
from course_lib.mlp_cnn import MLP, DigitCNN

FP32_ATOL = 1e-5  # fp32 results of the same math summed in another order
LOSS_ATOL = 1e-6  # two formulas of the same scalar loss on small logits
DYNAMIC_REL_ERR = 0.05  # dynamic int8 (weights and activations to 8 bits) vs fp32: relative L2 error


def _torch_per_channel_reference(w: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's own symmetric per-channel int8: observer scales, then torch.quantize_per_channel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization and quantized tensors are deprecated
        from torch.ao.quantization import PerChannelMinMaxObserver

        obs = PerChannelMinMaxObserver(
            ch_axis=axis,
            dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric,
            quant_min=-INT8_MAX,
            quant_max=INT8_MAX,
        )
        obs(w)
        scale, zero_point = obs.calculate_qparams()
        qt = torch.quantize_per_channel(w, scale.float(), zero_point, axis, torch.qint8)
        return qt.int_repr(), scale.float()


def _ulp(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, float("inf"))) - x


# ----------------------------------------------------------------------------------------------------
# quantization


@pytest.mark.parametrize("shape, axis", [((32, 64), 0), ((10, 7), 1), ((16, 3, 3, 3), 0), ((4, 8, 5), 2)])
def test_quantize_tensor_int8_matches_torch_quantize_per_channel(shape, axis):
    torch.manual_seed(0)
    w = torch.randn(shape) * torch.rand(shape[axis]).view([-1 if d == axis else 1 for d in range(len(shape))])
    q, scale = quantize_tensor_int8(w, axis=axis)
    q_ref, scale_ref = _torch_per_channel_reference(w, axis)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (shape[axis],)
    assert bool(((scale - scale_ref).abs() <= _ulp(scale_ref)).all()), "scales differ by more than 1 ulp"
    assert torch.equal(q, q_ref)
    assert int(q.abs().max()) == INT8_MAX  # the largest weight of some channel maps to +-127


def test_quantize_rounds_halves_to_even_like_torch():
    # scale is exactly 1.0 here, so w / scale lands exactly on .5 values
    w = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -126.5]])
    q, scale = quantize_tensor_int8(w)
    q_ref, _ = _torch_per_channel_reference(w, 0)
    assert scale.item() == 1.0
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, 3, -126]]
    assert torch.equal(q, q_ref)


def test_dequantize_error_is_at_most_half_a_step_and_zero_channels_survive():
    torch.manual_seed(1)
    w = torch.randn(20, 30)
    w[3] = 0.0  # an all-zero channel must not divide by zero
    q, scale = quantize_tensor_int8(w)
    err = (dequantize_tensor(q, scale) - w).abs()  # (20, 30)
    bound = scale[:, None] / 2 * (1 + 1e-6)  # rounding error <= half a step (+ fp32 slack)
    assert bool((err <= bound).all())
    assert torch.all(q[3] == 0) and scale[3] > 0


def test_quantizer_errors_name_the_fix():
    with pytest.raises(TypeError, match="float tensor"):
        quantize_tensor_int8(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        quantize_tensor_int8(torch.ones(3, 3), axis=2)
    q, scale = quantize_tensor_int8(torch.randn(4, 5))
    with pytest.raises(ValueError, match="pass the scale returned together with q"):
        dequantize_tensor(q, scale[:3])
    with pytest.raises(TypeError, match="int8"):
        dequantize_tensor(q.float(), scale)


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_quant_linear_matches_dequantized_linear_and_stays_within_the_error_bound(explicit, bias):
    torch.manual_seed(2)
    lin = nn.Linear(48, 24, bias=bias)
    x = torch.randn(2, 5, 48)
    ql = QuantLinear.from_linear(lin, explicit=explicit)
    y = ql(x)
    assert y.shape == (2, 5, 24)
    # the same int8 weights, dequantized by torch: the two orders of the math agree to fp32 rounding
    ref = F.linear(x, dequantize_tensor(ql.weight_int8, ql.scale), lin.bias)
    torch.testing.assert_close(y, ref, atol=FP32_ATOL, rtol=FP32_ATOL)
    # against the float layer: |y - y_fp32| <= sum_i |x_i| * scale_out / 2 (each weight off by <= scale / 2)
    bound = x.abs().sum(-1, keepdim=True) * ql.scale / 2 + FP32_ATOL  # (2, 5, 24)
    assert bool(((y - lin(x)).abs() <= bound).all())
    with pytest.raises(ValueError, match="48 input features"):
        ql(torch.randn(3, 47))


def test_quantize_linears_shrinks_the_state_dict_about_four_times():
    torch.manual_seed(3)
    model = MLP([64, 256, 256, 10]).eval()
    q = quantize_linears(model)
    assert all(isinstance(layer, QuantLinear) for layer in q.layers)
    assert all(isinstance(layer, nn.Linear) for layer in model.layers)  # the original is untouched
    ratio = model_size_bytes(model) / model_size_bytes(q)
    assert 3.0 < ratio < 4.0  # int8 weights; the scales, biases and file overhead stay fp32
    x = torch.randn(16, 64)
    rel = (q(x) - model(x)).norm() / model(x).norm()
    assert rel < DYNAMIC_REL_ERR
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_linears(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantize_dynamic_int8_is_close_smaller_and_leaves_the_original(per_channel):
    torch.manual_seed(4)
    model = MLP([64, 256, 256, 10]).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the wrapper silences torch.ao's deprecation warnings itself
        q = quantize_dynamic_int8(model, per_channel=per_channel)
        x = torch.randn(32, 64)
        y = q(x)
    assert all(layer._get_name() == "DynamicQuantizedLinear" for layer in q.layers)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert ((y - model(x)).norm() / model(x).norm()) < DYNAMIC_REL_ERR
    assert (q(x).argmax(-1) == model(x).argmax(-1)).float().mean() > 0.9
    assert model_size_bytes(q) < model_size_bytes(model) / 3


def test_quantize_dynamic_int8_errors():
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_dynamic_int8(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_model_size_bytes_is_the_saved_file_size(tmp_path):
    model = MLP([64, 32, 10])
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    size = model_size_bytes(model)
    assert abs(size - path.stat().st_size) < 0.02 * size  # entry names inside the zip differ slightly
    n = num_parameters(model)
    assert 4 * n < size < 4 * n + 1_000 * len(model.state_dict())  # fp32 values + zip headers


def test_measure_latency_returns_seconds_and_checks_arguments():
    model = MLP([8, 8, 2])
    t = measure_latency(model, torch.randn(4, 8), repeats=3, warmup=1)
    assert 0.0 < t < 1.0
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_latency(model, torch.randn(4, 8), repeats=0)


def test_median_time_calls_warmup_plus_repeats_and_takes_the_median(monkeypatch):
    import course_lib.compress as compress

    calls = []
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # timed calls of 1 s, 3 s and 2 s
    monkeypatch.setattr(compress.time, "perf_counter", lambda: next(clock))
    assert median_time(lambda: calls.append(1), repeats=3, warmup=2) == 2.0
    assert len(calls) == 5
    with pytest.raises(ValueError, match="warmup >= 0"):
        median_time(lambda: None, warmup=-1)


# ----------------------------------------------------------------------------------------------------
# distillation


def _reference_distillation(s, t, y, T, alpha):
    """Hinton's loss from its parts: F.kl_div on probabilities (sum, then / B) and F.cross_entropy."""
    p_t = F.softmax(t / T, dim=-1)
    kl = F.kl_div(F.log_softmax(s / T, dim=-1), p_t, reduction="sum") / s.shape[0]
    return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(s, y)


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize("T, alpha", [(1.0, 0.5), (2.0, 0.9), (4.0, 0.3), (8.0, 1.0), (3.0, 0.0)])
def test_distillation_loss_matches_kl_div_and_cross_entropy(explicit, T, alpha):
    torch.manual_seed(5)
    s, t = torch.randn(16, 10) * 3, torch.randn(16, 10) * 3
    y = torch.randint(0, 10, (16,))
    ours = distillation_loss(s, t, y, temperature=T, alpha=alpha, explicit=explicit)
    torch.testing.assert_close(ours, _reference_distillation(s, t, y, T, alpha), atol=LOSS_ATOL, rtol=1e-5)
    # the KL part by hand: sum_c p_t (log p_t - log p_s), averaged over the batch
    log_ps, log_pt = (s / T).log_softmax(-1), (t / T).log_softmax(-1)
    manual_kl = sum(
        float((log_pt[i].exp() * (log_pt[i] - log_ps[i])).sum()) for i in range(16)
    ) / 16  # fmt: skip
    soft_only = distillation_loss(s, t, None if alpha == 1 else y, temperature=T, alpha=1.0)
    assert soft_only.item() == pytest.approx(T**2 * manual_kl, rel=1e-5, abs=LOSS_ATOL)


def test_distillation_loss_limits():
    torch.manual_seed(6)
    s, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert distillation_loss(s, s.clone(), y, alpha=1.0).abs() < LOSS_ATOL  # identical teacher: KL = 0
    torch.testing.assert_close(distillation_loss(s, torch.randn(8, 5), y, alpha=0.0), F.cross_entropy(s, y))


def test_temperature_squared_keeps_soft_gradients_on_one_scale():
    """Soft-target gradients shrink like 1/T^2; times T^2 they stay comparable across temperatures."""
    torch.manual_seed(7)
    t = torch.randn(32, 10)
    norms, unscaled = {}, {}
    for T in (4.0, 8.0, 16.0):
        s = torch.randn(32, 10, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        (g,) = torch.autograd.grad(distillation_loss(s, t, None, temperature=T, alpha=1.0), s)
        norms[T], unscaled[T] = g.norm().item(), g.norm().item() / T**2
    assert max(norms.values()) / min(norms.values()) < 1.2  # with T^2: within 20% from T=4 to T=16
    assert unscaled[4.0] / unscaled[16.0] > 12  # without it: about 16x smaller at T=16


def test_distillation_loss_errors():
    s = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same classes"):
        distillation_loss(s, torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(s, s, torch.zeros(4, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="alpha must be in"):
        distillation_loss(s, s, torch.zeros(4, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="labels are needed"):
        distillation_loss(s, s, None, alpha=0.5)
    with pytest.raises(ValueError, match="labels must be"):
        distillation_loss(s, s, torch.zeros(3, dtype=torch.long), alpha=0.5)


def _toy_loader(n=512, d=16, classes=4, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes] + 0.3 * torch.randn(n, classes, generator=g)).argmax(-1)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)], x, y


def test_distill_teaches_the_student_the_teachers_answers():
    torch.manual_seed(8)
    loader, x, y = _toy_loader()
    teacher = MLP([16, 64, 4])
    distill(None, teacher, loader, epochs=30, lr=3e-3, alpha=0.0)  # alpha=0: plain training
    assert (teacher(x).argmax(-1) == y).float().mean() > 0.85
    student = MLP([16, 8, 4])
    history = distill(teacher, student, loader, epochs=30, lr=3e-3, temperature=2.0, alpha=1.0)
    assert history[-1] < history[0] / 2
    agreement = (student(x).argmax(-1) == teacher(x).argmax(-1)).float().mean()
    assert agreement > 0.85
    with pytest.raises(ValueError, match="teacher is None but alpha > 0"):
        distill(None, student, loader, alpha=0.5)


# ----------------------------------------------------------------------------------------------------
# unstructured pruning


def _two_models(kind: str):
    torch.manual_seed(9)
    model = MLP([64, 48, 32, 10]) if kind == "mlp" else DigitCNN(channels=(4, 8))
    twin = type(model)([64, 48, 32, 10]) if kind == "mlp" else DigitCNN(channels=(4, 8))
    twin.load_state_dict(model.state_dict())
    return model, twin


def _torch_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{n}.weight": m.weight_mask.bool() for n, m in model.named_modules() if hasattr(m, "weight_mask")
    }


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.75, 0.9])
def test_layer_magnitude_pruning_matches_l1_unstructured(kind, amount):
    ours_model, ref_model = _two_models(kind)
    masks = magnitude_prune(ours_model, amount, scope="layer")
    for m in ref_model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            tprune.l1_unstructured(m, "weight", amount=amount)
    ref = _torch_masks(ref_model)
    assert masks.keys() == ref.keys()
    for name in masks:
        assert torch.equal(masks[name], ref[name]), name
    for name, w in prunable_weights(ours_model).items():
        assert torch.equal(w, dict(ref_model.named_modules())[name[: -len(".weight")]].weight)
    n = sum(w.numel() for w in prunable_weights(ours_model).values())
    assert sparsity(ours_model) == pytest.approx(amount, abs=len(masks) / n)  # rounding per layer


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("amount", [0.2, 0.5, 0.95])
def test_global_magnitude_pruning_matches_global_unstructured(kind, amount):
    ours_model, ref_model = _two_models(kind)
    masks = magnitude_prune(ours_model, amount, scope="global")
    params = [(m, "weight") for m in ref_model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    ref = _torch_masks(ref_model)
    for name in masks:
        assert torch.equal(masks[name], ref[name]), name
    n = sum(m.numel() for m in masks.values())
    assert sparsity(ours_model) == round(amount * n) / n  # exactly the requested count, over all layers
    per_layer = [1 - m.float().mean().item() for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.01  # one global threshold prunes layers unevenly


def test_masks_keep_pruned_weights_at_zero_while_fine_tuning():
    loader, _, _ = _toy_loader()
    torch.manual_seed(10)
    model = MLP([16, 32, 4])
    masks = magnitude_prune(model, 0.8, scope="global")
    zeros_before = {n: ~m for n, m in masks.items()}
    distill(None, model, loader, epochs=2, alpha=0.0, masks=masks)
    for name, w in prunable_weights(model).items():
        assert bool((w[zeros_before[name]] == 0).all())
    assert sparsity(model) == pytest.approx(0.8, abs=1e-2)
    # without masks, the optimizer brings the pruned weights back
    distill(None, model, loader, epochs=1, alpha=0.0)
    assert sparsity(model) < 0.1


def test_pruning_errors_name_the_fix():
    model = MLP([8, 4, 2])
    with pytest.raises(ValueError, match="sparsity must be a fraction"):
        magnitude_prune(model, 1.5)
    with pytest.raises(ValueError, match="scope must be one of"):
        magnitude_prune(model, 0.5, scope="row")
    with pytest.raises(KeyError, match="does not have"):
        apply_masks(model, {"layers.7.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        apply_masks(model, {"layers.0.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no .* layers to prune"):
        magnitude_prune(nn.Sequential(nn.ReLU()), 0.5)


# ----------------------------------------------------------------------------------------------------
# structured pruning


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.8])
def test_neuron_pruning_keeps_the_rows_ln_structured_keeps(amount):
    torch.manual_seed(11)
    mlp = MLP([20, 40, 30, 5])
    small, keeps = prune_mlp_neurons(mlp, amount)
    for layer, kept in zip(mlp.layers[:-1], keeps):
        ref = nn.Linear(layer.in_features, layer.out_features)
        ref.load_state_dict(layer.state_dict())
        tprune.ln_structured(ref, "weight", amount=amount, n=2, dim=0)
        ref_rows = torch.nonzero(ref.weight_mask.any(dim=1)).flatten()
        assert torch.equal(kept, ref_rows)
    assert small.sizes == [20, len(keeps[0]), len(keeps[1]), 5]
    assert num_parameters(small) < num_parameters(mlp)
    # the smaller model computes exactly what the masked big model computes
    masked = MLP(mlp.sizes)
    masked.load_state_dict(mlp.state_dict())
    with torch.no_grad():
        for layer, kept in zip(masked.layers[:-1], keeps):
            drop = torch.ones(layer.out_features, dtype=torch.bool)
            drop[kept] = False
            layer.weight[drop] = 0.0
            layer.bias[drop] = 0.0
    x = torch.randn(7, 20)
    torch.testing.assert_close(small(x), masked(x), atol=FP32_ATOL, rtol=FP32_ATOL)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_removing_dead_neurons_leaves_the_output_unchanged(activation):
    torch.manual_seed(12)
    mlp = MLP([10, 16, 12, 3], activation=activation).eval()
    with torch.no_grad():  # kill half of each hidden layer: zero incoming weights and bias
        mlp.layers[0].weight[::2] = 0.0
        mlp.layers[0].bias[::2] = 0.0
        mlp.layers[1].weight[1::2] = 0.0
        mlp.layers[1].bias[1::2] = 0.0
    small, keeps = prune_mlp_neurons(mlp, 0.5)
    assert keeps[0].tolist() == list(range(1, 16, 2)) and keeps[1].tolist() == list(range(0, 12, 2))
    x = torch.randn(9, 10)
    torch.testing.assert_close(small(x), mlp(x), atol=FP32_ATOL, rtol=FP32_ATOL)
    assert num_parameters(small) == 10 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3


def test_neuron_pruning_errors():
    with pytest.raises(TypeError, match="course_lib.mlp_cnn.MLP"):
        prune_mlp_neurons(nn.Sequential(nn.Linear(2, 2)), 0.5)
    with pytest.raises(ValueError, match="amount must be in"):
        prune_mlp_neurons(MLP([4, 4, 2]), 1.0)


def test_quant_linear_state_dict_round_trips():
    torch.manual_seed(13)
    q = quantize_linears(MLP([16, 8, 4]))
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["layers.0.weight_int8"].dtype == torch.int8
    fresh = quantize_linears(MLP([16, 8, 4]))
    fresh.load_state_dict(state)
    x = torch.randn(3, 16)
    assert torch.equal(fresh(x), q(x))
