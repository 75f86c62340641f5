"""A whole-course audit of the exercise checks (issue 19, items 2 and 4).

Every check a solution notebook calls in a cell tagged ``check`` must reject at least
``MIN_MUTANTS`` plausible wrong answers ("mutants"), each with a message naming the failed case. The
mutants live beside each chapter's own tests, in a module-level ``MUTANTS`` list of
``(check, wrong_answer, expected_substring)`` in every ``tests/test_exercises_*.py``; this module
lists them all, counts them per check and runs each one.

Hints nudge, never hand over code: no hint may share more than ``MAX_SHARED_TOKENS`` consecutive code
tokens with the solution of its exercise.
"""

from __future__ import annotations

import ast
import importlib
import io
import re
import textwrap
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest

from course_lib.exercises import ExerciseFailure

ROOT = Path(__file__).resolve().parents[1]
MIN_MUTANTS = 3
MAX_SHARED_TOKENS = 8  # a hint may echo a short formula fragment (`alpha / r`), not a line of the answer

# ------------------------------------------------------------------------------ the notebooks' checks


def _cells(path: Path) -> list[tuple[str, str]]:
    """(header, source) of each ``# %%`` cell of a jupytext percent notebook."""
    parts = re.split(r"^# %%(.*)$", path.read_text(encoding="utf-8"), flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def _is_check(header: str) -> bool:
    return re.search(r'tags=\[[^]]*"check"', header) is not None


def _imported_checks(source: str) -> dict[str, str]:
    """``{check name: module}`` for every ``from course_lib.exercises.x import check_y`` in ``source``."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib.exercises"):
            for alias in node.names:
                found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def notebook_checks() -> dict[str, list[tuple[Path, str, str]]]:
    """``{"course_lib.exercises.ch01.check_x": [(notebook, exercise cell source, check cell source)]}``."""
    uses: dict[str, list[tuple[Path, str, str]]] = defaultdict(list)
    for path in sorted((ROOT / "solutions").glob("*/*.py")):
        cells = _cells(path)
        imports: dict[str, str] = {}
        for k, (header, source) in enumerate(cells):
            imports.update(_imported_checks(source))
            if not _is_check(header):
                continue
            exercise = next(
                (s for h, s in reversed(cells[:k]) if '"exercise"' in h and "### BEGIN SOLUTION" in s), ""
            )
            for name in re.findall(r"\b(check_\w+)\(", source):
                assert name in imports, f"{path.name}: {name} is called but not imported from course_lib"
                uses[imports[name]].append((path, exercise, source))
    return dict(uses)


NOTEBOOK_CHECKS = notebook_checks()

# ------------------------------------------------------------------------------------ the mutants


def _qualname(check) -> str:
    check = getattr(check, "func", check)  # a functools.partial holding a check's other arguments
    return f"{check.__module__}.{check.__name__}"


def all_mutants() -> list[tuple]:
    mutants = []
    for path in sorted((ROOT / "tests").glob("test_exercises_*.py")):
        module = importlib.import_module(path.stem)
        assert hasattr(module, "MUTANTS"), f"{path.name} has no module-level MUTANTS list"
        mutants += module.MUTANTS
    return mutants


MUTANTS = all_mutants()


def _mutant_id(mutant) -> str:
    check, wrong, _ = mutant
    what = getattr(wrong, "__name__", None) or repr(wrong)[:20]
    return f"{_qualname(check).rsplit('.', 1)[1]}-{what}"


def test_the_audit_finds_the_notebooks_checks():
    assert len(NOTEBOOK_CHECKS) >= 80, sorted(NOTEBOOK_CHECKS)


def test_every_check_a_notebook_uses_has_enough_mutants():
    counts = {name: 0 for name in NOTEBOOK_CHECKS}
    for check, *_ in MUTANTS:
        counts[_qualname(check)] = counts.get(_qualname(check), 0) + 1
    short = {name: n for name, n in sorted(counts.items()) if name in NOTEBOOK_CHECKS and n < MIN_MUTANTS}
    assert not short, f"checks with fewer than {MIN_MUTANTS} mutants in tests/test_exercises_*.py: {short}"


@pytest.mark.parametrize("check, wrong, case", MUTANTS, ids=[_mutant_id(m) for m in MUTANTS])
def test_every_mutant_is_rejected_naming_its_case(check, wrong, case):
    with pytest.raises(ExerciseFailure) as failure:
        check(wrong)
    message = str(failure.value)
    assert "not written yet" not in message, "a mutant must be a wrong answer, not the untouched stub"
    try:
        as_pattern = re.search(case, message) is not None
    except re.error:  # a plain substring with a lone bracket
        as_pattern = False
    assert case in message or as_pattern, f"{case!r} not in the feedback: {message}"


# --------------------------------------------------------------------------------- hints nudge only


def code_tokens(text: str) -> list[str]:
    """Python's code tokens of ``text`` (names, operators, numbers, strings), comments and layout left out.

    Falls back to a regex of identifiers, numbers and operator characters for text that is not Python
    (a hint's prose)."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    skip |= {tokenize.ENCODING, tokenize.ENDMARKER}
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in skip]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.findall(r"[A-Za-z_]\w*|\d+(?:\.\d+)?(?:e-?\d+)?|\*\*|//|==|!=|<=|>=|[^\s\w]", text)


def longest_shared_run(a: list[str], b: list[str]) -> tuple[int, list[str]]:
    """The longest run of consecutive tokens found in both ``a`` and ``b`` (dynamic programming)."""
    best, end = 0, 0
    previous = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        current = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best, end = current[j], i
        previous = current
    return best, a[end - best : end]


def solution_code(exercise_cell: str) -> str:
    """The text between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (every such block of the cell)."""
    blocks = re.findall(r"### BEGIN SOLUTION\n(.*?)^\s*### END SOLUTION", exercise_cell, flags=re.S | re.M)
    return "\n".join(textwrap.dedent(b) for b in blocks)


def _hints_by_check() -> dict[str, list[str]]:
    """``{qualified check name: [hint, ...]}``: the ``hint=`` arguments inside each ``check_*`` of
    course_lib/exercises, read from the source (string constants, implicit concatenation, f-strings'
    constant parts)."""
    hints: dict[str, list[str]] = defaultdict(list)
    for path in sorted((ROOT / "course_lib" / "exercises").glob("*.py")):
        module = "course_lib.exercises" + ("" if path.stem == "__init__" else f".{path.stem}")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("check_")):
                continue
            for call in ast.walk(node):
                for kw in getattr(call, "keywords", []) if isinstance(call, ast.Call) else []:
                    if kw.arg == "hint":
                        text = "".join(
                            str(c.value)
                            for c in ast.walk(kw.value)
                            if isinstance(c, ast.Constant) and isinstance(c.value, str)
                        )
                        if text:
                            hints[f"{module}.{node.name}"].append(text)
    return dict(hints)


HINTS = _hints_by_check()


def test_the_audit_reads_the_hints():
    assert len(HINTS) >= 20, sorted(HINTS)
    unused = sorted(set(HINTS) - set(NOTEBOOK_CHECKS))
    assert not unused, f"hints of checks no notebook calls (renamed?): {unused}"


@pytest.mark.parametrize("check", sorted(set(HINTS) & set(NOTEBOOK_CHECKS)))
def test_no_hint_hands_over_its_solution(check):
    solutions = [solution_code(exercise) for _, exercise, _ in NOTEBOOK_CHECKS[check]]
    assert any(solutions), f"{check}: no solution block found in the exercise cell before its check cell"
    for hint in HINTS[check]:
        for solution in solutions:
            n, run = longest_shared_run(code_tokens(hint), code_tokens(solution))
            assert n <= MAX_SHARED_TOKENS, (
                f"{check}'s hint shares {n} consecutive code tokens with its solution ({' '.join(run)}); "
                f"at most {MAX_SHARED_TOKENS}: rewrite it as a nudge (which case, what to look at)"
            )
