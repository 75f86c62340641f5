"""Feeding models: token caches on disk, language-model windows, and padded classification batches.

* :class:`TokenCache` tokenizes a corpus once and keeps the ids in the cache directory as a NumPy
  memmap (uint16 for vocabularies under 65,536, else uint32), split into ``train`` and ``val`` by a
  fraction of the token stream. A rerun with the same tokenizer and source reads the files back.
* :func:`get_batch` draws random windows (nanoGPT style); :class:`LMWindows` is the same data as a
  map-style ``Dataset`` (for ``DistributedSampler``); :func:`eval_windows` covers a split once, in order.
  In every window the targets ``y`` are the inputs ``x`` shifted left by one token.
* :func:`pad_collate` pads token-id lists into ``input_ids`` / ``attention_mask`` / ``labels`` tensors;
  :func:`prompt_completion_example` builds instruction-tuning examples whose prompt is masked out of the loss.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from course_lib.env import cache_dir, get_device, move_to_device

IGNORE_INDEX = -100  # label value that torch.nn.functional.cross_entropy skips by default
SPLITS = ("train", "val")

TokenData = np.ndarray | torch.Tensor  # a 1-D stream of token ids (a memmap is an ndarray)


# ----------------------------------------------------------------------------------------------------------
# token cache


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 below 65,536 tokens, else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size < 2**16 else np.dtype(np.uint32)


def _vocab_size(tokenizer: Any) -> int:
    size = getattr(tokenizer, "vocab_size", None)
    if callable(getattr(tokenizer, "get_vocab_size", None)):  # a Hugging Face `tokenizers.Tokenizer`
        size = tokenizer.get_vocab_size()
    if not isinstance(size, int):
        raise TypeError(
            f"{type(tokenizer).__name__} has no integer vocab_size; give the tokenizer a vocab_size "
            "attribute (course_lib tokenizers and Hugging Face tokenizers have one)"
        )
    return size


def _fingerprint(tokenizer: Any) -> str:
    if callable(getattr(tokenizer, "fingerprint", None)):
        return str(tokenizer.fingerprint())
    if callable(getattr(tokenizer, "to_str", None)):  # a Hugging Face `tokenizers.Tokenizer`
        return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]
    raise TypeError(
        f"cannot tell one {type(tokenizer).__name__} from another, so a cache could go stale; "
        "give the tokenizer a fingerprint() method or pass tokenizer_id='<a name that changes with it>'"
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    out = tokenizer.encode(text)
    return out.ids if hasattr(out, "ids") else out  # Hugging Face returns an Encoding


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "tokens"


class TokenCache:
    """A corpus tokenized once into ``<cache>/tokens/<source>-<hash>-{train,val}.bin`` memmaps.

    The hash covers the tokenizer (its ``fingerprint()``), ``source``, ``val_fraction`` and
    ``separator_id``; ``source`` names the text, so change it (e.g. add a version) when the text changes.
    ``texts`` may be a string, an iterable of documents, or a zero-argument function returning one; a
    function is only called on a cache miss, so a rerun does not even load the corpus. Documents are
    joined with ``separator_id`` (e.g. the ``<|endoftext|>`` id) when it is given. The first
    ``1 - val_fraction`` of the stream is ``train``, the rest ``val``. Files are written to a temporary
    name and moved into place with ``os.replace``, so an interrupted run never leaves a partial cache.
    """

    def __init__(
        self,
        tokenizer: Any,
        source: str,
        texts: str | Iterable[str] | Callable[[], Iterable[str]],
        *,
        val_fraction: float = 0.1,
        separator_id: int | None = None,
        tokenizer_id: str | None = None,
        root: str | Path | None = None,
        show_progress: bool = False,
    ):
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(
                f"val_fraction must be in [0, 1), got {val_fraction}; e.g. 0.1 for 10% validation"
            )
        if not source:
            raise ValueError("source must name the text (e.g. 'bbc_news-v1'); it is part of the cache key")
        self.tokenizer = tokenizer
        self.source = source
        self._texts = texts
        self.val_fraction = float(val_fraction)
        self.separator_id = separator_id
        self.vocab_size = _vocab_size(tokenizer)
        self.dtype = token_dtype(self.vocab_size)
        if separator_id is not None and not 0 <= separator_id < self.vocab_size:
            raise ValueError(
                f"separator_id={separator_id} is outside the vocabulary (size {self.vocab_size})"
            )
        self.root = Path(root) if root is not None else cache_dir("tokens")
        self.root.mkdir(parents=True, exist_ok=True)
        self.show_progress = show_progress
        key = json.dumps(
            [tokenizer_id or _fingerprint(tokenizer), source, self.val_fraction, separator_id, self.dtype.str]
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]

    def path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        return self.root / f"{_slug(self.source)}-{self.key}-{split}.bin"

    def is_cached(self) -> bool:
        return all(self.path(s).is_file() for s in SPLITS)

    def build(self, force: bool = False) -> None:
        """Tokenize and write both splits unless they are already on disk (``force`` rebuilds)."""
        if self.is_cached() and not force:
            return
        tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp_all = self.path("train").with_name(self.path("train").name + tag)
        tmp_val = self.path("val").with_name(self.path("val").name + tag)
        try:
            n_total = self._write_stream(tmp_all)
            n_val = int(np.floor(n_total * self.val_fraction + 0.5))
            n_train = n_total - n_val
            with open(tmp_all, "rb") as src, open(tmp_val, "wb") as dst:  # the tail of the stream is val
                src.seek(n_train * self.dtype.itemsize)
                shutil.copyfileobj(src, dst, 1 << 24)
            os.truncate(tmp_all, n_train * self.dtype.itemsize)  # the head is train
            os.replace(tmp_val, self.path("val"))
            os.replace(tmp_all, self.path("train"))
        finally:
            for tmp in (tmp_all, tmp_val):
                tmp.unlink(missing_ok=True)
        meta = {
            "source": self.source,
            "tokens": {"train": n_train, "val": n_val},
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "val_fraction": self.val_fraction,
            "separator_id": self.separator_id,
        }
        meta_path = self.root / f"{_slug(self.source)}-{self.key}.json"
        tmp_meta = meta_path.with_name(meta_path.name + tag)
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_meta, meta_path)

    def _write_stream(self, path: Path) -> int:
        """Tokenize every document into ``path``; returns the number of tokens written."""
        texts = self._texts() if callable(self._texts) else self._texts
        docs = [texts] if isinstance(texts, str) else texts
        if self.show_progress:
            from tqdm.auto import tqdm

            docs = tqdm(docs, desc=f"tokenizing {self.source}", unit="doc")
        n = 0
        with open(path, "wb") as f:
            for k, doc in enumerate(docs):
                ids = list(_encode(self.tokenizer, doc))
                if self.separator_id is not None and k > 0:
                    ids.insert(0, self.separator_id)
                if not ids:
                    continue
                arr = np.asarray(ids, dtype=np.int64)
                if arr.min() < 0 or arr.max() >= self.vocab_size:
                    bad = int(arr.max() if arr.max() >= self.vocab_size else arr.min())
                    raise ValueError(
                        f"the tokenizer produced id {bad} outside [0, {self.vocab_size}); its vocab_size is "
                        f"wrong and the ids would not fit {self.dtype.name}: fix the tokenizer's vocab_size"
                    )
                arr.astype(self.dtype).tofile(f)
                n += len(arr)
        return n

    def load(self, split: str) -> np.ndarray:
        """The ids of one split as a read-only memmap (built first on a cache miss)."""
        path = self.path(split)
        if not self.is_cached():
            self.build()
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")

    @property
    def train(self) -> np.ndarray:
        return self.load("train")

    @property
    def val(self) -> np.ndarray:
        return self.load("val")

    def __repr__(self) -> str:
        return (
            f"TokenCache(source={self.source!r}, key={self.key}, cached={self.is_cached()}, root={self.root})"
        )


# ----------------------------------------------------------------------------------------------------------
# language-model windows


def _check_length(n: int, block_size: int) -> None:
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if n < block_size + 1:
        raise ValueError(
            f"the token stream has {n} tokens, but one window of block_size={block_size} needs "
            f"{block_size + 1} (inputs plus the next token); use a smaller block_size or more text "
            "(e.g. a larger val_fraction for the val split)"
        )


def _rows(data: TokenData, starts: Sequence[int], length: int) -> torch.Tensor:
    """Stack ``data[s : s + length]`` for each start as int64; only those slices are read from a memmap."""
    if isinstance(data, torch.Tensor):
        return torch.stack([data[s : s + length] for s in starts]).long()  # (B, length)
    rows = np.stack([np.asarray(data[s : s + length], dtype=np.int64) for s in starts])  # (B, length)
    return torch.from_numpy(rows)


def get_batch(
    data: TokenData,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: ``x`` (B, T) int64 and ``y`` = ``x`` shifted left by one token.

    ``data`` is a 1-D array, memmap or tensor; only the sampled slices are read. Pass a seeded
    ``torch.Generator`` to make the draws repeatable. ``device`` defaults to :func:`get_device`.
    """
    if getattr(data, "ndim", 1) != 1:
        raise ValueError(f"data must be a 1-D stream of token ids, got shape {tuple(data.shape)}; flatten it")
    _check_length(len(data), block_size)
    device = torch.device(device) if device is not None else get_device()
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,) window starts
    rows = _rows(data, ix.tolist(), block_size + 1)  # (B, T + 1)
    x = rows[:, :-1].contiguous()  # (B, T)
    y = rows[:, 1:].contiguous()  # (B, T)
    return move_to_device((x, y), device, non_blocking=device.type == "cuda")


class LMWindows(Dataset):
    """Windows of ``block_size`` inputs and shifted targets as a map-style Dataset.

    Window ``i`` starts at ``i * stride`` (``stride`` defaults to ``block_size``: no overlap); one last
    window ends exactly at the end of the stream, so every token after the first is a target at least once.
    With ``mask_seen=True`` a target already scored by an earlier window is set to ``IGNORE_INDEX``, so
    each token is scored exactly once: the right setting for validation loss and perplexity. Works with
    ``DataLoader`` and ``DistributedSampler``; items are ``(x, y)`` int64 tensors of shape ``(block_size,)``.
    """

    def __init__(self, data: TokenData, block_size: int, stride: int | None = None, mask_seen: bool = False):
        _check_length(len(data), block_size)
        stride = block_size if stride is None else stride
        if not 1 <= stride <= block_size:
            raise ValueError(
                f"stride must be in [1, block_size={block_size}], got {stride}; gaps would skip tokens"
            )
        self.data, self.block_size, self.stride, self.mask_seen = data, block_size, stride, mask_seen
        last = len(data) - block_size - 1  # the last start whose window still has a next token
        starts = np.arange(0, last + 1, stride, dtype=np.int64)
        if starts[-1] != last:
            starts = np.append(starts, last)
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        i = i % len(self)
        start = int(self.starts[i])
        row = _rows(self.data, [start], self.block_size + 1)[0]  # (T + 1,)
        x, y = row[:-1].clone(), row[1:].clone()  # (T,), (T,)
        if self.mask_seen and i > 0:
            seen = int(self.starts[i - 1]) + self.block_size - start  # targets the previous window scored
            y[: max(seen, 0)] = IGNORE_INDEX
        return x, y


def eval_windows(
    data: TokenData,
    block_size: int,
    batch_size: int,
    stride: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x, y)`` that cover ``data`` once, in order, each target scored exactly once.

    Masked targets are ``IGNORE_INDEX``: sum the loss with ``reduction="sum"`` and divide by
    ``(y != IGNORE_INDEX).sum()`` for the exact mean over the split.
    """
    windows = LMWindows(data, block_size, stride, mask_seen=True)
    device = torch.device(device) if device is not None else get_device()
    for lo in range(0, len(windows), batch_size):
        pairs = [windows[i] for i in range(lo, min(lo + batch_size, len(windows)))]
        x = torch.stack([p[0] for p in pairs])  # (B, T)
        y = torch.stack([p[1] for p in pairs])  # (B, T)
        yield move_to_device((x, y), device, non_blocking=device.type == "cuda")


# ----------------------------------------------------------------------------------------------------------
# classification and instruction batches


class ClassificationDataset(Dataset):
    """Token-id lists with one integer label each; items are ``{"input_ids": list, "labels": int}``."""

    def __init__(self, token_id_lists: Sequence[Sequence[int]], labels: Sequence[int]):
        if len(token_id_lists) != len(labels):
            raise ValueError(
                f"got {len(token_id_lists)} token lists but {len(labels)} labels; pass one label per text"
            )
        self.token_id_lists, self.labels = token_id_lists, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": list(self.token_id_lists[i]), "labels": int(self.labels[i])}


def _unpack(item: Any) -> tuple[list[int], Any]:
    if isinstance(item, dict):
        if "input_ids" not in item or not ("labels" in item or "label" in item):
            raise KeyError(f"a batch item needs 'input_ids' and 'labels' keys, got {sorted(item)}")
        return list(item["input_ids"]), item["labels"] if "labels" in item else item["label"]
    if isinstance(item, tuple | list) and len(item) == 2:
        return list(item[0]), item[1]
    raise TypeError(f"a batch item must be a dict or an (input_ids, labels) pair, got {type(item).__name__}")


def pad_collate(
    batch: Sequence[Any],
    pad_id: int,
    max_length: int | None = None,
    padding_side: Literal["right", "left"] = "right",
) -> dict[str, torch.Tensor]:
    """Pad a list of examples into ``input_ids`` (B, T), ``attention_mask`` (B, T) and ``labels``.

    An example is ``{"input_ids": [...], "labels": ...}`` or an ``(input_ids, labels)`` pair. An integer label
    gives ``labels`` of shape (B,); a per-token label list (see :func:`prompt_completion_example`) gives
    (B, T) padded with ``IGNORE_INDEX``. ``max_length`` cuts longer examples, keeping their start. The mask is
    1 on real tokens and 0 on padding; ``padding_side="left"`` puts the padding first (for generation).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
    items = [_unpack(item) for item in batch]
    per_token = not isinstance(items[0][1], int | np.integer) and not (
        isinstance(items[0][1], torch.Tensor) and items[0][1].ndim == 0
    )
    seqs = [ids[:max_length] for ids, _ in items]
    for k, (ids, (raw, label)) in enumerate(zip(seqs, items)):
        if not ids:
            raise ValueError(f"example {k} has no tokens; drop empty texts before batching")
        if per_token and len(label) != len(raw):
            raise ValueError(
                f"example {k} has {len(raw)} input ids but {len(label)} labels; give one per token"
            )
    T = max(len(ids) for ids in seqs)
    B = len(seqs)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    token_labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long) if per_token else None  # (B, T)
    for b, (ids, (_, label)) in enumerate(zip(seqs, items)):
        n = len(ids)
        cols = slice(0, n) if padding_side == "right" else slice(T - n, T)
        input_ids[b, cols] = torch.tensor(ids, dtype=torch.long)
        attention_mask[b, cols] = 1
        if token_labels is not None:
            token_labels[b, cols] = torch.as_tensor(list(label)[:n], dtype=torch.long)
    if token_labels is not None:
        labels = token_labels
    else:
        labels = torch.tensor([int(label) for _, label in items], dtype=torch.long)  # (B,)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_classification_loader(
    token_id_lists: Sequence[Sequence[int]],
    labels: Sequence[int],
    batch_size: int,
    pad_id: int,
    *,
    shuffle: bool = True,
    max_length: int | None = None,
    padding_side: Literal["right", "left"] = "right",
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of padded classification batches; the shuffle order is fixed by ``seed``."""
    collate = functools.partial(pad_collate, pad_id=pad_id, max_length=max_length, padding_side=padding_side)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        ClassificationDataset(token_id_lists, labels),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )


def prompt_completion_example(
    prompt_ids: Sequence[int], completion_ids: Sequence[int], eos_id: int, shift: bool = False
) -> tuple[list[int], list[int]]:
    """One instruction-tuning example: ``input_ids = prompt + completion + [eos]``, ``labels`` the same
    with the prompt replaced by ``IGNORE_INDEX`` so the loss only teaches the completion.

    With ``shift=False`` labels line up with ``input_ids`` (Hugging Face models shift inside the loss).
    With ``shift=True`` they are already shifted, ``labels[t]`` being the token after ``input_ids[t]``,
    as :func:`get_batch` makes them for a nanoGPT-style model (one token shorter).
    """
    if not completion_ids:
        raise ValueError(
            "completion_ids is empty; an example needs at least one completion token to learn from"
        )
    input_ids = [*map(int, prompt_ids), *map(int, completion_ids), int(eos_id)]
    labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
    if shift:
        return input_ids[:-1], labels[1:]
    return input_ids, labels
