"""The notebooks: paired scripts in sync, learner versions current, all in the book, exercises checkable."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest
import yaml

from course_lib.exercises import ExerciseFailure
from tools import classroom

ROOT = classroom.ROOT
NOTEBOOKS = sorted(
    p
    for d in ("chapters", "solutions")
    for p in (ROOT / d).rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)
SOLUTIONS = classroom.solution_notebooks()


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks in chapters/ or solutions/"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_rel)
def test_paired_script_is_in_sync(nb_path):
    script = nb_path.with_suffix(".py")
    assert script.exists(), f"{_rel(nb_path)} has no paired script: run `jupytext --sync {_rel(nb_path)}`"
    expected = jupytext.writes(jupytext.read(nb_path), fmt="py:percent", config=classroom._jupytext_config())
    assert script.read_text(encoding="utf-8") == expected, (
        f"{_rel(script)} and its notebook differ: run `jupytext --sync {_rel(nb_path)}` (or `make notebooks`)"
    )


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_rel)
def test_notebook_metadata_lets_the_book_highlight_code(nb_path):
    nb = jupytext.read(nb_path)
    assert nb.metadata.get("kernelspec", {}).get("name"), (
        "no kernelspec: the book warns 'No source code lexer'"
    )
    assert nb.metadata.get("language_info", {}).get("name") == "python", (
        "no language_info: store executed outputs"
    )


CHECK_TAG = "nbval-check-output"  # nbval's cell tag; tools/fix_notebooks.py turns old comment markers into it


@pytest.mark.parametrize("nb_path", SOLUTIONS, ids=_rel)
def test_solution_notebook_has_checked_outputs_stored(nb_path):
    nb = jupytext.read(nb_path)
    checked = [c for c in nb.cells if c.cell_type == "code" and CHECK_TAG in c.metadata.get("tags", [])]
    assert checked, f"tag the cells whose output is the point (shapes, counts, checks) {CHECK_TAG!r}"
    assert all(c.outputs for c in checked), (
        f"a cell tagged {CHECK_TAG!r} has no stored output: run `make notebooks`"
    )


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_rel)
def test_no_test_markers_or_machine_paths_show_on_the_site(nb_path):
    nb = jupytext.read(nb_path)
    for i, cell in enumerate(nb.cells):
        assert "NBVAL_" not in cell.source, (
            f"cell {i} has a # NBVAL_* comment (the site shows it): use the tag (tools/fix_notebooks.py)"
        )
        for out in cell.get("outputs", []):
            text = out.get("text", "") + "".join(str(v) for v in out.get("data", {}).values())
            assert not re.search(r"(^|[\s'\"(])/(root|home|work|tmp)/", text), (
                f"cell {i} prints an absolute path of this machine: print display_path(p) (course_lib)"
            )
            assert not re.search(r"^\|.*\|\n\|(-+:?\|)+", text, re.M) or out.get("output_type") != "stream", (
                f"cell {i} prints a Markdown table (shown as pipes): use format_table(...).show()"
            )


def test_learner_notebooks_are_generated_from_the_current_solutions():
    stale = classroom.stale_learner_notebooks()
    assert not stale, f"stale learner notebooks {[_rel(p) for p in stale]}: run `make learner` and commit"


def test_every_solution_has_a_learner_version_and_no_learner_notebook_is_orphaned():
    learners = {p for p in NOTEBOOKS if p.is_relative_to(ROOT / "chapters")}
    assert learners == {classroom.learner_path(p) for p in SOLUTIONS}


def test_learner_notebooks_contain_no_solution_code():
    for nb_path in (p for p in NOTEBOOKS if p.is_relative_to(ROOT / "chapters")):
        for text in (
            nb_path.read_text(encoding="utf-8"),
            nb_path.with_suffix(".py").read_text(encoding="utf-8"),
        ):
            assert classroom.BEGIN not in text and classroom.END not in text, (
                f"solution left in {_rel(nb_path)}"
            )


def _toc_files(entries) -> list[str]:
    files = []
    for entry in entries:
        if "file" in entry:
            files.append(entry["file"])
        for key in ("chapters", "sections", "parts"):
            files += _toc_files(entry.get(key, []))
    return files


def test_toc_lists_every_chapter_notebook_and_nothing_missing():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = [toc["root"], *_toc_files(toc.get("parts", []) + toc.get("chapters", []))]
    for f in listed:
        if f.startswith("solutions_book/"):  # written at each book build (test_classroom checks the writer)
            continue
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), (
            f"_toc.yml names missing {f}"
        )
    chapter_nbs = {
        str(p.relative_to(ROOT).with_suffix("")) for p in NOTEBOOKS if p.is_relative_to(ROOT / "chapters")
    }
    assert chapter_nbs <= set(listed), f"not in _toc.yml: {sorted(chapter_nbs - set(listed))}"


def _defines_only(source: str) -> bool:
    """A cell that only imports and defines functions or classes: cheap to run as an exercise's context."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    kinds = (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    return bool(body) and all(isinstance(node, kinds) for node in body)


def _exercise_cells(nb):
    """(imports source, [(context source, exercise source, check source, experiment?)]) of a notebook.

    An exercise's context is every earlier code cell that only defines (the learner's earlier answers,
    helpers the text provides). An exercise tagged ``experiment`` works on the notebook's data, so its
    context is every earlier code cell (run in fast mode).
    """
    code = [c for c in nb.cells if c.cell_type == "code"]
    imports = "\n".join(c.source for c in code if "imports" in c.metadata.get("tags", []))
    pairs = []
    for i, cell in enumerate(code):
        tags = cell.metadata.get("tags", [])
        if "exercise" in tags:
            check = code[i + 1]
            assert "check" in check.metadata.get("tags", []), (
                "an exercise cell must be followed by its check cell"
            )
            experiment = "experiment" in tags
            earlier = [c for c in code[:i] if "imports" not in c.metadata.get("tags", [])]
            context = [c.source for c in earlier if experiment or _defines_only(c.source)]
            pairs.append(("\n".join(context), cell.source, check.source, experiment))
    return imports, pairs


EXERCISES = [
    (nb_path, k) for nb_path in SOLUTIONS for k in range(len(_exercise_cells(jupytext.read(nb_path))[1]))
]


@pytest.mark.parametrize("nb_path, k", EXERCISES, ids=[f"{_rel(p)}-{k}" for p, k in EXERCISES])
def test_solutions_pass_their_checks_and_blank_exercises_fail_with_a_helpful_message(
    nb_path, k, capsys, monkeypatch
):
    imports, pairs = _exercise_cells(jupytext.read(nb_path))
    context, solved, check, experiment = pairs[k]
    if experiment:
        monkeypatch.setenv("COURSE_FAST", "1")
        monkeypatch.chdir(nb_path.parent)
    namespace: dict = {}
    exec(compile(imports + "\n" + context, f"{nb_path.name}-context-{k}", "exec"), namespace)
    capsys.readouterr()
    exec(compile(solved + "\n" + check, f"{nb_path.name}-solution-{k}", "exec"), namespace)
    assert "✓" in capsys.readouterr().out

    blank = classroom.strip_solutions(solved)
    namespace = {}
    exec(compile(imports + "\n" + context, f"{nb_path.name}-context-{k}", "exec"), namespace)
    if experiment:  # the blank cell itself stops, as nbgrader's stub does, before the check can run
        with pytest.raises(NotImplementedError):
            exec(compile(blank, f"{nb_path.name}-learner-{k}", "exec"), namespace)
        return
    with pytest.raises(ExerciseFailure, match="not written yet"):
        exec(compile(blank + "\n" + check, f"{nb_path.name}-learner-{k}", "exec"), namespace)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_rel)
def test_stored_figures_are_compact(nb_path):
    """The site stores each figure twice (the page and the .ipynb download): palette PNGs."""
    import base64
    import io

    from PIL import Image

    nb = jupytext.read(nb_path)
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png is None:
                continue
            image = Image.open(io.BytesIO(base64.b64decode(png)))
            see_through = image.mode == "RGBA" and image.getextrema()[3][0] < 255
            assert image.mode == "P" or see_through, (
                f"cell {i} stores a full-colour {image.mode} PNG: run `python tools/fix_notebooks.py` "
                "(or call use_course_style() before plotting)"
            )


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=_rel)
def test_stored_progress_bars_read_as_they_ended(nb_path):
    """A viewer without widgets shows a bar's plain text: it must not say 0% of a finished run."""
    import json

    from tools.fix_notebooks import fix_progress_text

    nb = jupytext.read(nb_path)
    before = json.dumps([c.get("outputs", []) for c in nb.cells], sort_keys=True)
    fix_progress_text(nb)
    after = json.dumps([c.get("outputs", []) for c in nb.cells], sort_keys=True)
    assert before == after, (
        "a progress bar's stored text is the 0% it began with: run `python tools/fix_notebooks.py`"
    )
