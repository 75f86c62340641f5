"""The package's table of contents and its layering: every module listed in course_lib's docstring,
and the command line imported by nothing in the library."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import course_lib

PACKAGE = Path(course_lib.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")) + [
    "exercises"
]


def test_every_module_is_in_the_package_map():
    listed = set(re.findall(r"^    (\w+)\s{2,}", course_lib.__doc__, re.M))
    assert listed == set(MODULES), (
        f"course_lib/__init__.py's module map misses {sorted(set(MODULES) - listed)} and lists "
        f"{sorted(listed - set(MODULES))}, which do not exist; keep it in step with the package"
    )


def test_no_library_module_imports_the_command_line():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue  # the entry point of `python -m course_lib` is the one place that calls cli.main
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert "course_lib.cli" not in names, f"{path.relative_to(PACKAGE.parent)} imports course_lib.cli"
