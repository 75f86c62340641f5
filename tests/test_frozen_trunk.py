"""course_lib.frozen_trunk against the uncached path: the same hidden states, SFT loss, answer
log-probabilities, DPO loss and LoRA gradients (float32, atol 1e-5), on a tiny random Llama GPT with LoRA
on its top blocks; and on SmolLM2's real weights for the log-probabilities."""

from __future__ import annotations

import copy

import pytest
import torch
from chat_helpers import tiny_tokenizer

from course_lib.frozen_trunk import (
    CachedDPOLoss,
    CachedSFTLoss,
    add_reference_logprobs,
    cache_residuals,
    cached_examples,
    cached_pairs,
    check_frozen_below,
    pair_collate,
    sequence_logprobs,
    trunk_collate,
)
from course_lib.gpt import GPT, get_config
from course_lib.instruct import instruction_loss
from course_lib.lm_data import pad_collate
from course_lib.lora import apply_lora, mark_only_lora_trainable
from course_lib.post_training import DPOLoss, chat_sft_example, preference_collate, preference_example
from course_lib.preference import completion_logprobs

CHATS = [
    [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi, how can I help?"}],
    [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}],
    [{"role": "user", "content": "Name a cat"}, {"role": "assistant", "content": "The cat sat on the mat."}],
]


def tiny_model(n_layer=4):
    """A random 4-block llama-tiny GPT over the tiny ChatML tokenizer's vocabulary, and the tokenizer."""
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    return GPT(get_config("llama-tiny", vocab_size=tok.vocab_size, block_size=128, n_layer=n_layer)), tok


def lora_top(model, start):
    """LoRA on the attention of blocks start.. with random (non-zero) B, everything else frozen."""
    n = model.config.n_layer
    apply_lora(model, targets=[f"h.{i}.attn.{p}" for i in range(start, n) for p in ("qkv", "proj")], r=4)
    mark_only_lora_trainable(model)
    torch.manual_seed(3)
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    return model


def grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("start", [0, 1, 4])
def test_upper_blocks_on_the_residual_stream_equal_the_whole_model(start):
    model = tiny_model()[0].eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 9))
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    whole = model.hidden_states(idx, mask)
    split = model.upper_hidden_states(model.residual_stream(idx, start, mask), start, mask)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="block index"):
        model.residual_stream(idx, model.config.n_layer + 1)
    with pytest.raises(ValueError, match="residual stream"):
        model.upper_hidden_states(idx, start)


def test_cached_residuals_of_a_padded_batch_equal_each_row_alone():
    model = tiny_model()[0].eval()
    rows = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    cached = cache_residuals(model, rows, start=1, batch_size=3)
    for row, r in zip(rows, cached):
        torch.testing.assert_close(r, model.residual_stream(torch.tensor([row]), 1)[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no empty row"):
        cache_residuals(model, [[1], []], start=1)


def test_cached_sft_loss_and_lora_gradients_equal_the_uncached_ones():
    model, tok = tiny_model()
    model = lora_top(model, start=1)
    examples = [chat_sft_example(c, tok) for c in CHATS]
    items = cached_examples(model, examples, start=1, batch_size=2)
    cached_loss = CachedSFTLoss(start=1)(model, trunk_collate(items, pad_id=0))
    cached_loss.backward()
    g_cached = grads(model)
    model.zero_grad()
    loss = instruction_loss(model, pad_collate(examples, pad_id=0))
    loss.backward()
    torch.testing.assert_close(cached_loss, loss, atol=1e-5, rtol=0)
    for k, g in grads(model).items():
        torch.testing.assert_close(g_cached[k], g, atol=1e-5, rtol=1e-4, msg=k)


def test_cached_dpo_equals_dpo_on_the_whole_model_and_precomputes_the_reference():
    policy, tok = tiny_model()
    policy = lora_top(policy, start=2)
    reference = copy.deepcopy(policy)
    with torch.no_grad():  # the policy drifts from the reference, so the margins are not zero
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    prompt = [{"role": "user", "content": "Hello"}]
    pairs = [
        preference_example(prompt, "I am fine, thank you.", "What is two plus two?", tok),
        preference_example(prompt, "The cat sat on the mat.", "A dog ran", tok),
    ]
    batch = preference_collate(pairs, pad_id=0)
    args = (batch["input_ids"], batch["answer_mask"], batch["attention_mask"])
    cached = cached_pairs(policy, pairs, start=2)
    policy_logps = sequence_logprobs(policy, pair_collate(cached), 2)
    torch.testing.assert_close(policy_logps, completion_logprobs(policy, *args), atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="add_reference_logprobs"):
        CachedDPOLoss(start=2)(policy, pair_collate(cached))
    add_reference_logprobs(reference, cached, start=2)
    ref = torch.tensor([p[side]["ref_logp"] for side in ("chosen", "rejected") for p in cached])
    torch.testing.assert_close(ref, completion_logprobs(reference, *args), atol=1e-5, rtol=0)

    cached_fn, whole_fn = CachedDPOLoss(start=2, beta=0.5), DPOLoss(reference, beta=0.5)
    cached_fn(policy, pair_collate(cached)).backward()
    g_cached = grads(policy)
    policy.zero_grad()
    whole_fn(policy, batch).backward()
    torch.testing.assert_close(cached_fn.last.loss, whole_fn.last.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached_fn.last.margins, whole_fn.last.margins, atol=1e-5, rtol=0)
    assert cached_fn.last.margins.abs().max() > 1e-3  # a real comparison, not two zeros
    for k, g in grads(policy).items():
        torch.testing.assert_close(g_cached[k], g, atol=1e-5, rtol=1e-4, msg=k)


def test_bad_input_gets_clear_errors():
    model, tok = tiny_model()
    model = lora_top(model, start=2)
    check_frozen_below(model, 2)  # LoRA only from block 2: caching blocks 0-1 is safe
    with pytest.raises(ValueError, match="below block 3 requires grad"):
        check_frozen_below(model, 3)
    ids, labels = torch.tensor([1, 2, 3]), torch.tensor([-100, 2, 3])
    item = {"input_ids": ids, "labels": labels, "residual": torch.zeros(2, 5)}  # 2 rows for 3 tokens
    with pytest.raises(ValueError, match="disagree"):
        trunk_collate([item])
    with pytest.raises(ValueError, match="empty batch"):
        trunk_collate([])
    ex = chat_sft_example(CHATS[0], tok)
    items = cached_examples(model, [ex], start=2)
    items[0]["labels"][:] = -100
    with pytest.raises(ValueError, match="nothing to learn"):
        CachedSFTLoss(2)(model, trunk_collate(items))
    with pytest.raises(ValueError, match="one per token"):
        cached_examples(model, [(ex[0], ex[1][:-1])], start=2)


@pytest.mark.slow
def test_real_smollm2_cached_answer_logprobs_equal_the_whole_model():
    from course_lib.smollm2 import load_smollm2, load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    model = load_smollm2("cpu").eval()
    prompt = [{"role": "user", "content": "Write a short headline: the Bank of England kept rates at 4.75%."}]
    pairs = [preference_example(prompt, "Bank holds rates", "Rates: a long story about many things", tok)]
    batch = preference_collate(pairs, pad_id=0)
    with torch.no_grad():
        whole = completion_logprobs(model, batch["input_ids"], batch["answer_mask"], batch["attention_mask"])
        cached = sequence_logprobs(model, pair_collate(cached_pairs(model, pairs, start=24)), 24)
    torch.testing.assert_close(cached, whole, atol=1e-4, rtol=0)


def _cached_dpo_run(out_dir, stop_at, resume, policy, items):
    from torch.utils.data import DataLoader

    from course_lib.trainer import Callback, TrainConfig, Trainer

    class StopAt(Callback):  # an interruption after `stop_at` steps (a checkpoint is written every step)
        def on_step_end(self, trainer):
            trainer.should_stop = trainer.step >= stop_at

    loader = DataLoader(
        items, batch_size=1, shuffle=True, generator=torch.Generator().manual_seed(0), collate_fn=pair_collate
    )
    cfg = TrainConfig(
        max_steps=4, lr=1e-2, warmup_steps=0, weight_decay=0.0, eval_every=1000, log_every=1, save_every=1,
        device="cpu", out_dir=str(out_dir), progress=False, grad_clip=None,
    )  # fmt: skip
    Trainer(
        policy, cfg, loader, loss_fn=CachedDPOLoss(start=2, beta=0.5), callbacks=[StopAt()], resume=resume
    ).fit()
    return policy


def test_interrupted_cached_dpo_run_resumes_to_the_same_weights(tmp_path):
    start_model, tok = tiny_model()
    start_model = lora_top(start_model, start=2)
    prompt = [{"role": "user", "content": "Hello"}]
    pairs = [
        preference_example(prompt, "I am fine, thank you.", "What is two plus two?", tok),
        preference_example(prompt, "The cat sat on the mat.", "A dog ran", tok),
    ]
    items = cached_pairs(start_model, pairs, start=2)
    add_reference_logprobs(start_model, items, start=2)
    straight = _cached_dpo_run(tmp_path / "a", 4, False, copy.deepcopy(start_model), items)
    _cached_dpo_run(tmp_path / "b", 2, False, copy.deepcopy(start_model), items)  # "interrupted" at step 2
    other = lora_top(tiny_model()[0], start=2)  # different LoRA values: the checkpoint must replace them
    torch.manual_seed(9)
    for p in other.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    resumed = _cached_dpo_run(tmp_path / "b", 4, True, other, items)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    moved = [k for k, v in straight.state_dict().items() if not torch.equal(v, start_model.state_dict()[k])]
    assert moved and all("lora" in k for k in moved)  # DPO trained the adapters, and only them
