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
