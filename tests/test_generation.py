"""Generation from a GPT (course_lib.generation): the sampled text and its two measures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import generation
from course_lib.gpt import GPT, get_config
from course_lib.tokenizers import ENDOFTEXT, CharTokenizer

TEXT = "the cat sat on the mat. the dog sat on the log.\n"


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.train(TEXT, special_tokens=(ENDOFTEXT,))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return GPT(get_config("tiny", vocab_size=tokenizer.vocab_size, block_size=32)).eval()


def reference_continuation(model, tokenizer, prompt, n, **kw):
    """What GPT.generate itself samples after the prompt, decoded."""
    ids = tokenizer.encode(prompt)
    g = torch.Generator().manual_seed(kw.pop("seed", 0))
    out = model.generate(torch.tensor([ids]), n, generator=g, **kw)
    return tokenizer.decode(out[0, len(ids) :].tolist())


@pytest.mark.parametrize(
    "kw", [dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8), {}]
)
def test_generate_text_is_gpt_generate_after_the_prompt(model, tokenizer, kw):
    settings = {"temperature": 0.8, **kw}
    got = generation.generate_text(model, tokenizer, "the cat", 20, seed=3, **settings)
    ref = reference_continuation(model, tokenizer, "the cat", 20, seed=3, **settings)
    assert got == ref.split(ENDOFTEXT)[0]
    assert (
        generation.generate_text(model, tokenizer, "the cat", 20, seed=3, **settings) == got
    )  # reproducible


def test_greedy_is_the_argmax_continuation(model, tokenizer):
    ids = tokenizer.encode("the ")
    idx = torch.tensor([ids])
    for _ in range(10):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = tokenizer.decode(idx[0, len(ids) :].tolist()).split(ENDOFTEXT)[0]
    assert generation.generate_text(model, tokenizer, "the ", 10, temperature=0.0, seed=1) == expected
    assert generation.generate_text(model, tokenizer, "the ", 10, temperature=0.0, seed=2) == expected


class Scripted(torch.nn.Module):
    """A stand-in for a GPT that always appends the same ids, whatever the settings."""

    def __init__(self, new_ids: list[int]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.new_ids = new_ids

    def generate(self, idx, max_new_tokens, *args, **kwargs):
        return torch.cat([idx, torch.tensor([self.new_ids[:max_new_tokens]])], dim=1)


def test_generation_stops_at_end_of_text(tokenizer):
    eot = tokenizer.token_to_id(ENDOFTEXT)
    new = tokenizer.encode(" dog") + [eot] + tokenizer.encode("the")
    assert generation.generate_text(Scripted(new), tokenizer, "the", 10) == " dog"


def test_generate_text_errors_name_the_fix(model, tokenizer):
    with pytest.raises(ValueError, match="prompt is empty"):
        generation.generate_text(model, tokenizer, "", 5)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        generation.generate_text(model, tokenizer, "the", 0)
    with pytest.raises(TypeError, match="prompt must be a string"):
        generation.generate_text(model, tokenizer, ["the"], 5)
    block = model.config.block_size  # one character is one token here
    assert generation.generate_text(model, tokenizer, "t" * block, 3, temperature=0.0) is not None  # fits
    with pytest.raises(ValueError, match=f"prompt is {block + 1} tokens but the model reads at most {block}"):
        generation.generate_text(model, tokenizer, "t" * (block + 1), 3)


def test_distinct_n_counts_unique_ngrams_over_all_sequences():
    assert generation.distinct_n([[1, 2, 3, 4]], n=2) == 1.0
    assert generation.distinct_n([[7, 7, 7, 7, 7]], n=1) == 1 / 5
    assert generation.distinct_n([[1, 2, 1, 2], [1, 2]], n=2) == 2 / 4  # (1,2) three times, (2,1) once
    with pytest.raises(ValueError, match="no sequence has 3 tokens"):
        generation.distinct_n([[1, 2], [3]], n=3)


def test_continuation_nll_scores_only_the_continuation(model, tokenizer):
    idx = torch.tensor([tokenizer.encode("the cat sat"), tokenizer.encode("the dog sat")])
    n_prompt = 4
    with torch.no_grad():
        logp = F.log_softmax(model(idx)[0], dim=-1)  # (B, T, V)
    picked = logp[:, n_prompt - 1 : -1].gather(-1, idx[:, n_prompt:, None])  # the continuation's tokens
    assert math.isclose(
        generation.continuation_nll(model, idx, n_prompt), float(-picked.mean()), rel_tol=1e-5
    )
    with pytest.raises(ValueError, match="n_prompt"):
        generation.continuation_nll(model, idx, 0)


# ------------------------------------------------------------------------------ repetition penalty


@pytest.mark.parametrize("penalty", [1.3, 0.7, 2.0])
def test_penalize_repetition_matches_transformers(penalty):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    from course_lib.gpt import penalize_repetition

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g) * 4  # (B, V), positive and negative logits
    idx = torch.randint(0, 50, (3, 12), generator=g)  # (B, T), with repeated ids
    idx[0, :4] = 7  # one id four times: penalised once, not four times
    ours = penalize_repetition(logits, idx, penalty)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(idx, logits.clone())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)  # the same float32 operations: exact
    unseen = torch.ones_like(logits, dtype=torch.bool).scatter(-1, idx, False)
    assert torch.equal(ours[unseen], logits[unseen])  # tokens not in the sequence keep their logits
    if penalty > 1:
        assert bool((ours.gather(-1, idx) <= logits.gather(-1, idx)).all())  # seen tokens only lose


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generation_with_a_repetition_penalty_is_the_penalised_argmax(model, tokenizer, use_cache):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    penalty = 3.0  # enough to change this tiny model's greedy choice (1.5 does not)
    idx = torch.tensor([tokenizer.encode("the cat sat on the ")])
    expected = idx
    for _ in range(12):
        logits, _ = model(expected)
        scores = RepetitionPenaltyLogitsProcessor(penalty)(expected, logits[:, -1].clone())
        expected = torch.cat([expected, scores.argmax(-1, keepdim=True)], dim=1)
    got = model.generate(idx, 12, temperature=0.0, use_cache=use_cache, repetition_penalty=penalty)
    assert torch.equal(got, expected)
    plain = model.generate(idx, 12, temperature=0.0, use_cache=use_cache)
    assert not torch.equal(got, plain)  # the penalty changed the continuation
    assert torch.equal(model.generate(idx, 12, temperature=0.0, repetition_penalty=1.0), plain)
    with pytest.raises(ValueError, match="repetition_penalty"):
        model.generate(idx, 3, repetition_penalty=0.0)
