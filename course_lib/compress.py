"""Making a trained model smaller and faster: quantization, knowledge distillation and pruning.

Read top to bottom:

1. Measuring -- :func:`model_size_bytes` (the bytes ``torch.save`` writes), :func:`measure_latency` and
   :func:`median_time` (the same for any callable).
2. Quantization -- int8 weights. PyTorch's dynamic quantization (:func:`quantize_dynamic_int8`) next to a
   from-scratch per-channel symmetric quantizer (:func:`quantize_tensor_int8`, :func:`dequantize_tensor`)
   and the :class:`QuantLinear` layer built on it.
3. Distillation -- Hinton's loss (:func:`distillation_loss`) and a small training loop (:func:`distill`).
4. Pruning -- unstructured magnitude pruning with masks (:func:`magnitude_prune`, :func:`apply_masks`,
   :func:`sparsity`) and structured pruning that removes whole hidden neurons of an MLP
   (:func:`prune_mlp_neurons`), which really shrinks its Linear layers.
5. GGUF block quantization of a whole model -- llama.cpp's Q8_0 / Q4_0 / Q4_1 through course_lib's own
   quantizers (:func:`fake_quantize_gguf`, :func:`gguf_size_bytes`, :data:`GGUF_QTYPES`).

Shapes: B batch, C classes, (out, in) a Linear weight.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

INT8_MAX = 127  # symmetric int8 uses [-127, 127], so +x and -x quantize to +q and -q
PRUNABLE = (nn.Linear, nn.Conv2d)  # layers whose weights magnitude pruning looks at
SCOPES = ("global", "layer")

# ----------------------------------------------------------------------------------------------------
# 1. Measuring


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the serialised ``state_dict`` (what ``torch.save(model.state_dict(), f)`` writes)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _first_device(model: nn.Module, example: Any) -> torch.device:
    if isinstance(example, torch.Tensor):
        return example.device
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def median_time(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls.

    For anything callable: a model behind a lambda, an ONNX Runtime session, a search. (Work queued on
    a GPU is not waited for; :func:`measure_latency` does that for models.)
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def measure_latency(model: nn.Module, example: Any, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in seconds of ``model(example)`` over ``repeats`` calls, after ``warmup`` calls.

    ``example`` is one tensor or a tuple of positional arguments. CUDA is synchronised around each
    call so the time covers the whole computation, not just the kernel launches.
    """
    args = example if isinstance(example, tuple) else (example,)
    device = _first_device(model, args[0])
    was_training = model.training
    model.eval()

    def call() -> None:
        _sync(device)
        model(*args)
        _sync(device)

    try:
        return median_time(call, repeats, warmup)
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------------------------------
# 2. Quantization


def quantize_dynamic_int8(
    model: nn.Module, layers: Sequence[type[nn.Module]] = (nn.Linear,), per_channel: bool = True
) -> nn.Module:
    """A copy of ``model`` whose Linear layers hold int8 weights; activations are quantized on the fly.

    Each forward pass measures the input's range, quantizes it to 8 bits, multiplies in int8 with
    int32 sums, and scales the result back to float. ``per_channel=True`` gives each weight row its
    own scale (as :func:`quantize_tensor_int8` does); ``False`` uses one scale per tensor.

    This is PyTorch's eager-mode dynamic quantization (``torch.ao.quantization.quantize_dynamic``),
    CPU only. PyTorch marks that API deprecated in favour of the separate ``torchao`` package, which is
    not installable here; the API still works in this torch, so its deprecation warnings are silenced.
    The original model is left untouched.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError(
            "dynamic int8 quantization runs on the CPU only; pass model.cpu() (the copy runs on the CPU)"
        )
    if not any(isinstance(m, tuple(layers)) for m in model.modules()):
        names = [t.__name__ for t in layers]
        raise ValueError(f"the model has no {names} layers, so there is nothing to quantize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)  # "quantized tensor creation ... deprecated"
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        spec = {layer: qconfig for layer in layers}
        return quantize_dynamic(copy.deepcopy(model).eval(), spec, dtype=torch.qint8)


def _check_weight(w: torch.Tensor, axis: int) -> int:
    if not w.is_floating_point():
        raise TypeError(f"quantize_tensor_int8 expects a float tensor, got {w.dtype}; pass layer.weight")
    if w.dim() < 1:
        raise ValueError("quantize_tensor_int8 needs at least one dimension (the channel axis)")
    if not -w.dim() <= axis < w.dim():
        raise ValueError(f"axis {axis} is out of range for a tensor of shape {tuple(w.shape)}")
    return axis % w.dim()


def _channel_shape(w: torch.Tensor, axis: int) -> list[int]:
    """The shape that broadcasts one value per channel along ``axis``, e.g. (out, 1) for a Linear weight."""
    shape = [1] * w.dim()
    shape[axis] = w.shape[axis]
    return shape


def quantize_tensor_int8(w: torch.Tensor, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel symmetric int8 quantization: ``w ~= q * scale``, one scale per slice along ``axis``.

        scale_c = max |w_c| / 127                    (the largest weight of channel c maps to +-127)
        q       = clamp(round(w / scale_c), -127, 127)   (round half to even, as torch does)

    Returns ``q`` (int8, the shape of ``w``) and ``scale`` (float32, one per channel). An all-zero
    channel gets the smallest positive float32 step (``finfo.eps``) as scale, like PyTorch's observers.
    """
    axis = _check_weight(w, axis)
    w = w.detach().float()
    reduce_dims = [d for d in range(w.dim()) if d != axis]
    amax = w.abs().amax(dim=reduce_dims) if reduce_dims else w.abs()  # (C,)
    scale = (amax / INT8_MAX).clamp(min=torch.finfo(torch.float32).eps)  # (C,)
    q = torch.round(w / scale.view(_channel_shape(w, axis)))  # shape of w, in units of its channel's step
    return q.clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Back to float32: ``q * scale``, the scale broadcast along ``axis``. Error per weight <= scale / 2."""
    if q.dtype != torch.int8:
        raise TypeError(f"dequantize_tensor expects int8 values, got {q.dtype}; pass the q from quantize")
    axis = _check_weight(q.float(), axis)
    if scale.shape != (q.shape[axis],):
        raise ValueError(
            f"scale has shape {tuple(scale.shape)} but q has {q.shape[axis]} channels along axis {axis}; "
            "pass the scale returned together with q"
        )
    return q.float() * scale.view(_channel_shape(q, axis))


class QuantLinear(nn.Module):
    """A Linear layer that stores int8 weights and one float scale per output row (4x smaller).

    ``explicit=True`` dequantizes the weight and runs an ordinary matmul, which is what the numbers
    mean. ``explicit=False`` multiplies by the int8 values and scales the outputs afterwards, the order
    int8 kernels use: since the scale is per output row, ``x @ (q * s).T == (x @ q.T) * s``. Both
    convert the int8 values to floats first: in eager PyTorch, weight-only int8 saves memory and disk,
    not time (int8 arithmetic is what :func:`quantize_dynamic_int8` adds).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, explicit: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.explicit = in_features, out_features, explicit
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, explicit: bool = False) -> QuantLinear:
        """Quantize a trained ``nn.Linear`` (its weight per output row; the bias stays float32)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantLinear.from_linear expects nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, explicit)
        q, scale = quantize_tensor_int8(linear.weight, axis=0)
        layer.weight_int8.copy_(q)
        layer.scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_tensor(self.weight_int8, self.scale, axis=0)  # (out, in) float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"QuantLinear expects {self.in_features} input features, got shape {tuple(x.shape)}; "
                "feed it what the original nn.Linear took"
            )
        if self.explicit:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self.dequantized_weight().to(x.dtype), bias)  # (..., out)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        y = (x2 @ self.weight_int8.to(x2.dtype).T) * self.scale.to(x2.dtype)  # (N, out) then per-row scale
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)  # (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def quantize_linears(model: nn.Module, explicit: bool = False) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by a :class:`QuantLinear` (weight-only int8)."""
    model = copy.deepcopy(model)
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, QuantLinear.from_linear(child, explicit))
                replaced += 1
    if isinstance(model, nn.Linear):
        return QuantLinear.from_linear(model, explicit)
    if replaced == 0:
        raise ValueError("the model has no nn.Linear layers, so there is nothing to quantize")
    return model


# ----------------------------------------------------------------------------------------------------
# 3. Knowledge distillation


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    explicit: bool = False,
) -> torch.Tensor:
    """Hinton et al. (2015): ``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE(student, labels)``.

    ``p = softmax(logits / T)``: a temperature T > 1 softens both distributions so the student also
    learns how the teacher ranks the wrong classes. Soft-target gradients shrink like 1 / T^2, so the
    T^2 factor keeps them on the scale of the hard-label gradients whatever T is. The KL term is
    averaged over the batch. ``explicit=True`` writes the KL sum out; otherwise ``F.kl_div`` computes it.
    ``labels`` may be None only when ``alpha == 1`` (pure distillation).
    """
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must be (B, C) of one shape, got {tuple(student_logits.shape)}"
            f" and {tuple(teacher_logits.shape)}; both models must predict the same classes"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; 1 is the plain softmax, 2-5 typical")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the soft loss), got {alpha}")
    if labels is None and alpha < 1.0:
        raise ValueError("labels are needed when alpha < 1 (the hard-label term); pass labels or alpha=1")
    T = float(temperature)
    log_p_s = F.log_softmax(student_logits / T, dim=-1)  # (B, C)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=-1)  # (B, C) the teacher is not trained
    if explicit:
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).mean()  # sum over classes, mean over batch
    else:
        kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    loss = alpha * T * T * kl
    if alpha < 1.0:
        if labels.shape != student_logits.shape[:1]:
            raise ValueError(
                f"labels must be (B,) = ({student_logits.shape[0]},) class ids, got {tuple(labels.shape)}"
            )
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, labels)
    return loss


def _logits(output: Any) -> torch.Tensor:
    """Models in this course return logits, or (logits, loss): take the logits."""
    return output[0] if isinstance(output, (tuple, list)) else output


def distill(
    teacher: nn.Module | None,
    student: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epochs: int = 10,
    lr: float = 1e-3,
    temperature: float = 2.0,
    alpha: float = 0.5,
    weight_decay: float = 0.0,
    device: torch.device | str | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> list[float]:
    """Train ``student`` on batches ``(x, y)`` with :func:`distillation_loss` against ``teacher``; AdamW.

    With ``alpha=0`` the loss is plain cross-entropy and no teacher is needed (``teacher=None``), which
    gives the "same student, no distillation" baseline from the same loop. ``masks`` (from
    :func:`magnitude_prune`) are re-applied after every step so pruned weights stay zero while
    fine-tuning. Returns the mean training loss of each epoch.
    """
    if teacher is None and alpha > 0:
        raise ValueError("teacher is None but alpha > 0: pass a teacher, or alpha=0 for plain training")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if device is None:
        device = next(student.parameters()).device
    device = torch.device(device)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    for _ in range(epochs):
        total, n = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            s_logits = _logits(student(x))  # (B, C)
            if teacher is None:
                loss = F.cross_entropy(s_logits, y)
            else:
                with torch.no_grad():
                    t_logits = _logits(teacher(x))  # (B, C)
                loss = distillation_loss(s_logits, t_logits, y, temperature, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if masks is not None:
                apply_masks(student, masks)
            total, n = total + loss.item() * len(x), n + len(x)
        history.append(total / max(n, 1))
    student.eval()
    return history


# ----------------------------------------------------------------------------------------------------
# 4. Pruning


def prunable_weights(
    model: nn.Module, layers: Sequence[type[nn.Module]] = PRUNABLE
) -> dict[str, nn.Parameter]:
    """``{"<module>.weight": parameter}`` for every layer of the given types (biases are never pruned)."""
    return {
        f"{name}.weight" if name else "weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, tuple(layers))
    }


def _smallest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 mask of the shape of ``scores`` with 0 at the ``k`` smallest entries."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        mask[torch.topk(scores.reshape(-1), k, largest=False).indices] = False
    return mask.view_as(scores)


@torch.no_grad()
def magnitude_prune(
    model: nn.Module,
    sparsity: float,
    scope: str = "global",
    layers: Sequence[type[nn.Module]] = PRUNABLE,
) -> dict[str, torch.Tensor]:
    """Zero the fraction ``sparsity`` of weights with the smallest ``|w|``; returns the masks.

    ``scope="layer"``: every layer loses ``round(sparsity * its size)`` weights. ``scope="global"``: one
    threshold over all the layers together, so layers with many small weights lose more. (The counts use
    Python's ``round``, as ``torch.nn.utils.prune`` does.) The masks (bool, True = kept) are keyed like
    the state dict; pass them to :func:`apply_masks` after each optimizer step so fine-tuning keeps the
    zeros. Weights are changed in place.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be a fraction in [0, 1], got {sparsity}; 0.9 prunes 90% of weights")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    weights = prunable_weights(model, layers)
    if not weights:
        raise ValueError(f"the model has no {[t.__name__ for t in layers]} layers to prune")
    if scope == "layer":
        masks = {n: _smallest_k_mask(w.abs(), round(sparsity * w.numel())) for n, w in weights.items()}
    else:
        scores = torch.cat([w.abs().reshape(-1) for w in weights.values()])  # (total,) all layers together
        flat = _smallest_k_mask(scores, round(sparsity * scores.numel()))
        masks, start = {}, 0
        for n, w in weights.items():
            masks[n] = flat[start : start + w.numel()].view_as(w)
            start += w.numel()
    apply_masks(model, masks)
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Multiply each masked weight by its mask (call after ``optimizer.step()`` to keep pruned weights 0)."""
    params = dict(model.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise KeyError(
            f"masks name parameters the model does not have: {unknown}; use the masks magnitude_prune "
            "returned for this same model"
        )
    for name, mask in masks.items():
        if mask.shape != params[name].shape:
            raise ValueError(
                f"mask for {name} has shape {tuple(mask.shape)} but the weight has "
                f"{tuple(params[name].shape)}; use the masks magnitude_prune returned for this same model"
            )
        params[name].mul_(mask.to(params[name].dtype))


def sparsity(model: nn.Module, layers: Sequence[type[nn.Module]] = PRUNABLE) -> float:
    """The fraction of exactly-zero weights over the layers pruning touches (biases not counted)."""
    weights = list(prunable_weights(model, layers).values())
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def _neuron_keep(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """Sorted indices of the rows (neurons) to keep: drop the ``round(amount * rows)`` smallest L2 norms."""
    rows = weight.shape[0]
    n_drop = min(round(amount * rows), rows - 1)  # always keep at least one neuron
    norms = weight.norm(p=2, dim=1)  # (rows,) one L2 norm per neuron's incoming weights
    return torch.sort(torch.topk(norms, rows - n_drop, largest=True).indices).values


@torch.no_grad()
def prune_mlp_neurons(mlp: nn.Module, amount: float) -> tuple[nn.Module, list[torch.Tensor]]:
    """Structured pruning: remove ``amount`` of each hidden layer's neurons, those whose incoming weight
    row has the smallest L2 norm, and return a smaller :class:`course_lib.mlp_cnn.MLP` and the kept indices.

    Removing hidden neuron j of layer i deletes row j of ``layers[i]`` (weight and bias) and column j of
    ``layers[i+1]``. Input and output widths never change. If the removed neurons had zero incoming
    weights and bias (and the activation maps 0 to 0, as ReLU, tanh and GELU do), the output is unchanged.
    """
    from course_lib.mlp_cnn import MLP

    if not isinstance(mlp, MLP):
        raise TypeError(f"prune_mlp_neurons works on course_lib.mlp_cnn.MLP, got {type(mlp).__name__}")
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}; 0.5 removes half of each hidden layer")
    old = list(mlp.layers)
    keeps = [_neuron_keep(layer.weight, amount) for layer in old[:-1]]  # one index set per hidden layer
    sizes = [mlp.sizes[0], *[len(k) for k in keeps], mlp.sizes[-1]]
    new = MLP(sizes, activation=mlp.activation, dropout=mlp.dropout.p).to(old[0].weight.device)
    for i, (src, dst) in enumerate(zip(old, new.layers)):
        rows = keeps[i] if i < len(keeps) else torch.arange(src.out_features, device=src.weight.device)
        cols = keeps[i - 1] if i > 0 else torch.arange(src.in_features, device=src.weight.device)
        dst.weight.copy_(src.weight[rows][:, cols])  # (out_kept, in_kept)
        dst.bias.copy_(src.bias[rows])
    return new.train(mlp.training), keeps


# ----------------------------------------------------------------------------------------------------
# 5. GGUF block quantization of a model's weights (llama.cpp's formats, through course_lib.gguf_file)

GGUF_QTYPES = ("F32", "F16", "Q8_0", "Q4_1", "Q4_0")  # the types course_lib's own quantizers write


def gguf_qtype(qtype: Any) -> Any:
    """``qtype`` (a name such as "q4_1", a number, or a GGMLType) -> GGMLType, if course_lib can write it.

    Any other type (Q4_K, Q2_K, "int3", ...) is a ValueError that lists :data:`GGUF_QTYPES`.
    """
    from course_lib.gguf_file import GGMLType, GGUFError, as_ggml_type

    try:
        t = as_ggml_type(qtype.upper() if isinstance(qtype, str) else qtype)
    except (GGUFError, KeyError, ValueError):
        t = None
    if not isinstance(t, GGMLType) or t.name not in GGUF_QTYPES:
        raise ValueError(
            f"quantization type {qtype!r} is not implemented in course_lib; the implemented types are "
            f"{', '.join(GGUF_QTYPES)} (course_lib.gguf_file.quantize)"
        )
    return t


def gguf_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights a GGUF file stores block-quantized: every Linear and Embedding weight whose rows are a
    whole number of 32-value blocks, each tensor once (a tied lm_head and token embedding count once).
    Norm weights and biases stay float32, as in llama.cpp."""
    from course_lib.gguf_file import QK

    found: dict[int, tuple[str, nn.Parameter]] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.shape[-1] % QK == 0:
            found.setdefault(id(module.weight), (f"{name}.weight", module.weight))
    return dict(found.values())


@torch.no_grad()
def fake_quantize_gguf(model: nn.Module, qtype: Any) -> nn.Module:
    """A copy of ``model`` whose :func:`gguf_weights` went through ``qtype`` and back: quantized with
    course_lib's quantizer, dequantized to float32 and loaded again ("fake quantization"). It computes in
    float32, so it shows the accuracy a ``qtype`` file would give, not its speed. ``model`` is untouched."""
    from course_lib.gguf_file import dequantize, quantize

    t = gguf_qtype(qtype)
    out = copy.deepcopy(model)  # deepcopy keeps tied weights tied
    for w in gguf_weights(out).values():
        x = w.detach().float().cpu().numpy()  # (out, in)
        back = dequantize(quantize(x, t), t, x.shape)
        w.copy_(torch.from_numpy(back).to(w.device, w.dtype))
    return out


def gguf_size_bytes(model: nn.Module, qtype: Any) -> int:
    """Bytes of ``model``'s parameters in a GGUF file of type ``qtype``: :func:`gguf_weights` as ``qtype``
    blocks, every other parameter as float32 (each tensor once; metadata and tokenizer not counted)."""
    from course_lib.gguf_file import tensor_nbytes

    t = gguf_qtype(qtype)
    quantized = gguf_weights(model)
    ids = {id(w) for w in quantized.values()}
    rest = {id(p): p for p in model.parameters() if id(p) not in ids}
    return sum(tensor_nbytes(t, tuple(w.shape)) for w in quantized.values()) + sum(
        4 * p.numel() for p in rest.values()
    )
