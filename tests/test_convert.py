"""course_lib.convert: the same weights give the same logits in course_lib and in transformers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2LMHeadModel, LlamaForCausalLM  # noqa: E402

from course_lib.convert import (  # noqa: E402
    ConversionError,
    gpt_config_from_hf_gpt2,
    gpt_config_from_hf_llama,
    gpt_from_hf_gpt2,
    gpt_from_hf_llama,
    gpt_to_hf_gpt2,
    gpt_to_hf_llama,
    hf_gpt2_config_from_gpt,
    hf_llama_config_from_gpt,
)
from course_lib.gpt import GPT, GPTConfig  # noqa: E402

MAX_ABS_DIFF = 1e-5  # fp32 logits, same weights, two implementations

GPT2_VARIANTS = {
    "tied_tanh": dict(),
    "untied_exact_gelu": dict(tie_weights=False, gelu_approximate="none", d_ff=48),
}
LLAMA_VARIANTS = {
    "gqa": dict(n_kv_head=2),
    "mqa_tied": dict(n_kv_head=1, tie_weights=True),
    "mha_bias_theta": dict(bias=True, rope_theta=500000.0, norm_eps=1e-6),
}
LLAMA_BASE = dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_weights=False, d_ff=80)


def gpt2_cfg(**kw) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=101, block_size=32, n_layer=2, n_head=4, d_model=32), **kw})


def llama_cfg(**kw) -> GPTConfig:
    return gpt2_cfg(**{**LLAMA_BASE, **kw})


def idx(B: int = 2, T: int = 20, V: int = 101) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter (norms and biases too) non-trivial values, so a mis-mapped one shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2).add_(1.0 if p.dim() == 1 else 0.0)
    return model.eval()


def max_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return (ours - theirs).abs().max().item()


# ----------------------------------------------------------------------------------------- GPT-2


@pytest.mark.parametrize("variant", list(GPT2_VARIANTS))
def test_gpt2_from_transformers(variant):
    hf = randomise(GPT2LMHeadModel(hf_gpt2_config_from_gpt(gpt2_cfg(**GPT2_VARIANTS[variant]))))
    ours = gpt_from_hf_gpt2(hf).eval()
    x = idx()
    with torch.no_grad():
        assert max_diff(ours(x)[0], hf(x).logits) <= MAX_ABS_DIFF


@pytest.mark.parametrize("variant", list(GPT2_VARIANTS))
def test_gpt2_to_transformers(variant):
    ours = randomise(GPT(gpt2_cfg(**GPT2_VARIANTS[variant])))
    hf = gpt_to_hf_gpt2(ours).eval()
    assert hf.config._attn_implementation == "eager"
    x = idx()
    with torch.no_grad():
        assert max_diff(ours(x)[0], hf(x).logits) <= MAX_ABS_DIFF
    back = gpt_from_hf_gpt2(hf)  # and the round trip is lossless
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_gpt2_padding_mask_agrees_with_transformers():
    ours = randomise(GPT(gpt2_cfg()))
    hf = gpt_to_hf_gpt2(ours).eval()
    x = idx()
    am = torch.ones_like(x)
    am[1, 15:] = 0  # right padding
    with torch.no_grad():
        diff = ours(x, attention_mask=am)[0] - hf(x, attention_mask=am).logits
    assert diff[0].abs().max() <= MAX_ABS_DIFF and diff[1, :15].abs().max() <= MAX_ABS_DIFF


def test_gpt2_config_round_trip():
    cfg = gpt2_cfg(tie_weights=False, d_ff=48, dropout=0.1)
    assert gpt_config_from_hf_gpt2(hf_gpt2_config_from_gpt(cfg)) == cfg


# ----------------------------------------------------------------------------------------- Llama


@pytest.mark.parametrize("variant", list(LLAMA_VARIANTS))
def test_llama_from_transformers(variant):
    hf = randomise(LlamaForCausalLM(hf_llama_config_from_gpt(llama_cfg(**LLAMA_VARIANTS[variant]))))
    ours = gpt_from_hf_llama(hf).eval()
    x = idx()
    with torch.no_grad():
        assert max_diff(ours(x)[0], hf(x).logits) <= MAX_ABS_DIFF


@pytest.mark.parametrize("variant", list(LLAMA_VARIANTS))
def test_llama_to_transformers(variant):
    ours = randomise(GPT(llama_cfg(**LLAMA_VARIANTS[variant])))
    hf = gpt_to_hf_llama(ours).eval()
    assert hf.config.num_key_value_heads == ours.config.kv_heads
    x = idx()
    with torch.no_grad():
        assert max_diff(ours(x)[0], hf(x).logits) <= MAX_ABS_DIFF
    back = gpt_from_hf_llama(hf)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_llama_greedy_generation_agrees_with_transformers():
    ours = randomise(GPT(llama_cfg(n_kv_head=2)))
    hf = gpt_to_hf_llama(ours).eval()
    prompt = idx(1, 5)
    mine = ours.generate(prompt, 10, temperature=0)
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=10, do_sample=False, min_new_tokens=10, pad_token_id=0)
    assert torch.equal(mine, theirs)


def test_llama_config_round_trip():
    cfg = llama_cfg(n_kv_head=2, rope_theta=1234.0, norm_eps=1e-6)
    assert gpt_config_from_hf_llama(hf_llama_config_from_gpt(cfg)) == cfg


# ----------------------------------------------------------------------------------------- errors


def test_incompatible_configs_are_refused_with_the_field_names():
    with pytest.raises(
        ConversionError, match=r"as GPT-2: it has \{'positions': 'rope'.*needs positions='learned'"
    ):
        hf_gpt2_config_from_gpt(llama_cfg())
    with pytest.raises(ConversionError, match=r"kv_heads"):
        gpt_to_hf_gpt2(GPT(gpt2_cfg(n_kv_head=2)))
    with pytest.raises(ConversionError, match=r"as Llama.*norm='rmsnorm'"):
        gpt_to_hf_llama(GPT(gpt2_cfg()))
    hf_cfg = hf_llama_config_from_gpt(llama_cfg(), hidden_act="gelu")
    with pytest.raises(ConversionError, match=r"hidden_act='gelu' \(needs 'silu'\)"):
        gpt_config_from_hf_llama(hf_cfg)
    with pytest.raises(ConversionError, match=r"activation_function='relu'"):
        gpt_config_from_hf_gpt2(hf_gpt2_config_from_gpt(gpt2_cfg(), activation_function="relu"))


class _Wrapped(torch.nn.Module):
    """A model whose state dict differs from what its config promises."""

    def __init__(self, inner: torch.nn.Module, drop: str | None = None, add: str | None = None) -> None:
        super().__init__()
        self.inner, self.config, self.drop, self.add = inner, inner.config, drop, add
        self.training = False

    def state_dict(self, *args, **kwargs):
        sd = dict(self.inner.state_dict())
        if self.drop:
            sd.pop(self.drop)
        if self.add:
            sd[self.add] = torch.zeros(3)
        return sd


def test_missing_and_unexpected_keys_are_listed_with_the_cause():
    hf = GPT2LMHeadModel(hf_gpt2_config_from_gpt(gpt2_cfg()))
    with pytest.raises(
        ConversionError, match=r"missing from .*transformer\.h\.1\.mlp\.c_fc\.weight.*Likely cause"
    ):
        gpt_from_hf_gpt2(_Wrapped(hf, drop="transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(
        ConversionError, match=r"unexpected in .*transformer\.h\.2\.ln_1\.weight.*different configs"
    ):
        gpt_from_hf_gpt2(_Wrapped(hf, add="transformer.h.2.ln_1.weight"))
    llama = LlamaForCausalLM(hf_llama_config_from_gpt(llama_cfg(n_kv_head=2)))
    with pytest.raises(ConversionError, match=r"missing from .*model\.layers\.0\.self_attn\.k_proj\.weight"):
        gpt_from_hf_llama(_Wrapped(llama, drop="model.layers.0.self_attn.k_proj.weight"))


def test_shape_mismatch_is_reported():
    hf = LlamaForCausalLM(hf_llama_config_from_gpt(llama_cfg(n_kv_head=2)))
    hf.config.num_key_value_heads = 4  # the config now lies about the k/v weights
    expected = r"shape mismatches \[transformer\.h\.0\.attn\.qkv\.weight: converted"
    with pytest.raises(ConversionError, match=expected):
        gpt_from_hf_llama(hf)
