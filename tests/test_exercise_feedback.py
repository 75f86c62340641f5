"""What a learner sees when a check fails: the hint only after a real failure, warnings on stdout (never on
stderr, which nbgrader scores zero), and in a notebook the failure's message without a traceback."""

from __future__ import annotations

import warnings

import nbclient
import nbformat
import numpy as np
import pytest
import torch

from course_lib.exercises import Case, ExerciseFailure, check_function

CASES = [Case("a vector of ones", (torch.ones(3),))]
HINT = "twice, not three times"


def double(x):
    return 2 * x


def test_the_untouched_stub_gets_what_to_do_but_no_hint():
    def blank(x):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure) as failure:
        check_function("double", blank, double, CASES, hint=HINT)
    assert "not written yet" in str(failure.value) and HINT not in str(failure.value)


def test_a_wrong_answer_gets_the_hint():
    with pytest.raises(ExerciseFailure, match=HINT):
        check_function("double", lambda x: 3 * x, double, CASES, hint=HINT)


def test_a_correct_answer_that_warns_passes_with_a_note_on_stdout_only(capsys):
    def noisy_double(x):
        np.log(np.zeros(1))  # RuntimeWarning: divide by zero
        return 2 * x

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping the check would fail this test
        check_function("double", noisy_double, double, CASES)
    out, err = capsys.readouterr()
    assert "all 1 cases pass" in out and "RuntimeWarning" in out and err == ""


@pytest.mark.slow
def test_in_a_notebook_a_failure_shows_its_message_without_a_traceback_and_still_fails_the_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\nfrom course_lib.exercises import Case, check_function"),
        nbformat.v4.new_code_cell(
            "check_function('double', lambda x: 3 * x, lambda x: 2 * x, [Case('ones', (torch.ones(3),))])"
        ),
        nbformat.v4.new_code_cell("1 / 0"),  # other errors keep their usual traceback
    ]
    nbclient.NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=120).execute()
    (failure,) = nb.cells[1].outputs
    assert failure.output_type == "error" and failure.ename == "ExerciseFailure"
    assert failure.traceback == [f"ExerciseFailure: {failure.evalue}"]  # the message, nothing else
    assert "case 1 of 1 (ones)" in failure.evalue
    (other,) = nb.cells[2].outputs
    assert other.ename == "ZeroDivisionError" and len(other.traceback) > 1
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="ExerciseFailure"):
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=120).execute()  # the cell still fails


# ------------------------------------------------------------ ready-made answers found, own helpers spared


def test_library_used_finds_forbidden_functions_and_packages_however_they_are_reached():
    from sklearn.metrics import confusion_matrix, f1_score

    from course_lib.exercises import library_used

    def imported_inside(y, p):
        from sklearn.metrics import f1_score

        return f1_score(y, p)

    def through_a_closure(y, p):
        return confusion_matrix(y, p)

    def as_an_attribute(x):
        return torch.nn.functional.softmax(x, -1)

    assert library_used(imported_inside, packages=("sklearn",)) == ["code from sklearn.metrics"]
    assert library_used(through_a_closure, forbidden=("confusion_matrix",)) == [
        "confusion_matrix from sklearn.metrics._classification"
    ]
    assert library_used(lambda y, p: f1_score(y, p), packages=("sklearn",)) == [
        "f1_score from sklearn.metrics._classification"
    ]
    assert library_used(as_an_attribute, forbidden=("softmax",)) == ["PyTorch's softmax"]
    assert library_used(as_an_attribute) == [], "softmax is only refused where an exercise forbids it"


def test_a_helper_of_the_learners_own_with_a_forbidden_name_is_spared():
    namespace: dict = {"__name__": "__main__"}
    exec(
        "def confusion_matrix(y, p, n):\n"
        "    cm = [[0] * n for _ in range(n)]\n"
        "    for t, q in zip(y, p):\n"
        "        cm[t][q] += 1\n"
        "    return cm\n"
        "def answer(y, p, n):\n"
        "    return confusion_matrix(y, p, n)\n",
        namespace,
    )
    from course_lib.exercises import library_used

    assert library_used(namespace["answer"], forbidden=("confusion_matrix",)) == []
