"""Chapter 3's self-checks for the tokenizer and GPT exercises: right answers pass, usual mistakes fail
naming the case, and answers that call course_lib instead of doing the work are refused."""

from __future__ import annotations

from collections import Counter

import pytest
import regex

from course_lib.exercises import ExerciseFailure, library_used
from course_lib.exercises.ch03 import (
    check_bpe_decode,
    check_bpe_encode,
    check_compression,
    check_count_pairs,
    check_merge,
    check_reported_bytes_per_token,
    check_train_bpe,
)
from course_lib.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer

# ------------------------------------------------------------------------- BPE answers a learner may write


def count_pairs(words):
    counts = {}
    for w, f in words.items():
        for p in zip(w, w[1:]):
            counts[p] = counts.get(p, 0) + f
    return counts


def count_pairs_ignoring_frequency(words):
    return Counter(p for w in words for p in zip(w, w[1:]))


def count_pairs_once_per_word(words):
    counts = Counter()
    for w, f in words.items():
        for p in set(zip(w, w[1:])):
            counts[p] += f
    return counts


def count_pairs_across_words(words):
    ids = [i for w in words for i in w]
    return Counter(zip(ids, ids[1:]))


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_right_to_left(ids, pair, new_id):
    return merge(ids[::-1], pair[::-1], new_id)[::-1]


def merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2 :]
    return ids


def merge_drops_the_last_id(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _words(texts, split=True):
    counts = Counter()
    for t in texts:
        counts.update(regex.findall(GPT2_SPLIT_PATTERN, t) if split else [t])
    return {tuple(w.encode("utf-8")): f for w, f in counts.items()}


def _train(texts, num_merges, pick, split=True):
    words, merges = _words(texts, split), {}
    for k in range(num_merges):
        counts = count_pairs(words)
        if not counts:
            break
        best = pick(counts)
        merges[best] = 256 + k
        new = {}
        for w, f in words.items():
            w = tuple(merge(list(w), best, 256 + k))
            new[w] = new.get(w, 0) + f
        words = new
    return merges


def train_bpe(texts, num_merges):
    return _train(texts, num_merges, lambda c: min(c, key=lambda p: (-c[p], p)))


def train_bpe_most_common(texts, num_merges):  # ties go to the pair seen first
    return _train(texts, num_merges, lambda c: Counter(c).most_common(1)[0][0])


def train_bpe_largest_pair_on_ties(texts, num_merges):
    return _train(texts, num_merges, lambda c: max(c, key=lambda p: (c[p], p)))


def train_bpe_without_pretokens(texts, num_merges):
    return _train(texts, num_merges, lambda c: min(c, key=lambda p: (-c[p], p)), split=False)


def train_bpe_with_the_library(texts, num_merges):
    tok = BPETokenizer.train(texts, 257 + num_merges, show_progress=False)
    ids = {bytes([b]): b for b in range(256)}
    out = {}
    for k, (a, b) in enumerate(tok.merges):
        out[ids[a], ids[b]] = ids[a + b] = 256 + k
    return out


def encode(text, merges):
    out = []
    for word in regex.findall(GPT2_SPLIT_PATTERN, text):
        ids = list(word.encode("utf-8"))
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
            if pair not in merges:
                break
            ids = merge(ids, pair, merges[pair])
        out.extend(ids)
    return out


def encode_leftmost_pair_first(text, merges):  # forgets the merge order
    out = []
    for word in regex.findall(GPT2_SPLIT_PATTERN, text):
        ids = list(word.encode("utf-8"))
        while True:
            pair = next((p for p in zip(ids, ids[1:]) if p in merges), None)
            if pair is None:
                break
            ids = merge(ids, pair, merges[pair])
        out.extend(ids)
    return out


def encode_latest_merge_first(text, merges):
    out = []
    for word in regex.findall(GPT2_SPLIT_PATTERN, text):
        ids = list(word.encode("utf-8"))
        while True:
            present = [p for p in zip(ids, ids[1:]) if p in merges]
            if not present:
                break
            pair = max(present, key=merges.get)
            ids = merge(ids, pair, merges[pair])
        out.extend(ids)
    return out


def encode_with_the_library(text, merges):
    vocab = {b: bytes([b]) for b in range(256)}
    for (a, b), i in merges.items():
        vocab[i] = vocab[a] + vocab[b]
    return BPETokenizer([(vocab[a], vocab[b]) for a, b in merges], special_tokens=()).encode(text)


def decode(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def decode_token_by_token(ids, vocab):
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)


def decode_strict(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8")


def decode_ignoring_bad_bytes(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore")


def compression(encode, texts):
    tokens = sum(len(encode(t)) for t in texts)
    return sum(len(t.encode("utf-8")) for t in texts) / tokens, tokens / sum(len(t) for t in texts)


def compression_counting_characters_as_bytes(encode, texts):
    tokens = sum(len(encode(t)) for t in texts)
    return sum(len(t) for t in texts) / tokens, tokens / sum(len(t) for t in texts)


def compression_mean_of_ratios(encode, texts):
    bpt = [len(t.encode("utf-8")) / len(encode(t)) for t in texts]
    tpc = [len(encode(t)) / len(t) for t in texts]
    return sum(bpt) / len(bpt), sum(tpc) / len(tpc)


def compression_inverted(encode, texts):
    b, t = compression(encode, texts)
    return 1 / b, 1 / t


def compression_with_the_library(encode, texts):
    from course_lib.metrics import tokenizer_compression

    s = tokenizer_compression(encode, texts)
    return s.bytes_per_token, s.tokens_per_char


def blank(*args, **kwargs):
    raise NotImplementedError()


# ------------------------------------------------------------------------------------------ tests

RIGHT = [
    (check_count_pairs, count_pairs),
    (check_merge, merge),
    (check_train_bpe, train_bpe),
    (check_bpe_encode, encode),
    (check_bpe_decode, decode),
    (check_compression, compression),
]


@pytest.mark.parametrize("check, answer", RIGHT, ids=lambda x: getattr(x, "__name__", "answer"))
def test_right_answers_pass(check, answer, capsys):
    check(answer)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("check", [c for c, _ in RIGHT], ids=lambda c: c.__name__)
def test_blank_answers_say_not_written_yet_and_give_a_hint(check):
    with pytest.raises(ExerciseFailure, match="not written yet.*[Hh]int:"):
        check(blank)


WRONG = [
    (check_count_pairs, count_pairs_ignoring_frequency, "a word seen 5 times"),
    (check_count_pairs, count_pairs_once_per_word, "(7, 7, 7)"),
    (check_count_pairs, count_pairs_across_words, "never cross"),
    (check_merge, merge_right_to_left, "the left pair merges"),
    (check_merge, merge_first_only, "two occurrences"),
    (check_merge, merge_drops_the_last_id, "one occurrence"),
    (check_train_bpe, train_bpe_most_common, "merge #"),
    (check_train_bpe, train_bpe_largest_pair_on_ties, "merge #"),
    (check_train_bpe, train_bpe_without_pretokens, "merge #"),
    (check_train_bpe, train_bpe_with_the_library, "uses the library"),
    (check_bpe_encode, encode_leftmost_pair_first, "order decides"),
    (check_bpe_encode, encode_latest_merge_first, "order decides"),
    (check_bpe_encode, encode_with_the_library, "uses the library"),
    (check_bpe_decode, decode_token_by_token, "characters split across tokens"),
    (check_bpe_decode, decode_strict, "raised UnicodeDecodeError"),
    (check_bpe_decode, decode_ignoring_bad_bytes, "only part of a Chinese character"),
    (check_compression, compression_counting_characters_as_bytes, "Chinese (3 bytes"),
    (check_compression, compression_mean_of_ratios, "one token per character"),
    (check_compression, compression_inverted, "3 bytes per character"),
    (check_compression, compression_with_the_library, "uses the library"),
]
WRONG_IDS = [f"{check.__name__}-{answer.__name__}" for check, answer, _ in WRONG]


@pytest.mark.parametrize("check, answer, case", WRONG, ids=WRONG_IDS)
def test_wrong_answers_fail_on_the_case_that_exposes_them(check, answer, case):
    with pytest.raises(ExerciseFailure) as err:
        check(answer)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


def test_the_reported_bytes_per_token_is_checked_against_the_library():
    texts = ["The economy grew.", "经济增长"]
    merges = train_bpe(texts, 10)
    stats = [len(t.encode()) for t in texts], [len(encode(t, merges)) for t in texts]
    right = sum(stats[0]) / sum(stats[1])
    check_reported_bytes_per_token(right, merges, texts)
    tokens_per_char = sum(stats[1]) / sum(map(len, texts))
    with pytest.raises(ExerciseFailure, match="tokens per character"):
        check_reported_bytes_per_token(tokens_per_char, merges, texts)
    with pytest.raises(ExerciseFailure, match="you reported"):
        check_reported_bytes_per_token(right + 0.5, merges, texts)
    with pytest.raises(ExerciseFailure, match="report a number"):
        check_reported_bytes_per_token(None, merges, texts)


def test_library_used_follows_wrappers_and_spares_hand_written_code():
    def wrapper(texts, n):
        return train_bpe_with_the_library(texts, n)

    assert library_used(wrapper) == ["course_lib.tokenizers.BPETokenizer"]
    assert library_used(train_bpe) == [] and library_used(encode) == []
    assert library_used(BPETokenizer.train) != []
