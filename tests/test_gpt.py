"""course_lib.gpt: configuration checks, parameter counts, forward/loss, KV cache and generation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.gpt import (
    CONFIGS,
    GPT,
    GPTConfig,
    get_config,
    sample_next_token,
)

# fp32 logits of a tiny model: the cached and full computations round differently by a few ulps.
ATOL = 1e-5

BASE = dict(vocab_size=97, block_size=24, n_layer=2, n_head=4, d_model=32)

# Architectural variants every behavioural test runs over.
VARIANTS = {
    "gpt2": dict(),
    "sinusoidal": dict(positions="sinusoidal", gelu_approximate="none"),
    "llama": dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_weights=False),
    "llama_gqa": dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2),
    "mqa": dict(n_kv_head=1, bias=False, norm="rmsnorm"),
}


def make(variant: str = "gpt2", seed: int = 0, spread: float | None = None, **overrides) -> GPT:
    """A small GPT in eval mode. ``spread`` re-draws every weight matrix with that std, so that greedy
    decoding of an untrained model produces varied tokens (a sharper test of the cache)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**BASE, **VARIANTS[variant], **overrides})).eval()
    if spread is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, spread)
    return model


def tokens(B: int, T: int, V: int = BASE["vocab_size"], seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (dict(d_model=30), r"d_model=30 is not divisible by n_head=4"),
        (dict(n_kv_head=3), r"n_head=4 is not divisible by n_kv_head=3"),
        (dict(positions="alibi"), r"positions='alibi' is not one of \('learned', 'rope', 'sinusoidal'\)"),
        (dict(norm="batchnorm"), r"norm='batchnorm'"),
        (dict(mlp="relu"), r"mlp='relu'"),
        (dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
        (dict(n_layer=0), r"n_layer=0 must be a positive integer"),
        (dict(vocab_size=9.5), r"vocab_size=9.5 must be a positive integer"),
        (dict(d_model=12, n_head=4, positions="rope"), r"RoPE needs an even head size.*3"),
        (dict(norm_eps=0.0), r"norm_eps=0.0"),
    ],
)
def test_config_validation_errors(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        GPTConfig(**{**BASE, **overrides})


def test_config_dict_round_trip_and_unknown_keys():
    cfg = GPTConfig(**BASE, n_kv_head=2, positions="rope")
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown GPTConfig key\(s\) \['n_embd'\].*valid keys.*'d_model'"):
        GPTConfig.from_dict({**BASE, "n_embd": 32})
    with pytest.raises(ValueError, match=r"needs \['vocab_size'\]"):
        GPTConfig.from_dict({k: v for k, v in BASE.items() if k != "vocab_size"})


def test_get_config_names_overrides_and_errors():
    assert set(CONFIGS) >= {"tiny", "small", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}
    assert set(CONFIGS) >= {"llama-tiny", "llama-small", "llama2-7b"}
    assert get_config("tiny", block_size=32).block_size == 32
    with pytest.raises(ValueError, match=r"unknown config 'gpt5'; known configs are \["):
        get_config("gpt5")
    with pytest.raises(ValueError, match="unknown GPTConfig key"):
        get_config("tiny", layers=3)


def test_named_configs_have_the_intended_sizes():
    assert 80_000 <= get_config("tiny").num_parameters() <= 150_000  # "~100k"
    small = get_config("small")
    assert 4 <= small.n_layer <= 6 and 192 <= small.d_model <= 256 and small.block_size == 256
    assert get_config("llama-tiny").kv_heads < get_config("llama-tiny").n_head  # exercises GQA


# ------------------------------------------------------------------------------ parameter counts

COUNT_VARIANTS = [
    dict(zip(("positions", "norm", "mlp", "bias", "tie_weights", "n_kv_head"), combo))
    for combo in itertools.product(
        ["learned", "rope", "sinusoidal"],
        ["layernorm", "rmsnorm"],
        ["gelu", "swiglu"],
        [True, False],
        [True, False],
        [None, 1],
    )
]


@pytest.mark.parametrize("exclude_embeddings", [False, True])
def test_config_parameter_count_matches_the_built_model(exclude_embeddings):
    for overrides in COUNT_VARIANTS:  # 96 architectures; a loop keeps the test count readable
        cfg = GPTConfig(**{**BASE, "n_layer": 1, **overrides})
        model = GPT(cfg)
        assert cfg.num_parameters(exclude_embeddings) == model.num_parameters(exclude_embeddings), overrides


def test_config_parameter_count_of_published_models():
    assert get_config("gpt2").num_parameters() == 124_439_808  # GPT-2 small, tied head, with wpe
    assert get_config("llama2-7b").num_parameters() == 6_738_415_616  # Llama 2 7B as published


def test_gpt2_on_the_meta_device_agrees_with_the_analytic_count():
    # The meta device allocates no memory, so the real 124M-parameter module costs nothing to build.
    with torch.device("meta"):
        model = GPT(get_config("gpt2"))
    assert model.lm_head.weight.is_meta
    assert model.num_parameters() == get_config("gpt2").num_parameters() == 124_439_808
    assert model.num_parameters(exclude_embeddings=True) == 124_439_808 - 1024 * 768


def test_flops_per_token_and_mfu():
    model = make()
    c = model.config
    N = model.num_parameters(exclude_embeddings=True)
    assert model.flops_per_token() == 6 * N + 12 * c.n_layer * c.block_size * c.d_model
    assert model.flops_per_token(T=8) == 6 * N + 12 * c.n_layer * 8 * c.d_model
    assert model.estimate_mfu(1000.0, peak_flops=model.flops_per_token() * 4000.0) == pytest.approx(0.25)


def test_initialisation_follows_gpt2():
    cfg = GPTConfig(vocab_size=512, block_size=64, n_layer=8, n_head=4, d_model=128)
    torch.manual_seed(0)
    model = GPT(cfg)
    block = model.transformer.h[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.ln_1.weight == 1)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


# ------------------------------------------------------------------------------- forward and loss


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_shapes_loss_and_backward(variant):
    model = make(variant)
    idx, targets = tokens(2, 10), tokens(2, 10, seed=2)
    logits, loss = model(idx, targets=targets)
    assert logits.shape == (2, 10, BASE["vocab_size"])
    ref = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    torch.testing.assert_close(loss, ref)
    assert abs(loss.item() - math.log(BASE["vocab_size"])) < 0.1  # near-uniform predictions at init
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(model.lm_head(model.hidden_states(idx)), logits)


def test_loss_ignores_minus_100_targets():
    model = make()
    idx = tokens(2, 10)
    targets = idx.clone()
    targets[:, :6] = -100  # e.g. a prompt that should not be learned
    logits, loss = model(idx, targets)
    ref = F.cross_entropy(logits[:, 6:].reshape(-1, logits.size(-1)), idx[:, 6:].reshape(-1))
    torch.testing.assert_close(loss, ref)


def test_input_errors_name_the_problem_and_the_fix():
    model = make()
    with pytest.raises(
        ValueError, match=r"T=25 tokens is longer than block_size=24; crop it.*larger block_size"
    ):
        model(tokens(1, 25))
    with pytest.raises(ValueError, match=r"\(B, T\) tensor of integer token ids.*idx\[None\]"):
        model(tokens(1, 5)[0])
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\).*max 200"):
        model(torch.tensor([[1, 200]]))
    with pytest.raises(ValueError, match="targets shape"):
        model(tokens(2, 5), targets=tokens(2, 4))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\) but the input needs \(2, 5\)"):
        model(tokens(2, 5), attention_mask=torch.ones(2, 4))


@pytest.mark.parametrize("variant", ["gpt2", "llama_gqa"])
def test_padding_tokens_are_invisible_through_attention_mask(variant):
    model = make(variant)
    idx = tokens(2, 8)
    am = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])  # row 0 is left-padded
    a = model.hidden_states(idx, attention_mask=am)
    other = idx.clone()
    other[0, :3] = (other[0, :3] + 5) % BASE["vocab_size"]  # change only the padding tokens
    b = model.hidden_states(other, attention_mask=am)
    torch.testing.assert_close(a[0, 3:], b[0, 3:], atol=ATOL, rtol=0)
    assert torch.isfinite(a).all()  # fully masked padding queries produce no NaN
    assert not torch.allclose(model.hidden_states(other)[0, 3:], a[0, 3:], atol=1e-3)  # the mask mattered


def test_rope_left_padding_equals_the_unpadded_sequence():
    # RoPE scores depend only on relative positions, so a left-padded sequence whose padding is
    # masked must give exactly the outputs of the same tokens without padding.
    model = make("llama_gqa")
    real = tokens(1, 6)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), real], dim=1)
    am = torch.tensor([[0, 0, 0] + [1] * 6])
    torch.testing.assert_close(model(padded, attention_mask=am)[0][:, 3:], model(real)[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_explicit_and_fused_attention_give_the_same_logits(variant):
    model = make(variant)
    idx = tokens(2, 12)
    fused, _ = model(idx)
    explicit, _ = model.set_explicit_attention(True)(idx)
    torch.testing.assert_close(explicit, fused, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------- KV cache and generation


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_forward_equals_full_forward(variant):
    model = make(variant, spread=0.1)
    idx = tokens(2, 14)
    full, _ = model(idx)
    caches = model.make_kv_caches(2)
    pieces = [model(idx[:, :5], kv_caches=caches)[0]]  # prefill
    pieces += [model(idx[:, t : t + 1], kv_caches=caches)[0] for t in range(5, 14)]  # one token a step
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"14 cached \+ 11 new = 25 tokens is longer than block_size=24"):
        model(tokens(2, 11), kv_caches=caches)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("new_tokens", [10, 30])  # 30: prompt + new > block_size, the window slides
def test_greedy_generation_same_with_and_without_cache(variant, new_tokens):
    model = make(variant, spread=0.5)
    prompt = tokens(2, 5)
    with_cache = model.generate(prompt, new_tokens, temperature=0, use_cache=True)
    without = model.generate(prompt, new_tokens, temperature=0, use_cache=False)
    assert with_cache.shape == (2, 5 + new_tokens)
    assert torch.equal(with_cache[:, :5], prompt)
    assert torch.equal(with_cache, without)
    assert len(set(with_cache[:, 5:].flatten().tolist())) > 3  # varied tokens: the test has teeth


def test_generate_sizes_its_kv_cache_to_prompt_plus_new_tokens(monkeypatch):
    model = make("llama_gqa", spread=0.5)
    sizes = []
    make_caches = model.make_kv_caches

    def spy(batch_size, max_len=None, **kw):
        sizes.append(max_len)
        return make_caches(batch_size, max_len, **kw)

    monkeypatch.setattr(model, "make_kv_caches", spy)
    out = model.generate(tokens(2, 5), 7, temperature=0)
    assert sizes == [12] and out.shape == (2, 12)  # not block_size=24
    monkeypatch.undo()
    assert torch.equal(out, model.generate(tokens(2, 5), 7, temperature=0, use_cache=False))


def test_sampling_is_reproducible_with_a_generator_and_matches_without_cache():
    model = make("llama_gqa", spread=0.5)
    prompt = tokens(2, 4)

    def run(use_cache: bool, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 12, temperature=0.8, top_k=20, use_cache=use_cache, generator=g)

    assert torch.equal(run(True, 3), run(True, 3))
    assert torch.equal(run(True, 3), run(False, 3))
    assert not torch.equal(run(True, 3), run(True, 4))


def test_generate_restores_training_mode_and_stops_at_eos():
    model = make(spread=0.5).train()
    prompt = tokens(2, 4)
    greedy = model.generate(prompt, 8, temperature=0)
    assert model.training
    eos = int(greedy[0, 6])  # row 0 produces this token by its 3rd step
    first = int((greedy[0, 4:] == eos).nonzero()[0]) + 4
    one = model.generate(prompt[:1], 8, temperature=0, eos_id=eos)
    assert one.size(1) == first + 1 and torch.equal(one, greedy[:1, : first + 1])  # stopped right at eos
    both = model.generate(prompt, 8, temperature=0, eos_id=eos)
    assert torch.all(both[0, first:] == eos)  # a finished row is padded with eos...
    row1_hits = (greedy[1, 4:] == eos).nonzero()
    if len(row1_hits) == 0:  # ...while an unfinished row goes on to the full length
        assert both.size(1) == 12 and torch.equal(both[1], greedy[1])


def test_sample_next_token_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g)
    greedy = logits.argmax(-1, keepdim=True)
    assert torch.equal(sample_next_token(logits, temperature=0), greedy)
    assert torch.equal(sample_next_token(logits, top_k=1, generator=g), greedy)
    assert torch.equal(sample_next_token(logits, top_p=1e-6, generator=g), greedy)
    top5 = logits.topk(5, dim=-1).indices
    for _ in range(50):
        picked = sample_next_token(logits, temperature=1.5, top_k=5, generator=g)
        assert (top5 == picked).any(-1).all()
    # top_p keeps the smallest prefix (by probability) whose mass reaches p.
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    seen = {int(sample_next_token(probs.log(), top_p=0.75, generator=g)) for _ in range(200)}
    assert seen == {0, 1}
    for kwargs, pattern in [
        (dict(temperature=-1), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0), "top_p"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            sample_next_token(logits, **kwargs)


def test_tiny_config_learns_a_repeating_pattern_in_seconds():
    torch.manual_seed(0)
    model = GPT(get_config("tiny"))
    data = torch.arange(16).repeat(1, 8)[:, :65]  # 0..15 repeated: perfectly predictable
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        _, loss = model(data[:, :-1], data[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
