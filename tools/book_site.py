"""The course website's own Sphinx extension (``_config.yml``: ``sphinx.local_extensions``).

- Writes the book's Solutions part (``solutions_book/``, from the solution notebooks, see
  write_solution_pages in tools/classroom.py) when the build starts, so it always matches them.
- Links every exercise of a chapter page to its solution (a line after the exercise cell).
- Links the first use of each glossary term on a chapter page (and the intro) to its glossary entry.
- Keeps pages light: MathJax only on pages with maths; no Font Awesome JavaScript (1.5 MB: the theme's
  CSS already draws the same icons with the web font); no source maps or theme translations shipped.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHAPTER_PREFIX = "chapters/"
GLOSSARY_DOC = "glossary"
MIN_TERM_LENGTH = 3  # shorter terms ("KV") would link inside too many words
SKIP_INSIDE = (nodes.literal, nodes.literal_block, nodes.reference, nodes.title, nodes.math, nodes.raw)


def _solution_notebook(docname: str) -> Path | None:
    """chapters/<ch>/<name> -> solutions/<ch>/<name>.ipynb, if it exists."""
    from tools import classroom

    if not docname.startswith(CHAPTER_PREFIX):
        return None
    path = classroom.SOLUTIONS / (docname[len(CHAPTER_PREFIX) :] + ".ipynb")
    return path if path.exists() else None


def _uri(transform: SphinxPostTransform, docname: str, labelid: str) -> str:
    builder = transform.app.builder
    return builder.get_relative_uri(transform.env.docname, docname) + "#" + labelid


class ExerciseLinks(SphinxPostTransform):
    """After each cell tagged ``exercise`` on a chapter page: "Solution: exercise k" (a link)."""

    default_priority = 900
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        from tools import classroom

        notebook = _solution_notebook(self.env.docname)
        if notebook is None:
            return
        labels = self.env.domaindata["std"]["labels"]
        cells = [n for n in self.document.findall(nodes.container) if "tag_exercise" in n["classes"]]
        for k, cell in enumerate(cells, start=1):
            label = classroom.solution_label(notebook, classroom.EXERCISE_TAG, k)
            if label not in labels:
                continue
            docname, labelid, _ = labels[label]
            link = nodes.reference("", f"Solution of exercise {k}", refuri=_uri(self, docname, labelid))
            para = nodes.paragraph("", "", nodes.Text("→ "), link, classes=["course-solution-link"])
            cell.parent.insert(cell.parent.index(cell) + 1, para)


class GlossaryLinks(SphinxPostTransform):
    """The first use of each glossary term in a chapter page's prose links to the term's entry."""

    default_priority = 901
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        doc = self.env.docname
        if not (doc.startswith(CHAPTER_PREFIX) or doc == "intro"):
            return
        std = self.env.get_domain("std")
        terms = {t: v for t, v in std._terms.items() if len(t) >= MIN_TERM_LENGTH and v[0] == GLOSSARY_DOC}
        if not terms:
            return
        # longest first, so "fine-tuning" wins over "tuning"; whole words, an optional plural s
        names = sorted(terms, key=len, reverse=True)
        pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?:s|es)?(?![\w-])", re.I)
        linked: set[tuple[str, str]] = set()
        for text in list(self.document.findall(nodes.Text)):
            parent = text.parent
            if not isinstance(parent, nodes.paragraph | nodes.emphasis | nodes.strong):
                continue
            if any(isinstance(a, SKIP_INSIDE) for a in _ancestors(text)):
                continue
            if any("cell_output" in a.get("classes", []) for a in _ancestors(text)):
                continue
            self._link_first_uses(text, pattern, terms, linked)

    def _link_first_uses(self, text: nodes.Text, pattern: re.Pattern, terms: dict, linked: set) -> None:
        source = str(text)
        pieces: list[nodes.Node] = []
        last = 0
        for m in pattern.finditer(source):
            target = terms[m.group(1).lower()]
            if target in linked:
                continue
            linked.add(target)
            pieces.append(nodes.Text(source[last : m.start()]))
            uri = _uri(self, *target)
            pieces.append(nodes.reference("", m.group(0), refuri=uri, classes=["course-glossary-link"]))
            last = m.end()
        if pieces:
            pieces.append(nodes.Text(source[last:]))
            text.parent.replace(text, pieces)


def _ancestors(node: nodes.Node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def _has_maths(doctree: nodes.document | None, body: str) -> bool:
    if doctree is None:
        return True
    if any(True for _ in doctree.findall(lambda n: isinstance(n, nodes.math | nodes.math_block))):
        return True
    return bool(re.search(r'class="[^"]*\bmath\b|\\\(|\\\[|\$\$', body))


def _drop_unused_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """No MathJax (1.2 MB and its set-up) on a page without maths."""
    if _has_maths(doctree, context.get("body", "")):
        return
    scripts = context.get("script_files", [])
    keep = [js for js in scripts if "mathjax" not in str(getattr(js, "filename", js) or "").lower()]
    keep = [js for js in keep if "MathJax" not in str(getattr(js, "attributes", {}).get("body", ""))]
    scripts[:] = keep


FONTAWESOME_JS = re.compile(r"<(?:script|link)\b[^>]*_static/scripts/fontawesome\.js[^>]*>(?:</script>)?\s*")


def _trim_site(app: Any, exception: Exception | None) -> None:
    """Drop what no page needs: Font Awesome's script (tags and file), source maps, theme translations."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    for page in out.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        trimmed = FONTAWESOME_JS.sub("", text)
        if trimmed != text:
            page.write_text(trimmed, encoding="utf-8")
    static = out / "_static"
    for path in {*static.rglob("*.map"), *static.glob("scripts/fontawesome.js*")}:
        path.unlink(missing_ok=True)
    shutil.rmtree(static / "locales", ignore_errors=True)


def setup(app: Any) -> dict[str, Any]:
    from tools import classroom

    classroom.write_solution_pages()  # before the table of contents is read: _toc.yml globs these pages
    app.add_post_transform(ExerciseLinks)
    app.add_post_transform(GlossaryLinks)
    app.connect("html-page-context", _drop_unused_scripts, priority=900)  # after MathJax adds itself
    app.connect("build-finished", _trim_site)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
