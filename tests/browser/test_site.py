"""The built website in a real browser: every page in _toc.yml loads cleanly, offline, and reads like a
book on a desktop (1280 px) and on a phone (390 px).

The site in _build/html (`make book`) is served on loopback and opened in headless Chromium. For each
page: no console error, no failed request, no request to another host (a CDN), no broken image, maths
typeset by the local MathJax, no "Traceback", every link inside the site reaches a page and an anchor
that exist. A notebook page shows the outputs its notebook stores (as many output cells and figures,
at least as many tables), offers the same .ipynb through the theme's download button, and, if it stores
widget state, shows its widgets through the local ipywidgets HTML manager and the note that their
controls need a kernel. Every exercise links to its solution.

The whole page, not its first screen, at both widths: no Markdown table shown as text (pipes), no
`NBVAL` marker, no absolute path of the build machine, nothing wider than the window, no output or code
cut off by a box that cannot scroll, every figure at a legible size. The page weight: the site on disk,
and the bytes each page loads (see BUDGET_*). Screenshots go to _build/screenshots/:
site-<width>-NN-<page>.jpg (the whole page), site-NN-<page>-figure.png (its first figure) and
-widget.png (its last widget box).
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import threading
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml

# BOOK_ROOT / BOOK_TOC: check another book, or a site built with another table of contents
# (`jupyter-book build . --toc FILE`); by default the course's own.
ROOT = Path(os.environ.get("BOOK_ROOT", Path(__file__).resolve().parents[2]))
HTML = ROOT / "_build" / "html"
NAV_TIMEOUT_MS = 30_000
LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}
MIN_GLOSSARY_TERMS = 40  # the issue asks for about forty bilingual terms
CJK = re.compile(r"[\u4e00-\u9fff]")
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
WIDTHS = {"desktop": 1280, "phone": 390}
# Page weight: what the reader downloads (issue 20: 46 MB, 3.7 MB for the text-only intro, 7.9 MB per
# widget page before). Bytes transferred: the test server compresses text files (HTML, CSS, JavaScript,
# JSON, SVG) with gzip when the browser accepts it, as static hosts such as GitHub Pages do; images and
# fonts go as they are. (Uncompressed, a text page with maths is about 2.4 MB, MathJax 1.2 MB of it.)
BUDGET_SITE_MB = 20.0
BUDGET_TEXT_PAGE_MB = 1.5  # a page without figures or widgets
BUDGET_PAGE_MB = 5.0  # any page, widget pages included
LEGIBLE_PX = (
    600  # a figure is shown at least this wide (or at its own size if smaller): on a phone it scrolls
)
MACHINE_PATH = re.compile(r"(?<![\w.~<>])/(?:root|home|work|tmp|Users)/[\w.-]+")
# A Markdown table shown as text: a row of cells, or its |---:| line (typography may turn --- into a dash).
RAW_TABLE = re.compile(r"^\s*\|.*\|.*\|\s*$|\|\s*:?[-\u2013\u2014]{1,}:?\s*\|", re.M)


def toc_pages(toc: Path) -> list[str]:
    """The source files the table of contents lists, in reading order (without extensions)."""
    data = yaml.safe_load(toc.read_text())
    pages = [data["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            if "glob" in entry:  # generated pages (the Solutions part), as the build finds them
                found = sorted(toc.parent.glob(entry["glob"] + ".md"))
                pages.extend(str(p.relative_to(toc.parent).with_suffix("")) for p in found)
            for key in ("sections", "chapters", "parts"):
                walk(entry.get(key, []))

    walk(data.get("parts", []) + data.get("chapters", []) + data.get("sections", []))
    return [str(Path(p).with_suffix("")) if Path(p).suffix in {".md", ".ipynb"} else p for p in pages]


def source_of(page: str) -> Path:
    for suffix in (".ipynb", ".md"):
        if (ROOT / (page + suffix)).exists():
            return ROOT / (page + suffix)
    raise FileNotFoundError(f"_toc.yml lists {page!r} but neither {page}.ipynb nor {page}.md exists")


PAGES = toc_pages(Path(os.environ.get("BOOK_TOC", ROOT / "_toc.yml")))


def stored_outputs(notebook: Path) -> dict[str, int]:
    """What the notebook's stored outputs should put on its page (cells tagged remove-* show nothing):
    cells with output, figures, and HTML tables."""
    nb = json.loads(notebook.read_text())
    counts = {"cells": 0, "figures": 0, "tables": 0}
    for cell in nb["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or not cell.get("outputs") or tags & {"remove-cell", "remove-output"}:
            continue
        counts["cells"] += 1
        for out in cell["outputs"]:
            data = out.get("data", {})
            counts["figures"] += any(m in data for m in IMAGE_MIMES)
            counts["tables"] += "<table" in "".join(data.get("text/html", ""))
    return counts


COMPRESSED_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


@functools.cache
def _gzipped(path: str, mtime: float) -> bytes:
    return gzip.compress(Path(path).read_bytes(), compresslevel=6)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves the built site as a static host does: text files gzip-compressed for browsers that ask."""

    def do_GET(self) -> None:
        if self.path == "/favicon.ico":  # the browser asks any server for one; the book declares none
            self.send_response(204)
            self.end_headers()
            return
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            if not urlsplit(self.path).path.endswith("/"):  # the base class redirects to "<dir>/"
                super().do_GET()
                return
            path = path / "index.html"
        kind = self.guess_type(str(path))
        if (
            path.is_file()
            and "gzip" in self.headers.get("Accept-Encoding", "")
            and kind.startswith(COMPRESSED_TYPES)
        ):
            body = _gzipped(str(path), path.stat().st_mtime)
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep pytest's output for failures
        pass


@pytest.fixture(scope="module")
def site() -> str:
    """The built site served on a free loopback port; yields its base URL."""
    if not (HTML / "index.html").exists():
        pytest.fail(
            "no built site in _build/html: run `make book` first (`make browser` does)", pytrace=False
        )
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@functools.cache
def fetch(url: str) -> tuple[int, str]:
    """(status, text) of a URL on the local server; text is empty for files that are not HTML."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
            is_html = "html" in response.headers.get("Content-Type", "")
            return response.status, body.decode("utf-8", "replace") if is_html else ""
    except urllib.error.HTTPError as err:
        return err.code, ""


# JavaScript run in the page. Each returns plain JSON.
WAIT_FOR_IMAGES = """async () => {
    const images = Array.from(document.images);
    images.forEach(img => { img.loading = 'eager'; });
    await Promise.all(images.map(img => img.decode().catch(() => null)));
    return images.filter(img => img.naturalWidth === 0).map(img => img.currentSrc || img.src);
}"""

TYPESET_MATH = """async () => {
    const math = Array.from(document.querySelectorAll('.math'));
    if (math.length === 0) return {math: 0, typeset: 0, mathjax: !!window.MathJax};
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    const typeset = math.filter(el => el.querySelector('mjx-container')).length;
    return {math: math.length, typeset: typeset, mathjax: !!(window.MathJax && MathJax.version)};
}"""

# Text a reader sees outside code and outside typeset maths: raw TeX delimiters must not be there.
VISIBLE_PROSE = """() => {
    const skip = 'pre, code, script, style, mjx-container, .highlight, textarea';
    const walker = document.createTreeWalker(document.querySelector('main') || document.body,
                                             NodeFilter.SHOW_TEXT);
    const parts = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (!node.parentElement.closest(skip)) parts.push(node.textContent);
    }
    return parts.join(' ');
}"""

LINKS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"

# Text a reader sees, code cells' input left out (code may hold pipes; outputs may not).
READER_TEXT = """() => {
    const root = document.querySelector('main') || document.body;
    const copy = root.cloneNode(true);
    copy.querySelectorAll('.cell_input, div[class*="highlight-python"], div[class*="highlight-ipython"], '
                          + 'script, style').forEach(el => el.remove());
    document.body.appendChild(copy);  // innerText needs a rendered element
    copy.style.position = 'absolute'; copy.style.left = '-99999px';
    const text = copy.innerText;
    copy.remove();
    return text;
}"""

# Layout problems of the whole page at the current width. Elements that can scroll sideways are fine.
LAYOUT = r"""(legible) => {
    const problems = {page: null, clipped: [], small_figures: []};
    const doc = document.documentElement;
    if (doc.scrollWidth > window.innerWidth + 1)
        problems.page = `the page is ${doc.scrollWidth} px wide in a ${window.innerWidth} px window`;
    const describe = el => el.tagName.toLowerCase() + '.' + String(el.className || '').split(' ')[0]
        + ' "' + (el.innerText || el.alt || el.src || '').slice(0, 60).replace(/\s+/g, ' ') + '"';
    const boxes = document.querySelectorAll(['main pre', 'main .cell_output img', 'main .cell_output table',
        'main .jupyter-widgets', 'main mjx-container[display="true"] > mjx-math'].join(', '));
    const main = document.querySelector('main');
    if (main) {  // code named in the text: past the text column's right edge is off a phone's screen
        const column = main.getBoundingClientRect().right;
        const article = main.querySelector('article') || main;  // not the hidden "on this page" drawer
        const scrolls = el => {  // inside a box that scrolls sideways (a table's container): nothing is lost
            for (let a = el.parentElement; a && a !== article; a = a.parentElement)
                if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) return true;
            return false;
        };
        for (const el of article.querySelectorAll('p code, li code, td code'))
            for (const r of el.getClientRects())
                if (r.right > column + 1 && !scrolls(el)) { problems.clipped.push(describe(el)); break; }
    }
    for (const el of boxes) {
        if (!el.getClientRects().length) continue;  // not displayed
        const right = el.getBoundingClientRect().left + el.scrollWidth;
        for (let a = el; a && a !== doc; a = a.parentElement) {
            const ox = getComputedStyle(a).overflowX;
            if (ox === 'auto' || ox === 'scroll') break;  // it scrolls: nothing is lost
            if (ox === 'hidden' || ox === 'clip') {
                const box = a.getBoundingClientRect();
                const inline = getComputedStyle(el).display === 'inline';  // its clientWidth is 0
                const cut = a === el ? !inline && el.scrollWidth > el.clientWidth + 1 : right > box.right + 1;
                if (cut) problems.clipped.push(describe(el));
                break;
            }
        }
    }
    for (const img of document.querySelectorAll('main .cell_output img:not(.jupyter-widgets img)')) {
        const shown = img.getBoundingClientRect().width;
        if (img.naturalWidth && shown + 1 < Math.min(img.naturalWidth, legible))
            problems.small_figures.push(`${img.naturalWidth} px figure shown ${Math.round(shown)} px wide`);
    }
    return problems;
}"""

# Bytes the page loaded (itself and every resource, cached ones counted too).
PAGE_BYTES = """() => performance.getEntriesByType('navigation')
    .concat(performance.getEntriesByType('resource'))
    .reduce((n, e) => n + (e.encodedBodySize || e.transferSize || 0), 0)"""
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{")


def check_links(page, base: str) -> list[str]:
    """Links that stay inside the site and lead nowhere: a missing file or a missing #anchor."""
    broken = []
    for href in sorted(set(page.evaluate(LINKS))):
        parts = urlsplit(href)
        if parts.scheme not in {"http", "https"} or parts.hostname not in LOOPBACK_HOSTS:
            continue  # mailto:, javascript:, and links to other sites (not loaded by the page)
        target, fragment = urldefrag(href)
        status, text = fetch(target)
        if status != 200:
            broken.append(f"{href} -> HTTP {status}")
            continue
        anchor = unquote(fragment)
        if anchor and text and f'id="{anchor}"' not in text and f'name="{anchor}"' not in text:
            broken.append(f"{href} -> no element with id {anchor!r}")
    return broken


def screenshot_name(index: int, page: str) -> str:
    return f"site-{index:02d}-{page.replace('/', '-')}"


@pytest.mark.slow
@pytest.mark.parametrize("index, page", list(enumerate(PAGES)), ids=PAGES)
def test_page_loads_cleanly_offline(index, page, site, context, watch, screenshot):
    source = source_of(page)
    tab = context.new_page()
    seen = watch(tab)
    try:
        tab.goto(f"{site}/{page}.html", wait_until="load", timeout=NAV_TIMEOUT_MS)
        broken_images = tab.evaluate(WAIT_FOR_IMAGES)
        math = tab.evaluate(TYPESET_MATH)
        seen.settle(tab, NAV_TIMEOUT_MS)
        prose = tab.evaluate(VISIBLE_PROSE)
        body_text = tab.inner_text("body")
        screenshot(tab, f"site-{WIDTHS['desktop']}-{index:02d}-{page.replace('/', '-')}", full_page=True)
        figures = tab.locator(".cell_output img:not(.jupyter-widgets img)")  # stored figures, not widgets
        if figures.count():
            figures.first.scroll_into_view_if_needed()
            screenshot(figures.first, screenshot_name(index, page) + "-figure")

        problems = seen.problems()
        assert not problems, f"{page}: " + json.dumps(problems, indent=1)
        assert not broken_images, f"{page}: images that did not load: {broken_images}"
        if math["math"]:
            assert math["mathjax"], f"{page} has {math['math']} maths elements but MathJax did not load"
            assert math["typeset"] == math["math"], f"{page}: only {math['typeset']}/{math['math']} typeset"
        raw = sorted(set(RAW_TEX.findall(prose)))
        assert not raw, f"{page}: raw TeX delimiters {raw} left in the text (unrendered maths?)"
        assert "Traceback" not in body_text, f"{page} shows a Python traceback"
        assert tab.locator(".cell_output .traceback, .output.traceback").count() == 0, f"{page}: error output"
        broken = check_links(tab, site)
        assert not broken, f"{page}: broken links inside the site: {broken}"
        loaded_mb = tab.evaluate(PAGE_BYTES) / 1e6
        has_figures_or_widgets = figures.count() or tab.locator(".jupyter-widgets").count()
        budget = BUDGET_PAGE_MB if has_figures_or_widgets else BUDGET_TEXT_PAGE_MB
        assert loaded_mb <= budget, f"{page} loads {loaded_mb:.2f} MB, over its budget of {budget} MB"

        if source.suffix == ".ipynb":
            stored = stored_outputs(source)
            shown = {
                "cells": tab.locator(".cell_output").count(),
                "figures": figures.count(),
                "tables": tab.locator(".cell_output table").count(),
            }
            assert shown["cells"] == stored["cells"] and shown["figures"] == stored["figures"], (
                f"{page}: the notebook stores {stored}, the page shows {shown}"
            )
            assert shown["tables"] >= stored["tables"], f"{page}: stored {stored}, shown {shown}"
            download = tab.locator(f".btn-download-source-button[href$='/{Path(page).name}.ipynb']")
            assert download.count() == 1, f"{page}: the theme's download-.ipynb button is missing"
            with urllib.request.urlopen(download.evaluate("a => a.href"), timeout=10) as response:
                notebook = json.loads(response.read())
            assert notebook["cells"] == json.loads(source.read_text())["cells"], (
                f"{page}: stale .ipynb download"
            )
            exercises = tab.locator(".cell.tag_exercise").count()
            solution_links = tab.locator("p.course-solution-link a").count()
            assert solution_links == exercises, (
                f"{page}: {exercises} exercises, {solution_links} solution links"
            )
        if tab.locator("script[type='application/vnd.jupyter.widget-state+json']").count():
            check_widgets(tab, page)
            boxes = tab.locator(".cell_output .jupyter-widgets.widget-vbox")
            if boxes.count():
                boxes.last.scroll_into_view_if_needed()
                screenshot(boxes.last, screenshot_name(index, page) + "-widget")
    finally:
        tab.close()


def check_widgets(tab, page: str) -> None:
    """A page with stored widget state shows its widgets through the local HTML manager."""
    views = tab.locator("script[type='application/vnd.jupyter.widget-view+json']").count()
    tab.wait_for_function(
        "n => document.querySelectorAll('.jupyter-widgets').length >= n",
        arg=max(views, 1),
        timeout=NAV_TIMEOUT_MS,
    )
    assert "Error displaying widget" not in tab.inner_text("body"), f"{page}: a widget failed to display"
    boxes = tab.locator(".cell_output .jupyter-widgets.widget-vbox").count()
    notes = tab.locator(".cell_output .course-kernel-note").count()
    assert notes >= boxes, f"{page}: {boxes} widget panels but {notes} notes on how to run them live"


@pytest.mark.slow
@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("index, page", list(enumerate(PAGES)), ids=PAGES)
def test_the_whole_page_reads_well(index, page, width, site, context, phone_context, watch, screenshot):
    """The whole page at a desktop's and a phone's width (issue 20: the first screen hid the problems)."""
    tab = (context if width == "desktop" else phone_context).new_page()
    seen = watch(tab)
    try:
        tab.goto(f"{site}/{page}.html", wait_until="load", timeout=NAV_TIMEOUT_MS)
        broken_images = tab.evaluate(WAIT_FOR_IMAGES)
        tab.evaluate(TYPESET_MATH)
        seen.settle(tab, 2 * NAV_TIMEOUT_MS)  # a phone's pages: slower here
        if width != "desktop":  # the desktop's full-page picture is taken by the test above
            screenshot(tab, f"site-{WIDTHS[width]}-{index:02d}-{page.replace('/', '-')}", full_page=True)
        text = tab.evaluate(READER_TEXT)
        everything = tab.inner_text("body")
        layout = tab.evaluate(LAYOUT, LEGIBLE_PX)

        assert not seen.problems(), f"{page}: " + json.dumps(seen.problems(), indent=1)
        assert not broken_images, f"{page}: images that did not load: {broken_images}"
        tables = [m.group(0).strip()[:80] for m in RAW_TABLE.finditer(text)]
        assert not tables, (
            f"{page} shows Markdown tables as text (use format_table(...).show()): {tables[:3]}"
        )
        assert "NBVAL" not in everything, f"{page} shows an nbval marker (a cell tag does not show)"
        paths = sorted(set(MACHINE_PATH.findall(everything)))
        assert not paths, f"{page} shows paths of the build machine (print display_path(p)): {paths[:5]}"
        assert layout["page"] is None, f"{page} at {WIDTHS[width]} px: {layout['page']}"
        assert not layout["clipped"], f"{page} at {WIDTHS[width]} px cuts off: {layout['clipped'][:5]}"
        small = layout["small_figures"][:4]
        assert not small, f"{page} at {WIDTHS[width]} px shrinks figures below {LEGIBLE_PX} px: {small}"
    finally:
        tab.close()


def test_the_site_fits_its_budget():
    """The built site on disk, every file counted (MathJax trimmed to what the pages use)."""
    if not (HTML / "index.html").exists():
        pytest.fail("no built site in _build/html: run `make book` first", pytrace=False)
    files = [p for p in HTML.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files) / 1e6
    biggest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:5]
    assert total <= BUDGET_SITE_MB, (
        f"the site is {total:.1f} MB (budget {BUDGET_SITE_MB} MB); biggest files: "
        + ", ".join(f"{p.relative_to(HTML)} ({p.stat().st_size / 1e6:.1f} MB)" for p in biggest)
    )
    assert not list((HTML / "_static").rglob("*.map")), (
        "source maps are shipped (tools/book_site.py drops them)"
    )


@pytest.mark.slow
def test_search_finds_pages_and_its_results_open(site, context, watch):
    tab = context.new_page()
    seen = watch(tab)
    try:
        tab.goto(f"{site}/search.html?q=parameters", wait_until="load", timeout=NAV_TIMEOUT_MS)
        results = tab.locator("#search-results ul.search li a")
        results.first.wait_for(timeout=NAV_TIMEOUT_MS)
        hrefs = [results.nth(i).evaluate("a => a.href") for i in range(results.count())]
        assert hrefs, "searching 'parameters' found nothing"
        assert any("01_what_makes_a_model_large" in h for h in hrefs), f"chapter 1 not among {hrefs}"
        for href in hrefs:
            assert fetch(urldefrag(href)[0])[0] == 200, f"search result {href} does not open"
        assert not seen.problems(), json.dumps(seen.problems(), indent=1)
    finally:
        tab.close()


@pytest.mark.slow
def test_glossary_is_on_the_site_and_bilingual(site, context):
    assert "glossary" in PAGES, "glossary.md is not in _toc.yml: add `- file: glossary` to a part of _toc.yml"
    tab = context.new_page()
    try:
        tab.goto(f"{site}/glossary.html", wait_until="load", timeout=NAV_TIMEOUT_MS)
        entries = tab.evaluate(
            """() => Array.from(document.querySelectorAll('dl.glossary > dd')).map(dd => {
                let terms = [], el = dd.previousElementSibling;
                while (el && el.tagName === 'DT') { terms.unshift(el.innerText.replace(/#$/, '').trim());
                                                    el = el.previousElementSibling; }
                return {terms: terms, text: dd.innerText.trim()};
            })"""
        )
        assert len(entries) >= MIN_GLOSSARY_TERMS, f"only {len(entries)} glossary entries"
        for entry in entries:
            english = [t for t in entry["terms"] if not CJK.search(t)]
            chinese = [t for t in entry["terms"] if CJK.search(t)]
            assert english and chinese, f"glossary entry {entry['terms']} lacks an English or a Chinese term"
            paragraphs = [p for p in entry["text"].splitlines() if p.strip()]
            assert len(paragraphs) == 2, f"{entry['terms']}: want one English and one Chinese definition"
            assert not CJK.search(paragraphs[0]) and CJK.search(paragraphs[1]), (
                f"{entry['terms']}: {paragraphs}"
            )
        names = {t.lower() for e in entries for t in e["terms"]}
        for required in ("parameter", "token", "attention", "pretraining", "fine-tuning", "lora"):
            assert required in names, f"the glossary has no entry for {required!r}"

        for query, term in (("注意力", "注意力"), ("LoRA", "LoRA")):  # search finds a term in either language
            tab.goto(f"{site}/search.html?q={query}", wait_until="load", timeout=NAV_TIMEOUT_MS)
            results = tab.locator("#search-results ul.search li a")
            results.first.wait_for(timeout=NAV_TIMEOUT_MS)
            hrefs = [results.nth(i).evaluate("a => a.href") for i in range(results.count())]
            anchors = [urldefrag(h)[1] for h in hrefs if urldefrag(h)[0].endswith("/glossary.html")]
            assert any(anchors), f"searching {query!r} did not find a glossary term: {hrefs}"
            tab.goto(f"{site}/glossary.html#{anchors[0]}", wait_until="load", timeout=NAV_TIMEOUT_MS)
            shown = tab.locator(f"[id='{anchors[0]}']").inner_text().replace("#", "").strip()
            assert shown == term, f"searching {query!r} leads to the term {shown!r}"
    finally:
        tab.close()
