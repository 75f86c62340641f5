"""Shared set-up of the browser tests: Debian's Chromium driven by Playwright, and the screenshots.

Playwright never downloads a browser here: it drives the `chromium` on PATH (tools/setup_browser.sh
installs it). Outside the `browser` stage a missing browser skips these tests with the fix; inside it
(COURSE_BROWSER_TESTS=1, set by tools/run_checks.sh) it fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "_build" / "screenshots"
REQUIRED_ENV = "COURSE_BROWSER_TESTS"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
VIEWPORT = {"width": 1280, "height": 900}
PHONE_VIEWPORT = {"width": 390, "height": 844}  # a common phone, in CSS pixels

# Headless flags that work as root in a container and keep Chromium from phoning home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Offline by construction: any host but this machine fails to resolve at once. (Intercepting requests
    # with page.route instead stalls the blob: URLs that widget images use, and the page never idles.)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]

_STARTED = time.time()  # the screenshots of this run are the ones written after it (xdist workers included)


def missing(what: str, fix: str) -> None:
    """Skip (or, in the browser stage, fail) because ``what`` is missing; the message names the fix."""
    message = f"{what}; {fix}"
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless Chromium (Debian's package) under Playwright, shared by every browser test."""
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        missing(
            "the Python package playwright is not installed",
            "run `bash tools/setup_browser.sh` (or `pip install -e '.[dev]'`)",
        )
    executable = shutil.which("chromium")
    if executable is None:
        missing(
            "no `chromium` on PATH",
            "run `bash tools/setup_browser.sh` (as root it installs Debian's chromium with apt-get)",
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def context(browser) -> Iterator[object]:
    """A fresh browser context (cookies, storage) per test module, with a desktop-sized viewport."""
    ctx = browser.new_context(viewport=VIEWPORT)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def phone_context(browser) -> Iterator[object]:
    """A browser context the size of a phone (390 CSS px wide, touch, mobile layout)."""
    ctx = browser.new_context(viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True)
    yield ctx
    ctx.close()


@pytest.fixture(scope="session")
def screenshot() -> Iterator[object]:
    """``screenshot(page_or_element, name)`` saves ``_build/screenshots/<name>.png`` and returns its path;
    ``full_page=True`` (pages only) saves the whole page, top to bottom, as ``<name>.jpg``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if "PYTEST_XDIST_WORKER" not in os.environ:  # with workers the stage clears the folder before they start
        for old in [*SCREENSHOTS.glob("*.png"), *SCREENSHOTS.glob("*.jpg")]:  # only this run's pictures
            old.unlink()

    def save(target, name: str, full_page: bool = False) -> Path:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
        if full_page:
            path = SCREENSHOTS / (stem + ".jpg")
            target.screenshot(path=str(path), full_page=True, type="jpeg", quality=70, scale="css")
        else:
            path = SCREENSHOTS / (stem + ".png")
            target.screenshot(path=str(path))
        return path

    yield save


class Watch:
    """Everything a page did wrong while loading: console errors, uncaught exceptions, failed or
    refused requests, HTTP errors, and any request that tried to leave the machine (it fails)."""

    def __init__(self, page) -> None:
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed_requests: list[str] = []
        self.http_errors: list[str] = []
        self.external_requests: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(_console_text(m)))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("requestfailed", self._on_failed)
        page.on("response", lambda r: r.status >= 400 and self.http_errors.append(f"{r.status} {r.url}"))
        page.on("request", self._on_request)
        self._in_flight: set[object] = set()
        self._last_activity = time.monotonic()
        page.on("request", lambda r: self._activity(r, True))
        page.on("requestfinished", lambda r: self._activity(r, False))
        page.on("requestfailed", lambda r: self._activity(r, False))

    def _activity(self, request, started: bool) -> None:
        (self._in_flight.add if started else self._in_flight.discard)(request)
        self._last_activity = time.monotonic()

    def settle(self, page, timeout_ms: float, quiet_ms: float = 500) -> None:
        """Wait until the page has had no request in flight for ``quiet_ms``. (Chromium's own
        "networkidle" never comes on some pages whose widgets show images through blob: URLs.)"""
        deadline = time.monotonic() + timeout_ms / 1000
        while self._in_flight or time.monotonic() - self._last_activity < quiet_ms / 1000:
            if time.monotonic() > deadline:
                pending = sorted(r.url for r in self._in_flight)[:5]
                raise TimeoutError(f"requests still in flight after {timeout_ms / 1000:.0f} s: {pending}")
            page.wait_for_timeout(100)

    def _on_request(self, request) -> None:
        """Note a request to another host (the browser's resolver fails it: see CHROMIUM_ARGS)."""
        parts = urlsplit(request.url)
        if parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname not in LOOPBACK_HOSTS:
            self.external_requests.append(request.url)

    def _on_failed(self, request) -> None:
        if request.url not in self.external_requests:  # those are reported on their own
            self.failed_requests.append(f"{request.url} ({request.failure})")

    def problems(self) -> dict[str, list[str]]:
        """The non-empty lists, by kind."""
        found = {
            "console errors": self.console_errors,
            "uncaught exceptions": self.page_errors,
            "failed requests": self.failed_requests,
            "HTTP errors": self.http_errors,
            "requests to other hosts (a CDN?)": self.external_requests,
        }
        return {kind: items for kind, items in found.items() if items}


def _console_text(message) -> str:
    location = message.location or {}
    return f"{message.text} ({location.get('url', '?')}:{location.get('lineNumber', '?')})"


@pytest.fixture
def watch():
    """``watch(page)`` starts recording a page's problems and returns the :class:`Watch`."""
    return Watch


def pytest_terminal_summary(terminalreporter) -> None:
    saved = sorted(
        p for p in SCREENSHOTS.glob("*.*") if p.suffix in (".png", ".jpg") and p.stat().st_mtime >= _STARTED
    )
    if saved:
        terminalreporter.write_sep("-", f"browser screenshots ({len(saved)}) in {SCREENSHOTS}")
        for path in saved:
            terminalreporter.write_line(str(path.relative_to(ROOT)))
