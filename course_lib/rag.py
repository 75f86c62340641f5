"""Retrieval-augmented generation: a chat model answers from the articles a semantic search finds.

    question -> SemanticIndex.search (MiniLM) -> top-k articles -> cropped into the prompt -> ChatModel

Three pieces, each measurable on its own:

- :func:`make_questions` builds a question set from the corpus itself, by rules: a sentence from the
  opening of an article with one named entity or number blanked out, kept only when that answer occurs
  in exactly one article (so the gold article is known and no other article gives it away);
- :func:`build_messages` puts the question and the retrieved articles into a chat prompt, each article
  cropped so the whole prompt fits a token budget (:class:`QuestionTooLongError` when the question
  alone does not);
- :func:`contains_match` / :func:`exact_match` score an answer after :func:`normalise` (lower case,
  punctuation to spaces, articles dropped).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

# A number with its unit: "£1.2bn", "45%", "3,000", "1998" (one digit alone is too common to ask about).
NUMBER = re.compile(r"[£$€]?\d[\d,.]*\d(?:%|bn|m\b)?|[£$€]\d(?:bn|m\b)?")
# A name: two to four capitalised words ("Gordon Brown", "Manchester United", "World Trade Organisation").
NAME = re.compile(r"\b[A-Z][a-z]+(?:[ -](?:of |de |van )?[A-Z][a-z]+){1,3}\b")
BLANK = "_____"
_ARTICLES = {"a", "an", "the"}
# Capitalised words that start a span without being part of a name ("Last June Grewcock", "On Monday").
_NOT_NAMES = set(
    "The A An And But If In On At By For From Last Next This That These Those When While After Before Since "
    "As So Yet Or Of To With Without Mr Mrs Ms Dr Sir".split()
    + "January February March April May June July August September October November December".split()
    + "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
)


class QuestionTooLongError(ValueError):
    """The question (with the instructions) takes the whole token budget: no room for any article."""


@dataclass(frozen=True)
class Question:
    """A fill-in-the-blank question whose ``answer`` occurs in exactly one article, ``doc_id``."""

    question: str  # the sentence with the answer replaced by BLANK, and what kind of answer it wants
    answer: str
    doc_id: Hashable
    kind: str  # "number" or "name"


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, "a/an/the" dropped, spaces collapsed: "The £1.2bn." -> "1 2bn"."""
    words = re.sub(r"[^\w]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def contains_match(prediction: str, answer: str) -> bool:
    """True when the normalised answer appears, as whole words, in the normalised prediction."""
    a = normalise(answer)
    if not a:
        raise ValueError(f"the answer {answer!r} is empty after normalisation; it cannot be scored")
    return f" {a} " in f" {normalise(prediction)} "


def exact_match(prediction: str, answer: str) -> bool:
    """True when the normalised prediction equals the normalised answer."""
    return normalise(prediction) == normalise(answer)


def occurrences(answer: str, texts: Sequence[str]) -> int:
    """In how many of ``texts`` the answer occurs (normalised, as whole words)."""
    a = f" {normalise(answer)} "
    return sum(a in f" {normalise(t)} " for t in texts)


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|(?<=[.!?][\"'])\s+", text.replace("\n", " "))  # after . ! ? and ." '
    return [s.strip() for s in parts if s.strip()]


def _candidates(sentence: str) -> list[tuple[str, str]]:
    """(answer, kind) spans of one sentence; a name at the very start of the sentence is skipped
    (its capital letter may be the sentence's, not the name's)."""
    out = [(m.group(), "number") for m in NUMBER.finditer(sentence)]
    names = [m for m in NAME.finditer(sentence) if m.start() > 0 and m.group().split()[0] not in _NOT_NAMES]
    out += [(m.group(), "name") for m in names]
    return out


def make_questions(
    docs: Sequence[tuple[Hashable, str]],
    n: int,
    opening_chars: int = 600,
    min_words: int = 8,
    max_words: int = 40,
    seed: int = 0,
) -> list[Question]:
    """Up to ``n`` questions, at most one per article, from ``docs`` = [(doc_id, body), ...].

    Rules: a sentence of ``min_words``..``max_words`` words that starts within the first
    ``opening_chars`` characters of the body (the part a cropped prompt and a 128-token encoder see);
    one number or name in it, occurring (normalised, whole words) in no other article and exactly once
    in that sentence, is blanked out. Articles are visited in a ``seed``-shuffled order.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not docs:
        raise ValueError("no documents to make questions from; pass [(doc_id, text), ...]")
    texts = [f" {normalise(t)} " for _, t in docs]
    # Document frequency of every candidate span (a fast filter; the exact count is checked below).
    df: Counter[str] = Counter()
    for _, body in docs:
        df.update({normalise(a) for s in _sentences(body) for a, _ in _candidates(s)})
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    questions: list[Question] = []
    for i in order:
        doc_id, body = docs[i]
        found, offset = None, 0
        for sentence in _sentences(body):
            if offset > opening_chars:  # this sentence starts after the opening
                break
            offset += len(sentence) + 1
            if not min_words <= len(sentence.split()) <= max_words:
                continue
            for answer, kind in _candidates(sentence):
                a = normalise(answer)
                if not a or df[a] != 1 or sentence.count(answer) != 1:
                    continue
                if sum(f" {a} " in t for t in texts) == 1:  # exactly one article: this one
                    found = Question(_question_text(sentence, answer, kind), answer, doc_id, kind)
                    break
            if found:
                break
        if found:
            questions.append(found)
            if len(questions) == n:
                break
    return questions


def _question_text(sentence: str, answer: str, kind: str) -> str:
    """The blanked sentence, then what to fill in (a 135M model answers this form more often than a
    "which ... fills the blank" question that ends on the quoted sentence, which it tends to copy)."""
    what = "number" if kind == "number" else "name"
    blanked = sentence.replace(answer, BLANK)
    return f'"{blanked}"\nWhich {what} goes in the blank {BLANK}? Answer with the {what} only.'


# ----------------------------------------------------------------------------------------------------
# The prompt


SYSTEM = "You answer questions about BBC News articles. Answer with the missing words only."


def crop_to_tokens(text: str, tokenizer: Any, n_tokens: int) -> str:
    """The longest prefix of ``text`` that is at most ``n_tokens`` tokens (by whole tokens)."""
    if n_tokens < 1:
        return ""
    ids = tokenizer.encode(text)
    return text if len(ids) <= n_tokens else tokenizer.decode(ids[:n_tokens])


def build_messages(
    question: str, passages: Sequence[str], tokenizer: Any, max_prompt_tokens: int
) -> list[dict[str, str]]:
    """Chat messages asking ``question`` with ``passages`` (best first) as context.

    The question and instructions are measured first; the tokens left of ``max_prompt_tokens`` are shared
    equally among the passages, each cropped to its share. No passages: the question alone.
    Raises :class:`QuestionTooLongError` when the question leaves no room for any passage.
    """
    base = _messages(question, [])
    used = len(tokenizer.encode(base[0]["content"] + base[1]["content"])) + 16  # + the template's tokens
    if used > max_prompt_tokens:
        raise QuestionTooLongError(
            f"the question takes {used} tokens with the instructions, more than max_prompt_tokens="
            f"{max_prompt_tokens}; shorten the question or raise max_prompt_tokens"
        )
    if not passages:
        return base
    per = (max_prompt_tokens - used) // len(passages) - 8  # each passage's share, less its heading
    if per < 16:
        raise QuestionTooLongError(
            f"{len(passages)} passages leave {per} tokens each after the question ({used} tokens) in "
            f"max_prompt_tokens={max_prompt_tokens}; pass fewer passages, a shorter question or a larger "
            "budget"
        )
    return _messages(question, [crop_to_tokens(p, tokenizer, per) for p in passages])


def _messages(question: str, passages: Sequence[str]) -> list[dict[str, str]]:
    context = "".join(f"Article {i}:\n{p}\n\n" for i, p in enumerate(passages, start=1))
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{context}Question: {question}"},
    ]


# ----------------------------------------------------------------------------------------------------
# Retrieval and answering


def retrieve(index: Any, question: str, k: int) -> list[Hashable]:
    """The ids of the ``k`` articles of a :class:`~course_lib.semantic_search.SemanticIndex` nearest to
    ``question``, best first."""
    if len(index) == 0:
        raise ValueError(
            "retrieval over an empty index: add the articles first (index.add(texts, ids) or "
            "index.add_embeddings(vectors, ids)), or load a saved one with SemanticIndex.load(path, encoder)"
        )
    return [doc_id for doc_id, _ in index.search(question, k)]


def answer(
    chat: Any, question: str, passages: Sequence[str], max_prompt_tokens: int = 768, max_new_tokens: int = 16
) -> str:
    """A :class:`~course_lib.chat.ChatModel`'s greedy answer to ``question`` given ``passages``."""
    messages = build_messages(question, passages, chat.tokenizer, max_prompt_tokens)
    return chat.chat(messages, max_new_tokens=max_new_tokens, temperature=0.0)


__all__ = [
    "BLANK",
    "Question",
    "QuestionTooLongError",
    "answer",
    "build_messages",
    "contains_match",
    "crop_to_tokens",
    "exact_match",
    "make_questions",
    "normalise",
    "occurrences",
    "retrieve",
]
