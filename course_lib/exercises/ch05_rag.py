"""Self-checks for notebook 5.6 (a real LLM): answer matching, recall@k of retrieved ids, cropping a
passage to a token budget. The references are :mod:`course_lib.rag`'s own functions."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

from course_lib.exercises import Case, check_function, require_own_code
from course_lib.rag import contains_match, crop_to_tokens

# ----------------------------------------------------------------------------- contains match


def check_contains_match(fn) -> None:
    """``fn(prediction, answer) -> bool``: the normalised answer occurs as whole words in the prediction."""
    require_own_code(fn, "contains_match", allowed=("normalise",))  # the text gives normalise
    cases = [
        Case("the same words", ("Alan Curbishley", "Alan Curbishley")),
        Case("other case, extra words, a full stop", ("It was alan curbishley.", "Alan Curbishley")),
        Case("only part of a word (not a match)", ("Curbishleys", "Curbishley")),
        Case("a number inside a longer number (not a match)", ("30,0001 people", "30,000")),
        Case("a currency sign is punctuation", ("profits of £4.5m", "4.5m")),
        Case("'the' is dropped on both sides", ("the Times", "Times")),
        Case("a wrong answer", ("Gordon Brown", "Alan Curbishley")),
    ]
    check_function(
        "contains_match",
        fn,
        contains_match,
        cases,
        hint="normalise both sides with course_lib.rag.normalise, then look for ' answer ' inside "
        "' prediction ' (spaces around both, so only whole words match); return a bool",
    )


# ----------------------------------------------------------------------------- recall@k of ids


def _reference_recall_ids(retrieved: Sequence[Sequence[Hashable]], gold: Sequence[Hashable], k: int) -> float:
    return sum(g in list(r)[:k] for r, g in zip(retrieved, gold)) / len(gold)


def check_recall_at_k_ids(fn) -> None:
    """``fn(retrieved, gold, k) -> float``: the share of questions whose gold id is among the first k
    retrieved ids (``retrieved`` holds one best-first list per question)."""
    require_own_code(fn, "recall_at_k_ids")
    retrieved = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"], ["a", "c", "b"]]
    gold = ["a", "a", "a", "b"]
    cases = [
        Case("k=1", (retrieved, gold, 1)),
        Case("k=2", (retrieved, gold, 2)),
        Case("k=3 (every list is that long)", (retrieved, gold, 3)),
        Case("integer ids, k=1", ([[3, 1], [2, 3]], [1, 2], 1)),
    ]
    check_function(
        "recall_at_k_ids",
        fn,
        _reference_recall_ids,
        cases,
        atol=1e-9,
        rtol=0,
        hint="a question counts when its gold id is in the first k entries of its list (retrieved[i][:k]); "
        "divide the count by the number of questions",
    )


# ----------------------------------------------------------------------------- cropping to a budget


class WordTokenizer:
    """A stand-in tokenizer for the check: one token per word and per space-led word piece."""

    def encode(self, text: str) -> list[str]:
        return re.findall(r"\s*\S+", text)

    def decode(self, ids: Sequence[str]) -> str:
        return "".join(ids)


def check_crop_to_tokens(fn) -> None:
    """``fn(text, tokenizer, n_tokens) -> str``: the longest prefix of ``text`` within ``n_tokens`` tokens."""
    require_own_code(fn, "crop_to_tokens")
    tok = WordTokenizer()
    text = "The striker scored twice in the second half before the manager took him off."
    cases = [
        Case("3 tokens", (text, tok, 3)),
        Case("a budget larger than the text", (text, tok, 100)),
        Case("exactly the text's length", (text, tok, len(tok.encode(text)))),
        Case("one token", ("Alpha beta", tok, 1)),
        Case("a long word counts as one token", ("Supercalifragilistic words here", tok, 2)),
    ]
    check_function(
        "crop_to_tokens",
        fn,
        crop_to_tokens,
        cases,
        hint="encode the text, keep the first n_tokens ids, decode them; count tokens, not characters",
    )
