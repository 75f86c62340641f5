"""Self-checks for chapter 3: gradients by hand, an AdamW step, the learning-rate schedule, LM batches.

Each reference is an independent implementation: autograd for the gradients, ``torch.optim.AdamW`` for
the optimizer step, :func:`course_lib.trainer.lr_at` for the schedule and
:func:`course_lib.lm_data.get_batch` for the batch sampler.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.exercises import Case, ExerciseFailure, check_function, require_own_code
from course_lib.lm_data import get_batch
from course_lib.trainer import TrainConfig, lr_at

# ----------------------------------------------------------------------------- logistic regression


def _logistic_case(
    label: str, n: int, d: int, seed: int, scale: float = 1.0, y_value: int | None = None
) -> Case:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * scale
    y = rng.integers(0, 2, size=n).astype(np.float64) if y_value is None else np.full(n, float(y_value))
    w = rng.normal(size=d)
    b = float(rng.normal())
    return Case(label, (X, y, w, b))


def _reference_logistic_gradient(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float):
    """Autograd of the mean binary cross-entropy with logits, in float64."""
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    z = torch.from_numpy(X) @ wt + bt
    F.binary_cross_entropy_with_logits(z, torch.from_numpy(y)).backward()
    return wt.grad.numpy(), float(bt.grad)


def check_logistic_gradient(fn) -> None:
    """``fn(X, y, w, b) -> (grad_w, grad_b)`` of the mean cross-entropy of sigmoid(X w + b)."""
    cases = [
        _logistic_case("8 examples, 3 features", 8, 3, 0),
        _logistic_case("one example", 1, 4, 1),
        _logistic_case("64 pixels, 50 images", 50, 64, 2),
        _logistic_case("all labels 1", 10, 2, 3, y_value=1),
        _logistic_case("large logits (|z| up to ~30)", 12, 3, 4, scale=10.0),
    ]
    check_function(
        "logistic_gradient",
        fn,
        _reference_logistic_gradient,
        cases,
        atol=1e-10,
        rtol=1e-8,
        hint="with p = sigmoid(X @ w + b): grad_w = X.T @ (p - y) / N and grad_b = mean(p - y); "
        "return grad_b as a float",
    )


# ----------------------------------------------------------------------------- a 2-layer MLP backward


def _mlp_case(label: str, batch: int, d_in: int, hidden: int, classes: int, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (batch,), generator=g)
    W1 = torch.randn(d_in, hidden, generator=g, dtype=torch.float64) / d_in**0.5
    b1 = torch.randn(hidden, generator=g, dtype=torch.float64) * 0.1
    W2 = torch.randn(hidden, classes, generator=g, dtype=torch.float64) / hidden**0.5
    b2 = torch.randn(classes, generator=g, dtype=torch.float64) * 0.1
    return Case(label, (x, y, W1, b1, W2, b2))


def _reference_two_layer_backward(x, y, W1, b1, W2, b2):
    params = [t.clone().requires_grad_(True) for t in (W1, b1, W2, b2)]
    W1, b1, W2, b2 = params
    logits = torch.relu(x @ W1 + b1) @ W2 + b2
    F.cross_entropy(logits, y).backward()
    return tuple(p.grad for p in params)


def check_two_layer_backward(fn) -> None:
    """``fn(x, y, W1, b1, W2, b2) -> (dW1, db1, dW2, db2)`` for a ReLU MLP with mean cross-entropy."""
    cases = [
        _mlp_case("batch 4, 3 -> 5 -> 2", 4, 3, 5, 2, 0),
        _mlp_case("one example", 1, 6, 4, 3, 1),
        _mlp_case("digits-sized: 64 -> 32 -> 10", 16, 64, 32, 10, 2),
        _mlp_case("wide hidden layer", 8, 5, 100, 4, 3),
    ]
    check_function(
        "two_layer_backward",
        fn,
        _reference_two_layer_backward,
        cases,
        atol=1e-10,
        rtol=1e-8,
        hint="dz2 = (softmax(logits) - onehot(y)) / B; dW2 = h.T @ dz2; db2 = dz2.sum(0); "
        "dh = dz2 @ W2.T; dz1 = dh * (z1 > 0); dW1 = x.T @ dz1; db1 = dz1.sum(0)",
    )


# ----------------------------------------------------------------------------- one AdamW step


def _adamw_case(label: str, shape: tuple[int, ...], step: int, lr: float, betas, eps, wd, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    param = torch.randn(shape, generator=g, dtype=torch.float64)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    if step == 1:
        m, v = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    else:
        m = torch.randn(shape, generator=g, dtype=torch.float64) * 0.1
        v = torch.rand(shape, generator=g, dtype=torch.float64) * 0.01
    return Case(label, (param, grad, m, v, step, lr, betas, eps, wd))


def _reference_adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay):
    """torch.optim.AdamW with its state set to (m, v) after ``step - 1`` steps."""
    p = param.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False)
    if step > 1:
        opt.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    p.grad = grad.clone()
    opt.step()
    state = opt.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"]


def check_adamw_step(fn) -> None:
    """``fn(param, grad, m, v, step, lr, betas, eps, weight_decay) -> (param, m, v)``, step counted from 1."""
    cases = [
        _adamw_case("the first step", (5,), 1, 1e-2, (0.9, 0.999), 1e-8, 0.01, 0),
        _adamw_case("step 10, a matrix", (3, 4), 10, 1e-3, (0.9, 0.95), 1e-8, 0.1, 1),
        _adamw_case("no weight decay (plain Adam)", (6,), 3, 3e-4, (0.9, 0.999), 1e-8, 0.0, 2),
        _adamw_case("strong decay, large eps", (2, 2), 100, 1e-1, (0.8, 0.9), 1e-3, 0.5, 3),
    ]
    check_function(
        "adamw_step",
        fn,
        _reference_adamw_step,
        cases,
        atol=1e-12,
        rtol=1e-10,
        hint="decay first: param * (1 - lr * wd); then m and v; divide m by 1 - b1**step and v by "
        "1 - b2**step; param - lr * m_hat / (sqrt(v_hat) + eps)",
    )


# ----------------------------------------------------------------------------- warmup + cosine


def _reference_lr(step: int, max_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    return lr_at(step, TrainConfig(max_steps=max_steps, warmup_steps=warmup_steps, lr=lr, min_lr=min_lr))


def check_warmup_cosine_lr(fn) -> None:
    """``fn(step, max_steps, warmup_steps, lr, min_lr) -> float``: the Trainer's schedule."""
    grid = [(s, 1000, 100, 1e-3, 1e-4) for s in (0, 1, 50, 99, 100, 101, 550, 999, 1000, 1200)]
    cases = [Case(f"step {s} of {m}, warmup {w}", (s, m, w, lr, lo)) for s, m, w, lr, lo in grid]
    cases += [
        Case("no warmup, first step", (0, 10, 0, 0.1, 0.0)),
        Case("no warmup, half way", (5, 10, 0, 0.1, 0.0)),
        Case("min_lr equal to lr", (7, 20, 5, 3e-4, 3e-4)),
        Case("warmup as long as training", (10, 10, 10, 1.0, 0.1)),
    ]
    check_function(
        "warmup_cosine_lr",
        fn,
        _reference_lr,
        cases,
        atol=1e-12,
        rtol=1e-9,
        hint="during warmup the rate grows linearly, reaching lr * W / (W + 1) at step W - 1; the cosine "
        "part goes from lr at step W to min_lr at step max_steps, with the progress (step - W) divided by "
        "max(1, max_steps - W); after max_steps it stays at min_lr",
    )


# ----------------------------------------------------------------------------- the LM batch sampler


def check_lm_batch(fn) -> None:
    """``fn(data, batch_size, block_size, generator) -> (x, y)``: random windows, y = x shifted by one."""

    def learner(data, batch_size, block_size, seed):
        return fn(data, batch_size, block_size, torch.Generator().manual_seed(seed))

    def reference(data, batch_size, block_size, seed):
        return get_batch(data, batch_size, block_size, torch.Generator().manual_seed(seed), device="cpu")

    stream = torch.arange(1000, 1100)  # distinct ids: any off-by-one shows
    cases = [
        Case("4 windows of 8", (stream, 4, 8, 0)),
        Case("one window", (stream, 1, 16, 1)),
        Case("windows of one token", (stream, 5, 1, 2)),
        Case("the stream is exactly one window long", (stream[:33], 3, 32, 3)),
        Case(
            "random token ids",
            (torch.randint(0, 50, (500,), generator=torch.Generator().manual_seed(4)), 8, 20, 4),
        ),
    ]
    check_function(
        "lm_batch",
        learner,
        reference,
        cases,
        atol=0,
        rtol=0,
        hint="draw all the start positions with one torch.randint call as the exercise text says (same "
        "bound, same shape, the generator passed in); each x row is block_size tokens from a start, its "
        "y row the same span moved one token to the right; stack the rows into int64 tensors",
    )


# ============================================================================= byte-level BPE (notebook 3.4)
# The references are course_lib.tokenizers (trained and applied by its own, faster code) and
# course_lib.metrics.tokenizer_compression; the learner's functions work on plain ids and dicts.

_BPE_TEXTS = [
    "The government announced new plans for the economy on Tuesday. The plans were welcomed by business.",
    "Shares in the firm rose by 5% after the announcement, the highest rise in the market this year.",
    "中国经济今年保持稳定增长，国内生产总值比上年增长百分之八。",
    "人民日报报道，全国人民代表大会在北京召开，代表们讨论了经济发展问题。",
    "Mr Brown said the economy was strong, and that the new plans would help the economy grow.",
]


def _bpe_words(texts: list[str]) -> dict[tuple[int, ...], int]:
    """Pre-tokens (GPT-2's pattern) as tuples of UTF-8 byte values, with how often each occurs."""
    import regex

    from course_lib.tokenizers import GPT2_SPLIT_PATTERN

    counts: dict[tuple[int, ...], int] = {}
    for text in texts:
        for word in regex.findall(GPT2_SPLIT_PATTERN, text):
            key = tuple(word.encode("utf-8"))
            counts[key] = counts.get(key, 0) + 1
    return counts


def _reference_count_pairs(words: dict[tuple[int, ...], int]) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for word, freq in words.items():
        for i in range(len(word) - 1):
            counts[word[i], word[i + 1]] = counts.get((word[i], word[i + 1]), 0) + freq
    return counts


def check_count_pairs(fn) -> None:
    """``fn(words) -> {(a, b): count}``: adjacent pairs inside each word, weighted by the word's count."""
    require_own_code(fn, "count_pairs")
    cases = [
        Case("one word", ({(1, 2, 3): 1},)),
        Case("pairs never cross from one word into the next", ({(1, 2): 1, (3, 4): 1},)),
        Case("a word seen 5 times counts its pairs 5 times", ({(1, 2, 3): 5, (2, 3): 2},)),
        Case("(7, 7, 7): the pair (7, 7) occurs twice", ({(7, 7, 7): 1},)),
        Case("one-byte words have no pairs", ({(65,): 9, (66, 67): 1},)),
        Case("the pre-tokens of five sentences (English and Chinese)", (_bpe_words(_BPE_TEXTS),)),
    ]
    check_function(
        "count_pairs",
        lambda words: dict(fn(words)),
        _reference_count_pairs,
        cases,
        hint="for each word and its count f, walk the positions i = 0 .. len(word) - 2 and add f to the "
        "pair (word[i], word[i + 1]); every occurrence counts, even of a repeated pair in one word",
    )


def check_merge(fn) -> None:
    """``fn(ids, pair, new_id) -> list``: every (a, b) in ``ids``, scanned left to right, becomes new_id."""
    from course_lib.tokenizers import _merge_pair

    require_own_code(fn, "merge")
    cases = [
        Case("one occurrence", ([1, 2, 3, 4], (2, 3), 256)),
        Case("two occurrences", ([1, 2, 1, 2, 5], (1, 2), 256)),
        Case("(7, 7) in 7 7 7: the left pair merges, the last 7 stays", ([7, 7, 7], (7, 7), 300)),
        Case("(7, 7) in 7 7 7 7 gives two new tokens", ([7, 7, 7, 7], (7, 7), 300)),
        Case("the pair at the very end", ([5, 6, 1, 2], (1, 2), 256)),
        Case("the pair is not there", ([1, 3, 2], (1, 2), 256)),
        Case("an empty list", ([], (1, 2), 256)),
        Case("a single id", ([1], (1, 2), 256)),
    ]
    check_function(
        "merge",
        lambda ids, pair, new_id: list(fn(list(ids), pair, new_id)),
        lambda ids, pair, new_id: _merge_pair(list(ids), pair[0], pair[1], new_id),
        cases,
        hint="walk i from the left: when ids[i], ids[i + 1] is the pair, append new_id and jump i by 2, "
        "otherwise append ids[i] and step by 1; mind the last position (i + 1 must exist)",
    )


def _lib_merges(texts: list[str], num_merges: int) -> dict[tuple[int, int], int]:
    """course_lib's BPE merges on ``texts`` as ``{(id_a, id_b): new_id}`` in learning order."""
    from course_lib.tokenizers import BPETokenizer

    tok = BPETokenizer.train(texts, 256 + num_merges + 1, show_progress=False)
    ids = {bytes([b]): b for b in range(256)}
    merges = {}
    for k, (left, right) in enumerate(tok.merges):
        if left + right in ids:  # course_lib reuses the id of a token made twice; the cases avoid it
            raise RuntimeError("these texts make one token by two different merges; choose other texts")
        merges[ids[left], ids[right]] = ids[left + right] = 256 + k
    return merges


def _show(pair: tuple[int, int], vocab: dict[int, bytes]) -> str:
    return "(" + ", ".join(repr(vocab.get(i, b"?")) for i in pair) + ")"


def _vocab_of(merges: dict[tuple[int, int], int]) -> dict[int, bytes]:
    vocab = {b: bytes([b]) for b in range(256)}
    for (a, b), new in merges.items():
        vocab[new] = vocab.get(a, b"?") + vocab.get(b, b"?")
    return vocab


def check_train_bpe(fn) -> None:
    """``fn(texts, num_merges) -> {(a, b): new_id}``: the same merges, in the same order, as course_lib.

    Tie rule (the same as :meth:`course_lib.tokenizers.BPETokenizer.train`): among the pairs with the
    highest count, merge the smallest pair, comparing (a, b) as a tuple of ids.
    """
    require_own_code(fn, "train_bpe")
    hint = (
        "count pairs over the pre-tokens (GPT-2's pattern), each weighted by how often the pre-token "
        "occurs; pick the pair with the highest count, and among equal counts the smallest (a, b) "
        "tuple, e.g. min(counts, key=lambda p: (-counts[p], p)); give it id 256 + k and merge it in "
        "every word before counting again"
    )
    cases = [
        ("English, 30 merges", _BPE_TEXTS[:2] + _BPE_TEXTS[4:], 30),
        ("Chinese, 20 merges", _BPE_TEXTS[2:4], 20),
        ("both, 60 merges", _BPE_TEXTS, 60),
        ("'aaaa' three times, 3 merges (merged ids merge again)", ["aaaa aaaa aaaa"], 3),
    ]
    for i, (label, texts, n) in enumerate(cases, 1):
        where = f"train_bpe, case {i} of {len(cases)} ({label})"
        try:
            got = fn(list(texts), n)
        except NotImplementedError:
            raise ExerciseFailure(f"train_bpe is not written yet. Hint: {hint}") from None
        except Exception as err:
            raise ExerciseFailure(f"{where}: your function raised {type(err).__name__}: {err}") from None
        expected = _lib_merges(list(texts), n)
        if not isinstance(got, dict):
            raise ExerciseFailure(f"{where}: return a dict {{(a, b): new_id}}, got {type(got).__name__}")
        got_list, exp_list = list(got.items()), list(expected.items())
        vocab = _vocab_of(expected)
        for k, (g, e) in enumerate(zip(got_list, exp_list)):
            if g != e:
                gvocab = _vocab_of(got)
                raise ExerciseFailure(
                    f"{where}: merge #{k} differs: you merged {_show(g[0], gvocab)} into id {g[1]}, "
                    f"expected {_show(e[0], vocab)} into id {e[1]}.\n  hint: {hint}"
                )
        if len(got_list) != len(exp_list):
            raise ExerciseFailure(f"{where}: {len(got_list)} merges instead of {len(exp_list)}")
    print(f"✓ train_bpe: all {len(cases)} cases pass (the same merges as course_lib, in the same order)")


def _reference_encode(text: str, merges: dict[tuple[int, int], int]) -> list[int]:
    from course_lib.tokenizers import BPETokenizer

    vocab = _vocab_of(merges)
    tok = BPETokenizer([(vocab[a], vocab[b]) for a, b in merges], special_tokens=())
    return tok.encode(text)


def check_bpe_encode(fn) -> None:
    """``fn(text, merges) -> ids``: pre-tokens, their bytes, then the lowest-ranked merge first."""
    require_own_code(fn, "encode")
    merges = _lib_merges(_BPE_TEXTS, 80)
    cases = [
        Case("a training sentence", (_BPE_TEXTS[0], merges)),
        Case(
            "'abc' where (b, c) was learned before (a, b): order decides",
            ("abc", {(98, 99): 256, (97, 98): 257, (97, 256): 258}),
        ),
        Case("unseen English", ("The economy of the firm announced its plans.", merges)),
        Case("Chinese", ("人民经济增长", merges)),
        Case("spaces, a newline and digits", ("the  plans\nrose 5% in 1998", merges)),
        Case("an empty string", ("", merges)),
        Case("no merges at all: plain UTF-8 bytes", ("plans 中", {})),
    ]
    check_function(
        "encode",
        lambda text, m: list(fn(text, dict(m))),
        _reference_encode,
        cases,
        hint="split the text with GPT-2's pattern; for each pre-token start from its UTF-8 bytes and "
        "repeat: among the adjacent pairs present, take the one learned earliest (smallest new id), "
        "merge it everywhere in the pre-token; stop when no pair present was learned",
    )


def check_bpe_decode(fn) -> None:
    """``fn(ids, vocab) -> str``: join the tokens' bytes, then decode UTF-8 once (invalid bytes -> U+FFFD)."""
    from course_lib.tokenizers import BPETokenizer

    require_own_code(fn, "decode")
    merges = _lib_merges(_BPE_TEXTS, 80)
    vocab = _vocab_of(merges)
    tok = BPETokenizer([(vocab[a], vocab[b]) for a, b in merges], special_tokens=())
    zh = tok.encode("中国经济增长")
    split_char = next(i for i in zh if len(vocab[i]) % 3)  # a token holding part of a character
    cases = [
        Case("English", (tok.encode(_BPE_TEXTS[0]), vocab)),
        Case("Chinese: characters split across tokens", (zh, vocab)),
        Case("one token that is only part of a Chinese character", ([split_char], vocab)),
        Case("a lone continuation byte 0x80", ([72, 105, 0x80], vocab)),
        Case("no ids", ([], vocab)),
    ]
    check_function(
        "decode",
        lambda ids, v: fn(list(ids), dict(v)),
        lambda ids, v: tok.decode(ids),
        cases,
        hint="b''.join(vocab[i] for i in ids) first, then .decode('utf-8', errors='replace') once: a "
        "character's bytes can lie in two tokens, and bytes that are not valid UTF-8 become '\\ufffd'",
    )


def check_compression(fn) -> None:
    """``fn(encode, texts) -> (bytes_per_token, tokens_per_char)``, ratios of totals over all texts."""
    from course_lib.metrics import tokenizer_compression

    require_own_code(fn, "compression")

    def reference(encode, texts):
        stats = tokenizer_compression(encode, texts)
        return (stats.bytes_per_token, stats.tokens_per_char)

    def as_bytes(text):
        return list(text.encode("utf-8"))

    def by_word(text):
        return text.split()

    cases = [
        Case("the 256-byte tokenizer on English", (as_bytes, ["plain English text"])),
        Case("the 256-byte tokenizer on Chinese (3 bytes per character)", (as_bytes, ["人民日报"])),
        Case("one token per character", (list, ["ab", "中文字"])),
        Case("one long and one short text (total bytes / total tokens)", (by_word, ["a b c d", "abcdefgh"])),
    ]
    check_function(
        "compression",
        lambda encode, texts: tuple(float(v) for v in fn(encode, list(texts))),
        reference,
        cases,
        atol=1e-9,
        rtol=1e-9,
        hint="total the UTF-8 bytes (len(text.encode('utf-8'))), the characters (len(text)) and the tokens "
        "(len(encode(text))) over all texts, then divide the totals: bytes / tokens and tokens / characters",
    )


def check_reported_bytes_per_token(value, merges: dict[tuple[int, int], int], texts: list[str]) -> None:
    """The number a learner reports: bytes per token of their tokenizer (``merges``) on ``texts``."""
    from course_lib.metrics import tokenizer_compression

    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ExerciseFailure(f"report a number (a float), got {value!r}")
    stats = tokenizer_compression(lambda t: _reference_encode(t, merges), texts)
    if abs(value - stats.bytes_per_token) > 0.01:
        why = ""
        if abs(value - stats.tokens_per_char) <= 0.01:
            why = " (that is tokens per character, not bytes per token)"
        raise ExerciseFailure(
            f"bytes per token: you reported {value:.3f}, your tokenizer gives "
            f"{stats.bytes_per_token:.3f} on these texts{why}; total the UTF-8 bytes and the tokens of "
            "all the texts and divide"
        )
    print(f"✓ bytes per token {value:.3f} agrees with course_lib's count ({stats.bytes_per_token:.3f})")
