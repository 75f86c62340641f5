"""One source for exercises and solutions: solution notebooks in, learner notebooks out.

Every chapter notebook is written once, as ``solutions/<chapter>/<name>.py`` (jupytext percent format)
with its executed ``.ipynb`` beside it. An exercise is a code cell tagged ``exercise`` whose answer sits
between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the cell after it, tagged ``check``, calls a
self-check from :mod:`course_lib.exercises`. The learner version in ``chapters/`` is generated:

- each solution region becomes ``# YOUR CODE HERE`` / ``raise NotImplementedError()``;
- the outputs of exercise and check cells are cleared (the rest keep the learner-mode outputs);
- check cells get the ``raises-exception`` tag (an unsolved exercise fails its check on purpose);
- cells carry nbgrader metadata, so ``nbgrader generate_assignment`` / ``autograde`` work unchanged.

Commands (``python -m course_lib.classroom ...``):
    build [PATH ...]   execute solution scripts in learner mode, store outputs, regenerate learners
    generate           regenerate every learner notebook from the stored solution notebooks
    check              exit 1 when a committed learner notebook differs from what generate makes
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
CHAPTERS = ROOT / "chapters"

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISE_TAG, CHECK_TAG = "exercise", "check"
_REGION = re.compile(
    rf"^([ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*(\n|$)", re.S | re.M
)


def strip_solutions(source: str) -> str:
    """Replace every solution region with nbgrader's placeholder, keeping its indentation."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"unbalanced solution markers: every '{BEGIN}' needs a matching '{END}'")

    def placeholder(m: re.Match[str]) -> str:
        pad = m.group(1)
        return f"{pad}# YOUR CODE HERE\n{pad}raise NotImplementedError(){m.group(2)}"

    return _REGION.sub(placeholder, source)


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def learner_notebook(solution: Any, name: str) -> Any:
    """The learner version of a solution notebook (an ``nbformat`` node), with nbgrader metadata."""
    nb = copy.deepcopy(solution)
    for i, cell in enumerate(nb.cells):
        tags = _tags(cell)
        grade_id = f"{name}-{i:03d}"
        if cell.cell_type == "code" and EXERCISE_TAG in tags:
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
            cell.metadata["nbgrader"] = _nbgrader(grade_id, solution=True)
        elif cell.cell_type == "code" and CHECK_TAG in tags:
            cell.outputs, cell.execution_count = [], None
            cell.metadata["tags"] = tags + ["raises-exception"]
            cell.metadata["nbgrader"] = _nbgrader(grade_id, grade=True, points=1)
        elif BEGIN in cell.source:
            raise ValueError(f"{name}, cell {i}: solution markers outside a cell tagged '{EXERCISE_TAG}'")
        else:
            cell.metadata["nbgrader"] = _nbgrader(grade_id, locked=True)
    return nb


def _nbgrader(
    grade_id: str, solution: bool = False, grade: bool = False, points: int = 0, locked: bool = False
):
    meta: dict[str, Any] = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked or grade,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if grade:
        meta["points"] = points
    return meta


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.classroom", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="execute solution scripts, store outputs, regenerate learner notebooks")
    b.add_argument("paths", nargs="*", type=Path, help="solution .py scripts (default: all)")
    b.add_argument("--fast", action="store_true", help="run in fast mode (quick check, not for committing)")
    sub.add_parser("generate", help="regenerate learner notebooks from solution notebooks")
    sub.add_parser("check", help="fail when a learner notebook is stale")
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
    elif args.cmd == "generate":
        for src in solution_notebooks():
            print(generate(src)[0].relative_to(ROOT))
    else:
        stale = stale_learner_notebooks()
        for p in stale:
            print(
                f"stale: {p.relative_to(ROOT)} -- run `make learner` and commit the result", file=sys.stderr
            )
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
