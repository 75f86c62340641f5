"""nbgrader takes the course's notebooks as they are: generate, collect, autograde, feedback, export.

The reference is nbgrader itself. Fast tests run its ClearSolutions preprocessor and metadata validator
in-process on every solution notebook; the slow ones run its command-line tools end to end in a
temporary course directory, the way teachers.md tells a teacher to, and assert on the gradebook.
Scores are compared exactly (nbgrader stores whole points here: no tolerance needed).
"""

from __future__ import annotations

import copy
import csv
import os
import re
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbgrader.nbgraderformat import MetadataValidator
from nbgrader.preprocessors import ClearSolutions
from traitlets.config.loader import PyFileConfigLoader

from tools import classroom

SOLUTIONS = classroom.solution_notebooks()
# alice hands in the solutions, bob the learner notebooks untouched, carol a plausible wrong answer in every
# exercise cell (WRONG_ANSWERS: a formula gone wrong, or the library's own function called)
STUDENTS = ("alice", "bob", "carol")
NBGRADER_TIMEOUT_S = 300  # one nbgrader command; autograde runs whole notebooks (in fast mode)


def _rel(p: Path) -> str:
    return str(p.relative_to(classroom.ROOT))


def nbgrader_release(source_nb):
    """What `nbgrader generate_assignment` does to a source notebook's cell text (its ClearSolutions)."""
    nb = copy.deepcopy(source_nb)
    nb, _ = ClearSolutions().preprocess(nb, {})
    return nb


def _grading_view(nb) -> list[tuple]:
    """Per cell: type, text and the nbgrader fields nbgrader grades by."""
    keys = ("grade", "grade_id", "locked", "points", "solution")
    return [
        (c.cell_type, c.source, tuple(c.metadata.get("nbgrader", {}).get(k) for k in keys)) for c in nb.cells
    ]


# ---------------------------------------------------- our learner text == nbgrader's release text

TRICKY = {
    "indented region after a docstring": 'def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    y = x + 1\n'
    "    return y\n    ### END SOLUTION\n",
    "two regions with code between": "a = 0\n### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\nif b:\n"
    "    ### BEGIN SOLUTION\n    c = 3\n    ### END SOLUTION\n    d = 4",
    "no newline at the end": "def g():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
    "tab indentation": "def h():\n\t### BEGIN SOLUTION\n\treturn 2\n\t### END SOLUTION\n",
    "markers inside longer lines": "x = 0  # BEGIN SOLUTION (answer)\ny = 1\n# END SOLUTION, done\nz = 2\n",
    "empty region": "def k():\n    ### BEGIN SOLUTION\n    ### END SOLUTION\n",
}


def _tricky_notebook(code: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A title"),
        nbformat.v4.new_code_cell(code, metadata={"tags": ["exercise"]}),
        nbformat.v4.new_code_cell("check(f)", metadata={"tags": ["check", "points=2"]}),
        nbformat.v4.new_markdown_cell("Explain why.", metadata={}),
        nbformat.v4.new_markdown_cell("Because of the *model* answer.", metadata={"tags": ["answer"]}),
        nbformat.v4.new_markdown_cell(
            "Keep this.\n### BEGIN SOLUTION\nbut not this\n### END SOLUTION", metadata={"tags": ["answer"]}
        ),
    ]
    return nb


@pytest.mark.parametrize("code", TRICKY.values(), ids=TRICKY.keys())
def test_learner_cells_are_exactly_what_nbgrader_releases(code):
    nb = _tricky_notebook(code)
    source = classroom.with_nbgrader_metadata(nb, "demo")
    ours = classroom.learner_notebook(nb, "demo")
    assert _grading_view(ours) == _grading_view(nbgrader_release(source))
    MetadataValidator().validate_nb(ours)
    MetadataValidator().validate_nb(source)


@pytest.mark.parametrize("nb_path", SOLUTIONS, ids=_rel)
def test_committed_learner_notebooks_are_what_nbgrader_releases_from_the_solutions(nb_path):
    source = classroom.with_nbgrader_metadata(jupytext.read(nb_path), nb_path.stem)
    learner = jupytext.read(classroom.learner_path(nb_path))
    MetadataValidator().validate_nb(source)  # raises on a bad schema, duplicate ids, missing points
    MetadataValidator().validate_nb(learner)
    assert _grading_view(learner) == _grading_view(nbgrader_release(source)), (
        f"{_rel(classroom.learner_path(nb_path))} differs from nbgrader's release: run `make learner`"
    )


def test_the_course_markers_and_stubs_are_nbgrader_defaults():
    defaults = ClearSolutions()
    assert classroom.CODE_STUB == defaults.code_stub["python"]
    assert classroom.TEXT_STUB == defaults.text_stub
    assert (classroom.BEGIN_MARK, classroom.END_MARK) == (
        defaults.begin_solution_delimeter,
        defaults.end_solution_delimeter,
    )
    assert classroom.BEGIN_MARK in classroom.BEGIN and classroom.END_MARK in classroom.END


def test_the_generated_nbgrader_config_loads_and_keeps_a_teachers_fast_mode_choice(tmp_path, monkeypatch):
    (tmp_path / "nbgrader_config.py").write_text(classroom.nbgrader_config_text())
    monkeypatch.setenv("COURSE_FAST", "0")  # the teacher asked for learner mode
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path)).load_config()
    assert os.environ["COURSE_FAST"] == "0" and os.environ["HF_HUB_OFFLINE"] == "1"
    assert cfg.CourseDirectory.course_id == classroom.COURSE_ID
    assert cfg.Execute.timeout == classroom.AUTOGRADE_CELL_TIMEOUT_S > 30  # nbgrader's default is 30 s
    assert cfg.ClearSolutions.code_stub == {"python": classroom.CODE_STUB}
    regexp = re.compile(cfg.FileNameCollectorPlugin.named_regexp)
    for path, student, file_id in [
        ("/c/downloaded/ch/extracted/alice/nb.ipynb", "alice", "nb.ipynb"),
        ("/c/downloaded/ch/extracted/bob_2/01_background/nb.ipynb", "bob_2", "nb.ipynb"),
    ]:
        m = regexp.match(path)
        assert m and m["student_id"] == student and m["file_id"] == file_id


# --------------------------------------------------------------- check cells write nothing to stderr

CHECK_MODULES = sorted(
    {
        m
        for p in SOLUTIONS
        for c in jupytext.read(p).cells
        if "check" in c.metadata.get("tags", [])
        for m in re.findall(r"^\s*from\s+(course_lib\.exercises(?:\.\w+)?)\s+import", c.source, re.M)
    }
)


@pytest.mark.skipif(not CHECK_MODULES, reason="no check cell imports a course_lib.exercises module")
def test_importing_torch_course_lib_and_the_check_modules_writes_nothing_to_stderr():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "MPLBACKEND")}
    code = "import torch, course_lib\n" + "".join(f"import {m}\n" for m in CHECK_MODULES)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"nbgrader scores a check cell that writes to stderr zero; got:\n{proc.stderr}"


@pytest.mark.parametrize("nb_path", SOLUTIONS, ids=_rel)
def test_stored_check_outputs_of_the_solutions_are_stdout_only(nb_path):
    """`make notebooks` ran every check on its solution: each printed to stdout and nothing else."""
    for i, cell in enumerate(jupytext.read(nb_path).cells):
        if "check" not in cell.metadata.get("tags", []):
            continue
        kinds = [(o.output_type, o.get("name")) for o in cell.outputs]
        assert ("stream", "stdout") in kinds, (
            f"cell {i}: the check has no stored output; run `make notebooks`"
        )
        assert all(k == ("stream", "stdout") for k in kinds), (
            f"cell {i}: the check's stored outputs are {kinds}; nbgrader scores stderr or an error as zero"
        )


# --------------------------------------------------------------------------------- end to end

ENV = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PYTHONWARNINGS")}
ENV.update(COURSE_FAST="1", HF_HUB_OFFLINE="1")  # the kernel inherits this: fast mode, offline
# nbgrader runs `alembic` (gradebook migrations) as a command: find it beside this Python, activated or not
ENV["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), ENV.get("PATH", "")])


def _has_autograded_cells(nb_path: Path) -> bool:
    return any(c.autograded for c in classroom.graded_cells(jupytext.read(nb_path), nb_path.stem))


ASSIGNMENTS = sorted({classroom.chapter_of(p) for p in SOLUTIONS if _has_autograded_cells(p)})
# Autograde runs every notebook once per student: chapters 1 and 2 always (carol's wrong answers are
# written for their exercises), every chapter with COURSE_NBGRADER_ALL=1 (carol then hands in the solutions
# of the exercises WRONG_ANSWERS does not cover, and is checked on the ones it does).
E2E_ASSIGNMENTS = ASSIGNMENTS if os.environ.get("COURSE_NBGRADER_ALL") == "1" else ASSIGNMENTS[:2]

WRONG_ANSWERS: dict[str, str] = {  # exercise function -> the whole exercise cell carol hands in
    # chapter 1
    "gpt2_parameter_count": """def gpt2_parameter_count(vocab_size, block_size, n_layer, d_model):
    d = d_model  # a separate output layer: the embeddings counted twice
    block = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 4 * d
    return 2 * vocab_size * d + block_size * d + n_layer * block + 2 * d
""",
    "adamw_training_bytes": """from course_lib.model_costs import training_memory

def adamw_training_bytes(n_params):
    return int(training_memory(n_params, "fp32", "adamw").total)
""",
    "compute_optimal_plan": """def compute_optimal_plan(flops, tokens_per_parameter=20.0):
    n = (flops / tokens_per_parameter) ** 0.5  # C = N D: the 6 FLOPs per parameter and token forgotten
    return n, tokens_per_parameter * n
""",
    # chapter 2
    "softmax": """def softmax(x):
    return torch.softmax(x, dim=-1)
""",
    "scaled_dot_product_attention": """def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)  # not divided by sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
""",
    "attention_entropy": """def attention_entropy(A):
    return torch.special.entr(A).sum(dim=-1)
""",
    "make_causal_mask": """from course_lib.attention import causal_mask

def make_causal_mask(T):
    return causal_mask(T)
""",
    "split_heads": """def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, n_heads, T, C // n_heads)  # a reshape where a transpose belongs
""",
    "merge_heads": """def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.reshape(B, T, nh * hs)  # the transpose back forgotten
""",
    "head_attention_map": """def head_attention_map(x, W_q, b_q, W_k, b_k, head, n_heads, attention_mask):
    hs = x.size(-1) // n_heads
    rows = slice(head * hs, (head + 1) * hs)
    q, k = x @ W_q[rows].T + b_q[rows], x @ W_k[rows].T + b_k[rows]
    scores = q @ k.transpose(-2, -1) / x.size(-1) ** 0.5  # sqrt(d) where sqrt(hs) belongs
    scores = scores.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    "previous_token_weight": """def previous_token_weight(A, length):
    q = torch.arange(1, length)  # [SEP] counted as a word piece
    return A[:, q, q - 1].mean(dim=-1)
""",
    "mean_attention_distance": """def mean_attention_distance(A, length):
    i = torch.arange(A.shape[-1])
    distance = (i[:, None] - i[None, :]).abs()
    return (A * distance).sum(dim=-1).mean(dim=-1)  # the padded query rows averaged in
""",
}


def _exercise_name(source: str) -> str | None:
    m = re.search(r"^(?:def|class) (\w+)", source, re.M)
    return m.group(1) if m else None


def carol_notebook(source_nb_path: Path):
    """The source notebook with every exercise cell WRONG_ANSWERS covers replaced by its wrong answer."""
    nb = nbformat.read(source_nb_path, as_version=4)
    for cell in nb.cells:
        name = _exercise_name(cell.source)
        if cell.metadata.get("nbgrader", {}).get("solution") and name in WRONG_ANSWERS:
            cell.source = WRONG_ANSWERS[name]
    return nb


def _wrong_answer_checks(nb) -> list[str]:
    """The grade ids of the check cells that grade an exercise carol answered wrongly."""
    ids, wrong = [], False
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            wrong = cell.source in WRONG_ANSWERS.values()  # carol_notebook put a wrong answer here
        elif meta.get("grade") and cell.cell_type == "code":
            if wrong:
                ids.append(meta["grade_id"])
            wrong = False
    return ids


def nbgrader(course: Path, *args: str) -> str:
    """Run one nbgrader command in the course directory, as a teacher would; return its log."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=NBGRADER_TIMEOUT_S,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`nbgrader {' '.join(args)}` failed:\n{log[-4000:]}"
    print(f"nbgrader {args[0]}: {time.perf_counter() - t0:.1f} s")
    return log


def _zip(path: Path, notebooks: list[Path], folder: str = "") -> None:
    with zipfile.ZipFile(path, "w") as z:
        for nb in notebooks:
            z.write(nb, f"{folder}/{nb.name}" if folder else nb.name)


def gradebook_scores(course: Path, assignment: str, students: tuple[str, ...] = STUDENTS) -> list[dict]:
    """One row per student, notebook and graded cell, from nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy 2.1 warns about nbgrader's session use
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            for student in students:
                for nb in gb.find_submission(assignment, student).notebooks:
                    for g in nb.grades:
                        rows.append(
                            dict(
                                student=student,
                                notebook=nb.name,
                                grade_id=g.name,
                                autograded=g.cell.cell_type == "code",
                                auto_score=g.auto_score,
                                max_score=g.max_score,
                                needs_manual_grade=g.needs_manual_grade,
                            )
                        )
    return rows


def _print_table(rows: list[dict]) -> None:
    print(f"\n{'student':<8} {'notebook':<34} {'grade id':<34} {'auto score':>10} {'max':>5}")
    for r in rows:
        auto = "by hand" if r["auto_score"] is None else f"{r['auto_score']:g}"
        print(f"{r['student']:<8} {r['notebook']:<34} {r['grade_id']:<34} {auto:>10} {r['max_score']:>5g}")


def _why_not_full(course: Path, assignment: str, row: dict) -> str:
    """The outputs of the cell that lost points in alice's autograded notebook (for the failure message)."""
    path = course / "autograded" / row["student"] / assignment / f"{row['notebook']}.ipynb"
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == row["grade_id"]:
            shown = [
                f"{o['ename']}: {o['evalue']}" if o.get("output_type") == "error" else str(o.get("text") or o)
                for o in cell.outputs
            ]
            return "\n".join(shown)[-2000:]
    return "(cell not found)"


def _assert_scores(course: Path, assignment: str, rows: list[dict], wrong: set[str] = frozenset()) -> None:
    """alice (the solutions) full points on every check, bob (untouched) zero, carol zero on the checks in
    ``wrong`` (each failing with ExerciseFailure, the checker's verdict, not a crash) and full on the rest;
    written answers are for the teacher."""
    _print_table(rows)
    assert rows, "the gradebook has no graded cells"
    for r in rows:
        full = r["student"] == "alice" or (r["student"] == "carol" and r["grade_id"] not in wrong)
        if not r["autograded"]:
            if r["student"] != "bob":
                assert r["auto_score"] is None and r["needs_manual_grade"], (
                    "a written answer is for the teacher"
                )
            else:
                assert r["auto_score"] == 0, "an untouched written answer scores zero"
        elif full:
            assert r["auto_score"] == r["max_score"] > 0, (
                f"{r['student']} lost points on {r['grade_id']}:\n{_why_not_full(course, assignment, r)}"
            )
        else:
            assert r["auto_score"] == 0, f"{r['student']}'s {r['grade_id']} scored {r['auto_score']}"
            if r["student"] == "carol":
                outputs = _why_not_full(course, assignment, r)
                assert "ExerciseFailure" in outputs, (
                    f"{r['grade_id']} did not reject carol's answer:\n{outputs}"
                )


def _assert_export(course: Path, assignment: str, total: float, auto_total: float, carol: float) -> None:
    """`nbgrader export`'s CSV: alice has every autograded point, bob none, carol ``carol``, out of the
    assignment's total."""
    csv_path = course / f"grades-{assignment}.csv"
    nbgrader(course, "export", "--to", str(csv_path), "--assignment", assignment)
    text = csv_path.read_text()
    print(text)
    rows_by_student = {r["student_id"]: r for r in csv.DictReader(text.splitlines())}
    assert set(rows_by_student) == set(STUDENTS)
    assert {float(r["max_score"]) for r in rows_by_student.values()} == {total}
    scores = {student: float(r["score"]) for student, r in rows_by_student.items()}
    assert scores == {"alice": auto_total, "bob": 0.0, "carol": carol}, scores


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("course")
    assert classroom.main(["nbgrader-source", str(root), *E2E_ASSIGNMENTS]) == 0
    return root


@pytest.mark.slow
@pytest.mark.skipif(not E2E_ASSIGNMENTS, reason="no solution notebook has an autograded exercise")
@pytest.mark.parametrize("assignment", E2E_ASSIGNMENTS)
def test_nbgrader_gives_the_solutions_full_points_and_untouched_learner_notebooks_zero(course, assignment):
    t0 = time.perf_counter()
    nbgrader(course, "generate_assignment", assignment, "--force")
    released = sorted((course / "release" / assignment).glob("*.ipynb"))
    learners = [classroom.learner_path(p) for p in SOLUTIONS if classroom.chapter_of(p) == assignment]
    assert [p.name for p in released] == [p.name for p in learners]
    for rel, src in zip(released, [p for p in SOLUTIONS if classroom.chapter_of(p) == assignment]):
        ours = classroom.learner_notebook(
            jupytext.read(src), src.stem
        )  # (the committed copy: test_notebooks)
        assert _grading_view(nbformat.read(rel, 4)) == _grading_view(ours), f"nbgrader's {rel.name} differs"

    # hand-ins as a learning platform delivers them: one zip per student, collected by zip_collect
    archive = course / "downloaded" / assignment / "archive"
    archive.mkdir(parents=True)
    _zip(archive / "alice.zip", sorted((course / "source" / assignment).glob("*.ipynb")))
    _zip(archive / "bob.zip", learners, folder=assignment)
    carol_dir = course / "carol" / assignment
    carol_dir.mkdir(parents=True)
    wrong: set[str] = set()
    for src in sorted((course / "source" / assignment).glob("*.ipynb")):
        nb = carol_notebook(src)
        wrong |= set(_wrong_answer_checks(nb))
        nbformat.write(nb, carol_dir / src.name)
    assert wrong or os.environ.get("COURSE_NBGRADER_ALL") == "1", f"no wrong answer written for {assignment}"
    _zip(archive / "carol.zip", sorted(carol_dir.glob("*.ipynb")))
    nbgrader(course, "zip_collect", assignment)
    for student in STUDENTS:
        handed_in = sorted(p.name for p in (course / "submitted" / student / assignment).glob("*.ipynb"))
        assert handed_in == [p.name for p in learners], f"zip_collect did not collect {student}'s notebooks"

    nbgrader(course, "autograde", assignment)
    nbgrader(course, "generate_feedback", assignment)
    for student in STUDENTS:
        for nb in learners:
            assert (course / "feedback" / student / assignment / nb.with_suffix(".html").name).exists()

    cells = [
        c
        for p in SOLUTIONS
        if classroom.chapter_of(p) == assignment
        for c in classroom.graded_cells(jupytext.read(p), p.stem)
    ]
    total = sum(c.points for c in cells)
    auto_total = sum(c.points for c in cells if c.autograded)
    rows = gradebook_scores(course, assignment)
    assert sorted(r["grade_id"] for r in rows) == sorted(c.grade_id for c in cells for _ in STUDENTS)
    _assert_scores(course, assignment, rows, wrong)
    carol = auto_total - sum(c.points for c in cells if c.grade_id in wrong)
    _assert_export(course, assignment, total, auto_total, carol)
    print(f"{assignment}: nbgrader end to end took {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow
def test_nbgrader_scores_points_tags_and_leaves_written_answers_to_the_teacher(tmp_path):
    """A small made-up assignment with what chapter 1 lacks: a 2-point check and a written answer."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Adding\n### Exercise — add two numbers"),
        nbformat.v4.new_code_cell(
            "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION\n",
            metadata={"tags": ["exercise"]},
        ),
        nbformat.v4.new_code_cell(
            "assert add(2, 3) == 5 and add(-1, 1) == 0\nprint('add passes')",
            metadata={"tags": ["check", "points=2"]},
        ),
        nbformat.v4.new_markdown_cell("### Question — why is addition commutative?"),
        nbformat.v4.new_markdown_cell(
            "Because counting does not depend on order.", metadata={"tags": ["answer"]}
        ),
    ]
    assignment = "99_demo"
    source = tmp_path / "source" / assignment
    source.mkdir(parents=True)
    nbformat.write(classroom.with_nbgrader_metadata(nb, "adding"), source / "adding.ipynb")
    (tmp_path / "nbgrader_config.py").write_text(classroom.nbgrader_config_text())
    nbgrader(tmp_path, "generate_assignment", assignment)
    for student, version in [
        ("alice", classroom.with_nbgrader_metadata(nb, "adding")),
        ("bob", classroom.learner_notebook(nb, "adding")),
    ]:
        (tmp_path / "submitted" / student / assignment).mkdir(parents=True)
        nbformat.write(version, tmp_path / "submitted" / student / assignment / "adding.ipynb")
    nbgrader(tmp_path, "autograde", assignment)
    rows = gradebook_scores(tmp_path, assignment, ("alice", "bob"))
    assert sorted((r["grade_id"], r["max_score"]) for r in rows if r["student"] == "alice") == [
        ("answer-1", 1.0),
        ("check-add", 2.0),
    ]
    _assert_scores(tmp_path, assignment, rows)
