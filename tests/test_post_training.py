"""course_lib.post_training on a tiny random Llama GPT and the tiny ChatML tokenizer; bootstrap_interval
against scipy.stats.bootstrap; the held-out split against the real BBC corpus."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from chat_helpers import tiny_chat_model, tiny_tokenizer

from course_lib.chat_template import IM_END, render_chat
from course_lib.lm_data import IGNORE_INDEX
from course_lib.lora import apply_lora, mark_only_lora_trainable, merge_lora
from course_lib.metrics import bootstrap_interval
from course_lib.post_training import (
    DPOLoss,
    chat_sft_example,
    classify_by_loglik,
    headline_messages,
    heldout_split,
    label_logprobs,
    load_adapter,
    preference_collate,
    preference_example,
    save_adapter,
)
from course_lib.preference import completion_logprobs, dpo_loss

CHAT = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
]


def test_sft_example_masks_exactly_the_prompt():
    tok = tiny_tokenizer()
    ids, labels = chat_sft_example(CHAT, tok)
    full = tok.encode(render_chat(CHAT, add_generation_prompt=False))  # the template's text
    assert ids + [labels[-1]] == full[:-1]  # SFT stops at <|im_end|>
    prompt = tok.encode(render_chat(CHAT[:1]))
    assert labels[: len(prompt) - 1] == [IGNORE_INDEX] * (len(prompt) - 1)  # shifted: prompt[1:] masked
    answer = labels[len(prompt) - 1 :]
    assert answer == tok.encode("Two plus two is four.") + [tok.token_to_id(IM_END)]
    assert len(ids) == len(labels)


def test_sft_example_rejects_bad_conversations():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="empty"):
        chat_sft_example([], tok)
    with pytest.raises(ValueError, match="role 'bot'"):
        chat_sft_example([{"role": "bot", "content": "hi"}], tok)
    with pytest.raises(ValueError, match="ends with the assistant"):
        chat_sft_example(CHAT[:1], tok)


def test_sft_loss_equals_masked_cross_entropy():
    cm = tiny_chat_model()
    ids, labels = chat_sft_example(CHAT, cm.tokenizer)
    x, y = torch.tensor([ids]), torch.tensor([labels])
    _, loss = cm.model(x, y)
    logits, _ = cm.model(x)
    keep = y[0] != IGNORE_INDEX
    ref = F.cross_entropy(logits[0][keep], y[0][keep])
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=0)


def test_label_logprobs_match_token_by_token_sum():
    cm = tiny_chat_model()
    tok, model = cm.tokenizer, cm.model.eval()
    prompt = tok.encode(render_chat([{"role": "user", "content": "Hello"}]))
    labels = [tok.encode("cat"), tok.encode("dog ran")]
    got = label_logprobs(model, prompt, labels)
    for k, lab in enumerate(labels):
        seq = torch.tensor([prompt + lab])
        logp = model(seq)[0].log_softmax(-1)[0]  # (T, V)
        want = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(lab))
        assert abs(got[k].item() - want) < 1e-4
    assert classify_by_loglik(model, [prompt], labels) == [int(got.argmax())]
    with pytest.raises(ValueError, match="at least one token"):
        label_logprobs(model, prompt, [[]])


def test_heldout_split_is_disjoint_from_every_training_text():
    from course_lib.datasets import bbc_news

    articles = bbc_news(dedupe=True)
    train, test = heldout_split(articles, 200, seed=0)
    assert len(test) == 200 and len(train) + len(test) <= len(articles)
    test_texts = {a.body.strip() for a in test} | {a.headline.strip() for a in test}
    assert not any(a.body.strip() in test_texts or a.headline.strip() in test_texts for a in train)
    # a planted copy of a held-out headline in the pool is dropped from training
    dup = SimpleNamespace(headline="Same title", body="b1")
    pool = [dup, SimpleNamespace(headline="Same title", body="b2"), SimpleNamespace(headline="x", body="y")]
    for seed in range(5):
        tr, te = heldout_split(pool, 1, seed)
        if te[0].headline == "Same title":
            assert all(a.headline != "Same title" for a in tr)


def test_bootstrap_interval_matches_scipy():
    from scipy.stats import bootstrap

    x = np.random.default_rng(1).random(300)
    lo, hi = bootstrap_interval(x, n_resamples=20000, seed=0)
    ref = bootstrap(
        (x,), np.mean, confidence_level=0.95, n_resamples=20000, method="percentile", random_state=0
    )
    assert lo == pytest.approx(ref.confidence_interval.low, abs=2e-3)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=2e-3)
    with pytest.raises(ValueError):
        bootstrap_interval([1.0])


def test_preference_pair_checks_and_batch_layout():
    tok = tiny_tokenizer()
    msgs = headline_messages(SimpleNamespace(headline="h", body="The cat sat on the mat."), answer=False)
    with pytest.raises(ValueError, match="same"):
        preference_example(msgs, "The cat", "The cat", tok)
    pair = preference_example(msgs, "The cat sat", "A dog ran to the park", tok)
    batch = preference_collate([pair, pair], pad_id=0)
    assert batch["input_ids"].shape[0] == 4
    n_c, n_r = len(pair["chosen"]), len(pair["rejected"])
    assert batch["answer_mask"].sum(1).tolist() == [n_c, n_c, n_r, n_r]


def test_dpo_loss_fn_matches_preference_dpo_loss_and_trains():
    cm = tiny_chat_model()
    tok, policy = cm.tokenizer, cm.model
    reference = copy.deepcopy(policy)
    msgs = [{"role": "user", "content": "Hello"}]
    pair = preference_example(msgs, "I am fine, thank you.", "What is two plus two?", tok)
    batch = preference_collate([pair], pad_id=0)
    loss_fn = DPOLoss(reference, beta=0.5)
    loss = loss_fn(policy, batch)
    assert abs(loss.item() - np.log(2)) < 1e-5  # policy == reference: margin 0, loss log 2
    policy.train()
    opt = torch.optim.SGD(policy.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        loss_fn(policy, batch).backward()
        opt.step()
    policy.eval()
    lp = completion_logprobs(policy, batch["input_ids"], batch["answer_mask"], batch["attention_mask"])
    rp = completion_logprobs(reference, batch["input_ids"], batch["answer_mask"], batch["attention_mask"])
    out = dpo_loss(lp[:1], lp[1:], rp[:1], rp[1:], beta=0.5)
    assert out.loss.item() < np.log(2) and out.margins.item() > 0


def test_adapter_save_load_swap_and_merge(tmp_path):
    cm = tiny_chat_model()
    model = cm.model.eval()
    apply_lora(model, targets=("qkv",), r=4)
    mark_only_lora_trainable(model)
    x = torch.randint(0, cm.tokenizer.vocab_size, (2, 10))
    adapters = {}
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        for p in model.parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.1)
        adapters[name] = (save_adapter(model, tmp_path / f"{name}.pt"), model(x)[0].detach())
    load_adapter(model, adapters["a"][0])
    torch.testing.assert_close(model(x)[0], adapters["a"][1], atol=0, rtol=0)
    load_adapter(model, adapters["b"][0])
    torch.testing.assert_close(model(x)[0], adapters["b"][1], atol=0, rtol=0)
    assert not torch.allclose(adapters["a"][1], adapters["b"][1])
    merge_lora(model)
    torch.testing.assert_close(model(x)[0], adapters["b"][1], atol=1e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match="save_adapter"):
        load_adapter(model, tmp_path / "missing.pt")


def _dpo_run(tmp_path, stop_at, resume, policy, reference, pairs):
    from torch.utils.data import DataLoader

    from course_lib.trainer import Callback, TrainConfig, Trainer

    class StopAt(Callback):  # an interruption after `stop_at` steps (the checkpoint is written each step)
        def on_step_end(self, trainer):
            trainer.should_stop = trainer.step >= stop_at

    loader = DataLoader(
        pairs,
        batch_size=1,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=lambda b: preference_collate(b, pad_id=0),
    )
    cfg = TrainConfig(
        max_steps=4,
        lr=1e-2,
        warmup_steps=0,
        weight_decay=0.0,
        eval_every=1000,
        log_every=1,
        save_every=1,
        device="cpu",
        out_dir=str(tmp_path),
        progress=False,
        grad_clip=None,
    )
    Trainer(
        policy, cfg, loader, loss_fn=DPOLoss(reference, beta=0.5), callbacks=[StopAt()], resume=resume
    ).fit()
    return policy


def test_interrupted_dpo_run_resumes_to_the_same_weights(tmp_path):
    cm = tiny_chat_model()
    tok = cm.tokenizer
    msgs = [{"role": "user", "content": "Hello"}]
    pairs = [
        preference_example(msgs, "I am fine, thank you.", "What is two plus two?", tok),
        preference_example(msgs, "The cat sat on the mat.", "A dog ran", tok),
    ]
    reference = copy.deepcopy(cm.model)
    straight = _dpo_run(tmp_path / "a", 4, False, copy.deepcopy(cm.model), reference, pairs)
    _dpo_run(tmp_path / "b", 2, False, copy.deepcopy(cm.model), reference, pairs)  # "interrupted" at 2
    other_init = tiny_chat_model(seed=1).model  # the checkpoint must overwrite these weights
    resumed = _dpo_run(tmp_path / "b", 4, True, other_init, reference, pairs)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    assert any(
        not torch.equal(a, b) for a, b in zip(straight.state_dict().values(), cm.model.state_dict().values())
    )


@pytest.mark.slow
def test_real_smollm2_sft_example_and_label_likelihood():
    """On SmolLM2 itself: the SFT example's unmasked labels decode to the answer and <|im_end|>, and the
    label likelihood prefers the right word for an easy question (a property of the real weights)."""
    from course_lib.smollm2 import load_smollm2, load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    ids, labels = chat_sft_example(CHAT, tok)
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]) == "Two plus two is four.<|im_end|>"
    model = load_smollm2("cpu")
    prompt = tok.encode(
        render_chat([{"role": "user", "content": "What is the capital of France? One word."}])
    )
    scores = label_logprobs(model, prompt, [tok.encode(w) for w in ("Paris", "Berlin", "Madrid")])
    assert int(scores.argmax()) == 0
