"""Notebook 5.6's self-checks pass right answers and catch the usual wrong ones, naming the case."""

from __future__ import annotations

import pytest

from course_lib import rag
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch05_rag import check_contains_match, check_crop_to_tokens, check_recall_at_k_ids
from course_lib.rag import normalise

# ------------------------------------------------------------------------- answers a learner may write


def contains(prediction, answer):
    return f" {normalise(answer)} " in f" {normalise(prediction)} "


def contains_substring(prediction, answer):  # no word boundaries: "Curbishleys" matches "Curbishley"
    return normalise(answer) in normalise(prediction)


def contains_case_sensitive(prediction, answer):
    return answer in prediction


def exact(prediction, answer):  # exact match where a contains match was asked
    return normalise(prediction) == normalise(answer)


def recall(retrieved, gold, k):
    return sum(g in r[:k] for r, g in zip(retrieved, gold)) / len(gold)


def recall_off_by_one(retrieved, gold, k):
    return sum(g in r[: k + 1] for r, g in zip(retrieved, gold)) / len(gold)


def recall_top1_only(retrieved, gold, k):
    return sum(r[0] == g for r, g in zip(retrieved, gold)) / len(gold)


def recall_as_count(retrieved, gold, k):
    return sum(g in r[:k] for r, g in zip(retrieved, gold))


def crop(text, tokenizer, n_tokens):
    return tokenizer.decode(tokenizer.encode(text)[:n_tokens])


def crop_characters(text, tokenizer, n_tokens):  # characters, not tokens
    return text[:n_tokens]


def crop_one_short(text, tokenizer, n_tokens):
    return tokenizer.decode(tokenizer.encode(text)[: n_tokens - 1])


def crop_four_characters_per_token(text, tokenizer, n_tokens):  # a rule of thumb instead of the tokenizer
    return text[: 4 * n_tokens]


@pytest.mark.parametrize(
    "check, answer",
    [(check_contains_match, contains), (check_recall_at_k_ids, recall), (check_crop_to_tokens, crop)],
)
def test_right_answers_pass(check, answer, capsys):
    check(answer)
    assert "✓" in capsys.readouterr().out


WRONG = [
    (check_contains_match, contains_substring, "part of a word"),
    (check_contains_match, contains_case_sensitive, "other case"),
    (check_contains_match, exact, "other case"),
    (check_recall_at_k_ids, recall_off_by_one, "k=1"),
    (check_recall_at_k_ids, recall_top1_only, "k=2"),
    (check_recall_at_k_ids, recall_as_count, "k=1"),
    (check_crop_to_tokens, crop_characters, "3 tokens"),
    (check_crop_to_tokens, crop_one_short, "3 tokens"),
    (check_crop_to_tokens, crop_four_characters_per_token, "3 tokens"),
    (
        check_contains_match,
        lambda prediction, answer: rag.contains_match(prediction, answer),
        "uses the library",
    ),
    (check_crop_to_tokens, lambda text, tok, n: rag.crop_to_tokens(text, tok, n), "uses the library"),
]
MUTANTS = WRONG


@pytest.mark.parametrize("check, wrong, case", WRONG)
def test_wrong_answers_fail_naming_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


@pytest.mark.parametrize("check", [check_contains_match, check_recall_at_k_ids, check_crop_to_tokens])
def test_unwritten_exercise_says_so(check):
    def blank(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)
