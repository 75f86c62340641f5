"""LoRA: exactness at init, merge/unmerge, parameter counts, state dicts and error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention
from course_lib.gpt import GPT, GPTConfig
from course_lib.lora import (
    LoRALinear,
    apply_lora,
    load_lora_state_dict,
    lora_parameters,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    unmerge_lora,
)

MERGE_ATOL = 1e-6  # fp32: W x + s*B(A x) vs (W + s*B A) x differ only by summation order


class TinyBlock(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(3 * d, d)
        self.c_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(torch.tanh(self.proj(torch.relu(self.qkv(x)))))


class TinyModel(nn.Module):
    def __init__(self, d: int = 16, n_blocks: int = 2, n_classes: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyBlock(d) for _ in range(n_blocks))
        self.head = nn.Linear(d, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = x + b(x)
        return self.head(x)


def _attention_model():
    """The course's own MultiHeadAttention (targets qkv/proj are named for it)."""
    return MultiHeadAttention(16, 4)


@pytest.mark.parametrize("r, alpha, bias", [(1, 1.0, True), (4, 8.0, False), (8, 16.0, True)])
def test_lora_with_zero_b_equals_base_exactly(r, alpha, bias):
    torch.manual_seed(0)
    base = nn.Linear(12, 8, bias=bias)  # r may not exceed min(in, out) = 8
    x = torch.randn(3, 5, 12)
    expected = base(x)
    layer = LoRALinear(base, r=r, alpha=alpha)
    assert torch.equal(layer.lora_B, torch.zeros(8, r))
    assert layer.lora_A.abs().sum() > 0  # A is random (Kaiming uniform), not zero
    bound = 1 / 12**0.5  # kaiming_uniform_(a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert layer.lora_A.abs().max() <= bound
    assert torch.equal(layer(x), expected)  # B = 0: bit-for-bit the base layer
    assert not any(p.requires_grad for p in base.parameters())


def test_lora_forward_matches_the_formula():
    torch.manual_seed(1)
    base = nn.Linear(10, 6)
    layer = LoRALinear(base, r=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 10)
    W, A, B = base.weight, layer.lora_A, layer.lora_B
    expected = x @ (W + (6.0 / 3) * B @ A).T + base.bias
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)  # fp32 reassociation


def _train_a_few_steps(model: nn.Module, steps: int = 5) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        x = torch.randn(8, 16)
        y = torch.randint(0, 3, (8,))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("targets", [("qkv", "proj"), ("qkv",), ("blocks.1.c_proj", "head")])
def test_merge_equals_unmerged_and_unmerge_restores(targets):
    torch.manual_seed(2)
    model = TinyModel()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    names = apply_lora(model, targets=targets, r=4, alpha=8)
    mark_only_lora_trainable(model)
    _train_a_few_steps(model)
    assert any(layer.lora_B.abs().sum() > 0 for layer in model.modules() if isinstance(layer, LoRALinear))

    model.eval()
    x = torch.randn(6, 16)
    with torch.no_grad():
        unmerged = model(x)
        assert merge_lora(model) == len(names)
        merged = model(x)
    torch.testing.assert_close(merged, unmerged, atol=MERGE_ATOL, rtol=0.0)

    unmerge_lora(model)
    for name in names:  # base weights are back to their original values, bit for bit
        assert torch.equal(model.get_submodule(name).base.weight, original[f"{name}.weight"])
    with torch.no_grad():
        assert torch.equal(model(x), unmerged)


def test_apply_lora_matches_suffixes_at_dot_boundaries():
    model = TinyModel(n_blocks=2)
    names = apply_lora(model, targets=("qkv", "proj"))
    assert names == ["blocks.0.qkv", "blocks.0.proj", "blocks.1.qkv", "blocks.1.proj"]  # c_proj is not "proj"
    assert isinstance(model.blocks[0].c_proj, nn.Linear) and not isinstance(
        model.blocks[0].c_proj, LoRALinear
    )
    again = apply_lora(model, targets=("c_proj",))
    assert again == ["blocks.0.c_proj", "blocks.1.c_proj"]


@pytest.mark.parametrize("r", [1, 2, 8])
def test_trainable_count_is_r_times_in_plus_out(r):
    model = TinyModel(d=16)
    names = apply_lora(model, targets=("qkv", "proj"), r=r, alpha=2 * r)
    n = mark_only_lora_trainable(model)
    # each block: qkv is Linear(16, 48), proj is Linear(48, 16), both with in + out = 64
    expected = sum(r * (16 + 48) for _ in names)
    assert n == expected == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for p in lora_parameters(model)) == expected

    with_head = mark_only_lora_trainable(model, train_head_names=("head",))
    assert with_head == expected + 16 * 4 + 4  # the head: Linear(16, 4)
    assert model.head.weight.requires_grad and not model.blocks[0].qkv.base.weight.requires_grad


def test_lora_on_course_attention_layer():
    attn = _attention_model()
    names = apply_lora(attn, targets=("qkv", "proj"), r=2)
    assert names == ["qkv", "proj"]
    n = mark_only_lora_trainable(attn)
    assert n == 2 * (16 + 48) + 2 * (16 + 16)
    x = torch.randn(2, 5, 16)
    before = attn(x)
    merge_lora(attn)
    torch.testing.assert_close(attn(x), before, atol=MERGE_ATOL, rtol=0.0)


def test_lora_on_course_gpt_merges_exactly():
    torch.manual_seed(4)
    gpt = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, d_model=16))
    names = apply_lora(gpt, targets=("qkv", "attn.proj"), r=4, alpha=8)
    assert names == [f"transformer.h.{i}.attn.{n}" for i in (0, 1) for n in ("qkv", "proj")]
    n = mark_only_lora_trainable(gpt)
    assert n == 2 * (4 * (16 + 48) + 4 * (16 + 16))
    opt = torch.optim.AdamW(lora_parameters(gpt), lr=1e-2)
    idx = torch.randint(0, 32, (2, 12))
    for _ in range(3):
        _, loss = gpt(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    gpt.eval()
    with torch.no_grad():
        before = gpt(idx)[0]
        merge_lora(gpt)
        after = gpt(idx)[0]
    torch.testing.assert_close(after, before, atol=MERGE_ATOL, rtol=0)


def test_lora_state_dict_round_trip():
    torch.manual_seed(3)
    a, b = TinyModel(), TinyModel()
    b.load_state_dict(a.state_dict())
    apply_lora(a, r=4)
    apply_lora(b, r=4)
    mark_only_lora_trainable(a)
    _train_a_few_steps(a)
    sd = lora_state_dict(a)
    assert set(sd) == {f"blocks.{i}.{n}.lora_{m}" for i in (0, 1) for n in ("qkv", "proj") for m in "AB"}
    load_lora_state_dict(b, sd)
    x = torch.randn(3, 16)
    torch.testing.assert_close(a(x), b(x), atol=0.0, rtol=0.0)


def test_lora_errors_name_the_problem_and_fix():
    with pytest.raises(ValueError, match=r"Linear layers are: \['blocks.0.qkv'.*'head'\]"):
        apply_lora(TinyModel(), targets=("q_proj", "v_proj"))
    with pytest.raises(ValueError, match="positive integer"):
        LoRALinear(nn.Linear(4, 4), r=0)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(4, 4), r=2, alpha=0)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="apply_lora"):
        mark_only_lora_trainable(TinyModel())
    model = TinyModel()
    apply_lora(model)
    with pytest.raises(ValueError, match=r"top-level modules are \['blocks', 'head'\]"):
        mark_only_lora_trainable(model, train_head_names=("classifier",))
    with pytest.raises(RuntimeError, match="call merge"):
        unmerge_lora(model)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_lora(model)
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        load_lora_state_dict(model, lora_state_dict(model))
    other = TinyModel()
    apply_lora(other, targets=("qkv",))
    with pytest.raises(KeyError, match="unexpected"):
        load_lora_state_dict(other, lora_state_dict(model))
    small = TinyModel()
    apply_lora(small, r=2)
    with pytest.raises(ValueError, match="same rank"):
        load_lora_state_dict(small, lora_state_dict(model))
