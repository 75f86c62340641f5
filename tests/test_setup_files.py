"""The set-up files agree with each other: pyproject.toml, environment.yml, README, Makefile, .ci/run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _normalise(req: str) -> tuple[str, str]:
    r = Requirement(req)
    return re.sub(r"[-_.]+", "-", r.name).lower(), str(r.specifier)


def pyproject_requirements() -> set[tuple[str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_normalise(r) for r in reqs}


def environment_requirements() -> set[tuple[str, str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_normalise(r) for r in pip}


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    ours, conda = pyproject_requirements(), environment_requirements()
    assert ours == conda, (
        f"environment.yml and pyproject.toml disagree. Only in pyproject: {sorted(ours - conda)}; "
        f"only in environment.yml: {sorted(conda - ours)}"
    )


def test_torch_requirement_is_loose_enough_for_a_users_cuda_build():
    spec = dict(pyproject_requirements())["torch"]
    assert "==" not in spec and "<" not in spec, "a pinned torch would replace a user's own CUDA build"


def test_readme_opens_with_the_two_set_up_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.S)
    commands = [line.split("#")[0].strip() for line in blocks[0].splitlines() if line.split("#")[0].strip()]
    assert commands == ["make lab", "make test"], f"the README's first code block is {commands}"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_book_requirement_stays_below_jupyter_book_2():
    spec = dict(pyproject_requirements())["jupyter-book"]
    assert "<2" in spec, "Jupyter Book 2 does not read _toc.yml"
