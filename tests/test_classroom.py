"""Learner notebooks are generated from the solution notebooks (one source of truth)."""

from __future__ import annotations

import nbformat
import pytest

from course_lib.classroom import learner_notebook, strip_solutions

SOLVED = '''def softmax(x):
    """Softmax over the last dimension."""
    ### BEGIN SOLUTION
    e = (x - x.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)
    ### END SOLUTION
'''


def test_a_solution_region_becomes_the_nbgrader_placeholder_at_its_indentation():
    out = strip_solutions(SOLVED)
    assert "exp()" not in out and "e.sum" not in out
    assert (
        '    """Softmax over the last dimension."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
        in out
    )


def test_several_regions_and_top_level_regions():
    src = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\n### BEGIN SOLUTION\nc = 3\n### END SOLUTION"
    out = strip_solutions(src)
    assert out.count("raise NotImplementedError()") == 2 and "b = 2" in out and "a = 1" not in out


def test_unbalanced_markers_are_an_error():
    with pytest.raises(ValueError, match="unbalanced"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")


def _notebook():
    nb = nbformat.v4.new_notebook()
    text = nbformat.v4.new_markdown_cell("# Title")
    exercise = nbformat.v4.new_code_cell(SOLVED, metadata={"tags": ["exercise"]})
    exercise.outputs = [nbformat.v4.new_output("stream", text="solved\n")]
    check = nbformat.v4.new_code_cell("check_softmax(softmax)", metadata={"tags": ["check"]})
    check.outputs = [nbformat.v4.new_output("stream", text="✓ all pass\n")]
    plot = nbformat.v4.new_code_cell("plot()")
    plot.outputs = [nbformat.v4.new_output("stream", text="figure\n")]
    nb.cells = [text, exercise, check, plot]
    return nb


def test_learner_notebook_blanks_exercises_keeps_other_outputs_and_marks_nbgrader_cells():
    nb = learner_notebook(_notebook(), "demo")
    text, exercise, check, plot = nb.cells
    assert "raise NotImplementedError()" in exercise.source and exercise.outputs == []
    assert check.outputs == [] and "raises-exception" in check.metadata["tags"]
    assert plot.outputs and plot.outputs[0]["text"] == "figure\n"
    assert exercise.metadata["nbgrader"]["solution"] is True
    assert check.metadata["nbgrader"]["grade"] is True and check.metadata["nbgrader"]["points"] > 0
    assert check.metadata["nbgrader"]["locked"] is True and text.metadata["nbgrader"]["locked"] is True
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells]
    assert len(set(ids)) == len(ids)


def test_solution_markers_outside_an_exercise_cell_are_an_error():
    nb = _notebook()
    nb.cells[3].source = SOLVED
    with pytest.raises(ValueError, match="outside a cell tagged 'exercise'"):
        learner_notebook(nb, "demo")
