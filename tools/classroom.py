"""One source for exercises and solutions: solution notebooks in, learner notebooks and nbgrader out.

Every chapter notebook is written once, as ``solutions/<chapter>/<name>.py`` (jupytext percent format)
with its executed ``.ipynb`` beside it. Three cell tags make it an assignment:

- ``exercise``: a code cell whose answer sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
- ``check``: the cell after an exercise; it calls a self-check from :mod:`course_lib.exercises` and
  is autograded (1 point, or N with the extra tag ``points=N``);
- ``answer``: a markdown cell holding a model written answer, graded by hand (same ``points=N`` rule).
  Its solution region may end with a paragraph starting ``Rubric:`` (what earns the points): the
  teacher's rubric and the solution pages show it, the learner gets the stub in place of the region.

The learner version in ``chapters/`` is generated, with nbgrader's own rules (the same text as
``nbgrader generate_assignment`` makes): each solution region becomes ``# YOUR CODE HERE`` /
``raise NotImplementedError()`` (``YOUR ANSWER HERE`` in an answer cell), the outputs of exercise and
check cells are cleared (the rest keep their learner-mode outputs), and check cells get the
``raises-exception`` tag (an unsolved exercise fails its check on purpose). Every cell carries nbgrader
metadata, so the learner notebooks can be autograded as they are, and the nbgrader *source* notebooks
(the solutions plus the same metadata) come from the same code.

Commands (``python tools/classroom.py ...``):
    build [PATH ...]             execute solution scripts in learner mode, store outputs, regenerate
    generate                     regenerate the learner notebooks and the rubric in teachers.md
    check                        exit 1 when a learner notebook or the rubric is stale
    rubric                       print the grading rubric (markdown)
    nbgrader-source COURSE_DIR   lay out COURSE_DIR/source/<chapter>/*.ipynb and nbgrader_config.py
    solution-pages               write the website's Solutions part (solutions_book/, not committed)
    learner-copy DEST            a copy of the repository without solutions, to publish to students
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
CHAPTERS = ROOT / "chapters"
TEACHERS_PAGE = ROOT / "teachers.md"
SOLUTION_PAGES = ROOT / "solutions_book"  # the website's Solutions part, generated at each book build

# How the course writes the markers; nbgrader (and this module) match any line containing
# BEGIN_MARK / END_MARK, so the two always cut the same lines.
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_MARK, END_MARK = "BEGIN SOLUTION", "END SOLUTION"
# nbgrader's default stubs (ClearSolutions.code_stub["python"] and ClearSolutions.text_stub)
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"

EXERCISE_TAG, CHECK_TAG, ANSWER_TAG = "exercise", "check", "answer"
RUBRIC_PREFIX = "Rubric:"  # starts the last paragraph of an answer's solution region
POINTS_PREFIX = "points="
NBGRADER_SCHEMA_VERSION = 3
COURSE_ID = "large-models-from-scratch"

RUBRIC_START = "<!-- rubric: generated from the solution notebooks by `make learner`; do not edit by hand -->"
RUBRIC_END = "<!-- end of the generated rubric -->"


# ------------------------------------------------------------------------------ solution regions


def strip_solutions(source: str, stub: str = CODE_STUB) -> str:
    """Replace every solution region with ``stub``, indented like its BEGIN line (nbgrader's rule).

    A region runs from a line containing ``BEGIN SOLUTION`` to a line containing ``END SOLUTION``; both
    marker lines go too. Nested, unclosed or unopened regions are errors.
    """
    out: list[str] = []
    opened_at: int | None = None
    for n, line in enumerate(source.split("\n"), start=1):
        if BEGIN_MARK in line:
            if opened_at is not None:
                raise ValueError(
                    f"unbalanced solution markers: line {n} opens a region inside the one opened on line "
                    f"{opened_at}; close the first with '{END}' before opening another"
                )
            opened_at = n
            indent = re.match(r"\s*", line).group(0)
            out += [indent + stub_line for stub_line in stub.split("\n")]
        elif END_MARK in line:
            if opened_at is None:
                raise ValueError(
                    f"unbalanced solution markers: line {n} has '{END}' with no '{BEGIN}' before it; "
                    "add the opening marker above the answer or delete this line"
                )
            opened_at = None
        elif opened_at is None:
            out.append(line)
    if opened_at is not None:
        raise ValueError(
            f"unbalanced solution markers: the region opened on line {opened_at} is never closed; "
            f"add '{END}' after the answer"
        )
    return "\n".join(out)


def solution_lines(source: str) -> list[str]:
    """The lines inside the solution regions of ``source`` (marker lines excluded)."""
    lines, inside = [], False
    for line in source.split("\n"):
        if BEGIN_MARK in line:
            inside = True
        elif END_MARK in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def split_rubric(source: str) -> tuple[str, str | None]:
    """An answer cell's source without its rubric, and the rubric (None when it has none).

    The rubric runs from a line starting ``Rubric:`` inside the solution region to the end of the region;
    its lines are joined into one and the prefix dropped. A ``Rubric:`` line outside the region (the
    learner would see it) or a second one is an error.
    """
    kept: list[str] = []
    rubric: list[str] | None = None
    inside = collecting = False
    for n, line in enumerate(source.split("\n"), start=1):
        if line.strip().startswith(RUBRIC_PREFIX):
            if not inside:
                raise ValueError(
                    f"line {n} starts '{RUBRIC_PREFIX}' outside the solution region, so learners would "
                    f"see the rubric; move it just above '{END}'"
                )
            if rubric is not None:
                raise ValueError(f"line {n} starts a second '{RUBRIC_PREFIX}'; keep one rubric per answer")
            rubric, collecting = [line.strip()[len(RUBRIC_PREFIX) :].strip()], True
            continue
        if BEGIN_MARK in line:
            inside = True
        elif END_MARK in line:
            inside = collecting = False
        elif collecting:
            rubric.append(line.strip())
            continue
        kept.append(line)
    text = " ".join(part for part in rubric if part) if rubric is not None else ""
    return "\n".join(kept), text or None


# --------------------------------------------------------------------------------- nbgrader metadata


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _has_markers(source: str) -> bool:
    return BEGIN_MARK in source or END_MARK in source


def cell_role(cell: Any, where: str = "cell") -> str | None:
    """``"exercise"``, ``"check"``, ``"answer"`` or None for the rest; a misused tag is an error."""
    roles = [t for t in _tags(cell) if t in (EXERCISE_TAG, CHECK_TAG, ANSWER_TAG)]
    if len(roles) > 1:
        raise ValueError(f"{where}: tagged {roles}; a cell plays one part, keep one of the tags")
    role = roles[0] if roles else None
    if role in (EXERCISE_TAG, CHECK_TAG) and cell.cell_type != "code":
        raise ValueError(
            f"{where}: a {cell.cell_type} cell tagged '{role}'; only code cells are exercises or checks "
            f"(tag a written question's answer cell '{ANSWER_TAG}')"
        )
    if role == ANSWER_TAG and cell.cell_type != "markdown":
        raise ValueError(
            f"{where}: a {cell.cell_type} cell tagged '{ANSWER_TAG}'; written answers are markdown cells "
            f"(tag a code answer '{EXERCISE_TAG}' and follow it with a '{CHECK_TAG}' cell)"
        )
    return role


def _points(cell: Any, where: str) -> float | int | None:
    """The number in a ``points=N`` tag, or None when there is none."""
    found = [t[len(POINTS_PREFIX) :] for t in _tags(cell) if t.startswith(POINTS_PREFIX)]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"{where}: several points tags {found}; keep one")
    try:
        value = float(found[0])
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(
            f"{where}: tag '{POINTS_PREFIX}{found[0]}' is not a positive number of points; write e.g. "
            f"'{POINTS_PREFIX}2'"
        )
    return int(value) if value.is_integer() else value


def _defined_name(source: str) -> str | None:
    """The first function or class an exercise cell defines (its grade id names it)."""
    m = re.search(r"^(?:async\s+)?(?:def|class)\s+(\w+)", source, re.M)
    return m.group(1) if m else None


def _nbgrader(
    grade_id: str, solution: bool = False, grade: bool = False, points: float = 0, locked: bool = False
) -> dict[str, Any]:
    """A cell's ``metadata.nbgrader`` in nbgrader's schema version 3."""
    meta: dict[str, Any] = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked or (grade and not solution),
        "schema_version": NBGRADER_SCHEMA_VERSION,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    return meta


def with_nbgrader_metadata(solution: Any, name: str) -> Any:
    """A copy of a solution notebook with nbgrader metadata on every cell: nbgrader's *source* version.

    Exercise cells become solution cells (``exercise-<function>``), check cells locked grade cells
    (``check-<function>``, tagged ``raises-exception``), answer cells manually graded answers
    (``answer-<k>``) and every other cell a locked, read-only cell. Misplaced tags or markers raise.
    """
    nb = copy.deepcopy(solution)
    used: set[str] = set()

    def unique(grade_id: str, i: int) -> str:
        grade_id = grade_id if grade_id not in used else f"{grade_id}-{i:03d}"
        used.add(grade_id)
        return grade_id

    exercise: str | None = None
    answers = 0
    for i, cell in enumerate(nb.cells):
        where = f"{name}, cell {i}"
        role = cell_role(cell, where)
        points = _points(cell, where)
        if points is not None and role not in (CHECK_TAG, ANSWER_TAG):
            raise ValueError(
                f"{where}: a '{POINTS_PREFIX}' tag on a cell that is not graded; put it on the "
                f"'{CHECK_TAG}' or '{ANSWER_TAG}' cell"
            )
        if role is None and _has_markers(cell.source):
            raise ValueError(
                f"{where}: solution markers outside a cell tagged '{EXERCISE_TAG}' (or '{ANSWER_TAG}'); "
                "tag the cell or remove the markers"
            )
        if role == EXERCISE_TAG:
            if BEGIN_MARK not in cell.source:
                raise ValueError(
                    f"{where}: tagged '{EXERCISE_TAG}' but has no '{BEGIN}' region, so the learner would "
                    f"get the answer; wrap the answer in '{BEGIN}' / '{END}'"
                )
            strip_solutions(cell.source)  # unbalanced markers fail here, with the line
            exercise = _defined_name(cell.source) or f"{i:03d}"
            cell.metadata["nbgrader"] = _nbgrader(unique(f"exercise-{exercise}", i), solution=True)
        elif role == CHECK_TAG:
            if _has_markers(cell.source):
                raise ValueError(
                    f"{where}: solution markers in a '{CHECK_TAG}' cell; checks are shown as written"
                )
            if exercise is None:
                raise ValueError(
                    f"{where}: a '{CHECK_TAG}' cell with no '{EXERCISE_TAG}' cell before it; put the check "
                    "after the exercise it checks"
                )
            grade_id = unique(f"check-{exercise}", i)
            cell.metadata["nbgrader"] = _nbgrader(grade_id, grade=True, points=points or 1)
            if "raises-exception" not in _tags(cell):
                cell.metadata["tags"] = _tags(cell) + ["raises-exception"]
        elif role == ANSWER_TAG:
            strip_solutions(cell.source, TEXT_STUB)
            try:
                split_rubric(cell.source)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            answers += 1
            grade_id = unique(f"answer-{answers}", i)
            cell.metadata["nbgrader"] = _nbgrader(grade_id, solution=True, grade=True, points=points or 1)
        else:
            cell.metadata["nbgrader"] = _nbgrader(f"{name}-{i:03d}", locked=True)
    return nb


def learner_notebook(solution: Any, name: str) -> Any:
    """The learner version of a solution notebook (an ``nbformat`` node), with nbgrader metadata."""
    nb = with_nbgrader_metadata(solution, name)
    for cell in nb.cells:
        role = cell_role(cell)
        if role == EXERCISE_TAG:
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
        elif role == CHECK_TAG:
            cell.outputs, cell.execution_count = [], None
        elif role == ANSWER_TAG:
            # nbgrader replaces a whole answer cell unless it marks a region
            cell.source = strip_solutions(cell.source, TEXT_STUB) if BEGIN_MARK in cell.source else TEXT_STUB
    return nb


# ----------------------------------------------------------------------------- learner notebooks


def learner_path(solution_ipynb: Path) -> Path:
    return CHAPTERS / solution_ipynb.relative_to(SOLUTIONS)


def generate(solution_ipynb: Path, write: bool = True) -> tuple[Path, str]:
    """Make the learner notebook (and its paired script) for one solution notebook."""
    import jupytext

    nb = jupytext.read(solution_ipynb)
    learner = learner_notebook(nb, solution_ipynb.stem)
    dst = learner_path(solution_ipynb)
    text = jupytext.writes(learner, fmt="ipynb")
    if write:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")
        config = _jupytext_config()
        # write the script from the notebook as stored, so metadata comes out in the same order
        stored = jupytext.reads(text, fmt="ipynb")
        jupytext.write(stored, dst.with_suffix(".py"), fmt="py:percent", config=config)
    return dst, text


def _jupytext_config():
    from jupytext.config import load_jupytext_configuration_file

    return load_jupytext_configuration_file(str(ROOT / "jupytext.toml"))


def execute(script: Path, fast: bool = False, timeout: int | None = None) -> Path:
    """Run a solution script top to bottom (learner mode unless ``fast``) and store it as ``.ipynb``."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(script)
    nb.metadata.setdefault(
        "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"}
    )
    env_fast = os.environ.pop("COURSE_FAST", None)
    if fast:
        os.environ["COURSE_FAST"] = "1"
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(script.parent)}}
        ).execute()
    finally:
        os.environ.pop("COURSE_FAST", None)
        if env_fast is not None:
            os.environ["COURSE_FAST"] = env_fast
    dst = script.with_suffix(".ipynb")
    jupytext.write(nb, dst, fmt="ipynb")
    jupytext.write(nb, script, fmt="py:percent", config=_jupytext_config())
    return dst


def solution_notebooks() -> list[Path]:
    return sorted(p for p in SOLUTIONS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def stale_learner_notebooks() -> list[Path]:
    """Learner notebooks that differ from what :func:`generate` would write now."""
    stale = []
    for src in solution_notebooks():
        dst, text = generate(src, write=False)
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            stale.append(dst)
    return stale


# -------------------------------------------------------------------------------- solution pages


def solution_label(solution_ipynb: Path, role: str, k: int) -> str:
    """The book-wide label of the ``k``-th (1-based) ``role`` ("exercise" or "answer") on the solution
    page of a notebook; the website links each exercise of the chapter page to it."""
    chapter, name = solution_ipynb.relative_to(SOLUTIONS).parts[0], solution_ipynb.stem
    return f"solution-{chapter}-{name}-{role}-{k}".lower().replace("_", "-")


def _title(nb: Any, default: str) -> str:
    for cell in nb.cells:
        m = re.search(r"^#\s+(.+?)\s*$", cell.source, re.M) if cell.cell_type == "markdown" else None
        if m:
            return m.group(1)
    return default


def solution_page(solution_ipynb: Path) -> str:
    """The Markdown page of one notebook's solutions: every exercise's code and every model answer."""
    import jupytext

    nb = jupytext.read(solution_ipynb)
    title = _title(nb, solution_ipynb.stem)
    chapter = solution_ipynb.relative_to(SOLUTIONS).parts[0]
    page = f"../../chapters/{chapter}/{solution_ipynb.stem}.ipynb"
    lines = [
        f"# Solutions · {title}",
        "",
        f"The worked solutions of the exercises in [{title}]({page}). Try each exercise and run its check "
        "first: the check's message says which case fails, which teaches more than reading the answer.",
        "",
    ]
    counts = {EXERCISE_TAG: 0, ANSWER_TAG: 0}
    for i, cell in enumerate(nb.cells):
        role = cell_role(cell, f"{solution_ipynb.name} cell {i}")
        if role not in counts:
            continue
        counts[role] += 1
        k, heading = counts[role], _heading_before(nb.cells, i) or title
        source, rubric = split_rubric(cell.source) if role == ANSWER_TAG else (cell.source, None)
        body = "\n".join(line for line in source.split("\n") if not _has_markers(line)).strip()
        lines += [f"({solution_label(solution_ipynb, role, k)})=", ""]
        if role == EXERCISE_TAG:
            name = _defined_name(cell.source)
            lines += [
                f"## {heading}" if heading.lower().startswith("exercise") else f"## Exercise {k} · {heading}",
                "",
            ]
            lines += [f"The solution{f' (`{name}`)' if name else ''}:", "", "```python", body, "```", ""]
        else:
            own = _own_heading(source)
            heading = own or heading
            is_question = heading.lower().startswith("question")
            title_line = heading if is_question else f"Written answer {k} · {heading}"
            question, answer = "", body
            if BEGIN_MARK in source:  # the question as the learner reads it, then the model answer
                question = strip_solutions(source, "").strip()
                if own:  # the heading is the section's title already
                    question = question.split("\n", 1)[1].strip() if "\n" in question else ""
                answer = "\n".join(solution_lines(source)).strip()
            lines += [f"## {title_line}", ""] + ([question, ""] if question else []) + ["A model answer:", ""]
            lines += [f"> {line}" if line else ">" for line in answer.split("\n")] + [""]
            if rubric:
                lines += [f"What earns the points: {rubric}", ""]
    if not any(counts.values()):
        lines += ["This notebook has no exercises.", ""]
    lines += [f"[Back to the chapter]({page})", ""]
    return "\n".join(lines)


def write_solution_pages(out: Path = SOLUTION_PAGES) -> list[Path]:
    """Write ``out/index.md`` and ``out/<chapter>/<name>.md`` for every solution notebook (stale pages
    removed); ``_toc.yml``'s Solutions part lists them. Returns the pages written."""
    import jupytext

    notebooks = solution_notebooks()
    if out.exists():
        shutil.rmtree(out)
    written = [out / "index.md"]
    index = [
        "# Solutions",
        "",
        "Worked solutions of every exercise, one page per notebook. Each exercise on a chapter page links "
        "to its solution here; each solution page links back.",
        "",
    ]
    for nb_path in notebooks:
        chapter = nb_path.relative_to(SOLUTIONS).parts[0]
        dst = out / chapter / f"{nb_path.stem}.md"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(solution_page(nb_path), encoding="utf-8")
        written.append(dst)
        title = _title(jupytext.read(nb_path), nb_path.stem)
        index.append(f"- [{title}]({chapter}/{nb_path.stem}.md)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return written


# ------------------------------------------------------------------------------------------ rubric


@dataclass(frozen=True)
class GradedCell:
    """One graded cell, as the rubric lists it."""

    notebook: str  # file name, e.g. 01_what_makes_a_model_large.ipynb
    grade_id: str
    points: float
    autograded: bool  # False: a written answer a teacher grades by hand
    title: str  # the heading the exercise sits under
    what: str  # what the check tests, or what the written answer is about


def chapter_of(solution_ipynb: Path) -> str:
    """The chapter folder a solution notebook lives in: the nbgrader assignment it belongs to."""
    return solution_ipynb.relative_to(SOLUTIONS).parts[0]


def graded_cells(solution: Any, name: str) -> list[GradedCell]:
    """The graded cells of one solution notebook, in order."""
    nb = with_nbgrader_metadata(solution, name)
    cells = []
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata["nbgrader"]
        if not meta["grade"]:
            continue
        title = _heading_before(nb.cells, i)
        if cell_role(cell) == ANSWER_TAG:
            title = _own_heading(cell.source) or title
        if cell_role(cell) == CHECK_TAG:
            what = _check_description(cell.source, nb)
        else:
            rubric = split_rubric(cell.source)[1]
            what = rubric or "a written answer; the model answer is in the source notebook"
        cells.append(
            GradedCell(
                f"{name}.ipynb", meta["grade_id"], meta["points"], cell.cell_type == "code", title, what
            )
        )
    return cells


def _own_heading(source: str) -> str:
    """The heading an answer cell opens with (its question's title), or "" when it has none."""
    m = re.match(r"\s*#{1,6}\s+(.+?)\s*$", source.split("\n")[0])
    return m.group(1) if m and not _has_markers(source.split("\n")[0]) else ""


def _heading_before(cells: Sequence[Any], i: int) -> str:
    """The last markdown heading above cell ``i``."""
    for cell in reversed(cells[:i]):
        if cell.cell_type == "markdown":
            headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", cell.source, re.M)
            if headings:
                return headings[-1]
    return ""


def _check_description(source: str, nb: Any) -> str:
    """``check_x``: the first paragraph of its docstring, found without importing the check module."""
    call = re.search(r"^\s*(check_\w+)\s*\(", source, re.M)
    if not call:
        return "the assertions in the check cell"
    fn = call.group(1)
    everything = source + "\n" + "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    module = re.search(rf"^\s*from\s+([\w.]+)\s+import\s+[^\n]*\b{fn}\b", everything, re.M)
    doc = _docstring(module.group(1), fn) if module else None
    return f"`{fn}`" + (f": {doc}" if doc else "")


def _docstring(module: str, fn: str) -> str | None:
    parts = module.split(".")
    base = ROOT.joinpath(*parts)
    path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
    if not path.exists():
        return None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name == fn:
            doc = ast.get_docstring(node) or ""
            return " ".join(doc.split("\n\n")[0].split()) or None
    return None


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|")


def _number(x: float) -> str:
    return f"{x:g}"


def rubric_markdown(notebooks: Sequence[Path] | None = None) -> str:
    """The grading rubric of every chapter (markdown): what each graded cell tests, and its points."""
    import jupytext

    notebooks = solution_notebooks() if notebooks is None else notebooks
    by_chapter: dict[str, list[Path]] = {}
    for p in notebooks:
        by_chapter.setdefault(chapter_of(p), []).append(p)
    out = []
    for chapter, paths in sorted(by_chapter.items()):
        out.append(f"### Assignment `{chapter}`\n")
        for path in sorted(paths):
            cells = graded_cells(jupytext.read(path), path.stem)
            auto = sum(c.points for c in cells if c.autograded)
            hand = sum(c.points for c in cells if not c.autograded)
            if not cells:
                out.append(f"`{path.name}` has no graded cells.\n")
                continue
            out.append(
                f"`{path.name}`: {_number(auto + hand)} points, {_number(auto)} autograded, "
                f"{_number(hand)} graded by hand.\n"
            )
            out.append("| grade id | exercise | what is graded | points | graded |")
            out.append("|---|---|---|---|---|")
            for c in cells:
                how = "autograded" if c.autograded else "by hand"
                out.append(
                    f"| `{c.grade_id}` | {_cell_text(c.title)} | {_cell_text(c.what)} | "
                    f"{_number(c.points)} | {how} |"
                )
            if not hand:
                out.append(
                    "\nNothing in this notebook is graded by hand: every point comes from a check cell."
                )
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def teachers_page_with_rubric(page: str, rubric: str) -> str:
    """``page`` with the text between the rubric markers replaced by ``rubric``."""
    start, end = page.find(RUBRIC_START), page.find(RUBRIC_END)
    if start < 0 or end < start:
        raise ValueError(
            f"{TEACHERS_PAGE.name} has no rubric markers; put the two lines\n{RUBRIC_START}\n{RUBRIC_END}\n"
            "where the rubric goes"
        )
    return page[: start + len(RUBRIC_START)] + "\n\n" + rubric + "\n" + page[end:]


def refresh_rubric(write: bool = True, page: Path | None = None) -> bool:
    """Regenerate the rubric in teachers.md; True when it changed (or, with ``write=False``, is stale)."""
    page = page or TEACHERS_PAGE
    old = page.read_text(encoding="utf-8")
    new = teachers_page_with_rubric(old, rubric_markdown())
    if write and new != old:
        page.write_text(new, encoding="utf-8")
    return new != old


# -------------------------------------------------------------------------------- nbgrader source


NBGRADER_CONFIG = '''"""nbgrader settings for the course "Large models from scratch".

Written by `python tools/classroom.py nbgrader-source`, which never overwrites it: edit freely.
Run every nbgrader command from this folder.
"""

import os

c = get_config()  # noqa: F821 -- nbgrader provides get_config when it loads this file

c.CourseDirectory.course_id = {course_id!r}

# Grade in the course's fast mode: the checks test the learners' functions, which does not depend on
# it, while the demonstrations around them (training runs, timings) shrink to seconds.
# `COURSE_FAST=0 nbgrader autograde ...` grades in learner mode instead.
os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the notebooks never download; make sure of it

# Seconds one cell may run while autograding (nbgrader's default is 30).
c.Execute.timeout = {timeout}

# The course's exercise markers and stubs: nbgrader's defaults, written out. The learner notebooks in
# the course repository are made with the same rules, so they can be graded as they are.
c.ClearSolutions.begin_solution_delimeter = {begin!r}
c.ClearSolutions.end_solution_delimeter = {end!r}
c.ClearSolutions.code_stub = {{"python": {code_stub!r}}}
c.ClearSolutions.text_stub = {text_stub!r}

# `nbgrader zip_collect`: downloaded/<assignment>/archive/<student_id>.zip, one zip per student,
# holding that student's notebooks (at the top of the zip or in folders).
c.FileNameCollectorPlugin.named_regexp = {regexp!r}

# A shared JupyterHub (release_assignment / fetch_assignment / submit / collect): uncomment.
# c.Exchange.root = "/srv/nbgrader/exchange"
'''

ZIP_COLLECT_REGEXP = r".*/extracted/(?P<student_id>[^/]+)/(?:.*/)?(?P<file_id>[^/]+\.ipynb)$"
AUTOGRADE_CELL_TIMEOUT_S = 600


def nbgrader_config_text() -> str:
    return NBGRADER_CONFIG.format(
        course_id=COURSE_ID,
        timeout=AUTOGRADE_CELL_TIMEOUT_S,
        begin=BEGIN_MARK,
        end=END_MARK,
        code_stub=CODE_STUB,
        text_stub=TEXT_STUB,
        regexp=ZIP_COLLECT_REGEXP,
    )


def write_nbgrader_source(course_dir: Path, chapters: Sequence[str] = ()) -> list[Path]:
    """Lay out ``course_dir/source/<chapter>/<notebook>.ipynb`` from the solution notebooks.

    Each chapter folder of ``solutions/`` becomes one nbgrader assignment; its notebooks get the nbgrader
    metadata the learner notebooks carry, solutions kept. Other files in the chapter folder (data,
    images) are copied; the paired ``.py`` scripts are not. ``nbgrader_config.py`` is written when the
    course directory has none. Returns the notebooks written.
    """
    import jupytext

    notebooks = solution_notebooks()
    known = sorted({chapter_of(p) for p in notebooks})
    unknown = sorted(set(chapters) - set(known))
    if unknown:
        raise ValueError(f"no chapter {unknown} in {SOLUTIONS.relative_to(ROOT)}/; the chapters are {known}")
    chosen = [p for p in notebooks if not chapters or chapter_of(p) in chapters]

    course_dir = Path(course_dir)
    written = []
    for path in chosen:
        chapter = chapter_of(path)
        dst = course_dir / "source" / chapter / path.name
        if dst in written:
            raise ValueError(
                f"two notebooks named {path.name} in {chapter}/; nbgrader keeps an assignment's "
                "notebooks in one folder, so rename one"
            )
        nb = with_nbgrader_metadata(jupytext.read(path), path.stem)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(jupytext.writes(nb, fmt="ipynb"), encoding="utf-8")
        written.append(dst)
    for chapter in sorted({chapter_of(p) for p in chosen}):
        _copy_other_files(SOLUTIONS / chapter, course_dir / "source" / chapter)

    config = course_dir / "nbgrader_config.py"
    if not config.exists():
        config.write_text(nbgrader_config_text(), encoding="utf-8")
    return written


def _copy_other_files(src: Path, dst: Path) -> None:
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        skip = (
            not f.is_file()
            or f.suffix == ".ipynb"
            or (f.suffix == ".py" and f.with_suffix(".ipynb").exists())
            or any(part.startswith(".") or part == "__pycache__" for part in rel.parts)
        )
        if not skip:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)


# ---------------------------------------------------------------------------------- learner-only copy

# Left out of the learner copy: the solution notebooks, the tests (which hold right answers to feed the
# checks), the CI set-up that runs them, and the Solutions part of the website.
PRIVATE = ("solutions/", "tests/", ".ci/")
LEARNER_COPY_NOTE = """
## This is the learner copy

It was made with `make learner-copy` from the course repository, without the solution notebooks, the
tests (they hold right answers) and the website's Solutions part. `make lab` opens the course;
`make test`, `make notebooks` and the teacher's tools need the full repository.
"""


def _tracked_files() -> list[str]:
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.split("\0") if f]


def write_learner_copy(dest: Path) -> list[Path]:
    """Copy the repository's tracked files to ``dest`` without any solution (see ``PRIVATE``).

    ``_toc.yml`` loses its Solutions part and ``README.md`` says what the copy is. Refuses a ``dest``
    inside the repository or one that is not empty (nothing is overwritten). Returns the files written.
    """
    dest = dest.resolve()
    if dest == ROOT or ROOT in dest.parents:
        raise ValueError(f"{dest} is inside the repository; choose a folder outside it")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty; give a new or empty folder")
    written = []
    for rel in _tracked_files():
        if rel.startswith(PRIVATE) or not (ROOT / rel).is_file():
            continue
        text = None
        if rel == "_toc.yml":
            text = re.sub(
                r"\n  - caption: \"Solutions\"\n(?:    .*\n|\n)*?(?=  - caption)",
                "\n",
                (ROOT / rel).read_text(encoding="utf-8"),
            )
        elif rel == "README.md":
            text = (ROOT / rel).read_text(encoding="utf-8") + LEARNER_COPY_NOTE
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            shutil.copy2(ROOT / rel, target)
        else:
            target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


# -------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/classroom.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="execute solution scripts, store outputs, regenerate learner notebooks")
    b.add_argument("paths", nargs="*", type=Path, help="solution .py scripts (default: all)")
    b.add_argument("--fast", action="store_true", help="run in fast mode (quick check, not for committing)")
    sub.add_parser("generate", help="regenerate learner notebooks and the rubric from the solution notebooks")
    sub.add_parser("check", help="fail when a learner notebook or the rubric in teachers.md is stale")
    sub.add_parser("rubric", help="print the grading rubric")
    sub.add_parser("solution-pages", help="write the website's Solutions part into solutions_book/")
    c = sub.add_parser("learner-copy", help="copy the repository without solutions, to publish to students")
    c.add_argument("dest", type=Path, help="a new or empty folder outside the repository")
    s = sub.add_parser("nbgrader-source", help="lay out an nbgrader course directory from the solutions")
    s.add_argument("course_dir", type=Path, help="the nbgrader course directory (created if missing)")
    s.add_argument("chapters", nargs="*", help="chapter folders to include (default: all)")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        scripts = [p.resolve() for p in args.paths] or sorted(
            p for p in SOLUTIONS.rglob("*.py") if ".ipynb_checkpoints" not in p.parts
        )
        for script in scripts:
            print(
                f"executing {script.relative_to(ROOT)} ({'fast' if args.fast else 'learner'} mode)",
                flush=True,
            )
            dst = execute(script, fast=args.fast)
            print(f"  -> {generate(dst)[0].relative_to(ROOT)}", flush=True)
        if refresh_rubric():
            print(f"  -> {TEACHERS_PAGE.name} (rubric)")
    elif args.cmd == "generate":
        for src in solution_notebooks():
            print(generate(src)[0].relative_to(ROOT))
        if refresh_rubric():
            print(f"{TEACHERS_PAGE.name} (rubric)")
    elif args.cmd == "check":
        stale = [str(p.relative_to(ROOT)) for p in stale_learner_notebooks()]
        if refresh_rubric(write=False):
            stale.append(f"the rubric in {TEACHERS_PAGE.name}")
        for what in stale:
            print(f"stale: {what} -- run `make learner` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    elif args.cmd == "rubric":
        print(rubric_markdown(), end="")
    elif args.cmd == "learner-copy":
        try:
            written = write_learner_copy(args.dest)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{len(written)} files in {args.dest} (no solutions, no tests)")
    elif args.cmd == "solution-pages":
        for p in write_solution_pages():
            print(p.relative_to(ROOT))
    else:
        try:
            written = write_nbgrader_source(args.course_dir, args.chapters)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        root = args.course_dir.resolve()
        for p in written:
            print(p.resolve().relative_to(root))
        print(
            f"now: cd {args.course_dir} && nbgrader generate_assignment <chapter>  (see teachers.md)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
