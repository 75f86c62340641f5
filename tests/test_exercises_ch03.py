"""Chapter 3's self-checks for the tokenizer and GPT exercises: right answers pass, usual mistakes fail
naming the case, and answers that call course_lib instead of doing the work are refused."""

from __future__ import annotations

import math
from collections import Counter
from functools import partial

import pytest
import regex
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import gpt
from course_lib.attention import AttentionHead
from course_lib.exercises import ExerciseFailure, library_used
from course_lib.exercises.ch03 import (
    check_block,
    check_bpe_decode,
    check_bpe_encode,
    check_causal_head,
    check_compression,
    check_count_pairs,
    check_embed,
    check_gelu,
    check_generate,
    check_gpt,
    check_layer_norm,
    check_merge,
    check_mlp,
    check_multi_head_attention,
    check_next_token_loss,
    check_reported_bytes_per_token,
    check_reported_val_loss,
    check_train_bpe,
)
from course_lib.layers import FeedForward
from course_lib.lm_data import eval_windows
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
def test_blank_answers_say_not_written_yet_and_keep_the_hint_for_a_real_failure(check):
    with pytest.raises(ExerciseFailure, match="not written yet") as failure:
        check(blank)
    assert "hint" not in str(failure.value).lower()


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


def _reported_bytes_per_token():
    """A tokenizer, its texts, and the right bytes per token and tokens per character on them."""
    texts = ["The economy grew.", "经济增长"]
    merges = train_bpe(texts, 10)
    stats = [len(t.encode()) for t in texts], [len(encode(t, merges)) for t in texts]
    return merges, texts, sum(stats[0]) / sum(stats[1]), sum(stats[1]) / sum(map(len, texts))


BPT_MERGES, BPT_TEXTS, BYTES_PER_TOKEN, TOKENS_PER_CHAR = _reported_bytes_per_token()
report_bytes_per_token = partial(check_reported_bytes_per_token, merges=BPT_MERGES, texts=BPT_TEXTS)
REPORTED_BYTES_WRONG = [
    (report_bytes_per_token, TOKENS_PER_CHAR, "that is tokens per character"),
    (report_bytes_per_token, BYTES_PER_TOKEN + 0.5, "you reported"),
    (report_bytes_per_token, 1 / BYTES_PER_TOKEN, "you reported"),  # tokens per byte
    (report_bytes_per_token, None, "report a number"),
]


def test_the_reported_bytes_per_token_is_checked_against_the_library():
    check_reported_bytes_per_token(BYTES_PER_TOKEN, BPT_MERGES, BPT_TEXTS)
    for check, value, case in REPORTED_BYTES_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(value)


def test_library_used_follows_wrappers_and_spares_hand_written_code():
    def wrapper(texts, n):
        return train_bpe_with_the_library(texts, n)

    assert library_used(wrapper) == ["course_lib.tokenizers.BPETokenizer"]
    assert library_used(train_bpe) == [] and library_used(encode) == []
    assert library_used(BPETokenizer.train) != []


# ------------------------------------------------------------------------- GPT answers a learner may write


def embed(idx, wte, wpe):
    return wte[idx] + wpe[: idx.size(1)]


def embed_positions_by_token_id(idx, wte, wpe):
    return wte[idx] + wpe[idx]


def embed_without_positions(idx, wte, wpe):
    return wte[idx]


def softmax(x):
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores) @ v


def causal_mask(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


class CausalHead(nn.Module):
    def __init__(self, d_model, head_size, mask=causal_mask, scale=True):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(d_model, head_size) for _ in range(3))
        self.mask, self.scale = mask, scale

    def forward(self, x):
        q, k, v = self.query(x), self.key(x), self.value(x)
        if not self.scale:
            q = q * math.sqrt(q.size(-1))
        return attention(q, k, v, self.mask(x.size(1)) if self.mask else None)


class HeadWithoutMask(CausalHead):
    def __init__(self, d_model, head_size):
        super().__init__(d_model, head_size, mask=None)


class HeadWithTransposedMask(CausalHead):
    def __init__(self, d_model, head_size):
        super().__init__(d_model, head_size, mask=lambda T: causal_mask(T).T)


class HeadWithoutScaling(CausalHead):
    def __init__(self, d_model, head_size):
        super().__init__(d_model, head_size, scale=False)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def split(self, t):
        B, T, C = t.shape
        return t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (self.split(t) for t in self.qkv(x).split(C, dim=-1))
        y = attention(q, k, v, causal_mask(T))
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MHAHeadsByViewOnly(MultiHeadAttention):
    def split(self, t):
        B, T, C = t.shape
        return t.view(B, self.n_head, T, C // self.n_head)


class MHAWithoutProjection(MultiHeadAttention):
    def __init__(self, d_model, n_head):
        super().__init__(d_model, n_head)
        del self.proj
        self.proj = nn.Identity()


class MHAWithPyTorchKernel(MultiHeadAttention):
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (self.split(t) for t in self.qkv(x).split(C, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MHAWithoutMask(MultiHeadAttention):
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (self.split(t) for t in self.qkv(x).split(C, dim=-1))
        return self.proj(attention(q, k, v).transpose(1, 2).reshape(B, T, C))


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def layer_norm_unbiased_variance(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + eps) * weight + bias


def layer_norm_eps_outside_sqrt(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / (x.var(dim=-1, keepdim=True, unbiased=False).sqrt() + eps) * weight + bias


def layer_norm_without_affine(x, weight, bias, eps=1e-5):
    return layer_norm(x, 1.0, 0.0, eps)


def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_exact(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_wrong_constant(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.0447 * x**3)))


def gelu_sqrt_pi_over_2(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(math.pi / 2) * (x + 0.044715 * x**3)))


class LayerNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias)


class MLP(nn.Module):
    def __init__(self, d_model, act=gelu):
        super().__init__()
        self.c_fc, self.c_proj, self.act = (
            nn.Linear(d_model, 4 * d_model),
            nn.Linear(4 * d_model, d_model),
            act,
        )

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class MLPWithReLU(MLP):
    def __init__(self, d_model):
        super().__init__(d_model, act=torch.relu)


class MLPNarrow(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.c_proj(gelu(self.c_fc(x)))


class MLPWithExactGelu(MLP):  # erf's GELU, not GPT-2's tanh form
    def __init__(self, d_model):
        super().__init__(d_model, act=lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))


class MLPWithoutBiases(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.c_fc = nn.Linear(d_model, 4 * d_model, bias=False)
        self.c_proj = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x):
        return self.c_proj(gelu(self.c_fc(x)))


class MLPFromTheLibrary(FeedForward):
    def __init__(self, d_model):
        super().__init__(d_model, 4 * d_model)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(config.d_model), MultiHeadAttention(config.d_model, config.n_head)
        self.ln_2, self.mlp = LayerNorm(config.d_model), MLP(config.d_model)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PostNormBlock(Block):
    def forward(self, x):
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


class BlockWithoutSecondResidual(Block):
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return self.mlp(self.ln_2(x))


class LibraryBlock(gpt.Block):
    pass


class GPT(nn.Module):
    def __init__(self, config, positions=True):
        super().__init__()
        self.config, self.positions = config, positions
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),
                wpe=nn.Embedding(config.block_size, config.d_model),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=LayerNorm(config.d_model),
            )
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx, targets=None):
        t = self.transformer
        x = t.wte.weight[idx] + (t.wpe.weight[: idx.size(1)] if self.positions else 0)
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class GPTWithoutPositions(GPT):
    def __init__(self, config):
        super().__init__(config, positions=False)


class GPTUntied(GPT):
    def __init__(self, config):
        super().__init__(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)


class GPTWithoutFinalNorm(GPT):
    def forward(self, idx, targets=None):
        t = self.transformer
        x = t.wte.weight[idx] + t.wpe.weight[: idx.size(1)]
        for block in t.h:
            x = block(x)
        return self.lm_head(x), None


def gpt_imported(config):
    return gpt.GPT(config)


class GPTWithLibraryBlocks(GPT):
    def __init__(self, config):
        super().__init__(config)
        self.transformer.h = nn.ModuleList(gpt.Block(config) for _ in range(config.n_layer))


def next_token_loss(logits, idx):
    V = logits.size(-1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1))


def next_token_loss_unshifted(logits, idx):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), idx.reshape(-1))


def next_token_loss_shifted_backwards(logits, idx):
    V = logits.size(-1)
    return F.cross_entropy(logits[:, 1:].reshape(-1, V), idx[:, :-1].reshape(-1))


def next_token_loss_summed(logits, idx):
    V = logits.size(-1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1), reduction="sum")


def _generate(
    model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, crop=True, use_t=True, use_k=True
):
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.config.block_size :] if crop else idx)
        logits = logits[:, -1, :] / (temperature if use_t else 1.0)
        if top_k is not None and use_k:
            kth = torch.topk(logits, top_k).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _generate(model, idx, max_new_tokens, temperature, top_k, generator)


def generate_ignoring_temperature(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _generate(model, idx, max_new_tokens, temperature, top_k, generator, use_t=False)


def generate_ignoring_top_k(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _generate(model, idx, max_new_tokens, temperature, top_k, generator, use_k=False)


def generate_without_cropping(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    return _generate(model, idx, max_new_tokens, temperature, top_k, generator, crop=False)


def generate_with_the_library(model, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.config.block_size :])
        idx = torch.cat([idx, gpt.sample_next_token(logits[:, -1], temperature, top_k, None, generator)], 1)
    return idx


GPT_RIGHT = [
    (check_embed, embed),
    (check_causal_head, CausalHead),
    (check_multi_head_attention, MultiHeadAttention),
    (check_layer_norm, layer_norm),
    (check_gelu, gelu),
    (check_mlp, MLP),
    (check_block, Block),
    (check_gpt, GPT),
    (check_next_token_loss, next_token_loss),
    (check_generate, generate),
]


@pytest.mark.parametrize("check, answer", GPT_RIGHT, ids=lambda x: getattr(x, "__name__", "answer"))
def test_right_gpt_answers_pass(check, answer, capsys):
    check(answer)
    assert "✓" in capsys.readouterr().out


class Blank(nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError()


@pytest.mark.parametrize("check, answer", GPT_RIGHT, ids=lambda x: getattr(x, "__name__", "answer"))
def test_blank_gpt_answers_say_not_written_yet(check, answer):
    with pytest.raises(ExerciseFailure, match="not written yet") as failure:
        check(Blank if isinstance(answer, type) else blank)
    assert "hint" not in str(failure.value).lower()  # the hint waits for a real failure


GPT_WRONG = [
    (check_embed, embed_positions_by_token_id, "2 sequences of 5 tokens"),
    (check_embed, embed_without_positions, "2 sequences of 5 tokens"),
    (check_embed, lambda idx, wte, wpe: wte[idx] + wpe, "2 sequences of 5 tokens"),
    (check_causal_head, HeadWithoutMask, "head size 4"),
    (check_causal_head, HeadWithTransposedMask, "head size 4"),
    (check_causal_head, HeadWithoutScaling, "head size 4"),
    (check_causal_head, AttentionHead, "uses the library"),
    (check_multi_head_attention, MHAHeadsByViewOnly, "2 heads"),
    (check_multi_head_attention, MHAWithoutProjection, "names differ"),
    (check_multi_head_attention, MHAWithoutMask, "2 heads"),
    (check_layer_norm, layer_norm_unbiased_variance, "(2, 3, 8)"),
    (check_layer_norm, layer_norm_eps_outside_sqrt, "d = 2"),
    (check_layer_norm, layer_norm_without_affine, "(2, 3, 8)"),
    (check_layer_norm, lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, eps), "PyTorch's"),
    (check_gelu, gelu_exact, "a few numbers"),
    (check_gelu, lambda x: F.gelu(x, approximate="tanh"), "PyTorch's"),
    (check_multi_head_attention, MHAWithPyTorchKernel, "PyTorch's"),
    (check_gelu, gelu_wrong_constant, "a few numbers"),
    (check_gelu, gelu_sqrt_pi_over_2, "a few numbers"),
    (check_mlp, MLPWithReLU, "d_model 8"),
    (check_mlp, MLPNarrow, "weights do not load"),
    (check_mlp, MLPWithExactGelu, "case"),
    (check_mlp, MLPWithoutBiases, "case 1 of 3"),
    (check_mlp, MLPFromTheLibrary, "uses the library"),
    (check_block, PostNormBlock, "d_model 16"),
    (check_block, BlockWithoutSecondResidual, "d_model 16"),
    (check_block, LibraryBlock, "uses the library"),
    (check_gpt, GPTWithoutPositions, "case 1 of 3"),
    (check_gpt, GPTUntied, "weight tying"),
    (check_gpt, GPTWithoutFinalNorm, "logits differ"),
    (check_gpt, gpt_imported, "uses the library"),
    (check_gpt, GPTWithLibraryBlocks, "uses the library"),
    (check_next_token_loss, next_token_loss_unshifted, "3 sequences of 6"),
    (check_next_token_loss, next_token_loss_shifted_backwards, "3 sequences of 6"),
    (check_next_token_loss, next_token_loss_summed, "3 sequences of 6"),
    (check_generate, generate_ignoring_temperature, "temperature 0.5"),
    (check_generate, generate_ignoring_top_k, "top_k = 1"),
    (check_generate, generate_without_cropping, "past block_size"),
    (check_generate, generate_with_the_library, "uses the library"),
]
GPT_WRONG_IDS = [f"{c.__name__}-{k}" for k, (c, *_) in enumerate(GPT_WRONG)]


@pytest.mark.parametrize("check, answer, case", GPT_WRONG, ids=GPT_WRONG_IDS)
def test_wrong_gpt_answers_fail_naming_the_case(check, answer, case):
    with pytest.raises(ExerciseFailure) as err:
        check(answer)
    if case is not None:
        assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


def _reported_val_loss():
    """A tiny GPT, a validation stream, and the model's mean loss over it (summed, then counted)."""
    torch.manual_seed(0)
    cfg = gpt.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, d_model=8)
    model = gpt.GPT(cfg)
    val = torch.randint(0, 20, (50,), generator=torch.Generator().manual_seed(1)).numpy()
    total, count = 0.0, 0
    for x, y in eval_windows(val, 8, 4, device="cpu"):
        logits, _ = model(x)
        total += F.cross_entropy(logits.view(-1, 20), y.view(-1), ignore_index=-100, reduction="sum").item()
        count += int((y != -100).sum())
    return model, val, total, count


VAL_MODEL, VAL_IDS, VAL_TOTAL, VAL_COUNT = _reported_val_loss()
report_val_loss = partial(check_reported_val_loss, model=VAL_MODEL, val_ids=VAL_IDS, block_size=8)
REPORTED_LOSS_WRONG = [
    (report_val_loss, math.log(20), "you reported"),  # the loss of a uniform guess, not of the model
    (report_val_loss, VAL_TOTAL, "you reported"),  # the sum, not the mean
    (report_val_loss, math.exp(VAL_TOTAL / VAL_COUNT), "you reported"),  # the perplexity
    (report_val_loss, "2.9", "report a number"),
]


def test_the_reported_validation_loss_is_recomputed():
    check_reported_val_loss(VAL_TOTAL / VAL_COUNT, VAL_MODEL, VAL_IDS, 8)
    for check, value, case in REPORTED_LOSS_WRONG:
        with pytest.raises(ExerciseFailure, match=case):
            check(value)


MUTANTS = WRONG + GPT_WRONG + REPORTED_BYTES_WRONG + REPORTED_LOSS_WRONG
