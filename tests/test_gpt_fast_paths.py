"""The GPT's fast paths against its plain ones: a padded vocabulary, the cheap input checks, dropout
at p = 0, and greedy decoding with static KV caches (course_lib.fast_decode)."""

from __future__ import annotations

import functools

import pytest
import torch

from course_lib.attention import StaticKVCache
from course_lib.fast_decode import StaticDecoder
from course_lib.gpt import GPT, GPTConfig, get_config
from course_lib.layers import Dropout, LearnedPositions, SinusoidalPositions

BASE = dict(vocab_size=97, block_size=24, n_layer=2, n_head=4, d_model=32)
VARIANTS = {
    "gpt2": dict(),
    "sinusoidal": dict(positions="sinusoidal", gelu_approximate="none"),
    "llama": dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_weights=False),
    "llama_gqa": dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2),
    "mqa": dict(n_kv_head=1, bias=False, norm="rmsnorm"),
}
PAD_TOL = 1e-6  # padded vs unpadded: the same sums plus exp(-inf) = 0 terms
DECODE_TOL = 1e-5  # static vs growing cache: the masked slots change the summation order by a few ulps


def make(variant: str = "gpt2", seed: int = 0, spread: float | None = None, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**BASE, **VARIANTS[variant], **overrides})).eval()
    if spread is not None:  # varied greedy tokens from an untrained model: a sharper test
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, spread)
    return model


def tokens(B: int, T: int, V: int = BASE["vocab_size"], seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- padded vocabulary


def padded_twin(model: GPT, pad_to: int, padding_value: float | None = None) -> GPT:
    """The same model with its vocabulary padded: real rows copied, padding rows random (or set)."""
    twin = GPT(GPTConfig(**{**model.config.to_dict(), "pad_vocab_to": pad_to})).eval()
    V = model.config.vocab_size
    with torch.no_grad():
        for name, p in twin.named_parameters():
            src = dict(model.named_parameters())[name]
            if p.shape == src.shape:
                p.copy_(src)
            else:  # wte / lm_head: (V_padded, d)
                p[:V] = src
                if padding_value is not None:
                    p[V:] = padding_value
    return twin


def test_padded_vocab_size_rounds_up_and_is_validated():
    assert get_config("gpt2", pad_vocab_to=64).padded_vocab_size == 50304
    assert get_config("gpt2", pad_vocab_to=128).padded_vocab_size == 50304
    assert get_config("gpt2").padded_vocab_size == 50257
    assert GPTConfig(**BASE, pad_vocab_to=97).padded_vocab_size == 97
    for bad in (0, -64, 6.4):
        with pytest.raises(ValueError, match="pad_vocab_to"):
            GPTConfig(**BASE, pad_vocab_to=bad)
    for variant in VARIANTS:
        cfg = GPTConfig(**{**BASE, **VARIANTS[variant]}, pad_vocab_to=64)
        model = GPT(cfg)
        assert model.transformer.wte.weight.shape == (128, 32)
        assert model.lm_head.weight.shape == (128, 32)
        assert cfg.num_parameters() == model.num_parameters()


@pytest.mark.parametrize("variant", ["gpt2", "llama"])  # tied and untied output layer
def test_padded_model_equals_the_unpadded_one(variant):
    plain = make(variant).train()
    padded = padded_twin(plain, 64, padding_value=50.0).train()  # padding rows would win every argmax
    idx, targets = tokens(3, 16), tokens(3, 16, seed=2)
    targets[0, :4] = -100
    logits_p, loss_p = padded(idx, targets)
    logits_u, loss_u = plain(idx, targets)
    assert logits_p.shape == (3, 16, 97)
    torch.testing.assert_close(logits_p, logits_u, atol=PAD_TOL, rtol=0)
    assert abs(loss_p.item() - loss_u.item()) <= PAD_TOL
    loss_p.backward()
    loss_u.backward()
    grads_u = {n: p.grad for n, p in plain.named_parameters()}
    for name, p in padded.named_parameters():
        table = name in ("transformer.wte.weight", "lm_head.weight")  # (V_padded, d)
        g = p.grad[:97] if table else p.grad
        torch.testing.assert_close(g, grads_u[name], atol=PAD_TOL, rtol=0, msg=name)
        if table:
            assert p.grad[97:].abs().max() == 0, f"{name}: padding rows got a gradient"


def test_padded_rows_are_never_predicted_or_sampled():
    plain = make("llama_gqa", spread=0.5)
    padded = padded_twin(plain, 64, padding_value=50.0)
    prompt = tokens(2, 4)
    greedy = padded.generate(prompt, 12, temperature=0)
    assert torch.equal(greedy, plain.generate(prompt, 12, temperature=0))
    for use_cache in (True, False):
        sampled = padded.generate(prompt, 16, temperature=2.0, use_cache=use_cache,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert int(sampled.max()) < 97
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\).*max 100"):
        padded(torch.tensor([[1, 100]]))  # a padding row exists but is no token


# ----------------------------------------------------------------------------------- cheap checks


def test_out_of_range_ids_and_positions_still_get_clear_errors_on_the_cpu():
    model = make()
    for bad, pattern in (([[1, 97]], r"max 97"), ([[-1, 3]], r"min -1")):
        with pytest.raises(ValueError, match=rf"token ids must lie in \[0, 97\).*{pattern}"):
            model(torch.tensor(bad))
    for table in (LearnedPositions(8, 4), SinusoidalPositions(8, 4)):
        with pytest.raises(ValueError, match="position 9 is past the table's 8 positions"):
            table(torch.tensor([3, 9]))
        assert table(torch.arange(8)).shape == (8, 4)


def test_dropout_at_zero_or_in_eval_returns_its_input_and_drops_otherwise():
    x = torch.randn(64, 64)
    assert Dropout(0.0).train()(x) is x
    assert Dropout(0.5).eval()(x) is x
    torch.manual_seed(0)
    y = Dropout(0.5).train()(x)
    torch.manual_seed(0)
    torch.testing.assert_close(y, torch.nn.Dropout(0.5).train()(x), atol=0, rtol=0)
    assert (y == 0).float().mean() > 0.3  # it does drop


# ---------------------------------------------------------------------------- static KV cache


def test_static_kv_cache_writes_at_positions_and_checks_shapes():
    cache = StaticKVCache(2, 3, 10, 4)
    k, v = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    k_all, v_all = cache.update(k, v, torch.tensor([5, 6]))
    assert k_all.shape == (2, 3, 10, 4) and k_all.data_ptr() == cache.k.data_ptr()  # the same buffers
    torch.testing.assert_close(k_all[:, :, 5:7], k, atol=0, rtol=0)
    torch.testing.assert_close(v_all[:, :, 5:7], v, atol=0, rtol=0)
    assert k_all[:, :, :5].abs().max() == 0 and k_all[:, :, 7:].abs().max() == 0
    with pytest.raises(ValueError, match="StaticKVCache holds"):
        cache.update(torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4), torch.tensor([0]))
    assert "k" not in cache.state_dict()  # buffers travel with .to() but are not saved


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_static_decoder_gives_the_tokens_of_generate(variant):
    model = make(variant, spread=0.5)
    prompt = tokens(2, 5)
    decoder = StaticDecoder(model, batch_size=2)
    expected = model.generate(prompt, 19, temperature=0)  # 5 + 19 = block_size
    got = decoder.generate(prompt, 19)
    assert torch.equal(got, expected)
    assert len(set(got[:, 5:].flatten().tolist())) > 3  # varied tokens: the test has teeth
    assert torch.equal(decoder.generate(prompt[:, :3], 6), model.generate(prompt[:, :3], 6, temperature=0))
    # The logits too, not only their argmax: every step of the static path against the growing cache.
    caches = model.make_kv_caches(2)
    ref = [model(got[:, :5], kv_caches=caches)[0][:, -1]]
    ref += [model(got[:, t : t + 1], kv_caches=caches)[0][:, -1] for t in range(5, 23)]
    mine = [decoder.last_logits(got[:, :5], torch.arange(5))]
    mine += [decoder.last_logits(got[:, t : t + 1], torch.tensor([t])) for t in range(5, 23)]
    torch.testing.assert_close(torch.stack(mine), torch.stack(ref), atol=DECODE_TOL, rtol=0)


def test_static_decoder_with_a_padded_vocabulary_and_its_errors():
    plain = make("gpt2", spread=0.5)
    padded = padded_twin(plain, 64, padding_value=50.0)
    prompt = tokens(1, 4)
    assert torch.equal(
        StaticDecoder(padded, 1).generate(prompt, 10), plain.generate(prompt, 10, temperature=0)
    )
    decoder = StaticDecoder(plain, batch_size=1, max_len=12)
    with pytest.raises(ValueError, match=r"prompt 4 \+ 9 new tokens > max_len=12"):
        decoder.generate(prompt, 9)
    with pytest.raises(ValueError, match="built for batch_size=1"):
        decoder.generate(tokens(2, 4), 3)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\)"):
        decoder.generate(torch.tensor([[5, 97]]), 3)
    with pytest.raises(ValueError, match="max_len=30 > block_size=24"):
        StaticDecoder(plain, 1, max_len=30)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by dynamo
@pytest.mark.parametrize("variant", ["gpt2", "llama_gqa"])
def test_static_step_compiles_to_one_graph_and_gives_the_same_tokens(monkeypatch, variant):
    # Dynamo's capture is what the static cache is for: one full graph (fullgraph=True raises on a
    # break), reused for every token and every call. The "eager" backend runs the captured graph
    # without generating code, which on a CPU would take minutes; the GPU benchmark uses inductor.
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    model = make(variant, spread=0.5)
    prompt = tokens(1, 5)
    decoder = StaticDecoder(model, batch_size=1, compile=True)
    expected = model.generate(prompt, 12, temperature=0)
    assert torch.equal(decoder.generate(prompt, 12), expected)
    assert torch.equal(decoder.generate(prompt, 12), expected)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    torch._dynamo.reset()


def test_fused_attention_asks_for_gqa_only_when_the_head_counts_differ(monkeypatch):
    # enable_gqa=True costs 10-20% of forward + backward time on the CPU even with equal head counts.
    import course_lib.attention as attention_module

    seen = []
    sdpa = attention_module.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("enable_gqa", False))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    for variant, expected in (("gpt2", False), ("llama_gqa", True)):
        seen.clear()
        make(variant)(tokens(1, 6))
        assert seen == [expected] * BASE["n_layer"], (variant, seen)
