"""Learner notebooks are generated from the solution notebooks (one source of truth)."""

from __future__ import annotations

import ast
import inspect
import re
import traceback
from pathlib import Path

import jupytext
import nbformat
import pytest

from course_lib.exercises import ExerciseFailure
from tools import classroom
from tools.classroom import learner_notebook, strip_solutions

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


# ------------------------------------------------------------------ markers, tags and grade ids


@pytest.mark.parametrize(
    "source, where",
    [
        (
            "### BEGIN SOLUTION\na = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION",
            "line 3 opens a region inside",
        ),
        ("a = 1\n### END SOLUTION\n", "line 2 has '### END SOLUTION' with no"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "opened on line 2 is never closed"),
    ],
    ids=["nested", "end without begin", "never closed"],
)
def test_unbalanced_markers_name_the_line_and_the_fix(source, where):
    with pytest.raises(ValueError, match="unbalanced") as err:
        strip_solutions(source)
    assert where in str(err.value)


def test_a_marker_anywhere_on_a_line_cuts_the_whole_line_as_nbgrader_does():
    out = strip_solutions("x = 0\ny = 1  # BEGIN SOLUTION\nsecret = 2\n# END SOLUTION here\nz = 3")
    assert out == "x = 0\n# YOUR CODE HERE\nraise NotImplementedError()\nz = 3"


def _cell(kind, source, tags=()):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata={"tags": list(tags)} if tags else {})


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


@pytest.mark.parametrize(
    "cells, message",
    [
        ([_cell("code", "def f():\n    return 1\n", ["exercise"])], "has no '### BEGIN SOLUTION' region"),
        ([_cell("code", "check_f(f)", ["check"])], "no 'exercise' cell before it"),
        ([_cell("markdown", "### BEGIN SOLUTION\nx\n### END SOLUTION", ["exercise"])], "only code cells"),
        ([_cell("code", "x = 1", ["answer"])], "written answers are markdown cells"),
        ([_cell("code", SOLVED, ["exercise", "check"])], "a cell plays one part"),
        (
            [
                _cell("code", SOLVED, ["exercise"]),
                _cell("code", "### BEGIN SOLUTION\n### END SOLUTION", ["check"]),
            ],
            "solution markers in a 'check' cell",
        ),
        ([_cell("code", SOLVED, ["exercise", "points=2"])], "not graded; put it on the 'check'"),
        (
            [_cell("code", SOLVED, ["exercise"]), _cell("code", "c(f)", ["check", "points=0"])],
            "positive number",
        ),
        ([_cell("code", SOLVED, ["exercise"]), _cell("code", "c(f)", ["check", "points=lots"])], "points=2"),
        (
            [_cell("code", SOLVED, ["exercise"]), _cell("code", "c(f)", ["check", "points=1", "points=2"])],
            "several points tags",
        ),
        ([_cell("markdown", "Use ### BEGIN SOLUTION to mark answers")], "solution markers outside"),
    ],
    ids=[
        "exercise without region",
        "check first",
        "markdown exercise",
        "code answer",
        "two roles",
        "markers in check",
        "points on exercise",
        "zero points",
        "points not a number",
        "two points tags",
        "markers in text",
    ],
)
def test_misused_tags_and_markers_are_errors_that_say_what_to_do(cells, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        learner_notebook(_nb(*cells), "demo")


def test_points_tag_sets_the_points_and_answer_cells_are_graded_by_hand():
    nb = _nb(
        _cell("code", SOLVED, ["exercise"]),
        _cell("code", "check_softmax(softmax)", ["check", "points=3"]),
        _cell("markdown", "Why subtract the maximum?"),
        _cell("markdown", "Because exp overflows; the shift cancels.", ["answer", "points=2.5"]),
        _cell("markdown", "Intro\n### BEGIN SOLUTION\nmodel answer\n### END SOLUTION\nOutro", ["answer"]),
    )
    learner = learner_notebook(nb, "demo")
    _, check, _, answer, partial = (c.metadata["nbgrader"] for c in learner.cells)
    assert check["points"] == 3 and check["locked"] and check["grade"] and not check["solution"]
    assert answer == {**answer, "grade": True, "solution": True, "locked": False, "points": 2.5}
    assert partial["points"] == 1 and answer["grade_id"] == "answer-1" and partial["grade_id"] == "answer-2"
    assert learner.cells[3].source == classroom.TEXT_STUB
    assert learner.cells[4].source == f"Intro\n{classroom.TEXT_STUB}\nOutro"


RUBRIC_ANSWER = """### Question 9.9 — why shift
Why subtract the maximum?

### BEGIN SOLUTION
Because exp overflows for large inputs; the shift cancels in the ratio.
Rubric: 1 point for naming the overflow of exp
and saying why the result is unchanged.
### END SOLUTION"""


def test_a_rubric_line_reaches_the_teacher_and_not_the_learner():
    nb = _nb(_cell("markdown", RUBRIC_ANSWER, ["answer"]), _cell("markdown", "Why softmax?\n", ["answer"]))
    (graded, plain) = classroom.graded_cells(nb, "demo")
    assert graded.what == "1 point for naming the overflow of exp and saying why the result is unchanged."
    assert plain.what == "a written answer; the model answer is in the source notebook"
    assert graded.title == "Question 9.9 — why shift"  # the question's own heading names it
    learner = learner_notebook(nb, "demo").cells[0].source
    assert "Rubric" not in learner and "overflow" not in learner and classroom.TEXT_STUB in learner
    assert learner.startswith("### Question 9.9 — why shift\nWhy subtract the maximum?")
    kept, rubric = classroom.split_rubric(RUBRIC_ANSWER)
    assert "Rubric" not in kept and "the shift cancels in the ratio." in kept and rubric.startswith("1 point")


@pytest.mark.parametrize(
    "source, message",
    [
        ("Why?\nRubric: 1 point\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "outside the solution"),
        ("### BEGIN SOLUTION\nBecause.\n### END SOLUTION\nRubric: 1 point", "outside the solution"),
        ("### BEGIN SOLUTION\nRubric: 1 point\nRubric: 2 points\n### END SOLUTION", "a second 'Rubric:'"),
    ],
)
def test_a_rubric_line_the_learner_would_see_or_a_second_one_is_an_error(source, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        learner_notebook(_nb(_cell("markdown", source, ["answer"])), "demo")


def test_the_rubric_and_the_solution_page_show_the_rubric_lines_of_the_course():
    rubric = classroom.rubric_markdown()
    found = 0
    for nb_path in SOLUTION_NBS:
        nb = jupytext.read(nb_path)
        page = classroom.solution_page(nb_path)
        for cell in nb.cells:
            if classroom.ANSWER_TAG in cell.metadata.get("tags", []):
                text = classroom.split_rubric(cell.source)[1]
                if text:
                    found += 1
                    assert f"| {text.replace('|', chr(92) + '|')} |" in rubric, nb_path.name
                    assert f"What earns the points: {text}" in page, nb_path.name
                    assert "> Rubric" not in page and f"> {text[:40]}" not in page, nb_path.name
    assert found >= 2, "the written answers of 3.4 and 3.5 carry a rubric line"


def test_grade_ids_name_the_exercise_and_survive_inserting_cells():
    nb = _notebook()
    before = [c.metadata["nbgrader"]["grade_id"] for c in learner_notebook(nb, "demo").cells]
    assert before[1:3] == ["exercise-softmax", "check-softmax"]
    nb.cells.insert(0, _cell("markdown", "A new introduction"))
    after = [c.metadata["nbgrader"]["grade_id"] for c in learner_notebook(nb, "demo").cells]
    assert after[2:4] == before[1:3]


def test_two_exercises_defining_the_same_function_get_distinct_grade_ids():
    pair = [("code", SOLVED, ["exercise"]), ("code", "check_softmax(softmax)", ["check"])]
    nb = _nb(*[_cell(*spec) for spec in pair * 2])
    ids = [c.metadata["nbgrader"]["grade_id"] for c in learner_notebook(nb, "demo").cells]
    assert len(set(ids)) == 4 and ids[0] == "exercise-softmax"


def test_the_nbgrader_source_keeps_the_solutions_and_has_the_learner_metadata():
    nb = _notebook()
    source, learner = classroom.with_nbgrader_metadata(nb, "demo"), learner_notebook(nb, "demo")
    assert source.cells[1].source == SOLVED and source.cells[1].outputs
    for s, l in zip(source.cells, learner.cells):
        assert s.metadata == l.metadata
    assert "check" in nb.cells[2].metadata["tags"] and "nbgrader" not in nb.cells[2].metadata, (
        "the input notebook must not be modified"
    )


# ----------------------------------------------------------- the real notebooks: nothing leaks


SOLUTION_NBS = classroom.solution_notebooks()


def _rel(p: Path) -> str:
    return str(p.relative_to(classroom.ROOT))


def _leakable(line: str) -> bool:
    """Solution code worth hiding: ten characters or more with a call, an index or an operator in them
    (not ')', 'pass', 'return x' or a bare tuple of names that the exercise's signature gives away)."""
    line = line.strip()
    return len(line) >= 10 and re.search(r"[()\[\]+\-*/@%<>=]", line) is not None


@pytest.mark.parametrize("nb_path", SOLUTION_NBS, ids=_rel)
def test_no_solution_line_reaches_the_learner_notebook_in_code_or_outputs(nb_path):
    solution = jupytext.read(nb_path)
    learner = jupytext.read(classroom.learner_path(nb_path))
    secret = {
        line.strip() for c in solution.cells for line in classroom.solution_lines(c.source) if _leakable(line)
    }
    shown = {line.strip() for c in solution.cells for line in classroom.strip_solutions(c.source).split("\n")}
    secret -= shown  # a line the chapter also shows outside an answer is no secret
    learner_lines = {line.strip() for c in learner.cells for line in c.source.split("\n")}
    outputs = "\n".join(_output_text(o) for c in learner.cells if c.cell_type == "code" for o in c.outputs)
    assert not secret & learner_lines, (
        f"solution lines in the learner's cells: {sorted(secret & learner_lines)}"
    )
    assert not [s for s in secret if s in outputs], "a learner notebook output shows solution code"
    assert not any(classroom.BEGIN_MARK in c.source or classroom.END_MARK in c.source for c in learner.cells)


def _output_text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", []))
    data = output.get("data", {})
    return "\n".join(str(data.get(k, "")) for k in ("text/plain", "text/html", "text/markdown"))


def _defines_only(source: str) -> bool:
    """A cell that only imports and defines (the learner's earlier answers, helpers the text gives)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    return bool(body) and all(
        isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)) for n in body
    )


def _exercises(nb_path):
    """(imports and earlier definitions, exercise source, check source) for each exercise of a solution
    notebook; exercises tagged ``experiment`` work on the notebook's data and are left out here (the
    notebook tests run them after every earlier cell)."""
    nb = jupytext.read(nb_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    imports = "\n".join(c.source for c in code if "imports" in c.metadata.get("tags", []))
    out = []
    for i, cell in enumerate(code):
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags and "experiment" not in tags:
            earlier = [c.source for c in code[:i] if "imports" not in c.metadata.get("tags", [])]
            context = "\n".join([imports, *(src for src in earlier if _defines_only(src))])
            out.append((context, cell.source, code[i + 1].source))
    return out


def _fragments(line: str) -> list[str]:
    """A solution line and its expression without `return` or `name =`: what a hint could quote."""
    line = line.strip()
    parts = [line]
    if line.startswith("return "):
        parts.append(line[len("return ") :])
    assigned = re.match(r"^[\w\s,.\[\]]+?=(?!=)\s*(.+)$", line)
    if assigned:
        parts.append(assigned.group(1))
    return [p for p in parts if _leakable(p)]


EXERCISES = [(p, k) for p in SOLUTION_NBS for k in range(len(_exercises(p)))]


def _run_cell(source: str, namespace: dict, name: str):
    """Execute a cell like a notebook does; return the value of its last expression (None if none)."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, name, "exec"), namespace)
    if last is not None:
        return eval(compile(ast.Expression(last.value), name, "eval"), namespace)
    return None


@pytest.mark.parametrize("nb_path, k", EXERCISES, ids=[f"{_rel(p)}-{k}" for p, k in EXERCISES])
def test_checks_show_nothing_of_the_solution_and_return_nothing(nb_path, k, capsys):
    imports, solved, check = _exercises(nb_path)[k]
    namespace: dict = {}
    _run_cell(imports, namespace, "imports")
    _run_cell(solved, namespace, "solution")
    # a value would become the cell's result, which nbgrader reads as a partial score
    assert _run_cell(check, namespace, "check") is None, "a check must return None"
    capsys.readouterr()

    # a wrong answer: every function or class the exercise defines returns None
    for node in ast.parse(solved).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            namespace[node.name] = lambda *args, **kwargs: None
    with pytest.raises(Exception) as err:
        _run_cell(check, namespace, "check")
    assert isinstance(err.value, ExerciseFailure), (
        "a wrong answer (a function that returns None, as one that forgets `return` does) crashed the check "
        f"with {type(err.value).__name__}: {err.value}; the check should report it as an ExerciseFailure "
        "naming the case, expected and got"
    )
    # what a learner sees: the message, the printed lines and, as IPython shows a traceback, the whole
    # body of every course_lib function on the way (so a reference written inline would show)
    bodies = [
        inspect.getsource(frame.f_code)
        for frame, _ in traceback.walk_tb(err.value.__traceback__)
        if "course_lib" in frame.f_code.co_filename and frame.f_code.co_name != "<module>"
    ]
    seen = "".join(traceback.format_exception(err.value)) + capsys.readouterr().out + "".join(bodies)
    secret = [frag for line in classroom.solution_lines(solved) for frag in _fragments(line)]
    assert secret, "an exercise whose solution has no line of code to check"
    leaked = [line for line in secret if line in seen]
    assert not leaked, f"the check's feedback shows solution code: {leaked}"


# ---------------------------------------------------------------------- nbgrader source and rubric


def test_nbgrader_source_command_lays_out_the_course_directory(tmp_path, capsys):
    assert classroom.main(["nbgrader-source", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path) for p in (tmp_path / "source").rglob("*.ipynb"))
    expected = sorted(Path("source", classroom.chapter_of(p), p.name) for p in SOLUTION_NBS)
    assert written == expected and expected
    assert not list((tmp_path / "source").rglob("*.py")), "paired scripts must not be released"
    for rel in written:
        nb = nbformat.read(tmp_path / rel, as_version=4)
        exercises = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
        assert all(classroom.BEGIN in c.source and c.metadata["nbgrader"]["solution"] for c in exercises)
        assert all("nbgrader" in c.metadata for c in nb.cells)
    config = tmp_path / "nbgrader_config.py"
    assert "c.Execute.timeout" in config.read_text()
    config.write_text("c = get_config()  # the teacher's own\n")
    assert classroom.main(["nbgrader-source", str(tmp_path)]) == 0
    assert config.read_text() == "c = get_config()  # the teacher's own\n", (
        "a teacher's config was overwritten"
    )


def test_nbgrader_source_rejects_an_unknown_chapter_and_lists_the_known_ones(tmp_path, capsys):
    assert classroom.main(["nbgrader-source", str(tmp_path), "99_nothing"]) == 2
    err = capsys.readouterr().err
    assert "99_nothing" in err and classroom.chapter_of(SOLUTION_NBS[0]) in err


def test_the_rubric_in_teachers_md_is_current():
    assert not classroom.refresh_rubric(write=False), "the rubric in teachers.md is stale: run `make learner`"


def _rubric_section(rubric: str, nb_path: Path) -> list[str]:
    """The rubric's lines for one notebook (grade ids such as ``answer-1`` recur across notebooks)."""
    lines = rubric.splitlines()
    start = lines.index(f"### Assignment `{classroom.chapter_of(nb_path)}`")
    start = next(i for i in range(start, len(lines)) if lines[i].startswith(f"`{nb_path.name}`"))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("`", "### Assignment"))), len(lines)
    )
    return lines[start:end]


def test_the_rubric_lists_every_graded_cell_with_its_points():
    rubric = classroom.rubric_markdown()
    for nb_path in SOLUTION_NBS:
        nb = classroom.with_nbgrader_metadata(jupytext.read(nb_path), nb_path.stem)
        section = _rubric_section(rubric, nb_path)
        for cell in nb.cells:
            meta = cell.metadata["nbgrader"]
            if meta["grade"]:
                row = next((r for r in section if f"| `{meta['grade_id']}` |" in r), None)
                assert row, f"{meta['grade_id']} of {nb_path.name} is not in the rubric"
                assert row.split("|")[-3].strip() == f"{meta['points']:g}"


def test_a_teachers_page_without_rubric_markers_is_an_error_naming_them():
    with pytest.raises(ValueError, match="rubric markers") as err:
        classroom.teachers_page_with_rubric("# Teachers\n", "rubric")
    assert classroom.RUBRIC_START in str(err.value)


def test_teachers_page_gives_the_commands_and_the_course_directory_layout():
    page = classroom.TEACHERS_PAGE.read_text(encoding="utf-8")
    for needed in [
        "python tools/classroom.py nbgrader-source",
        "nbgrader generate_assignment",
        "nbgrader collect",
        "nbgrader zip_collect",
        "nbgrader autograde",
        "nbgrader generate_feedback",
        "nbgrader export",
        "source/<assignment>/",
        "release/<assignment>/",
        "submitted/<student>/<assignment>/",
        "autograded/",
        "feedback/",
    ]:
        assert needed in page, f"teachers.md does not mention {needed!r}"


def test_solution_pages_hold_every_exercise_and_answer_with_a_label_each(tmp_path):
    written = classroom.write_solution_pages(tmp_path / "pages")
    notebooks = classroom.solution_notebooks()
    assert len(written) == len(notebooks) + 1 and (tmp_path / "pages" / "index.md").exists()
    for nb_path in notebooks:
        nb = jupytext.read(nb_path)
        page = (tmp_path / "pages" / nb_path.parent.name / f"{nb_path.stem}.md").read_text()
        assert f"../../chapters/{nb_path.parent.name}/{nb_path.stem}.ipynb" in page  # links back
        assert "BEGIN SOLUTION" not in page and "END SOLUTION" not in page
        for role in (classroom.EXERCISE_TAG, classroom.ANSWER_TAG):
            cells = [c for c in nb.cells if role in c.metadata.get("tags", [])]
            for k, cell in enumerate(cells, start=1):
                assert f"({classroom.solution_label(nb_path, role, k)})=" in page, (nb_path.name, role, k)
                solution = "\n".join(classroom.solution_lines(cell.source)).strip()
                assert solution.splitlines()[0] in page, (nb_path.name, role, k)
            assert f"({classroom.solution_label(nb_path, role, len(cells) + 1)})=" not in page


# ------------------------------------------------------------------------------------ the learner copy


def _solution_regions(text: str) -> list[str]:
    """Each solution region of a solution script, as its code lines (stripped, comments dropped)."""
    regions, inside = [], None
    for line in text.splitlines():
        if classroom.BEGIN_MARK in line:
            inside = []
        elif classroom.END_MARK in line and inside is not None:
            regions.append("\n".join(inside))
            inside = None
        elif inside is not None:
            code = line.split("#")[0].strip()
            if code:
                inside.append(code)
    return regions


def _normalised(text: str) -> str:
    return "\n".join(c for c in (line.split("#")[0].strip() for line in text.splitlines()) if c)


def test_the_learner_copy_holds_the_course_and_no_solution(tmp_path):
    dest = tmp_path / "course-for-students"
    written = classroom.write_learner_copy(dest)
    rel = {p.relative_to(dest).as_posix() for p in written}
    assert not any(r.startswith(("solutions/", "tests/", ".ci/")) for r in rel)
    for nb in classroom.solution_notebooks():  # every learner notebook is there
        assert classroom.learner_path(nb).relative_to(classroom.ROOT).as_posix() in rel
    assert "course_lib/__init__.py" in rel and "Makefile" in rel and "pyproject.toml" in rel
    toc = (dest / "_toc.yml").read_text()
    assert "solutions_book" not in toc and '"Solutions"' not in toc and '"For teachers"' in toc
    assert "This is the learner copy" in (dest / "README.md").read_text()

    # no exercise's answer (two code lines or more, to spare one-liners the library also has) anywhere
    regions = [
        r
        for script in sorted(classroom.SOLUTIONS.rglob("*.py"))
        for r in _solution_regions(script.read_text(encoding="utf-8"))
        if r.count("\n") >= 1
    ]
    assert len(regions) >= 50, "the solution scripts should hold the course's exercises"
    copied = {p: _normalised(p.read_text(encoding="utf-8", errors="replace")) for p in written}
    leaks = [(p.relative_to(dest), r.splitlines()[0]) for r in regions for p, t in copied.items() if r in t]
    assert not leaks, f"solutions found in the learner copy: {leaks[:5]}"
    for nb_path in dest.rglob("*.ipynb"):  # every exercise cell is a stub
        for cell in nbformat.read(nb_path, as_version=4).cells:
            assert classroom.BEGIN_MARK not in cell.source, f"{nb_path.name} has a solution region"


def test_the_learner_copy_refuses_a_folder_that_is_not_empty_or_inside_the_repository(tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        classroom.write_learner_copy(tmp_path)
    assert (tmp_path / "old.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="inside the repository"):
        classroom.write_learner_copy(classroom.ROOT / "learner-copy")
