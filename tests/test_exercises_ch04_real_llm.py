"""The checks of course_lib.exercises.ch04_real_llm accept right answers and reject the usual mistakes,
naming the case that failed; answers that call the library are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises import ExerciseFailure
from course_lib.exercises import ch04_real_llm as ex
from course_lib.gpt import GPT, GPTConfig
from course_lib.lora import LoRALinear
from course_lib.metrics import bootstrap_interval
from course_lib.post_training import preference_collate

# ---------------------------------------------------------------- 4.5 parameter count


def llama_parameters(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, tied):
    kv = n_kv_head * (d_model // n_head)
    block = d_model * (d_model + 2 * kv) + d_model * d_model + 3 * d_model * d_ff + 2 * d_model
    return vocab_size * d_model * (1 if tied else 2) + n_layer * block + d_model


def llama_parameters_no_gqa(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, tied):
    block = 4 * d_model * d_model + 3 * d_model * d_ff + 2 * d_model  # k and v as wide as q
    return vocab_size * d_model * (1 if tied else 2) + n_layer * block + d_model


def llama_parameters_two_mlp_matrices(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, tied):
    kv = n_kv_head * (d_model // n_head)
    block = d_model * (d_model + 2 * kv) + d_model * d_model + 2 * d_model * d_ff + 2 * d_model
    return vocab_size * d_model * (1 if tied else 2) + n_layer * block + d_model


def llama_parameters_untied_always(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, tied):
    return llama_parameters(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, False)


def llama_parameters_no_final_norm(*args):
    return llama_parameters(*args) - args[2]


def llama_parameters_from_library(vocab_size, n_layer, d_model, n_head, n_kv_head, d_ff, tied):
    return GPTConfig(
        vocab_size=vocab_size, block_size=8, n_layer=n_layer, n_head=n_head, d_model=d_model,
        n_kv_head=n_kv_head, d_ff=d_ff, bias=False, positions="rope", norm="rmsnorm", mlp="swiglu",
        tie_weights=tied,
    ).num_parameters()  # fmt: skip


def test_the_reference_count_is_the_built_models():
    """GPTConfig's count from shapes equals the parameters of the model built from it (tied or not)."""
    for tied in (True, False):
        cfg = GPTConfig(
            vocab_size=300, block_size=8, n_layer=2, n_head=6, d_model=96, n_kv_head=2, d_ff=160,
            bias=False, positions="rope", norm="rmsnorm", mlp="swiglu", tie_weights=tied,
        )  # fmt: skip
        built = sum(p.numel() for p in GPT(cfg).parameters())
        assert built == cfg.num_parameters() == llama_parameters(300, 2, 96, 6, 2, 160, tied)


# ---------------------------------------------------------------- 4.6 masked SFT loss


def sft_loss(logits, labels):
    keep = labels != -100
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return -(picked * keep).sum() / keep.sum()


def sft_loss_over_all_positions(logits, labels):  # masked positions count as zeros in the mean
    keep = labels != -100
    picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return -(picked * keep).mean()


def sft_loss_row_by_row(logits, labels):  # mean per row, then mean of rows
    keep = labels != -100
    picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return (-(picked * keep).sum(1) / keep.sum(1)).mean()


def sft_loss_shifted_again(logits, labels):  # shifts labels that were already shifted
    return sft_loss(logits[:, :-1], labels[:, 1:])


def sft_loss_mask_ignored(logits, labels):  # trains on the prompt too
    picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return -picked.mean()


def sft_loss_from_pytorch(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


# ---------------------------------------------------------------- 4.6 merged LoRA weight


def merge(W, A, B, alpha, r):
    return W + (alpha / r) * (B @ A)


def merge_no_scale(W, A, B, alpha, r):
    return W + B @ A


def merge_alpha_only(W, A, B, alpha, r):
    return W + alpha * (B @ A)


def merge_inverse_scale(W, A, B, alpha, r):
    return W + (r / alpha) * (B @ A)


def merge_transposed(W, A, B, alpha, r):
    return W + (alpha / r) * (A.T @ B.T)  # (in, in): the wrong shape, or the wrong matrix when square


def merge_with_library(W, A, B, alpha, r):
    layer = LoRALinear(torch.nn.Linear(W.shape[1], W.shape[0], bias=False), r=r, alpha=alpha)
    return W + layer.scaling * (B @ A)


# ---------------------------------------------------------------- 4.7 a batch of preference pairs


def collate(pairs, pad_id):
    rows = [p["prompt"] + p["chosen"] for p in pairs] + [p["prompt"] + p["rejected"] for p in pairs]
    n_prompt = [len(p["prompt"]) for p in pairs] * 2
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    att = torch.zeros(len(rows), T, dtype=torch.long)
    ans = torch.zeros(len(rows), T, dtype=torch.long)
    for i, (row, n) in enumerate(zip(rows, n_prompt)):
        ids[i, : len(row)] = torch.tensor(row)
        att[i, : len(row)] = 1
        ans[i, n : len(row)] = 1
    return ids, att, ans


def collate_interleaved(pairs, pad_id):  # chosen 0, rejected 0, chosen 1, ...
    ids, att, ans = collate(pairs, pad_id)
    B = len(pairs)
    order = [i for b in range(B) for i in (b, b + B)]
    return ids[order], att[order], ans[order]


def collate_mask_from_pad_id(pairs, pad_id):  # a real token equal to pad_id is taken for padding
    ids, _, ans = collate(pairs, pad_id)
    return ids, (ids != pad_id).long(), ans


def collate_answer_mask_with_prompt(pairs, pad_id):  # answer mask covers the prompt too
    ids, att, _ = collate(pairs, pad_id)
    return ids, att, att.clone()


def collate_left_padded(pairs, pad_id):
    ids, att, ans = collate(pairs, pad_id)
    shift = (att == 0).sum(1)
    return tuple(torch.stack([t[i].roll(int(shift[i])) for i in range(len(t))]) for t in (ids, att, ans))


def collate_with_library(pairs, pad_id):
    b = preference_collate(pairs, pad_id)
    return b["input_ids"], b["attention_mask"], b["answer_mask"]


# ---------------------------------------------------------------- 4.7 win rate and its interval


def win_rate_interval(new, old, seed):
    wins = np.array([1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new, old)])
    rng = np.random.default_rng(seed)
    means = wins[rng.integers(0, len(wins), size=(2000, len(wins)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return wins.mean(), lo, hi


def win_rate_ties_lost(new, old, seed):  # a tie counts as a loss
    wins = np.array([1.0 if n > o else 0.0 for n, o in zip(new, old)])
    rng = np.random.default_rng(seed)
    means = wins[rng.integers(0, len(wins), size=(2000, len(wins)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return wins.mean(), lo, hi


def win_rate_90_interval(new, old, seed):  # the middle 90%, not 95%
    wins = np.array([1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new, old)])
    rng = np.random.default_rng(seed)
    means = wins[rng.integers(0, len(wins), size=(2000, len(wins)))].mean(1)
    lo, hi = np.quantile(means, [0.05, 0.95])
    return wins.mean(), lo, hi


def win_rate_normal_interval(new, old, seed):  # mean +- 1.96 standard errors
    wins = np.array([1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new, old)])
    se = wins.std(ddof=1) / np.sqrt(len(wins))
    return wins.mean(), wins.mean() - 1.96 * se, wins.mean() + 1.96 * se


def win_rate_without_replacement(new, old, seed):  # permutations: every resample has the same mean
    wins = np.array([1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new, old)])
    rng = np.random.default_rng(seed)
    means = np.array([wins[rng.permutation(len(wins))].mean() for _ in range(2000)])
    lo, hi = np.quantile(means, [0.025, 0.975])
    return wins.mean(), lo, hi


def win_rate_with_library(new, old, seed):
    wins = [1.0 if n > o else 0.5 if n == o else 0.0 for n, o in zip(new, old)]
    return float(np.mean(wins)), *bootstrap_interval(wins, seed=seed)


RIGHT = [
    (ex.check_llama_parameters, llama_parameters),
    (ex.check_sft_loss, sft_loss),
    (ex.check_merge_lora_weight, merge),
    (ex.check_collate_pairs, collate),
    (ex.check_win_rate_interval, win_rate_interval),
]

WRONG = [
    (ex.check_llama_parameters, llama_parameters_no_gqa, "case 1 of 5 \\(SmolLM2"),
    (ex.check_llama_parameters, llama_parameters_two_mlp_matrices, "case 1 of"),
    (ex.check_llama_parameters, llama_parameters_untied_always, "case 1 of"),
    (ex.check_llama_parameters, llama_parameters_no_final_norm, "case 1 of"),
    (ex.check_llama_parameters, llama_parameters_from_library, "uses the library"),
    (ex.check_sft_loss, sft_loss_over_all_positions, "prompts of different lengths"),
    (ex.check_sft_loss, sft_loss_row_by_row, "prompts of different lengths"),
    (ex.check_sft_loss, sft_loss_shifted_again, "nothing masked"),
    (ex.check_sft_loss, sft_loss_mask_ignored, "prompts of different lengths"),
    (ex.check_sft_loss, sft_loss_from_pytorch, "PyTorch's cross_entropy"),
    (ex.check_merge_lora_weight, merge_no_scale, "case 1 of 5 \\(a wide layer"),
    (ex.check_merge_lora_weight, merge_alpha_only, "case 1 of"),
    (ex.check_merge_lora_weight, merge_inverse_scale, "case 1 of"),
    (ex.check_merge_lora_weight, merge_transposed, "case 1 of"),
    (ex.check_merge_lora_weight, merge_with_library, "uses the library \\(course_lib.lora.LoRALinear"),
    (ex.check_collate_pairs, collate_interleaved, "two pairs"),
    (ex.check_collate_pairs, collate_mask_from_pad_id, "pad id is also a real token"),
    (ex.check_collate_pairs, collate_answer_mask_with_prompt, "one pair"),
    (ex.check_collate_pairs, collate_left_padded, "one pair"),
    (ex.check_collate_pairs, collate_with_library, "uses the library"),
    (ex.check_win_rate_interval, win_rate_ties_lost, "some ties"),
    (ex.check_win_rate_interval, win_rate_90_interval, "some ties"),
    (ex.check_win_rate_interval, win_rate_normal_interval, "some ties"),
    (ex.check_win_rate_interval, win_rate_without_replacement, "some ties"),
    (ex.check_win_rate_interval, win_rate_with_library, "uses the library"),
]
MUTANTS = WRONG  # listed by tests/test_exercise_audit.py


@pytest.mark.parametrize("check, right", RIGHT)
def test_right_answers_pass(check, right, capsys):
    check(right)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, case", WRONG)
def test_usual_mistakes_fail_and_name_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


@pytest.mark.parametrize("check", [c for c, _ in RIGHT])
def test_an_unwritten_exercise_says_so(check):
    def blank(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)
