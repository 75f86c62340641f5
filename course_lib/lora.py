"""LoRA: low-rank adapters for fine-tuning a frozen model.

A frozen ``nn.Linear`` computes ``W x + b``. LoRA adds a trainable low-rank update beside it:

    y = W x + b + (alpha / r) * B A x        A: (r, in), B: (out, r), r << min(in, out)

A starts random (Kaiming-uniform) and B starts at zero, so before any training the wrapped layer
is exactly the base layer. Only A and B (r * (in + out) numbers per layer) are trained. After
training, ``merge_lora`` folds ``(alpha / r) * B A`` into W so inference costs nothing extra, and
``unmerge_lora`` restores the original W exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) * B A``."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"LoRALinear wraps an nn.Linear, got {type(base).__name__}; pass the Linear layer"
            )
        if not (isinstance(r, int) and r >= 1):
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}; try r=8")
        if r > min(base.in_features, base.out_features):
            raise ValueError(
                f"LoRA rank r={r} exceeds the layer's smaller side ({base.in_features} in, "
                f"{base.out_features} out): B A would be no cheaper than the full weight; use a smaller r"
            )
        if alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {alpha!r}; a common choice is alpha = 2 * r")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r = r
        self.alpha = float(alpha)
        self.scaling = self.alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # the same init nn.Linear uses
        self.dropout = nn.Dropout(dropout)
        self.merged = False
        # the exact base weight, kept while merged so unmerge restores it bit for bit
        self.register_buffer("_weight_before_merge", None, persistent=False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (merged or not), so code that reads ``layer.weight`` keeps working."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update LoRA adds to the weight: ``(alpha / r) * B @ A``, shape (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)  # (out, r) @ (r, in) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)  # W x + b                                         (..., out)
        if self.merged:  # W already holds W + (alpha/r) B A
            return out
        down = self.dropout(x) @ self.lora_A.T  # A x                            (..., r)
        return out + self.scaling * (down @ self.lora_B.T)  # + (alpha/r) B A x (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: afterwards forward is one matmul."""
        if self.merged:
            raise RuntimeError("this LoRA layer is already merged; call unmerge() before merging again")
        self._weight_before_merge = self.base.weight.detach().clone()
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`, restoring the original base weight exactly."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged; call merge() first")
        if self._weight_before_merge is not None:
            self.base.weight.copy_(self._weight_before_merge)
        else:  # merged weights loaded from a file: subtract (equal up to rounding)
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self._weight_before_merge = None
        self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha:g}, "
            f"merged={self.merged}"
        )


def _matches(name: str, targets: Iterable[str]) -> bool:
    """True when the module name equals a target or ends with ``"." + target``."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def apply_lora(
    model: nn.Module,
    targets: Iterable[str] = ("qkv", "proj"),
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Replace every ``nn.Linear`` whose name ends with one of ``targets`` by a :class:`LoRALinear`.

    Targets match module-name suffixes at a dot boundary: ``"qkv"`` matches ``blocks.0.attn.qkv``,
    ``"attn.proj"`` matches ``blocks.3.attn.proj`` but not ``blocks.3.mlp.c_proj``. Returns the
    replaced names. Layers that are already LoRA-wrapped are left alone.
    """
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if not targets:
        raise ValueError("apply_lora needs at least one target name, e.g. targets=('qkv', 'proj')")
    chosen = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name and _matches(name, targets)
    ]
    if not chosen:
        available = _linear_names(model)
        raise ValueError(
            f"no nn.Linear in the model matches targets {list(targets)}; "
            f"the Linear layers are: {available}. Pass name suffixes from this list as targets"
        )
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r=r, alpha=alpha, dropout=dropout))
    return chosen


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """The (name, layer) pairs of every LoRA layer in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _require_lora(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers; call apply_lora(model, targets=...) first")
    return layers


def mark_only_lora_trainable(model: nn.Module, train_head_names: Iterable[str] = ()) -> int:
    """Freeze everything except the LoRA matrices and the modules named in ``train_head_names``.

    ``train_head_names`` are module names (e.g. ``"head"`` for a freshly added classifier) whose
    parameters also stay trainable. Returns the number of trainable parameters.
    """
    _require_lora(model)
    heads = (train_head_names,) if isinstance(train_head_names, str) else tuple(train_head_names)
    module_names = {n for n, _ in model.named_modules() if n}
    unknown = [h for h in heads if h not in module_names]
    if unknown:
        top = [n for n, _ in model.named_children()]
        raise ValueError(
            f"train_head_names {unknown} are not modules of the model; its top-level modules are {top}"
        )
    total = 0
    for name, p in model.named_parameters():
        keep = name.rsplit(".", 1)[-1] in ("lora_A", "lora_B") or any(name.startswith(h + ".") for h in heads)
        p.requires_grad_(keep)
        total += p.numel() if keep else 0
    return total


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA A and B matrices of every wrapped layer (what the optimiser should see)."""
    return [p for _, layer in _require_lora(model) for p in (layer.lora_A, layer.lora_B)]


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer into its base weight; returns how many were merged."""
    layers = _require_lora(model)
    for _, layer in layers:
        layer.merge()
    return len(layers)


def unmerge_lora(model: nn.Module) -> int:
    """Undo :func:`merge_lora` on every LoRA layer; returns how many were unmerged."""
    layers = _require_lora(model)
    for _, layer in layers:
        layer.unmerge()
    return len(layers)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors (a few hundred KB instead of the whole model), detached on the CPU."""
    _require_lora(model)
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")
    }


def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load tensors saved by :func:`lora_state_dict` into a model prepared by the same ``apply_lora``."""
    own = {k for k in model.state_dict() if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")}
    if not own:
        raise ValueError("the model has no LoRA layers; call apply_lora with the same targets and r first")
    if any(layer.merged for _, layer in lora_layers(model)):
        raise RuntimeError(
            "the model's LoRA layers are merged; call unmerge_lora(model) before loading adapters"
        )
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    if missing or unexpected:
        raise KeyError(
            f"LoRA keys do not match: missing {missing}, unexpected {unexpected}; "
            "apply_lora with the same targets as the saved model before loading"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            if params[k].shape != v.shape:
                raise ValueError(
                    f"{k}: saved shape {tuple(v.shape)} != model shape {tuple(params[k].shape)}; "
                    "use the same rank r as the saved adapters"
                )
            params[k].copy_(v)
