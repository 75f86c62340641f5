"""Self-checks for chapter 4: last-token pooling, a LoRA linear layer, macro-F1, prompt masking.

The references are :func:`course_lib.heads.last_token_pool`, :class:`course_lib.lora.LoRALinear`,
:func:`course_lib.metrics.precision_recall_f1` (itself tested against scikit-learn) and
:func:`course_lib.lm_data.prompt_completion_example`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from course_lib.chat_template import render_chat
from course_lib.exercises import Case, ExerciseFailure, check_function
from course_lib.heads import last_token_pool
from course_lib.lm_data import prompt_completion_example
from course_lib.lora import LoRALinear
from course_lib.metrics import precision_recall_f1
from course_lib.preference import dpo_loss

# ----------------------------------------------------------------------------- last-token pooling


def _pool_case(label: str, lengths: list[int], T: int, d: int, seed: int, left: bool = False) -> Case:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(len(lengths), T, d, generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        if left:
            mask[b, T - n :] = 1
        else:
            mask[b, :n] = 1
    return Case(label, (hidden, mask))


def check_last_token_pool(fn) -> None:
    """``fn(hidden (B, T, d), attention_mask (B, T)) -> (B, d)``: the hidden state of each last real token."""
    cases = [
        _pool_case("no padding", [6, 6], 6, 4, 0),
        _pool_case("right padding, different lengths", [5, 2, 7, 1], 7, 3, 1),
        _pool_case("one token each", [1, 1, 1], 5, 2, 2),
        _pool_case("left padding (the last real token is the last column)", [3, 5], 5, 4, 3, left=True),
        _pool_case("a batch of one", [4], 9, 8, 4),
    ]
    check_function(
        "last_token_pool",
        fn,
        last_token_pool,
        cases,
        atol=0,
        rtol=0,
        hint="the last real token of row b is at the largest index t with attention_mask[b, t] == 1; with "
        "right padding that is mask.sum(1) - 1, but find it in a way that also works for left padding "
        "(e.g. argmax over t of t * mask[b, t]); then gather hidden[b, t_b]",
    )


# ----------------------------------------------------------------------------- a LoRA linear layer


def check_lora_linear(cls) -> None:
    """``cls(base: nn.Linear, r, alpha)``: frozen base + trainable ``lora_A`` (r, in), ``lora_B`` (out, r).

    Checked: B starts at zero (so the output equals the base's), the parameter shapes and which train,
    and, with A and B set to the same random values as :class:`course_lib.lora.LoRALinear`, the output
    ``base(x) + (alpha / r) * x A^T B^T`` and the gradients of A and B.
    """
    for i, (n_in, n_out, r, alpha) in enumerate([(8, 6, 2, 4.0), (16, 16, 4, 4.0), (5, 3, 1, 16.0)], 1):
        where = f"LoRA layer, case {i} of 3 (in={n_in}, out={n_out}, r={r}, alpha={alpha})"
        try:
            _check_one_lora(cls, where, i, n_in, n_out, r, alpha)
        except NotImplementedError:
            raise ExerciseFailure("the LoRA layer is not written yet: fill in __init__ and forward") from None
        except ExerciseFailure:
            raise
        except Exception as err:  # the learner's code raised: feedback, not a crash
            raise ExerciseFailure(f"{where}: your layer raised {type(err).__name__}: {err}") from None
    print("✓ LoRA linear layer: all 3 cases pass")


def _check_one_lora(cls, where: str, seed: int, n_in: int, n_out: int, r: int, alpha: float) -> None:
    torch.manual_seed(seed)
    base = nn.Linear(n_in, n_out)
    mine = cls(_copy_linear(base), r=r, alpha=alpha)
    if not isinstance(mine, nn.Module):
        raise ExerciseFailure(f"{where}: calling the class gave {type(mine).__name__}, not an nn.Module")
    ref = LoRALinear(_copy_linear(base), r=r, alpha=alpha)
    x = torch.randn(3, 2, n_in)
    with torch.no_grad():
        if not torch.allclose(mine(x), base(x), atol=1e-6):
            raise ExerciseFailure(f"{where}: a new layer must give exactly base(x): start B at zero")
    for name, shape in (("lora_A", (r, n_in)), ("lora_B", (n_out, r))):
        p = getattr(mine, name, None)
        if not isinstance(p, nn.Parameter) or tuple(p.shape) != shape:
            raise ExerciseFailure(f"{where}: {name} must be an nn.Parameter of shape {shape}")
        if not p.requires_grad:
            raise ExerciseFailure(f"{where}: {name} must be trainable")
    frozen = [n for n, p in mine.named_parameters() if p.requires_grad and not n.startswith("lora_")]
    if frozen:
        raise ExerciseFailure(f"{where}: the base layer must be frozen, but {frozen} would train")
    g = torch.Generator().manual_seed(10 + seed)
    a, b = torch.randn(r, n_in, generator=g), torch.randn(n_out, r, generator=g)
    outs = []
    for layer in (mine, ref):
        with torch.no_grad():
            layer.lora_A.copy_(a)
            layer.lora_B.copy_(b)
        y = layer(x)
        (y * torch.linspace(-1, 1, n_out)).sum().backward()
        outs.append((y.detach(), layer.lora_A.grad.clone(), layer.lora_B.grad.clone()))
    for what, got, expected in zip(("output", "gradient of lora_A", "gradient of lora_B"), *outs):
        if not torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
            raise ExerciseFailure(
                f"{where}: the {what} differs from course_lib's (largest difference "
                f"{(got - expected).abs().max().item():.3g}); the update is (alpha / r) * B @ A"
            )


def _copy_linear(base: nn.Linear) -> nn.Linear:
    layer = nn.Linear(base.in_features, base.out_features)
    layer.load_state_dict(base.state_dict())
    return layer


# ----------------------------------------------------------------------------- macro-F1


def _reference_macro_f1(cm: np.ndarray) -> float:
    cm = np.asarray(cm)
    y_true = np.repeat(np.arange(len(cm)), cm.sum(1))
    y_pred = np.concatenate([np.repeat(np.arange(len(cm)), row) for row in cm])
    return precision_recall_f1(y_true, y_pred, labels=list(range(len(cm))), average="macro")["f1"]


def check_macro_f1(fn) -> None:
    """``fn(cm) -> float``: macro-F1 from a confusion matrix (rows = true class, columns = predicted)."""
    rng = np.random.default_rng(0)
    cases = [
        Case("perfect", (np.diag([5, 3, 7]),)),
        Case("binary", (np.array([[50, 10], [5, 35]]),)),
        Case("five classes", (rng.integers(0, 20, (5, 5)) + np.diag(rng.integers(30, 60, 5)),)),
        Case("a class that is never predicted", (np.array([[4, 0, 1], [2, 0, 1], [0, 0, 6]]),)),
        Case("a class with no examples", (np.array([[4, 1, 0], [0, 0, 0], [1, 2, 5]]),)),
        Case("a class never seen nor predicted (F1 0/0 = 0)", (np.array([[4, 0, 1], [0, 0, 0], [1, 0, 5]]),)),
    ]
    check_function(
        "macro_f1",
        fn,
        _reference_macro_f1,
        cases,
        atol=1e-12,
        rtol=1e-9,
        hint="per class c: TP = cm[c, c], FP = column sum - TP, FN = row sum - TP, F1 = 2TP / (2TP + FP + "
        "FN), and 0 when that is 0/0; macro-F1 is the plain mean over all classes",
    )


# ----------------------------------------------------------------------------- prompt masking


def check_mask_prompt(fn) -> None:
    """``fn(prompt_ids, completion_ids, eos_id) -> (input_ids, labels)``, labels aligned with input_ids."""
    cases = [
        Case("short", ([5, 6, 7], [8, 9], 0)),
        Case("one-token completion", ([1, 2, 3, 4], [10], 99)),
        Case("one-token prompt", ([3], [4, 5, 6, 7], 2)),
        Case("repeated ids", ([7, 7, 7], [7, 7], 7)),
    ]
    check_function(
        "mask_prompt",
        fn,
        lambda p, c, e: prompt_completion_example(p, c, e),
        cases,
        atol=0,
        rtol=0,
        hint="input_ids = prompt + completion + [eos]; labels = the same list with every prompt position "
        "replaced by -100 (IGNORE_INDEX), so the completion and the eos keep their own ids",
    )


# ----------------------------------------------------------------------------- post-training a chat model


def check_to_chatml(fn) -> None:
    """``fn(messages) -> str``: ChatML without a default system prompt, ending with the assistant opener."""
    cases = [
        Case("one user message", ([{"role": "user", "content": "Hi!"}],)),
        Case(
            "system then user",
            ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],),
        ),
        Case(
            "a multi-turn chat",
            (
                [
                    {"role": "user", "content": "Name a colour."},
                    {"role": "assistant", "content": "Blue."},
                    {"role": "user", "content": "Another one,\nplease."},
                ],
            ),
        ),
    ]
    check_function(
        "to_chatml",
        fn,
        lambda m: render_chat(m, system_prompt=None),
        cases,
        hint="each message is <|im_start|> + role + a newline + content + <|im_end|> + a newline; after the "
        "last message comes <|im_start|>assistant and a newline, so that the model writes the answer",
    )


def _logprob_case(label: str, B: int, T: int, V: int, starts: list[int], ends: list[int], seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 3
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, (s, e) in enumerate(zip(starts, ends)):
        mask[b, s:e] = 1
    return Case(label, (logits, ids, mask))


def _answer_logprobs_reference(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * mask[:, 1:]).sum(-1)


def check_answer_logprobs(fn) -> None:
    """``fn(logits (B, T, V), input_ids (B, T), answer_mask (B, T)) -> (B,)``: summed answer log-probs."""
    cases = [
        _logprob_case("one answer token at the end", 1, 5, 7, [4], [5], 0),
        _logprob_case("answers of different lengths", 3, 8, 11, [3, 5, 2], [8, 7, 6], 1),
        _logprob_case("answer followed by padding", 2, 9, 6, [4, 6], [6, 8], 2),
    ]
    check_function(
        "answer_logprobs",
        fn,
        _answer_logprobs_reference,
        cases,
        atol=1e-5,
        rtol=1e-5,
        hint="the token at position t is predicted by the logits at t - 1: take log_softmax over the "
        "vocabulary of logits[:, :-1], pick the entry of input_ids[:, 1:], keep it where answer_mask[:, 1:] "
        "is 1, and sum over t",
    )


def check_sft_labels(fn) -> None:
    """``fn(prompt_ids, answer_ids, end_id) -> (input_ids, labels)``, labels shifted for course_lib's GPT."""
    cases = [
        Case("short", ([5, 6, 7], [8, 9], 2)),
        Case("one-token answer", ([1, 2, 3, 4], [10], 99)),
        Case("one-token prompt", ([3], [4, 5, 6, 7], 2)),
        Case("repeated ids", ([7, 7, 7], [7, 7], 7)),
    ]
    check_function(
        "sft_labels",
        fn,
        lambda p, a, e: prompt_completion_example(p, a, e, shift=True),
        cases,
        atol=0,
        rtol=0,
        hint="join prompt + answer + [end]; labels[t] is the token that follows input_ids[t], so input_ids "
        "drops the last token and labels drop the first; a label is -100 when the token it names is in the "
        "prompt",
    )


def check_dpo_loss(fn) -> None:
    """``fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> scalar``: the mean DPO loss."""
    g = torch.Generator().manual_seed(0)

    def four(B: int, scale: float) -> tuple[torch.Tensor, ...]:
        return tuple(-torch.rand(B, generator=g, dtype=torch.float64) * scale for _ in range(4))

    cases = [
        Case(
            "policy equals reference (loss log 2)",
            (*(torch.tensor([-5.0, -9.0], dtype=torch.float64),) * 4, 0.1),
        ),
        Case("a batch of 4, beta 0.1", (*four(4, 20.0), 0.1)),
        Case("a batch of 3, beta 0.5", (*four(3, 10.0), 0.5)),
        Case(
            "a large negative margin (log of sigmoid underflows; use F.logsigmoid)",
            (
                torch.tensor([-200.0, -3.0]),
                torch.tensor([-10.0, -4.0]),
                torch.tensor([-10.0, -3.5]),
                torch.tensor([-200.0, -4.5]),
                1.0,
            ),
        ),
    ]
    check_function(
        "dpo_loss",
        fn,
        lambda pc, pr, rc, rr, beta: dpo_loss(pc, pr, rc, rr, beta=beta).loss,
        cases,
        atol=1e-6,
        rtol=1e-6,
        hint="margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)); the loss "
        "is -logsigmoid(margin) averaged over the batch (F.logsigmoid stays finite for large margins)",
    )


__all__ = [
    "check_answer_logprobs",
    "check_dpo_loss",
    "check_last_token_pool",
    "check_lora_linear",
    "check_macro_f1",
    "check_mask_prompt",
    "check_sft_labels",
    "check_to_chatml",
]
