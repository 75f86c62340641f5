"""Self-checks for chapter 4: pooling, a LoRA linear layer, classifier metrics, data splits, n-grams,
bootstrap intervals, prompt masking, ROUGE-L and the masked language-model loss.

The references are :func:`course_lib.heads.last_token_pool` and :func:`~course_lib.heads.mean_pool`,
:class:`course_lib.lora.LoRALinear`, :mod:`course_lib.metrics` (itself tested against scikit-learn),
:func:`course_lib.datasets.stratified_split`'s guarantees, scikit-learn's character analyzer,
:func:`course_lib.lm_data.prompt_completion_example` and PyTorch's ``F.cross_entropy``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from course_lib.chat_template import render_chat
from course_lib.exercises import Case, ExerciseFailure, check_function, require_own_code
from course_lib.heads import last_token_pool, mean_pool
from course_lib.lm_data import IGNORE_INDEX, prompt_completion_example
from course_lib.lora import LoRALinear
from course_lib.metrics import bootstrap_interval, confusion_matrix, precision_recall_f1, rouge_l
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
    require_own_code(fn, "last_token_pool")
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
    require_own_code(cls, "the LoRA layer", packages=("peft",))
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
    require_own_code(fn, "macro_f1", forbidden=("f1_score",), packages=("sklearn",))
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
    require_own_code(fn, "mask_prompt")
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
    require_own_code(fn, "to_chatml", forbidden=("apply_chat_template",), packages=("jinja2",))
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
    require_own_code(fn, "answer_logprobs")
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
        hint="the token at position t is predicted by the logits at t - 1, so drop the last position of the "
        "logits and the first of the ids and of the mask; normalise over the vocabulary (log-softmax), pick "
        "each next token's entry, keep the answer positions and sum over time",
    )


def check_sft_labels(fn) -> None:
    """``fn(prompt_ids, answer_ids, end_id) -> (input_ids, labels)``, labels shifted for course_lib's GPT."""
    require_own_code(fn, "sft_labels")
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
    require_own_code(fn, "dpo_loss", packages=("trl",))
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
        hint="for each answer take the policy's log-probability minus the reference's; the margin is the "
        "chosen answer's difference minus the rejected one's, times beta; the loss is minus the log of the "
        "sigmoid of the margin, averaged over the batch (use the log-sigmoid function: it stays finite)",
    )


# ------------------------------------------------------------------------- not calling a ready-made answer


# ----------------------------------------------------------------------------- mean pooling


def check_mean_pool(fn) -> None:
    """``fn(hidden (B, T, d), attention_mask (B, T)) -> (B, d)``: the mean of each row's real tokens."""
    require_own_code(fn, "mean pooling", forbidden=("mean_pool",))
    cases = [
        _pool_case("no padding", [5, 5], 5, 3, 10),
        _pool_case("right padding, different lengths", [4, 1, 6, 2], 6, 4, 11),
        _pool_case("left padding", [2, 5, 3], 5, 2, 12),
        _pool_case("one real token per row", [1, 1], 4, 3, 13),
        _pool_case("a batch of one, long padding", [3], 12, 8, 14),
    ]
    check_function(
        "mean_pool",
        fn,
        mean_pool,
        cases,
        atol=1e-6,
        rtol=1e-5,
        hint="padding must not count: multiply the hidden states by the mask (give it a last axis of size 1 "
        "so it broadcasts over d), sum over the token axis, and divide by the number of real tokens in "
        "that row, not by T",
    )


# ----------------------------------------------------------------------------- a confusion matrix


def _reference_confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def check_confusion_counts(fn) -> None:
    """``fn(y_true, y_pred, n_classes) -> (C, C)``: counts, row = true class, column = predicted class."""
    require_own_code(fn, "the confusion matrix", forbidden=("confusion_matrix", "crosstab"))
    rng = np.random.default_rng(1)
    y5 = rng.integers(0, 5, 60)
    p5 = np.where(rng.random(60) < 0.6, y5, rng.integers(0, 5, 60))
    cases = [
        Case("binary, as lists", ([0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0], 2)),
        Case("five classes, mistakes in every direction", (y5, p5, 5)),
        Case("a class that is never predicted", (np.array([0, 1, 2, 2, 1]), np.array([0, 0, 2, 2, 0]), 3)),
        Case("a class absent from both (its row and column are zeros)", ([0, 2, 2, 0], [0, 2, 0, 0], 4)),
        Case("one article", ([3], [1], 5)),
    ]
    check_function(
        "confusion_counts",
        fn,
        _reference_confusion,
        cases,
        atol=0,
        rtol=0,
        hint="start from an n_classes x n_classes array of zeros (n_classes, not the largest label seen) and "
        "add 1 at [true class, predicted class] for every article: rows are the true classes",
    )


# ----------------------------------------------------------------------------- a stratified split


def _split_failure(where: str, why: str) -> ExerciseFailure:
    return ExerciseFailure(
        f"{where}: {why}\n  hint: shuffle each class's indices on its own, with a generator made from the "
        "seed, cut each at the cumulative fractions x its size (rounded), and give the three parts in order "
        "(train, validation, test)"
    )


def _read_split(result, where: str, n: int) -> list[np.ndarray]:
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise _split_failure(
            where, f"expected three index arrays (train, val, test), got {_summary_of(result)}"
        )
    parts = []
    for name, part in zip(("train", "validation", "test"), result):
        arr = np.asarray(part)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise _split_failure(
                where, f"the {name} part must be a 1-D array of integer indices, got {arr!r}"
            )
        parts.append(arr.astype(np.int64))
    everything = np.concatenate(parts)
    if len(everything) != len(np.unique(everything)):
        raise _split_failure(where, "an index appears twice: the parts overlap (look at where each cut ends)")
    if len(everything) != n or (n and (everything.min() < 0 or everything.max() >= n)):
        raise _split_failure(
            where,
            f"the parts hold {len(everything)} indices; every one of 0..{n - 1} must be "
            "in exactly one part (did the last cut drop the end of a class?)",
        )
    return parts


def _summary_of(x) -> str:
    text = repr(x)
    return text if len(text) < 120 else text[:120] + "..."


def check_stratified_split(fn) -> None:
    """``fn(labels, fractions, seed) -> (train, val, test)`` index arrays that partition the items and keep
    each class's count in each part within one item of ``fraction * class size``, as
    :func:`course_lib.datasets.stratified_split` guarantees; fixed by the seed, and shuffled."""
    require_own_code(
        fn,
        "the stratified split",
        forbidden=("train_test_split", "StratifiedShuffleSplit", "StratifiedKFold"),
    )
    rng = np.random.default_rng(2)
    cases = [
        ("balanced, 0.8/0.1/0.1", [0, 1] * 50, (0.8, 0.1, 0.1)),
        ("ordered by class, skewed 900 to 100", [0] * 900 + [1] * 100, (0.8, 0.1, 0.1)),
        (
            "three classes, shuffled, 0.6/0.2/0.2",
            rng.choice(3, 1000, p=[0.5, 0.3, 0.2]).tolist(),
            (0.6, 0.2, 0.2),
        ),
        ("a class of 3 items", [0] * 40 + [1] * 3, (0.5, 0.25, 0.25)),
    ]
    for i, (label, labels, fractions) in enumerate(cases, start=1):
        where = f"stratified_split, case {i} of {len(cases) + 1} ({label})"
        classes = np.array(labels)
        try:
            first = fn(list(labels), fractions, 0)
            again = fn(list(labels), fractions, 0)
        except NotImplementedError:
            raise ExerciseFailure(
                "stratified_split is not written yet: replace `raise NotImplementedError()` "
                "with your code, then run this check again"
            ) from None
        except Exception as err:  # the learner's code raised: feedback, not a crash
            raise ExerciseFailure(f"{where}: your function raised {type(err).__name__}: {err}") from None
        parts = _read_split(first, where, len(classes))
        for name, part, fraction in zip(("train", "validation", "test"), parts, fractions):
            for c in np.unique(classes):
                size, got = int((classes == c).sum()), int((classes[part] == c).sum())
                if abs(got - fraction * size) > 1:
                    raise _split_failure(
                        where,
                        f"class {c} has {size} items, so the {name} part should hold "
                        f"about {fraction * size:g} of them, but it holds {got}: the "
                        "split is not stratified",
                    )
        if any(
            not np.array_equal(np.sort(a), np.sort(b))
            for a, b in zip(parts, _read_split(again, where, len(classes)))
        ):
            raise _split_failure(
                where,
                "two calls with the same seed gave different splits: draw the "
                "permutations from a generator made from the seed",
            )
    where = f"stratified_split, case {len(cases) + 1} of {len(cases) + 1} (seeds 0 and 1)"
    labels = [0] * 500 + [1] * 500
    try:
        a, b = (_read_split(fn(labels, (0.8, 0.1, 0.1), s), where, 1000)[2] for s in (0, 1))
    except ExerciseFailure:
        raise
    except Exception as err:
        raise ExerciseFailure(f"{where}: your function raised {type(err).__name__}: {err}") from None
    if np.array_equal(np.sort(a), np.sort(b)) or np.array_equal(np.sort(a), np.r_[400:450, 900:950]):
        raise _split_failure(
            where,
            "the test part does not change with the seed, or is simply the end of each "
            "class: shuffle each class before cutting it",
        )
    print(f"✓ stratified_split: all {len(cases) + 1} cases pass")


# ----------------------------------------------------------------------------- character n-grams


def _reference_char_ngrams(text: str, n_min: int, n_max: int) -> list[str]:
    from sklearn.feature_extraction.text import CountVectorizer

    analyzer = CountVectorizer(analyzer="char", ngram_range=(n_min, n_max), lowercase=False).build_analyzer()
    return sorted(analyzer(text))


def check_char_ngrams(fn) -> None:
    """``fn(text, n_min, n_max) -> list[str]``: every run of n_min..n_max characters, repeats included,
    as scikit-learn's ``analyzer="char"`` makes them (order does not matter)."""
    require_own_code(
        fn,
        "character n-grams",
        forbidden=("TfidfVectorizer", "CountVectorizer", "build_analyzer", "_char_ngrams"),
    )
    cases = [
        Case("很不错, 1 to 3", ("很不错", 1, 3)),
        Case("a review, 1 to 3", ("质量很好，物流也快，下次还会再来买。", 1, 3)),
        Case("repeated characters count every time, 2 to 2", ("好好好好", 2, 2)),
        Case("one character, 1 to 3", ("好", 1, 3)),
        Case("n-grams longer than the text are skipped, 2 to 4", ("不错啊", 2, 4)),
        Case("Latin letters, 3 to 3", ("not bad", 3, 3)),
    ]
    check_function(
        "char_ngrams",
        lambda text, n_min, n_max: _sorted_strings(fn(text, n_min, n_max)),
        _reference_char_ngrams,
        cases,
        hint="for every length n from n_min to n_max included, take the slice of n characters starting at "
        "each position where one fits, the last start being len(text) - n; keep repeats",
    )


def _sorted_strings(result):
    return sorted(result) if isinstance(result, (list, tuple)) else result


# ----------------------------------------------------------------------------- a paired bootstrap


def _reference_paired_bootstrap(correct_a, correct_b, confidence=0.95, n_resamples=2000, seed=0):
    diff = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    return bootstrap_interval(diff, confidence=confidence, n_resamples=n_resamples, seed=seed)


def check_paired_bootstrap(fn) -> None:
    """``fn(correct_a, correct_b, confidence, n_resamples, seed) -> (lo, hi)``: a percentile bootstrap
    interval of accuracy(a) - accuracy(b) on the same items, drawn as
    :func:`course_lib.metrics.bootstrap_interval` draws."""
    require_own_code(fn, "the paired bootstrap")
    rng = np.random.default_rng(3)
    a200 = (rng.random(200) < 0.8).astype(int)
    b200 = np.where(rng.random(200) < 0.85, a200, 1 - a200)
    a50, b50 = (rng.random(50) < 0.7).astype(int), (rng.random(50) < 0.6).astype(int)
    cases = [
        Case("200 items, correlated models", (a200, b200, 0.95, 2000, 0)),
        Case("the same model twice (every difference is 0)", (a200, a200.copy(), 0.95, 500, 1)),
        Case("50 items, 90% confidence", (a50, b50, 0.9, 1000, 2)),
        Case("as plain lists, 99% confidence", (a50.tolist(), b50.tolist(), 0.99, 3000, 3)),
    ]
    check_function(
        "paired_bootstrap",
        fn,
        _reference_paired_bootstrap,
        cases,
        atol=1e-12,
        rtol=1e-9,
        hint="resample the items, not each model on its own: take the per-item differences a - b; draw the "
        "indices of all resamples in one call to rng.integers, shape (n_resamples, n), as the text says; "
        "average each resample and take the quantiles that leave half of 1 - confidence out on each side",
    )


# ----------------------------------------------------------------------------- ROUGE-L


def check_rouge_l(fn) -> None:
    """``fn(candidate, reference) -> float``: ROUGE-L F1 over :func:`course_lib.metrics.rouge_tokens`."""
    require_own_code(
        fn,
        "ROUGE-L",
        allowed=("rouge_tokens",),
        forbidden=("longest_common_subsequence", "rouge_scorer", "RougeScorer"),
    )
    cases = [
        Case("the same headline", ("Oil prices hit record high", "Oil prices hit record high")),
        Case("no word in common", ("Blair wins vote", "Oil prices rise")),
        Case("the same words in another order", ("record high hit oil prices", "Oil prices hit record high")),
        Case(
            "shared words with gaps between them",
            ("Oil firm prices climb to a record", "Oil prices hit a record high"),
        ),
        Case("a repeated word", ("the the the cup", "the cup final of the year")),
        Case("case and punctuation do not count", ("UK's GDP: up 2%", "uk s gdp up 2 in march")),
        Case("an empty candidate", ("", "Oil prices rise")),
    ]
    check_function(
        "rouge_l",
        fn,
        rouge_l,
        cases,
        atol=1e-9,
        rtol=1e-9,
        hint="split both texts with rouge_tokens; the LCS is the longest common subsequence (in order, gaps "
        "allowed), found with a table where cell (i, j) is the LCS of the first i and first j words; "
        "precision = LCS / candidate words, recall = LCS / reference words, F1 their harmonic mean, 0 when "
        "the LCS is 0",
    )


# ----------------------------------------------------------------------------- the masked LM loss


def _lm_loss_case(
    label: str, B: int, T: int, V: int, masked: list[int], seed: int, dtype=torch.float32
) -> Case:
    """``masked[b]`` leading positions of row b carry IGNORE_INDEX (the prompt), the rest real targets."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g) * 2).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    for b, n in enumerate(masked):
        labels[b, :n] = IGNORE_INDEX
    return Case(label, (logits, labels))


def _reference_masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
    )


def check_masked_lm_loss(fn) -> None:
    """``fn(logits (B, T, V), labels (B, T)) -> scalar``: mean cross-entropy over the labels that are not
    IGNORE_INDEX, as ``F.cross_entropy(..., ignore_index=-100)`` computes it."""
    require_own_code(
        fn, "the masked loss", forbidden=("cross_entropy", "nll_loss", "CrossEntropyLoss", "NLLLoss")
    )
    cases = [
        _lm_loss_case("no position masked", 2, 5, 7, [0, 0], 0),
        _lm_loss_case("the prompt masked in one row", 1, 8, 11, [5], 1),
        _lm_loss_case("prompts of different lengths", 3, 9, 6, [2, 7, 4], 2),
        _lm_loss_case("a row that is all prompt (or padding)", 3, 6, 5, [6, 1, 3], 3),
        _lm_loss_case("float64 logits", 2, 4, 9, [1, 2], 4, dtype=torch.float64),
    ]
    check_function(
        "masked_lm_loss",
        fn,
        _reference_masked_lm_loss,
        cases,
        atol=1e-5,
        rtol=1e-5,
        hint="take log_softmax over the vocabulary, pick the log-probability of each label where the label "
        "is not -100 (replace -100 by any valid index before gather, then mask those positions out), and "
        "average over the kept positions of the whole batch, not over every position nor row by row",
    )


__all__ = [
    "check_answer_logprobs",
    "check_char_ngrams",
    "check_confusion_counts",
    "check_masked_lm_loss",
    "check_mean_pool",
    "check_paired_bootstrap",
    "check_rouge_l",
    "check_stratified_split",
    "check_dpo_loss",
    "check_last_token_pool",
    "check_lora_linear",
    "check_macro_f1",
    "check_mask_prompt",
    "check_sft_labels",
    "check_to_chatml",
]
