"""Retrieval-augmented generation: rule-made questions, prompts cropped to a budget, answer scoring,
retrieval errors; the bootstrap interval against scipy. Tiny stand-ins here; the real corpus and the
real SmolLM2 in the slow tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chat_helpers import tiny_chat_model, tiny_tokenizer

from course_lib.metrics import bootstrap_interval
from course_lib.rag import (
    BLANK,
    QuestionTooLongError,
    answer,
    build_messages,
    contains_match,
    crop_to_tokens,
    exact_match,
    make_questions,
    normalise,
    occurrences,
    retrieve,
)
from course_lib.semantic_search import SemanticIndex

DOCS = [
    ("a", "The club signed the striker on Monday. Manager Alan Curbishley said the fee was £4.5m in total."),
    (
        "b",
        "Shares in the bank rose on Tuesday. Boss Gordon Pell said profits reached £2.1bn this year.",
    ),
    ("c", "The band will tour Europe next spring. Singer Gordon Pell is not related to the banker, it said."),
    (
        "d",
        "The minister said the bill would pass. About 3,000 people marched in London against the plan.",
    ),
]


class WordHashEncoder:
    """A stand-in for MiniLM: a bag of hashed lower-case words, so shared words mean similar vectors."""

    def encode(self, texts):
        out = torch.zeros(len(texts), 64)
        for i, t in enumerate(texts):
            for w in normalise(t).split():
                out[i, sum(map(ord, w)) % 64] += 1.0
        return out


# ------------------------------------------------------------------------------------------ scoring


def test_normalise_drops_case_punctuation_and_articles():
    assert normalise("The £1.2bn, deal!") == "1 2bn deal"
    assert normalise("  An   Apple ") == "apple"


@pytest.mark.parametrize(
    "prediction, gold, contains, exact",
    [
        ("Alan Curbishley", "Alan Curbishley", True, True),
        ("It was alan curbishley.", "Alan Curbishley", True, False),
        ("Curbishley", "Alan Curbishley", False, False),  # part of the answer is not the answer
        ("£4.5m", "4.5m", True, True),  # the currency sign is punctuation
        ("45m", "4.5m", False, False),  # the decimal point still separates
        ("3,0001 people", "3,000", False, False),  # whole words only
    ],
)
def test_contains_and_exact_match(prediction, gold, contains, exact):
    assert contains_match(prediction, gold) is contains
    assert exact_match(prediction, gold) is exact


def test_an_empty_answer_cannot_be_scored():
    with pytest.raises(ValueError, match="empty after normalisation"):
        contains_match("anything", "the")


# ------------------------------------------------------------------------------------------ questions


def test_every_question_blanks_an_answer_found_in_exactly_one_document():
    questions = make_questions(DOCS, n=10)
    assert questions, "the tiny corpus has unique names and numbers: some questions must come out"
    texts = [t for _, t in DOCS]
    for q in questions:
        assert occurrences(q.answer, texts) == 1
        assert q.answer in dict(DOCS)[q.doc_id]
        assert BLANK in q.question and q.answer not in q.question
    answers = {q.answer for q in questions}
    assert "Gordon Pell" not in answers  # in two documents: never asked
    assert len({q.doc_id for q in questions}) == len(questions)  # at most one per document


def test_questions_come_from_the_opening_only():
    long_doc = [
        (
            "x",
            "Short opening here. "
            + "Filler words that say nothing at all here. " * 30
            + "Later the reporter Zebedee Quarmby counted 98,765 ducks on the pond today.",
        )
    ]
    assert make_questions(long_doc, n=5, opening_chars=600) == []
    assert [q.answer for q in make_questions(long_doc, n=5, opening_chars=10_000)] == ["98,765"]


def test_questions_are_reproducible_and_bad_arguments_are_refused():
    assert make_questions(DOCS, 3, seed=1) == make_questions(DOCS, 3, seed=1)
    with pytest.raises(ValueError, match="n must be"):
        make_questions(DOCS, 0)
    with pytest.raises(ValueError, match="no documents"):
        make_questions([], 5)


# ------------------------------------------------------------------------------------------ prompts


def test_crop_to_tokens_keeps_a_prefix_within_the_budget():
    tok = tiny_tokenizer()
    text = "The cat sat on the mat. A dog ran to the park and back again."
    cropped = crop_to_tokens(text, tok, 5)
    assert text.startswith(cropped) and len(tok.encode(cropped)) <= 5
    assert crop_to_tokens(text, tok, 10_000) == text


def test_prompt_fits_its_budget_and_keeps_the_best_passage_first():
    tok = tiny_tokenizer()
    passages = ["The cat sat on the mat. " * 40, "A dog ran to the park and back again. " * 40]
    for budget in (200, 300, 500):
        messages = build_messages("What sat on the mat?", passages, tok, budget)
        n = len(tok.encode("".join(m["content"] for m in messages)))
        assert n <= budget, f"prompt of {n} tokens over the budget {budget}"
        body = messages[-1]["content"]
        assert body.index("Article 1:\nThe cat") < body.index("Article 2:\nA dog")
        assert body.endswith("Question: What sat on the mat?")
    assert "Article" not in build_messages("What?", [], tok, 100)[-1]["content"]


def test_a_question_longer_than_the_budget_is_a_clear_error():
    tok = tiny_tokenizer()
    with pytest.raises(QuestionTooLongError, match="shorten the question or raise max_prompt_tokens"):
        build_messages("What is two plus two? " * 50, ["The cat sat."], tok, 64)
    with pytest.raises(QuestionTooLongError, match="pass fewer passages"):
        build_messages("What?", ["The cat sat."] * 20, tok, 200)


def test_a_question_longer_than_the_model_context_is_refused_by_the_chat_model():
    chat = tiny_chat_model(block_size=64)
    with pytest.raises(ValueError, match="context holds 64"):
        answer(chat, "What is two plus two? " * 40, [], max_prompt_tokens=4096)


def test_answer_uses_the_chat_model_greedily():
    chat = tiny_chat_model(block_size=256)
    got = answer(
        chat, "What sat on the mat?", ["The cat sat on the mat."], max_prompt_tokens=128, max_new_tokens=5
    )
    messages = build_messages("What sat on the mat?", ["The cat sat on the mat."], chat.tokenizer, 128)
    assert got == chat.chat(messages, max_new_tokens=5, temperature=0.0)


# ------------------------------------------------------------------------------------------ retrieval


def test_retrieve_finds_the_document_that_shares_the_words():
    index = SemanticIndex(WordHashEncoder()).add([t for _, t in DOCS], ids=[d for d, _ in DOCS])
    assert retrieve(index, "people marched in London against the plan", k=1) == ["d"]
    assert len(retrieve(index, "bank profits", k=3)) == 3


def test_retrieval_over_an_empty_index_is_a_clear_error():
    with pytest.raises(ValueError, match="retrieval over an empty index: add the articles first"):
        retrieve(SemanticIndex(WordHashEncoder()), "anything", k=3)


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_interval_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    values = (rng.random(150) < 0.3).astype(float)
    lo, hi = bootstrap_interval(values, n_resamples=20_000)
    ref = stats.bootstrap((values,), np.mean, n_resamples=20_000, method="percentile", random_state=1)
    # two independent Monte Carlo estimates of the same quantiles: agree to 0.01 on a 0/1 mean
    assert abs(lo - ref.confidence_interval.low) < 0.01 and abs(hi - ref.confidence_interval.high) < 0.01
    assert lo < values.mean() < hi


def test_bootstrap_interval_refuses_too_few_values():
    with pytest.raises(ValueError, match="at least 2 values"):
        bootstrap_interval([1.0])


# ------------------------------------------------------------------------------------------ the real thing


@pytest.mark.slow
def test_bbc_questions_each_have_exactly_one_article():
    from course_lib.datasets import bbc_news

    articles = bbc_news()
    questions = make_questions([(a.doc_id, a.body) for a in articles], n=120)
    assert len(questions) >= 100
    bodies = [a.body for a in articles]
    for q in questions:
        assert occurrences(q.answer, bodies) == 1, q
        assert occurrences(q.answer, [a.body for a in articles if a.doc_id == q.doc_id]) == 1


@pytest.mark.slow
def test_smollm2_answers_from_the_gold_article():
    from course_lib.chat import load_chat_model

    chat = load_chat_model("smollm2", device="cpu")
    passage = (
        "Manager Alan Curbishley said the club paid a fee of £4.5m for the striker on Monday. "
        "The player, signed from Leeds, will join the squad next week."
    )
    sentence = f"Manager {BLANK} said the club paid a fee of £4.5m for the striker on Monday."
    question = f'"{sentence}"\nWhich name goes in the blank {BLANK}? Answer with the name only.'
    # greedy, float32 on the CPU: deterministic; the name is in the passage and nowhere in the question
    assert contains_match(answer(chat, question, [passage], 256, max_new_tokens=24), "Alan Curbishley")
    assert not contains_match(answer(chat, question, [], 256, max_new_tokens=24), "Alan Curbishley")
    with pytest.raises(ValueError, match="context holds"):
        answer(chat, "word " * 9000, [], max_prompt_tokens=20_000)
