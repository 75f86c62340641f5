"""Tests for course_lib.tokenizers: round trips, saving, special tokens, and two references for BPE:
a naive trainer that recounts every pair each step, and Hugging Face `tokenizers` built from our merges.
All comparisons are exact (token ids are integers: tolerance 0)."""

from __future__ import annotations

import json
import time
from collections import Counter
from functools import lru_cache

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib.datasets import bbc_news, peoples_daily_text
from course_lib.tokenizers import (
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    UNK,
    BPETokenizer,
    CharTokenizer,
    load_tokenizer,
    printable,
    token_bytes_from_str,
    token_str,
)

TRAIN_SECONDS_LIMIT = 60.0  # the brief: full BBC corpus, vocab 8192, in under a minute on this CPU


@lru_cache(maxsize=1)
def bbc_texts() -> tuple[str, ...]:
    return tuple(a.text for a in bbc_news())


@lru_cache(maxsize=1)
def chinese_paragraphs() -> tuple[str, ...]:
    return tuple(peoples_daily_text(join=False)[:400])


@lru_cache(maxsize=4)
def small_bpe(vocab_size: int = 600) -> BPETokenizer:
    """Trained on English and Chinese so that multi-byte merges exist."""
    texts = list(bbc_texts()[::40]) + list(chinese_paragraphs()[:100])
    return BPETokenizer.train(texts, vocab_size, show_progress=False)


def hf_from_ours(tok: BPETokenizer):
    """Our vocabulary and merges as a Hugging Face byte-level BPE (GPT-2 pre-tokenisation and decoder)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok.id_to_token(i): i for i in range(len(tok.vocab))}
    merges = [(token_str(a), token_str(b)) for a, b in tok.merges]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(s, special=True) for s in tok.special_tokens])
    return hf


def naive_bpe_merges(texts, vocab_size: int, n_special: int) -> list[tuple[bytes, bytes]]:
    """The textbook algorithm: recount every pair before each merge (slow, obviously right).
    Same rules as the fast trainer: most frequent pair, ties to the smallest ids, reuse existing bytes."""
    counts = Counter(w for t in texts for w in regex.findall(GPT2_SPLIT_PATTERN, t))
    words = {w: list(w.encode("utf-8")) for w in counts}
    vocab = [bytes([b]) for b in range(256)]
    merges = []
    while len(vocab) < vocab_size - n_special:
        pairs = Counter()
        for w, ids in words.items():
            for p in zip(ids, ids[1:]):
                pairs[p] += counts[w]
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        joined = vocab[a] + vocab[b]
        new = vocab.index(joined) if joined in vocab else len(vocab)
        if new == len(vocab):
            vocab.append(joined)
        merges.append((vocab[a], vocab[b]))
        for w, ids in words.items():
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == (a, b):
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            words[w] = out
    return merges


# ------------------------------------------------------------------------------------------------- BPE


@pytest.mark.parametrize("source", ["english", "chinese"])
def test_fast_training_matches_naive_recount(source):
    texts = list(bbc_texts()[:6]) if source == "english" else list(chinese_paragraphs()[:30])
    fast = BPETokenizer.train(texts, 420, show_progress=False)
    assert fast.merges == naive_bpe_merges(texts, 420, n_special=1)
    assert fast.vocab_size == 420


@pytest.mark.parametrize("vocab_size", [300, 1000])
@pytest.mark.parametrize("source", ["english", "chinese"])
def test_ids_match_huggingface_bpe_built_from_our_merges(vocab_size, source):
    texts = list(bbc_texts()[::50]) if source == "english" else list(chinese_paragraphs()[:200])
    tok = BPETokenizer.train(texts, vocab_size, show_progress=False)
    hf = hf_from_ours(tok)
    assert hf.get_vocab_size() == tok.vocab_size
    held_out = bbc_texts()[7:12] if source == "english" else chinese_paragraphs()[300:340]
    for text in held_out:
        text = text + ENDOFTEXT + text[:40]  # a special token in the middle
        assert tok.encode(text) == hf.encode(text).ids  # exact: tolerance 0
        assert tok.decode(tok.encode(text)) == hf.decode(hf.encode(text).ids, skip_special_tokens=False)


def test_vocab_matches_huggingface_layout():
    tok = small_bpe()
    assert tok.get_vocab() == hf_from_ours(tok).get_vocab()


_tricky = st.text(
    alphabet=st.sampled_from(list("aé 日本語中文😀👍🏽\u0301\u200d\x00\x1f\n\t\r'sll<|>")), max_size=60
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), _tricky))
def test_bpe_round_trips_any_text(text):
    tok = small_bpe()
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text


def test_round_trips_lone_surrogates_and_special_names():
    tok = small_bpe()
    for text in ["\ud800 x \udfff", "a<|endoftext|>b<|endof", "\u0000\uffff\U0010ffff"]:
        assert tok.decode(tok.encode(text)) == text


def test_arbitrary_ids_decode_with_replacement_character():
    tok = small_bpe()
    euro = tok.encode("€")  # three UTF-8 bytes
    cut = [b for b in "€".encode()][:2]  # the first two bytes alone are not valid UTF-8
    out = tok.decode(cut)
    assert out and set(out) == {"\ufffd"}
    assert tok.decode(cut + tok.encode(" ok")).endswith(" ok")
    assert tok.decode(euro) == "€"


def test_special_tokens_encode_to_one_id_and_are_not_split():
    tok = BPETokenizer.train(
        bbc_texts()[:20], 400, special_tokens=(ENDOFTEXT, "<|pad|>"), show_progress=False
    )
    eot, pad = tok.token_to_id(ENDOFTEXT), tok.token_to_id("<|pad|>")
    assert (eot, pad) == (398, 399)  # specials take the last ids, in the order given
    left, right = "Hello world.", " Goodbye!"
    ids = tok.encode(left + ENDOFTEXT + right + "<|pad|>")
    assert ids == tok.encode(left) + [eot] + tok.encode(right) + [pad]
    assert tok.encode(ENDOFTEXT + ENDOFTEXT) == [eot, eot]
    only_eot = tok.encode(left + ENDOFTEXT + "<|pad|>", allowed_special={ENDOFTEXT})
    assert eot in only_eot and pad not in only_eot
    plain = tok.encode(left + ENDOFTEXT, allowed_special="none")
    assert eot not in plain and tok.decode(plain) == left + ENDOFTEXT
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_training_ignores_special_tokens_in_the_text():
    text = ("low lower lowest " + ENDOFTEXT) * 50
    tok = BPETokenizer.train(text, 262, show_progress=False)
    assert all(b"<|" not in a + b and b"|>" not in a + b for a, b in tok.merges)


def test_save_load_gives_identical_ids(tmp_path):
    tok = small_bpe()
    path = tok.save(tmp_path / "bpe.json")
    data = json.loads(path.read_text(encoding="utf-8"))  # valid, human readable JSON
    assert data["merges"][0] == [token_str(tok.merges[0][0]), token_str(tok.merges[0][1])]
    assert data["special_tokens"] == {ENDOFTEXT: tok.vocab_size - 1}
    for loaded in (BPETokenizer.load(path), load_tokenizer(path)):
        assert loaded.merges == tok.merges and loaded.vocab == tok.vocab
        for text in bbc_texts()[100:103] + chinese_paragraphs()[:3]:
            assert loaded.encode(text) == tok.encode(text)
        assert loaded.fingerprint() == tok.fingerprint()


def test_token_lookup_is_consistent():
    tok = small_bpe()
    assert len({bytes(t) for t in tok.vocab}) == len(tok.vocab)  # every id has distinct bytes
    for i in range(tok.vocab_size):
        assert tok.token_to_id(tok.id_to_token(i)) == i
    assert tok.token_bytes(tok.token_to_id("Ġthe")) == b" the"
    assert token_bytes_from_str(token_str(bytes(range(256)))) == bytes(range(256))
    with pytest.raises(KeyError, match="byte alphabet"):
        tok.token_to_id(" the")


def test_training_tie_break_is_the_documented_one():
    """BPETokenizer.train's docstring: equal counts go to the smallest (left id, right id)."""
    tok = BPETokenizer.train("the", 258, special_tokens=(), show_progress=False)
    assert tok.merges == [(b"h", b"e"), (b"t", b"he")]  # ("h", "e") = (104, 101) < (116, 104) = ("t", "h")
    tok = BPETokenizer.train("ab ab cd cd", 257, special_tokens=(), show_progress=False)
    # pre-tokens "ab", " ab", " cd", " cd": (a, b), (" ", c) and (c, d) are each counted twice, and the
    # smallest ids win: (32, 99) before (97, 98) and (99, 100)
    assert tok.merges == [(b" ", b"c")]


def test_vocab_size_too_small_is_an_error():
    with pytest.raises(ValueError, match="vocab_size >= 258"):
        BPETokenizer.train("abc", 257, special_tokens=(ENDOFTEXT, "<|pad|>"), show_progress=False)


def test_running_out_of_pairs_warns():
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tok = BPETokenizer.train("ab", 300, show_progress=False)
    assert tok.vocab_size == 258  # 256 bytes + "ab" + <|endoftext|>


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not a valid tokenizer JSON"),
        (json.dumps({"format": "something-else", "version": 1}), "format 'something-else'"),
        (json.dumps({"format": "course_lib.bpe", "version": 99}), "version 99"),
        (json.dumps({"format": "course_lib.bpe", "version": 1, "pattern": "x"}), "corrupt BPE file"),
        (
            json.dumps(
                {"format": "course_lib.bpe", "version": 1, "pattern": "(", "special_tokens": {}, "merges": []}
            ),
            "corrupt BPE file",
        ),
        (
            json.dumps(
                {
                    "format": "course_lib.bpe",
                    "version": 1,
                    "pattern": "x",
                    "special_tokens": {},
                    "merges": [["ab", "c"]],
                }
            ),
            "no earlier merge creates",
        ),
    ],
)
def test_loading_a_bad_file_names_the_problem(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        BPETokenizer.load(path)


def test_loading_a_char_file_as_bpe_is_an_error(tmp_path):
    path = CharTokenizer.train("abc").save(tmp_path / "char.json")
    with pytest.raises(ValueError, match="load_tokenizer"):
        BPETokenizer.load(path)
    assert isinstance(load_tokenizer(path), CharTokenizer)


def test_decode_rejects_unknown_ids():
    tok = small_bpe()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


@pytest.mark.slow
def test_full_bbc_training_is_fast_and_matches_huggingface():
    start = time.perf_counter()
    tok = BPETokenizer.train(bbc_texts(), 8192, show_progress=False)
    seconds = time.perf_counter() - start
    assert seconds < TRAIN_SECONDS_LIMIT, f"training took {seconds:.1f} s"
    assert tok.vocab_size == 8192
    hf = hf_from_ours(tok)
    sample = list(bbc_texts()[::100])
    assert tok.encode_batch(sample) == [e.ids for e in hf.encode_batch(sample)]


# ------------------------------------------------------------------------------------------ characters


def test_char_tokenizer_round_trips_chinese(tmp_path):
    paragraphs = chinese_paragraphs()
    tok = CharTokenizer.train(paragraphs, special_tokens=("<pad>",))
    assert tok.token_to_id("<pad>") == 0 and tok.unk_id == 1  # <unk> is added after the given specials
    for p in paragraphs[:50]:
        assert tok.decode(tok.encode(p)) == p
    assert tok.vocab_size == 2 + len(set("".join(paragraphs)))
    loaded = CharTokenizer.load(tok.save(tmp_path / "char.json"))
    assert loaded.itos == tok.itos
    assert "中" in (tmp_path / "char.json").read_text(encoding="utf-8")  # saved readable, not \u-escaped


def test_char_tokenizer_unknown_characters_map_to_unk():
    tok = CharTokenizer.train("hello")
    ids = tok.encode("help!")
    assert ids[:3] == tok.encode("hel")
    assert ids[3:] == [tok.unk_id, tok.unk_id]
    assert tok.decode(ids) == f"hel{UNK}{UNK}"


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_char_tokenizer_round_trips_its_training_text(text):
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_errors(tmp_path):
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([99])
    with pytest.raises(ValueError, match="more than once"):
        CharTokenizer.train("abc", special_tokens=("<pad>", "<pad>"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "course_lib.char", "version": 1}), encoding="utf-8")
    with pytest.raises(ValueError, match="lacks the field"):
        CharTokenizer.load(bad)
    with pytest.raises(FileNotFoundError, match="save one first"):
        CharTokenizer.load(tmp_path / "missing.json")


def test_printable_replaces_control_characters_and_keeps_the_rest():
    text = "caf\u00e9 \u4e2d\u6587\tok\nnext"
    assert printable(text) == text  # letters, CJK, tab and newline stay
    assert printable("a\x1b[2Jb\rc\x00d\x7fe\x85f") == "a\ufffd[2Jb\ufffdc\ufffdd\ufffde\ufffdf"
    # every byte a byte-level model can emit decodes to something printable
    tok = BPETokenizer.train("the theme", vocab_size=260)
    shown = printable(tok.decode(range(256)))
    assert not any(ord(c) < 32 and c not in "\t\n" or 0x7F <= ord(c) <= 0x9F for c in shown)
