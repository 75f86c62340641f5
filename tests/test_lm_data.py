"""Tests for course_lib.lm_data: the token cache on disk, language-model windows, padding and prompt masking.
Token ids are integers, so every comparison is exact (tolerance 0); the loss check uses 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, DistributedSampler

from course_lib.lm_data import (
    IGNORE_INDEX,
    ClassificationDataset,
    LMWindows,
    TokenCache,
    eval_windows,
    get_batch,
    make_classification_loader,
    pad_collate,
    prompt_completion_example,
    token_dtype,
)
from course_lib.tokenizers import CharTokenizer

LOSS_ATOL = 1e-6  # float32 cross-entropy computed two ways
MEAN_LOSS_ATOL = 1e-5  # a mean rebuilt from sums over ~200 float32 terms


class CountingTokenizer:
    """Wraps a tokenizer and counts encode calls, to tell a cache hit from a rebuild."""

    def __init__(self, inner, fail_on_call: int | None = None):
        self.inner, self.calls, self.fail_on_call = inner, 0, fail_on_call
        self.vocab_size = inner.vocab_size

    def encode(self, text):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("tokenizer crashed")
        return self.inner.encode(text)

    def fingerprint(self):
        return self.inner.fingerprint()


class FixedIdsTokenizer:
    """Returns the given ids whatever the text: exercises the dtype boundaries."""

    def __init__(self, ids, vocab_size):
        self.ids, self.vocab_size = list(ids), vocab_size

    def encode(self, text):
        return self.ids

    def fingerprint(self):
        return f"fixed-{self.vocab_size}-{len(self.ids)}"


DOCS = ["the cat sat on the mat. " * 5, "a dog barked at the cat! " * 4, "hello world " * 6]


@pytest.fixture
def char_tok():
    return CharTokenizer.train("".join(DOCS), special_tokens=("<eot>",))


# ------------------------------------------------------------------------------------------ token cache


def test_cache_holds_the_stream_split_by_fraction(tmp_path, char_tok):
    eot = char_tok.token_to_id("<eot>")
    cache = TokenCache(char_tok, "docs", DOCS, val_fraction=0.25, separator_id=eot, root=tmp_path)
    expected = char_tok.encode(DOCS[0]) + [eot] + char_tok.encode(DOCS[1]) + [eot] + char_tok.encode(DOCS[2])
    train, val = cache.train, cache.val
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert np.concatenate([train, val]).tolist() == expected
    assert len(val) == round(0.25 * len(expected))


def test_cache_hit_does_not_retokenize(tmp_path, char_tok):
    counting = CountingTokenizer(char_tok)
    loads = []

    def corpus():
        loads.append(1)
        return DOCS

    first = TokenCache(counting, "docs", corpus, root=tmp_path)
    ids = first.train.tolist()
    assert counting.calls == len(DOCS) and len(loads) == 1
    again = TokenCache(counting, "docs", corpus, root=tmp_path)  # a rerun: same tokenizer, same source
    assert again.is_cached() and again.train.tolist() == ids and len(again.val) == len(first.val)
    assert counting.calls == len(DOCS) and len(loads) == 1  # no new encode calls, corpus not even loaded
    TokenCache(counting, "docs-v2", corpus, root=tmp_path).build()  # another source is another cache
    assert counting.calls == 2 * len(DOCS)
    other_tok = CharTokenizer.train("".join(DOCS) + "Z")
    assert TokenCache(other_tok, "docs", DOCS, root=tmp_path).key != first.key  # the tokenizer is in the key


def test_atomic_write_leaves_nothing_behind_on_error(tmp_path, char_tok):
    failing = CountingTokenizer(char_tok, fail_on_call=3)
    cache = TokenCache(failing, "docs", DOCS, root=tmp_path)
    with pytest.raises(RuntimeError, match="tokenizer crashed"):
        cache.build()
    assert list(tmp_path.iterdir()) == []  # no partial .bin and no temporary file
    assert not cache.is_cached()
    failing.fail_on_call = None
    assert len(cache.train) + len(cache.val) == sum(len(char_tok.encode(d)) for d in DOCS)


@pytest.mark.parametrize(
    "vocab_size, ids, dtype",
    [
        (65_535, [0, 1, 65_534], np.uint16),
        (65_536, [0, 65_535], np.uint32),
        (70_000, [65_536, 69_999, 3], np.uint32),
    ],
)
def test_token_ids_survive_the_memmap_dtype(tmp_path, vocab_size, ids, dtype):
    assert token_dtype(vocab_size) == dtype
    cache = TokenCache(
        FixedIdsTokenizer(ids * 10, vocab_size), "fixed", ["x"], val_fraction=0.0, root=tmp_path
    )
    assert cache.train.dtype == dtype and cache.train.tolist() == ids * 10
    assert len(cache.val) == 0


def test_ids_outside_the_vocabulary_are_an_error(tmp_path):
    cache = TokenCache(FixedIdsTokenizer([5, 300], 256), "bad", ["x"], root=tmp_path)
    with pytest.raises(ValueError, match="vocab_size is wrong"):
        cache.build()
    assert list(tmp_path.iterdir()) == []


def test_cache_argument_errors(tmp_path, char_tok):
    with pytest.raises(ValueError, match="val_fraction"):
        TokenCache(char_tok, "docs", DOCS, val_fraction=1.0, root=tmp_path)
    with pytest.raises(TypeError, match="fingerprint"):
        TokenCache(type("T", (), {"vocab_size": 10, "encode": None})(), "docs", DOCS, root=tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        TokenCache(char_tok, "docs", DOCS, root=tmp_path).load("test")


# ------------------------------------------------------------------------------------------ LM windows


@pytest.fixture
def stream(tmp_path):
    """A memmap whose ids are their positions (mod the vocabulary), so a window's start is readable."""
    n = 1_000
    cache = TokenCache(
        FixedIdsTokenizer(range(n), 2_000), "positions", ["x"], val_fraction=0.0, root=tmp_path
    )
    return cache.train


def test_get_batch_windows_are_shifted_slices(stream):
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(stream, batch_size=16, block_size=32, generator=g, device="cpu")
    assert x.shape == y.shape == (16, 32) and x.dtype == y.dtype == torch.long
    for row_x, row_y in zip(x, y):
        s = int(row_x[0])
        assert row_x.tolist() == stream[s : s + 32].tolist()
        assert row_y.tolist() == stream[s + 1 : s + 33].tolist()


def test_get_batch_is_reproducible_with_a_seeded_generator(stream):
    a = get_batch(stream, 8, 16, torch.Generator().manual_seed(123), "cpu")
    b = get_batch(stream, 8, 16, torch.Generator().manual_seed(123), "cpu")
    c = get_batch(stream, 8, 16, torch.Generator().manual_seed(124), "cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_get_batch_reaches_both_ends_and_accepts_tensors():
    data = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    starts = {int(get_batch(data, 4, 5, g, "cpu")[0][b, 0]) for _ in range(50) for b in range(4)}
    assert starts == set(range(5))  # every start 0..len-block_size-1 is drawn, none beyond


def test_short_data_error_says_how_long_it_is():
    with pytest.raises(ValueError, match="has 8 tokens.*needs 9"):
        get_batch(np.arange(8), 2, 8, device="cpu")
    with pytest.raises(ValueError, match="has 8 tokens"):
        LMWindows(np.arange(8), 8)


@pytest.mark.parametrize("n", [33, 100, 101])
@pytest.mark.parametrize("stride", [None, 8, 1])
def test_lm_windows_are_shifts_and_score_each_target_once(n, stride):
    data = np.arange(n, dtype=np.uint16)
    windows = LMWindows(data, block_size=16, stride=stride)
    scored = LMWindows(data, block_size=16, stride=stride, mask_seen=True)
    assert len(windows) == len(scored)
    seen = np.zeros(n, dtype=int)
    for i in range(len(windows)):
        x, y = windows[i]
        s = int(x[0])
        assert x.tolist() == list(range(s, s + 16)) and y.tolist() == list(range(s + 1, s + 17))
        _, y_masked = scored[i]
        for target in y_masked[y_masked != IGNORE_INDEX].tolist():
            seen[target] += 1
    assert seen[0] == 0 and (seen[1:] == 1).all()  # every token after the first is a target exactly once


def test_lm_windows_shard_with_distributed_sampler():
    windows = LMWindows(np.arange(500), block_size=10)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(windows, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for x, y in DataLoader(windows, batch_size=4, sampler=sampler):
            assert x.shape[1] == 10 and torch.equal(x[:, 1:], y[:, :-1])
            seen += x[:, 0].tolist()
    assert set(seen) == {int(s) for s in windows.starts}  # the two ranks together cover every window


def test_eval_windows_give_the_exact_mean_loss():
    torch.manual_seed(0)
    n, vocab, block = 203, 203, 16
    data = torch.randint(vocab, (n,))
    logits_table = torch.randn(vocab, vocab)  # a bigram "model": logits depend on the current token only
    total, count = 0.0, 0
    for x, y in eval_windows(data, block, batch_size=5, stride=8, device="cpu"):
        logits = logits_table[x]  # (B, T, vocab)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += int((y != IGNORE_INDEX).sum())
    reference = F.cross_entropy(logits_table[data[:-1]], data[1:])  # every next-token prediction once
    assert count == n - 1
    assert abs(total / count - reference.item()) < MEAN_LOSS_ATOL


def test_window_argument_errors():
    with pytest.raises(ValueError, match="stride"):
        LMWindows(np.arange(100), 10, stride=11)
    with pytest.raises(ValueError, match="1-D"):
        get_batch(np.zeros((4, 50)), 2, 8, device="cpu")


# ------------------------------------------------------------------------------ classification batches


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pad_collate_matches_pad_sequence(padding_side):
    seqs = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    batch = pad_collate(
        [{"input_ids": s, "labels": k} for k, s in enumerate(seqs)], pad_id=0, padding_side=padding_side
    )
    reference = pad_sequence(
        [torch.tensor(s) for s in seqs], batch_first=True, padding_value=0, padding_side=padding_side
    )
    assert torch.equal(batch["input_ids"], reference)
    mask = pad_sequence(
        [torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True, padding_side=padding_side
    )
    assert torch.equal(batch["attention_mask"], mask)
    assert batch["labels"].tolist() == [0, 1, 2] and batch["labels"].dtype == torch.long


def test_pad_collate_truncates_and_pads_token_labels():
    example = prompt_completion_example([1, 2, 3], [4, 5], eos_id=9)
    short = ([7, 8], [IGNORE_INDEX, 8])
    batch = pad_collate([example, short], pad_id=0, max_length=4)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [7, 8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] * 3 + [4],
        [IGNORE_INDEX, 8, IGNORE_INDEX, IGNORE_INDEX],
    ]


def test_pad_collate_errors():
    with pytest.raises(ValueError, match="padding_side"):
        pad_collate([([1], 0)], pad_id=0, padding_side="middle")
    with pytest.raises(ValueError, match="no tokens"):
        pad_collate([([], 0)], pad_id=0)
    with pytest.raises(ValueError, match="one per token"):
        pad_collate([([1, 2], [1])], pad_id=0)
    with pytest.raises(KeyError, match="input_ids"):
        pad_collate([{"ids": [1], "labels": 0}], pad_id=0)
    with pytest.raises(ValueError, match="one label per text"):
        ClassificationDataset([[1], [2]], [0])


def test_classification_loader_is_reproducible_and_complete():
    seqs = [[i] * (1 + i % 4) for i in range(10)]
    labels = [i % 3 for i in range(10)]

    def order(seed):
        loader = make_classification_loader(seqs, labels, batch_size=3, pad_id=-1, seed=seed)
        return [row[0] for batch in loader for row in batch["input_ids"].tolist()]

    assert order(0) == order(0) and sorted(order(0)) == list(range(10))
    assert order(0) != order(1)
    for batch in make_classification_loader(seqs, labels, batch_size=4, pad_id=-1, shuffle=False):
        lengths = batch["attention_mask"].sum(1)
        assert torch.equal(lengths, (batch["input_ids"] != -1).sum(1))
        assert batch["labels"].tolist() == [labels[r[0]] for r in batch["input_ids"].tolist()]


# ----------------------------------------------------------------------------------- prompt masking


@pytest.mark.parametrize("shift", [False, True])
def test_prompt_completion_masks_the_prompt(shift):
    prompt, completion, eos = [11, 12, 13], [21, 22], 99
    input_ids, labels = prompt_completion_example(prompt, completion, eos, shift=shift)
    if not shift:
        assert input_ids == prompt + completion + [eos]
        assert labels == [IGNORE_INDEX] * 3 + completion + [eos]
        # the Hugging Face way: shift inside the loss, so position t predicts labels[t + 1]
        targets = torch.tensor(labels[1:])
    else:
        assert input_ids == prompt + completion and len(labels) == len(input_ids)
        targets = torch.tensor(labels)
    assert targets[targets != IGNORE_INDEX].tolist() == completion + [eos]  # only the answer is learned
    torch.manual_seed(0)
    logits = torch.randn(len(targets), 100)
    loss = F.cross_entropy(logits, targets)  # ignore_index=-100 by default
    keep = targets != IGNORE_INDEX
    assert abs(loss.item() - F.cross_entropy(logits[keep], targets[keep]).item()) < LOSS_ATOL
    with pytest.raises(ValueError, match="completion_ids is empty"):
        prompt_completion_example(prompt, [], eos)
