"""Move weights between course_lib's GPT and transformers' GPT-2 and Llama, in both directions.

The architectures are the same computation with different parameter names and layouts:

* GPT-2 stores its linear layers as ``Conv1D`` with the weight transposed, (in, out), where
  ``nn.Linear`` uses (out, in); its fused ``c_attn`` has the same [q | k | v] layout as ours.
* Llama keeps q, k, v as three matrices (k and v smaller under grouped-query attention); ours
  are stacked into one ``qkv``. RoPE's half-split convention is the same, so no row permutation.

Nothing here downloads: build the transformers model from a config (or load one you have on
disk) and pass it in. Every converter checks that every weight was used exactly once and that
shapes agree, and raises :class:`ConversionError` naming the keys otherwise.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import Tensor, nn

from course_lib.checkpoint import format_keys, state_dict_mismatch
from course_lib.gpt import GPT, GPTConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the course never fetches weights from a hub

# Non-weight buffers some transformers versions put in a state dict; they carry no information.
_IGNORED_HF_KEYS = re.compile(r"(\.attn\.bias|\.attn\.masked_bias|rotary_emb\.inv_freq)$")


class ConversionError(ValueError):
    """Weights or configurations that do not correspond; the message names the keys and the cause."""


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - transformers is a course dependency
        raise ImportError(
            "course_lib.convert needs the 'transformers' package; install it with `pip install transformers`"
        ) from e
    return transformers


class _Source:
    """A state dict that hands each tensor out once and remembers what was asked for but absent."""

    def __init__(self, state_dict: dict[str, Tensor]) -> None:
        self.left = dict(state_dict)
        self.missing: list[str] = []

    def take(self, key: str) -> Tensor:
        if key not in self.left:
            self.missing.append(key)
            return torch.empty(0)
        return self.left.pop(key)

    def drop(self, key: str) -> None:
        """Discard a key that may or may not be there (e.g. a tied output matrix)."""
        self.left.pop(key, None)

    def check(self, what: str, cause: str) -> None:
        unused = [k for k in self.left if not _IGNORED_HF_KEYS.search(k)]
        if self.missing or unused:
            parts = []
            if self.missing:
                parts.append(f"missing from the {what}: {format_keys(self.missing)}")
            if unused:
                parts.append(f"unexpected in the {what}: {format_keys(unused)}")
            raise ConversionError("; ".join(parts) + f". Likely cause: {cause}")


def _load_exact(target: nn.Module, state_dict: dict[str, Tensor], what: str, cause: str) -> None:
    """Load ``state_dict`` into ``target``, first checking keys and shapes with a clear message."""
    problem = state_dict_mismatch(target.state_dict(), state_dict, source="converted")
    if problem:
        raise ConversionError(
            f"the converted weights do not fit the {what}: {problem}. Likely cause: {cause}"
        )
    target.load_state_dict(state_dict, strict=True)


def _require(cfg: GPTConfig, target: str, **wanted: Any) -> None:
    wrong = {k: getattr(cfg, k) for k, v in wanted.items() if getattr(cfg, k) != v}
    if wrong:
        need = ", ".join(f"{k}={wanted[k]!r}" for k in wrong)
        raise ConversionError(
            f"this GPTConfig cannot be expressed as {target}: it has {wrong}; {target} needs {need}"
        )


# ----------------------------------------------------------------------------------------------
# GPT-2


def gpt_config_from_hf_gpt2(hf_config: Any) -> GPTConfig:
    """The :class:`GPTConfig` of a transformers ``GPT2Config``."""
    act = hf_config.activation_function
    approx = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}.get(act)
    if approx is None:
        raise ConversionError(
            f"GPT2Config.activation_function={act!r} is not supported; use 'gelu_new' (GPT-2's) or 'gelu'"
        )
    for flag, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
        if getattr(hf_config, flag, ok) != ok:
            raise ConversionError(f"GPT2Config.{flag} must be {ok} for course_lib's GPT (standard GPT-2)")
    return GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        d_model=hf_config.n_embd,
        d_ff=hf_config.n_inner,
        dropout=float(hf_config.resid_pdrop),
        bias=True,
        positions="learned",
        norm="layernorm",
        mlp="gelu",
        tie_weights=bool(getattr(hf_config, "tie_word_embeddings", True)),
        norm_eps=hf_config.layer_norm_epsilon,
        gelu_approximate=approx,
    )


def hf_gpt2_config_from_gpt(config: GPTConfig, **extra: Any) -> Any:
    """A transformers ``GPT2Config`` for ``config`` (eager attention, so outputs compare exactly)."""
    _require(
        config, "GPT-2", positions="learned", norm="layernorm", mlp="gelu", bias=True, kv_heads=config.n_head
    )
    tf = _transformers()
    kwargs = dict(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.d_model,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.ff_dim,
        activation_function="gelu_new" if config.gelu_approximate == "tanh" else "gelu",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=config.norm_eps,
        tie_word_embeddings=config.tie_weights,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )
    return tf.GPT2Config(**{**kwargs, **extra})


_GPT2_BLOCK = [  # (transformers name, course_lib name, transformers stores it transposed)
    ("ln_1.weight", "ln_1.weight", False),
    ("ln_1.bias", "ln_1.bias", False),
    ("attn.c_attn.weight", "attn.qkv.weight", True),
    ("attn.c_attn.bias", "attn.qkv.bias", False),
    ("attn.c_proj.weight", "attn.proj.weight", True),
    ("attn.c_proj.bias", "attn.proj.bias", False),
    ("ln_2.weight", "ln_2.weight", False),
    ("ln_2.bias", "ln_2.bias", False),
    ("mlp.c_fc.weight", "mlp.c_fc.weight", True),
    ("mlp.c_fc.bias", "mlp.c_fc.bias", False),
    ("mlp.c_proj.weight", "mlp.c_proj.weight", True),
    ("mlp.c_proj.bias", "mlp.c_proj.bias", False),
]
_GPT2_TOP = [
    ("transformer.wte.weight", "transformer.wte.weight"),
    ("transformer.wpe.weight", "transformer.wpe.weight"),
    ("transformer.ln_f.weight", "transformer.ln_f.weight"),
    ("transformer.ln_f.bias", "transformer.ln_f.bias"),
]
_GPT2_CAUSE = "the two models were built with different configs (n_layer, d_model, vocab_size, block_size...)"


def gpt_from_hf_gpt2(hf_model: nn.Module) -> GPT:
    """A course_lib :class:`GPT` with the weights of a transformers ``GPT2LMHeadModel``."""
    cfg = gpt_config_from_hf_gpt2(hf_model.config)
    src = _Source(hf_model.state_dict())
    sd: dict[str, Tensor] = {ours: src.take(theirs) for theirs, ours in _GPT2_TOP}
    for i in range(cfg.n_layer):
        for theirs, ours, transposed in _GPT2_BLOCK:
            w = src.take(f"transformer.h.{i}.{theirs}")
            sd[f"transformer.h.{i}.{ours}"] = w.t() if transposed else w  # Conv1D (in, out) -> (out, in)
    if cfg.tie_weights:
        src.drop("lm_head.weight")  # the same matrix as wte
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    else:
        sd["lm_head.weight"] = src.take("lm_head.weight")
    src.check("transformers GPT-2 state dict", "it is not a GPT2LMHeadModel, or " + _GPT2_CAUSE)
    ref = next(iter(hf_model.parameters()))
    model = GPT(cfg).to(device=ref.device, dtype=ref.dtype)
    _load_exact(model, {k: v.contiguous() for k, v in sd.items()}, "course_lib GPT", _GPT2_CAUSE)
    return model.train(hf_model.training)


def gpt_to_hf_gpt2(gpt: GPT) -> nn.Module:
    """A transformers ``GPT2LMHeadModel`` (eager attention) with the weights of ``gpt``."""
    tf = _transformers()
    cfg = gpt.config
    hf = tf.GPT2LMHeadModel(hf_gpt2_config_from_gpt(cfg))
    src = _Source(gpt.state_dict())
    sd: dict[str, Tensor] = {theirs: src.take(ours) for theirs, ours in _GPT2_TOP}
    for i in range(cfg.n_layer):
        for theirs, ours, transposed in _GPT2_BLOCK:
            w = src.take(f"transformer.h.{i}.{ours}")
            sd[f"transformer.h.{i}.{theirs}"] = w.t() if transposed else w  # (out, in) -> Conv1D (in, out)
    sd["lm_head.weight"] = src.take("lm_head.weight")
    src.check("course_lib GPT state dict", _GPT2_CAUSE)
    ref = gpt.lm_head.weight
    hf = hf.to(device=ref.device, dtype=ref.dtype)
    _load_exact(hf, {k: v.contiguous() for k, v in sd.items()}, "transformers GPT-2", _GPT2_CAUSE)
    return hf.train(gpt.training)


# ----------------------------------------------------------------------------------------------
# Llama


def _rope_of(hf_config: Any) -> tuple[float, str]:
    """(theta, rope type) from a LlamaConfig of transformers 4.x (rope_theta) or 5.x (rope_parameters)."""
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"]), params.get("rope_type", "default")
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    return float(hf_config.rope_theta), scaling.get("rope_type", scaling.get("type", "default"))


def gpt_config_from_hf_llama(hf_config: Any) -> GPTConfig:
    """The :class:`GPTConfig` of a transformers ``LlamaConfig``."""
    c = hf_config
    theta, rope_type = _rope_of(c)
    problems = []
    if c.hidden_act != "silu":
        problems.append(f"hidden_act={c.hidden_act!r} (needs 'silu')")
    if rope_type != "default":
        problems.append(f"rope_type={rope_type!r} (only plain RoPE, 'default', is implemented)")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if head_dim * c.num_attention_heads != c.hidden_size:
        problems.append(
            f"head_dim={head_dim} with {c.num_attention_heads} heads != hidden_size={c.hidden_size}"
        )
    if getattr(c, "attention_bias", False) != getattr(c, "mlp_bias", False):
        problems.append("attention_bias != mlp_bias (course_lib has one bias flag)")
    if getattr(c, "pretraining_tp", 1) != 1:
        problems.append(f"pretraining_tp={c.pretraining_tp} (needs 1)")
    if problems:
        raise ConversionError("LlamaConfig not supported by course_lib's GPT: " + "; ".join(problems))
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_kv_head=c.num_key_value_heads or c.num_attention_heads,
        d_model=c.hidden_size,
        d_ff=c.intermediate_size,
        dropout=float(getattr(c, "attention_dropout", 0.0)),
        bias=bool(getattr(c, "attention_bias", False)),
        positions="rope",
        norm="rmsnorm",
        mlp="swiglu",
        tie_weights=bool(getattr(c, "tie_word_embeddings", False)),
        norm_eps=c.rms_norm_eps,
        rope_theta=theta,
    )


def hf_llama_config_from_gpt(config: GPTConfig, **extra: Any) -> Any:
    """A transformers ``LlamaConfig`` for ``config`` (eager attention, so outputs compare exactly).

    Note Llama has dropout only on attention weights; a GPTConfig with dropout > 0 also drops
    residual branches while training, so only evaluation outputs agree.
    """
    _require(config, "Llama", positions="rope", norm="rmsnorm", mlp="swiglu")
    tf = _transformers()
    kwargs = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.ff_dim,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        attention_bias=config.bias,
        mlp_bias=config.bias,
        attention_dropout=config.dropout,
        hidden_act="silu",
        tie_word_embeddings=config.tie_weights,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="eager",
    )
    return tf.LlamaConfig(**{**kwargs, **extra})


_LLAMA_BLOCK = [  # (transformers name, course_lib name), apart from q/k/v which are stacked
    ("self_attn.o_proj", "attn.proj"),
    ("mlp.gate_proj", "mlp.w1"),
    ("mlp.up_proj", "mlp.w3"),
    ("mlp.down_proj", "mlp.w2"),
]
_LLAMA_CAUSE = (
    "the two models were built with different configs (n_layer, d_model, n_head, n_kv_head, d_ff, bias...)"
)


def gpt_from_hf_llama(hf_model: nn.Module) -> GPT:
    """A course_lib :class:`GPT` with the weights of a transformers ``LlamaForCausalLM``."""
    cfg = gpt_config_from_hf_llama(hf_model.config)
    src = _Source(hf_model.state_dict())
    suffixes = ["weight", "bias"] if cfg.bias else ["weight"]
    sd: dict[str, Tensor] = {
        "transformer.wte.weight": src.take("model.embed_tokens.weight"),
        "transformer.ln_f.weight": src.take("model.norm.weight"),
    }
    for i in range(cfg.n_layer):
        p, q = f"model.layers.{i}.", f"transformer.h.{i}."
        sd[q + "ln_1.weight"] = src.take(p + "input_layernorm.weight")
        sd[q + "ln_2.weight"] = src.take(p + "post_attention_layernorm.weight")
        for s in suffixes:
            qkv = [src.take(f"{p}self_attn.{name}_proj.{s}") for name in "qkv"]
            sd[f"{q}attn.qkv.{s}"] = torch.cat(qkv, dim=0)  # rows [q heads | k heads | v heads]
            for theirs, ours in _LLAMA_BLOCK:
                sd[f"{q}{ours}.{s}"] = src.take(f"{p}{theirs}.{s}")
    if cfg.tie_weights:
        src.drop("lm_head.weight")
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    else:
        sd["lm_head.weight"] = src.take("lm_head.weight")
    src.check("transformers Llama state dict", "it is not a LlamaForCausalLM, or " + _LLAMA_CAUSE)
    ref = next(iter(hf_model.parameters()))
    model = GPT(cfg).to(device=ref.device, dtype=ref.dtype)
    _load_exact(model, sd, "course_lib GPT", _LLAMA_CAUSE)
    return model.train(hf_model.training)


def gpt_to_hf_llama(gpt: GPT) -> nn.Module:
    """A transformers ``LlamaForCausalLM`` (eager attention) with the weights of ``gpt``."""
    tf = _transformers()
    cfg = gpt.config
    hf = tf.LlamaForCausalLM(hf_llama_config_from_gpt(cfg))
    src = _Source(gpt.state_dict())
    suffixes = ["weight", "bias"] if cfg.bias else ["weight"]
    nh, nkv, hs = cfg.n_head, cfg.kv_heads, cfg.head_dim
    sd: dict[str, Tensor] = {
        "model.embed_tokens.weight": src.take("transformer.wte.weight"),
        "model.norm.weight": src.take("transformer.ln_f.weight"),
        "lm_head.weight": src.take("lm_head.weight"),
    }
    for i in range(cfg.n_layer):
        p, q = f"model.layers.{i}.", f"transformer.h.{i}."
        sd[p + "input_layernorm.weight"] = src.take(q + "ln_1.weight")
        sd[p + "post_attention_layernorm.weight"] = src.take(q + "ln_2.weight")
        for s in suffixes:
            q_, k_, v_ = src.take(f"{q}attn.qkv.{s}").split([nh * hs, nkv * hs, nkv * hs], dim=0)
            for name, t in zip("qkv", (q_, k_, v_)):
                sd[f"{p}self_attn.{name}_proj.{s}"] = t.contiguous()
            for theirs, ours in _LLAMA_BLOCK:
                sd[f"{p}{theirs}.{s}"] = src.take(f"{q}{ours}.{s}")
    src.check("course_lib GPT state dict", _LLAMA_CAUSE)
    ref = gpt.lm_head.weight
    hf = hf.to(device=ref.device, dtype=ref.dtype)
    _load_exact(hf, sd, "transformers Llama", _LLAMA_CAUSE)
    return hf.train(gpt.training)
