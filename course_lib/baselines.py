"""Count-based language models: the baselines a trained GPT has to beat.

A language model is scored by the mean negative log-likelihood of held-out tokens in nats per token
(the same number as a GPT's cross-entropy loss). The two simplest models only count:

* :class:`UnigramLM` ignores context: ``p(b) = (count(b) + k) / (N + k V)``.
* :class:`BigramLM` looks at one previous token: ``p(b | a) = (count(a, b) + k) / (count(a) + k V)``.

Add-k smoothing gives every token a little probability, so an unseen token or pair costs a finite
loss; ``k = 1`` is Laplace's rule, and much smaller values are usually better for large vocabularies
(:func:`choose_k` picks one on held-out tokens). Bigram counts are kept sparse (one entry per pair
that occurs), so a vocabulary of 8,192 tokens needs memory for the pairs seen, not for 67 M cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_K_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


def _as_ids(tokens: object, vocab_size: int, what: str, min_len: int) -> np.ndarray:
    """A 1-D int64 array of ids in [0, vocab_size), or an error that says what is wrong."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    ids = np.asarray(tokens)
    if ids.ndim != 1:
        raise ValueError(f"{what} must be a 1-D stream of token ids, got shape {ids.shape}; flatten it first")
    if len(ids) < min_len:
        raise ValueError(f"{what} has {len(ids)} tokens; at least {min_len} are needed")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer token ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(
            f"{what} holds ids in [{ids.min()}, {ids.max()}] but vocab_size={vocab_size}; "
            "build the model with the tokenizer's vocab_size"
        )
    return ids


def _check_k(k: float) -> float:
    if not (isinstance(k, int | float) and k > 0 and math.isfinite(k)):
        raise ValueError(f"add-k smoothing needs k > 0 (e.g. 1.0 or 0.01), got {k!r}")
    return float(k)


@dataclass
class _CountingLM:
    """The settings both counting models share: the vocabulary size and the smoothing constant."""

    vocab_size: int
    k: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {self.vocab_size!r}")
        self.k = _check_k(self.k)
        self._forget_counts()

    def _forget_counts(self) -> None:
        raise NotImplementedError


@dataclass
class UnigramLM(_CountingLM):
    """p(b) = (count(b) + k) / (N + k V): every token drawn on its own, context ignored."""

    def _forget_counts(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> UnigramLM:
        ids = _as_ids(tokens, self.vocab_size, "training tokens", 1)
        self.counts = np.bincount(ids, minlength=self.vocab_size).astype(np.float64)  # (V,)
        return self

    def _fitted(self) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError("this UnigramLM has not been fitted; call .fit(train_tokens) first")
        return self.counts

    def log_probs(self) -> np.ndarray:
        """log p(b) for every token b, shape (V,)."""
        counts = self._fitted()
        return np.log(counts + self.k) - np.log(counts.sum() + self.k * self.vocab_size)

    def nll(self, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> float:
        """Mean negative log-likelihood in nats per token of ``tokens[1:]``.

        The first token is skipped so that unigram and bigram (and a GPT's shifted targets) score
        exactly the same positions.
        """
        ids = _as_ids(tokens, self.vocab_size, "evaluation tokens", 2)
        return float(-self.log_probs()[ids[1:]].mean())

    def sample(self, n: int, generator: np.random.Generator | None = None) -> np.ndarray:
        """``n`` tokens drawn independently from the smoothed distribution."""
        rng = generator or np.random.default_rng()
        return rng.choice(self.vocab_size, size=n, p=np.exp(self.log_probs()))


@dataclass
class BigramLM(_CountingLM):
    """p(b | a) = (count(a, b) + k) / (count(a) + k V): the next token given the previous one.

    Pair counts are stored sparsely as sorted codes ``a * V + b`` with their counts.
    """

    def _forget_counts(self) -> None:
        self.pair_codes: np.ndarray | None = None  # sorted unique a * V + b
        self.pair_counts: np.ndarray | None = None  # count of each code
        self.context_counts: np.ndarray | None = None  # (V,) count(a) as a first element of a pair

    def fit(self, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> BigramLM:
        ids = _as_ids(tokens, self.vocab_size, "training tokens", 2)
        codes = ids[:-1] * self.vocab_size + ids[1:]  # (N - 1,) one code per adjacent pair
        self.pair_codes, counts = np.unique(codes, return_counts=True)
        self.pair_counts = counts.astype(np.float64)
        self.context_counts = np.bincount(ids[:-1], minlength=self.vocab_size).astype(np.float64)
        return self

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.pair_codes is None or self.pair_counts is None or self.context_counts is None:
            raise RuntimeError("this BigramLM has not been fitted; call .fit(train_tokens) first")
        return self.pair_codes, self.pair_counts, self.context_counts

    def pair_count(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """count(a, b) for arrays of previous tokens ``a`` and next tokens ``b`` (0 for unseen pairs)."""
        codes, counts, _ = self._fitted()
        query = np.asarray(a, dtype=np.int64) * self.vocab_size + np.asarray(b, dtype=np.int64)
        where = np.searchsorted(codes, query)  # the slot the query would take in the sorted codes
        where = np.minimum(where, len(codes) - 1)
        found = codes[where] == query
        return np.where(found, counts[where], 0.0)

    def log_prob(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """log p(b | a), elementwise over arrays of previous and next tokens."""
        _, _, context = self._fitted()
        a = np.asarray(a, dtype=np.int64)
        return np.log(self.pair_count(a, b) + self.k) - np.log(context[a] + self.k * self.vocab_size)

    def next_token_log_probs(self, a: int) -> np.ndarray:
        """The whole row log p(. | a), shape (V,)."""
        return self.log_prob(np.full(self.vocab_size, a), np.arange(self.vocab_size))

    def nll(self, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> float:
        """Mean negative log-likelihood in nats per token of ``tokens[1:]`` given the token before each."""
        ids = _as_ids(tokens, self.vocab_size, "evaluation tokens", 2)
        return float(-self.log_prob(ids[:-1], ids[1:]).mean())

    def sample(self, start: int, n: int, generator: np.random.Generator | None = None) -> np.ndarray:
        """``n`` tokens after ``start``, each drawn from p(. | previous token)."""
        rng = generator or np.random.default_rng()
        out = [int(start)]
        for _ in range(n):
            probs = np.exp(self.next_token_log_probs(out[-1]))
            out.append(int(rng.choice(self.vocab_size, p=probs / probs.sum())))
        return np.asarray(out[1:], dtype=np.int64)


def choose_k(
    model_cls: type[UnigramLM] | type[BigramLM],
    vocab_size: int,
    train_tokens: Sequence[int] | np.ndarray | torch.Tensor,
    held_out_fraction: float = 0.1,
    grid: Sequence[float] = DEFAULT_K_GRID,
) -> tuple[float, dict[float, float]]:
    """Pick the smoothing constant on the tail of the *training* tokens (the validation set stays unseen).

    Fits on the first ``1 - held_out_fraction`` of ``train_tokens`` for each k in ``grid`` and scores the
    rest. Returns the best k and the held-out loss of every k.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    if not grid:
        raise ValueError("grid is empty; pass smoothing constants to try, e.g. (1.0, 0.1, 0.01)")
    ids = _as_ids(train_tokens, vocab_size, "training tokens", 4)
    cut = int(len(ids) * (1 - held_out_fraction))
    fit_part, held_out = ids[:cut], ids[cut:]
    if len(fit_part) < 2 or len(held_out) < 2:
        raise ValueError(f"{len(ids)} tokens are too few to hold some out; give more training tokens")
    base = model_cls(vocab_size).fit(fit_part)  # counts do not depend on k: fit once, rescore per k
    losses = {}
    for k in grid:
        base.k = _check_k(k)
        losses[float(k)] = base.nll(held_out)
    best = min(losses, key=losses.get)
    return best, losses


__all__ = ["DEFAULT_K_GRID", "BigramLM", "UnigramLM", "choose_k"]
