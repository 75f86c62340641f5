"""Mechanical changes to every solution notebook, then its learner copy regenerated. Idempotent.

    python tools/fix_notebooks.py            # fix solutions/**/*.ipynb (+ .py), regenerate chapters/
    python tools/fix_notebooks.py --check    # exit 1 and list what would change; write nothing

What it changes, on whatever notebooks exist when it runs, so stored outputs stay what re-execution gives:

a. Test markers: a ``# NBVAL_CHECK_OUTPUT`` (any ``# NBVAL_*``) comment line becomes nbval's cell tag
   (``nbval-check-output``), so the website shows no markers.
b. Tables: ``print(format_table(...))``, ``print(results_table(...))`` and
   ``display(Markdown(format_table(...)))`` become ``format_table(...).show()`` (an HTML table in
   JupyterLab and on the site, see course_lib.display), and their stored outputs become the display
   output ``.show()`` produces (the table's lines cut out of the printed text). An import of
   ``Markdown`` (or ``display``) left unused is dropped.
c. Machine paths: absolute paths into the cache or the repository in stored outputs become
   ``<cache>/...`` or repository-relative; a ``print`` argument that names a path or folder in a cell
   that printed one is wrapped in ``display_path(...)`` (imported from course_lib).
d. Figures: a stored PNG output is re-encoded with a 256-colour palette (``course_lib.plots.compact_png``,
   as ``use_course_style()`` makes a kernel store them): the site keeps every figure twice.
e. Progress bars: the plain-text form stored with a tqdm bar widget is the bar as it was created
   ("train:   0%| | 0/1000"); it is rewritten from the widget's saved final state, which the site and
   JupyterLab show ("train: 100%|██████████| 1000/1000 [...]"), so viewers without widgets agree.

Each solution notebook is read and written with jupytext as ``tools/classroom.py`` does (the
``.ipynb`` and its paired ``.py`` stay in sync), then its learner copy and the rubric are regenerated.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINE_LENGTH = 110  # pyproject.toml's ruff line-length: a longer import is wrapped, as isort would
MARKER = re.compile(r"^#\s*(NBVAL_[A-Z_]+)\s*$")
TABLE_FUNCTIONS = {"format_table", "results_table"}
PATH_WORDS = re.compile(r"path|dir|ckpt|checkpoint|folder|file", re.I)
# /root/.cache/course_lib/x, /home/me/.cache/course_lib/x, or a COURSE_CACHE=/somewhere/course_lib/x
CACHE_PATH = re.compile(r"(?<![\w.<>/])/[^\s'\"<>:]*?/\.cache/course_lib(?=[/\s'\"]|$)")
REPO_DIRS = "solutions|chapters|course_lib|configs|tests|tools|benchmarks"
REPO_PATH = re.compile(rf"(?<![\w.<>/])/[^\s'\"<>:]*?/(?=(?:{REPO_DIRS})/)")


def tag_of(marker: str) -> str:
    """nbval's cell tag for a comment marker: NBVAL_CHECK_OUTPUT -> nbval-check-output."""
    return marker.lower().replace("_", "-")


# ------------------------------------------------------------------------------------- a. markers


def fix_markers(cell: Any) -> bool:
    """Move ``# NBVAL_*`` comment lines of a code cell into its tags."""
    lines = cell.source.split("\n")
    markers = [m.group(1) for m in map(MARKER.match, lines) if m]
    if not markers:
        return False
    cell.source = "\n".join(line for line in lines if not MARKER.match(line)).strip("\n")
    tags = list(cell.metadata.get("tags", []))
    tags += [tag_of(m) for m in markers if tag_of(m) not in tags]
    cell.metadata["tags"] = tags
    return True


# --------------------------------------------------------------------------------- source helpers


def _offset(lines: list[str], lineno: int, col: int) -> int:
    """Character offset in the joined source of an ast (1-based line, UTF-8 byte column) position."""
    before = sum(len(line) + 1 for line in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode()[:col].decode())


def _span(source: str, node: ast.AST) -> tuple[int, int]:
    lines = source.split("\n")
    return _offset(lines, node.lineno, node.col_offset), _offset(lines, node.end_lineno, node.end_col_offset)


def _replace_spans(source: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:  # IPython magics and the like: left alone
        return None


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_call_to(node: ast.AST, names: set[str]) -> bool:
    return isinstance(node, ast.Call) and _name(node.func) in names


# ---------------------------------------------------------------------------------- b. tables


def _table_call(stmt: ast.stmt) -> tuple[ast.Call, str] | None:
    """(the format_table/results_table call, how it was shown) for ``print(t)``/``display(Markdown(t))``."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and not stmt.value.keywords):
        return None
    outer, args = _name(stmt.value.func), stmt.value.args
    if len(args) != 1:
        return None
    inner = args[0]
    if outer == "display" and _is_call_to(inner, {"Markdown"}) and len(inner.args) == 1:
        inner = inner.args[0]
        return (inner, "markdown") if _is_call_to(inner, TABLE_FUNCTIONS) else None
    if outer == "print" and _is_call_to(inner, TABLE_FUNCTIONS):
        return inner, "print"
    return None


def fix_table_calls(cell: Any) -> set[str]:
    """Rewrite the cell's table statements to ``<call>.show()``; returns how they were shown."""
    tree = _parse(cell.source)
    if tree is None:
        return set()
    edits, kinds = [], set()
    for stmt in tree.body:
        found = _table_call(stmt)
        if found:
            call, kind = found
            start, end = _span(cell.source, stmt)
            call_start, call_end = _span(cell.source, call)
            edits.append((start, end, cell.source[call_start:call_end] + ".show()"))
            kinds.add(kind)
    cell.source = _replace_spans(cell.source, edits)
    return kinds


def _table_output(table: Any) -> Any:
    """The display output ``table.show()`` stores (IPython's formatters: text/plain, html, markdown)."""
    import nbformat
    from IPython.core.formatters import DisplayFormatter

    data, metadata = DisplayFormatter().format(table)
    return nbformat.v4.new_output("display_data", data=data, metadata=metadata)


def _split_stream(text: str) -> list[tuple[str, str]]:
    """A printed text cut into ("text", ...) and ("table", markdown) pieces, in order."""
    lines = text.split("\n")
    pieces: list[tuple[str, str]] = []
    plain: list[str] = []
    i = 0
    is_row = lambda s: s.startswith("|") and s.rstrip().endswith("|") and len(s.strip()) > 1  # noqa: E731
    while i < len(lines):
        if i + 1 < len(lines) and is_row(lines[i]) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+\s*", lines[i + 1]):
            j = i + 2
            while j < len(lines) and is_row(lines[j]):
                j += 1
            if plain:
                pieces.append(("text", "\n".join(plain) + "\n"))
                plain = []
            pieces.append(("table", "\n".join(lines[i:j])))
            i = j
            if i < len(lines) and lines[i] == "" and i == len(lines) - 1:
                break  # the newline print() put after the table's last line
            continue
        plain.append(lines[i])
        i += 1
    rest = "\n".join(plain)
    if rest:
        pieces.append(("text", rest))
    return pieces


def fix_table_outputs(cell: Any) -> bool:
    """Printed or Markdown-displayed tables in a cell that shows tables -> the ``.show()`` output."""
    import nbformat

    from course_lib.display import Table

    new, changed = [], False
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if out.output_type == "display_data" and "text/markdown" in data and "text/html" not in data:
            try:
                table = Table.from_markdown(data["text/markdown"])
            except ValueError:
                new.append(out)
                continue
            new.append(_table_output(table))
            changed = True
        elif out.output_type == "stream" and out.name == "stdout":
            pieces = _split_stream(out.text)
            if not any(kind == "table" for kind, _ in pieces):
                new.append(out)
                continue
            for kind, text in pieces:
                if kind == "text":
                    new.append(nbformat.v4.new_output("stream", name="stdout", text=text))
                else:
                    new.append(_table_output(Table.from_markdown(text)))
            changed = True
        else:
            new.append(out)
    if changed:
        cell.outputs = new
    return changed


# --------------------------------------------------------------------------------- c. machine paths


def clean_paths(text: str) -> str:
    """Absolute cache and repository paths in an output -> ``<cache>/...`` and repository-relative."""
    return REPO_PATH.sub("", CACHE_PATH.sub("<cache>", text))


def fix_output_paths(cell: Any) -> bool:
    """Clean the paths in a cell's stored text outputs; True if any changed."""
    changed = False
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            cleaned = clean_paths(out.text)
            changed |= cleaned != out.text
            out.text = cleaned
        for mime in ("text/plain", "text/markdown", "text/html"):
            if mime in out.get("data", {}):
                cleaned = clean_paths(out.data[mime])
                changed |= cleaned != out.data[mime]
                out.data[mime] = cleaned
    return changed


def _names_a_path(expr: ast.expr) -> bool:
    """A variable, attribute or call named like a path (``ckpt_dir``, ``checkpoint_path(...)``), or
    ``a / b``; not a string built from one (``str(p).replace(...)``) and not a bare file name (``.name``)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):
        return True
    if isinstance(expr, ast.Call):
        return _name(expr.func) != "display_path" and bool(PATH_WORDS.search(_name(expr.func) or ""))
    if isinstance(expr, ast.Attribute) and expr.attr in {"name", "stem", "suffix"}:
        return False
    return isinstance(expr, ast.Name | ast.Attribute) and bool(PATH_WORDS.search(_name(expr) or ""))


def fix_path_prints(cell: Any) -> bool:
    """Wrap the path-like arguments of the cell's ``print`` calls in ``display_path(...)``."""
    tree = _parse(cell.source)
    if tree is None:
        return False
    edits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _name(node.func) == "print"):
            continue
        exprs = []
        for arg in node.args:
            if isinstance(arg, ast.JoinedStr):
                exprs += [v.value for v in arg.values if isinstance(v, ast.FormattedValue)]
            elif not isinstance(arg, ast.Constant):
                exprs.append(arg)
        for expr in exprs:
            if not _names_a_path(expr):
                continue
            text = cell.source[slice(*_span(cell.source, expr))]
            start, end = _span(cell.source, expr)
            edits.append((start, end, f"display_path({text})"))
    cell.source = _replace_spans(cell.source, edits)
    return bool(edits)


# -------------------------------------------------------------------------------------- imports


def _sort_key(name: str) -> tuple[int, str, str]:
    """isort's order-by-type: CONSTANTS, then Classes, then everything else."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name.lower(), name


def _render_from_import(module: str, names: list[str], indent: str = "") -> str:
    one_line = f"{indent}from {module} import {', '.join(names)}"
    if len(one_line) <= LINE_LENGTH:
        return one_line
    body = "".join(f"{indent}    {n},\n" for n in names)
    return f"{indent}from {module} import (\n{body}{indent})"


def edit_import(cells: list[Any], module: str, add: str | None = None, remove: str | None = None) -> bool:
    """Add or remove one name in the first ``from <module> import ...`` of the notebook's code cells.

    Adding to a notebook without such an import puts a new one before its first ``from course_lib``
    import (or at the end of its first import block). Names are kept in isort's order."""
    for cell in cells:
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        if tree is None:
            continue
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module == module and stmt.level == 0:
                names = [a.name if a.asname is None else f"{a.name} as {a.asname}" for a in stmt.names]
                if add and add not in names:
                    names.append(add)
                if remove in names:
                    names.remove(remove)
                names = sorted(names, key=_sort_key)
                start, end = _span(cell.source, stmt)
                text = _render_from_import(module, names) if names else ""
                if not names and cell.source[end : end + 1] == "\n":
                    end += 1
                new = cell.source[:start] + text + cell.source[end:]
                changed = new != cell.source
                cell.source = new
                return changed
    if not add:
        return False
    for cell in cells:  # no import of that module yet: insert one
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        imports = [s for s in (tree.body if tree else []) if isinstance(s, ast.Import | ast.ImportFrom)]
        if not imports:
            continue
        later = [s for s in imports if isinstance(s, ast.ImportFrom) and (s.module or "") > module]
        ours = [s for s in later if (s.module or "").split(".")[0] == module.split(".")[0]]
        anchor = ours[0] if ours else None
        line = _render_from_import(module, [add])
        if anchor is not None:
            start, _ = _span(cell.source, anchor)
            cell.source = cell.source[:start] + line + "\n" + cell.source[start:]
        else:
            _, end = _span(cell.source, imports[-1])
            cell.source = cell.source[:end] + "\n" + line + cell.source[end:]
        return True
    return False


def _uses(cells: list[Any], name: str) -> bool:
    """Whether any code cell uses ``name`` outside import statements."""
    for cell in cells:
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        if tree is None:
            continue
        if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(tree)):
            return True
    return False


# -------------------------------------------------------------------------------------- d. figures


def fix_figures(cell: Any) -> bool:
    """Re-encode the cell's stored PNG outputs as compact palette PNGs."""
    import base64

    from course_lib.plots import compact_png

    changed = False
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "image/png" not in data:
            continue
        raw = base64.b64decode(data["image/png"])
        small = compact_png(raw)
        if small != raw:
            data["image/png"] = base64.b64encode(small).decode("ascii")
            changed = True
    return changed


# ---------------------------------------------------------------------------------- e. progress bars

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _bar_text(models: dict[str, Any], model_id: str) -> str | None:
    """A tqdm bar's final text from saved widget state: HBox(HTML left, FloatProgress, HTML right)."""
    import html

    box = models.get(model_id, {})
    children = box.get("state", {}).get("children", []) if box.get("model_name") == "HBoxModel" else []
    parts = [models.get(str(c).removeprefix("IPY_MODEL_"), {}) for c in children]
    if [p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, progress, right = (p.get("state", {}) for p in parts)
    value, top = progress.get("value") or 0.0, progress.get("max") or 0.0
    filled = min(10, round(10 * value / top)) if top else 0
    text = f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}"
    return html.unescape(text).replace("\u2007", " ")


def fix_progress_text(nb: Any) -> int:
    """Rewrite the plain-text form of every stored tqdm bar from its saved state; returns how many."""
    models = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    fixed = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.get(WIDGET_VIEW)
            text = _bar_text(models, view.get("model_id", "")) if view and models else None
            if text is not None and data.get("text/plain") != text:
                data["text/plain"] = text
                fixed += 1
    return fixed


# ------------------------------------------------------------------------------------- notebooks


def fix_notebook(nb: Any) -> list[str]:
    """Apply a to e to a notebook node in place; returns what changed, for the log."""
    done = []
    cells = nb.cells
    shown: set[str] = set()
    path_prints = False
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        if fix_markers(cell):
            done.append(f"cell {i}: markers -> tags")
        kinds = fix_table_calls(cell)
        shown |= kinds
        if kinds:
            done.append(f"cell {i}: table shown with .show()")
        if (kinds or ".show()" in cell.source) and fix_table_outputs(cell):
            done.append(f"cell {i}: stored table output -> HTML table")
        if fix_output_paths(cell):
            done.append(f"cell {i}: machine paths in outputs")
            if fix_path_prints(cell):
                path_prints = True
                done.append(f"cell {i}: print(display_path(...))")
        if fix_figures(cell):
            done.append(f"cell {i}: figures stored compactly")
    if bars := fix_progress_text(nb):
        done.append(f"{bars} progress bar(s): plain text from the final state")
    if "markdown" in shown:
        for name in ("Markdown", "display"):
            if not _uses(cells, name) and edit_import(cells, "IPython.display", remove=name):
                done.append(f"import of {name} dropped")
    if (path_prints or _uses(cells, "display_path")) and edit_import(cells, "course_lib", add="display_path"):
        done.append("display_path imported")
    return done


def fix_file(solution_ipynb: Path, write: bool = True) -> list[str]:
    """Fix one solution notebook (and its paired script); regenerate its learner copy when it changed."""
    import jupytext

    from tools import classroom

    nb = jupytext.read(solution_ipynb)
    done = fix_notebook(nb)
    if done and write:
        jupytext.write(nb, solution_ipynb, fmt="ipynb")
        stored = jupytext.read(solution_ipynb)  # as classroom.execute: the script from the stored notebook
        jupytext.write(
            stored, solution_ipynb.with_suffix(".py"), fmt="py:percent", config=classroom._jupytext_config()
        )
    if done and write:
        classroom.generate(solution_ipynb)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="solution .ipynb files (default: all)")
    parser.add_argument("--check", action="store_true", help="list what would change; write nothing")
    args = parser.parse_args(argv)

    from tools import classroom

    paths = [p.resolve() for p in args.paths] or classroom.solution_notebooks()
    pending = 0
    for path in paths:
        done = fix_file(path, write=not args.check)
        pending += bool(done)
        for what in done:
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {what}")
    if not args.check and classroom.refresh_rubric():
        print(f"{classroom.TEACHERS_PAGE.name}: rubric refreshed")
    print(
        f"{pending} notebook(s) {'to fix' if args.check else 'fixed'}, {len(paths) - pending} already right"
    )
    return 1 if args.check and pending else 0


if __name__ == "__main__":
    sys.exit(main())
