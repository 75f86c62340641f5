"""The self-check engine: passes a right answer, names the failing case for a wrong one."""

from __future__ import annotations

import pytest
import torch

from course_lib.exercises import Case, ExerciseFailure, check_function

CASES = [Case("a row", (torch.tensor([1.0, 2.0, 3.0]),)), Case("a batch", (torch.randn(4, 5),))]


def reference(x):
    return torch.softmax(x, dim=-1)


def test_a_correct_answer_passes(capsys):
    check_function("softmax", lambda x: x.exp() / x.exp().sum(-1, keepdim=True), reference, CASES)
    assert "all 2 cases pass" in capsys.readouterr().out


def test_an_unwritten_exercise_says_what_to_do():
    def blank(x):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check_function("softmax", blank, reference, CASES)


def test_a_wrong_answer_names_the_case_and_shows_expected_and_got():
    def wrong(x):
        return x.exp() / x.exp().sum()  # forgets the batch dimension

    with pytest.raises(ExerciseFailure) as err:
        check_function("softmax", wrong, reference, CASES)
    msg = str(err.value)
    assert "case 2 of 2 (a batch)" in msg and "expected:" in msg and "got:" in msg


def test_a_wrong_shape_is_reported_as_a_shape():
    with pytest.raises(ExerciseFailure, match=r"shape \(3, 1\) instead of \(3,\)"):
        check_function("softmax", lambda x: reference(x)[:, None], reference, CASES[:1])


def test_a_crash_in_the_learners_code_becomes_feedback():
    with pytest.raises(ExerciseFailure, match="raised ZeroDivisionError"):
        check_function("softmax", lambda x: 1 / 0, reference, CASES)


def test_inputs_are_copied_so_in_place_edits_cannot_fool_the_check():
    def in_place(x):
        x.zero_()
        return reference(x)

    with pytest.raises(ExerciseFailure):
        check_function("softmax", in_place, reference, CASES)


def test_a_missing_return_is_feedback_not_a_crash():
    with pytest.raises(ExerciseFailure, match="forget to return"):
        check_function("lr", lambda step: None, lambda step: 0.5 * step, [Case("step 1", (1.0,))])
