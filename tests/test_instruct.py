"""Instruction examples: the prompt is masked, the example fits the context, a tiny GPT learns the task."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from course_lib.gpt import GPT, get_config
from course_lib.instruct import (
    INSTRUCTION,
    completion_share,
    headline_example,
    headline_scores,
    instruction_loader,
    instruction_loss,
    write_headline,
)
from course_lib.lm_data import IGNORE_INDEX
from course_lib.tokenizers import ENDOFTEXT, BPETokenizer
from course_lib.trainer import TrainConfig, Trainer


@dataclass
class _Article:
    headline: str
    body: str


ARTICLES = [
    _Article("Oil price hits record", "The price of oil rose to a record on Monday as demand grew. " * 6),
    _Article("Team wins the cup final", "The home side won the final in London after extra time. " * 6),
]


def _tokenizer() -> BPETokenizer:
    texts = [f"{INSTRUCTION}\n{a.body}\nHeadline: {a.headline}" for a in ARTICLES]
    return BPETokenizer.train(texts, vocab_size=300, show_progress=False)


def test_example_masks_the_prompt_keeps_the_headline_and_fits_the_context():
    tok = _tokenizer()
    eos = tok.token_to_id(ENDOFTEXT)
    a = ARTICLES[0]
    fixed = len(tok.encode(INSTRUCTION + "\n")) + len(tok.encode("\nHeadline:")) + 24 + 1
    for block in (fixed + 12, fixed + 40, 400):
        ids, labels = headline_example(a.headline, a.body, tok, block)
        assert len(ids) == len(labels) <= block
        completion = tok.encode(" " + a.headline) + [eos]
        kept = [t for t in labels if t != IGNORE_INDEX]
        assert kept == completion  # exactly the headline and the end token carry a loss
        assert labels[: len(labels) - len(kept)] == [IGNORE_INDEX] * (len(labels) - len(kept))
        assert ids[1:] == (ids + [eos])[1 : len(ids)]  # ids is a plain prefix of the full sequence
        assert labels[-len(kept) :] == (ids[1:] + [eos])[-len(kept) :]  # labels = ids shifted by one
    short = headline_example(a.headline, a.body, tok, fixed + 12)
    assert 0 < completion_share([short]) < 1
    with pytest.raises(ValueError, match="context is too short"):
        headline_example(a.headline, a.body, tok, fixed)


def test_instruction_loss_is_cross_entropy_over_the_completion_tokens_only():
    tok = _tokenizer()
    torch.manual_seed(0)
    model = GPT(get_config("tiny", vocab_size=tok.vocab_size, block_size=128))
    examples = [headline_example(a.headline, a.body, tok, 128) for a in ARTICLES]
    batch = next(iter(instruction_loader(examples, 2, pad_id=tok.token_to_id(ENDOFTEXT), shuffle=False)))
    logits, _ = model(batch["input_ids"])
    keep = batch["labels"] != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], batch["labels"][keep])
    torch.testing.assert_close(instruction_loss(model, batch), expected, rtol=1e-6, atol=1e-6)


def test_a_tiny_gpt_learns_to_write_the_headlines_it_was_tuned_on(tmp_path):
    tok = _tokenizer()
    torch.manual_seed(0)
    model = GPT(get_config("tiny", vocab_size=tok.vocab_size, block_size=128, dropout=0.0))
    examples = [headline_example(a.headline, a.body, tok, 128) for a in ARTICLES]
    loader = instruction_loader(examples, 2, pad_id=tok.token_to_id(ENDOFTEXT))
    cfg = TrainConfig(
        max_steps=150, lr=3e-3, min_lr=3e-4, warmup_steps=10, device="cpu", out_dir=str(tmp_path),
        progress=False, log_every=50, eval_every=1000,
    )  # fmt: skip
    Trainer(model, cfg, loader, loss_fn=instruction_loss).fit()
    for a in ARTICLES:
        assert write_headline(model, tok, a.body) == a.headline
    written, score = headline_scores(model, tok, ARTICLES)
    assert written == [a.headline for a in ARTICLES] and score == 1.0
