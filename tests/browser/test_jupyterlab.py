"""JupyterLab in a real browser: open a chapter notebook, run its interactive explorer, move a slider,
and see the figure change.

JupyterLab is started on loopback with a token, serving a temporary copy of the chapter's folder (so
running cells never rewrites the repository's notebook; autosave is off too) with news and update checks
off. Headless Chromium opens the notebook, runs every cell up to and including the one that shows the
explorer (chapter 2's `attention_explorer`; COURSE_FAST=1), reads the PNG the explorer shows, presses
the right-arrow key on the `head` slider, and asserts that the slider's value and the PNG's bytes change.
Screenshots before and after go to _build/screenshots/jupyterlab-*.png.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from course_lib.serve import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "course-browser-test-token"
EXPLORER_CALL = "attention_explorer("
CONTROL = "head"  # the slider the test moves
LAB_START_TIMEOUT_S = 90
RUN_TIMEOUT_MS = 240_000  # running the chapter's cells up to the explorer, fast mode, 2 shared cores
REDRAW_TIMEOUT_MS = 30_000

# Settings a user would click through; here they are set before JupyterLab starts.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # Render every cell (no windowing), so outputs far down the notebook are in the page.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def explorer_notebook() -> tuple[Path, int] | None:
    """The first chapter notebook that shows the attention explorer, and the index of the cell that
    displays it: a cell whose stored output is a widget, else the cell that calls the explorer."""
    for notebook in sorted(ROOT.glob("chapters/*/*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        calls = [
            i
            for i, c in enumerate(cells)
            if c["cell_type"] == "code" and EXPLORER_CALL in "".join(c["source"])
        ]
        if not calls:
            continue
        shown = [
            i
            for i, c in enumerate(cells)
            if i >= calls[0]
            and any(
                "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.get("outputs", [])
            )
        ]
        return notebook, (shown[0] if shown else calls[0])
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a temporary folder; yields (base URL, the notebook's path in it, cell index)."""
    tmp = tmp_path_factory.mktemp("lab")
    served = tmp / "served"
    found = explorer_notebook()
    assert found is not None, (
        f"no notebook in chapters/ calls {EXPLORER_CALL!r}: chapter 2 shows the attention explorer "
        "(course_lib.widgets); restore that cell, or point EXPLORER_CALL at the explorer that replaced it"
    )
    source, cell = found
    ignore = shutil.ignore_patterns(".ipynb_checkpoints")
    shutil.copytree(source.parent, served / source.parent.name, ignore=ignore)
    notebook = served / source.parent.name / source.name

    settings = tmp / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel picks the inline backend
    env.update(
        COURSE_FAST="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        IPYTHONDIR=str(tmp / "ipython"),
    )
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={served}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells through Lab's own commands
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root; JupyterLab refuses without this flag
    log_path = tmp / "lab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LAB_START_TIMEOUT_S
        while True:
            assert proc.poll() is None, "JupyterLab exited:\n" + log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, (
                    "JupyterLab did not answer:\n" + log_path.read_text()[-3000:]
                )
                time.sleep(0.5)
        yield base, notebook.relative_to(served).as_posix(), cell
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# JavaScript run in JupyterLab's page (window.jupyterapp exists with --LabApp.expose_app_in_browser).
KERNEL_IDLE = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle';
}"""

RUN_UP_TO_CELL = """index => {
    const app = window.jupyterapp, panel = app.shell.currentWidget;
    panel.content.activeCellIndex = index;
    window.__courseRun = null;
    app.commands.execute('notebook:run-all-above')
        .then(() => app.commands.execute('notebook:run-cell'))
        .then(ok => { window.__courseRun = ok === false ? 'failed' : 'done'; },
              err => { window.__courseRun = 'error: ' + err; });
}"""

ERRORS_IN_OUTPUTS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
    const errors = [];
    for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type !== 'code') continue;
        const json = cell.toJSON();
        // a learner copy tags the cells that fail until the learner writes the exercise
        if (((json.metadata || {}).tags || []).includes('raises-exception')) continue;
        for (const out of json.outputs || []) {
            if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
        }
    }
    return errors;
}"""

IMAGE_BYTES = """async img => {
    const response = await fetch(img.src);
    const bytes = new Uint8Array(await response.arrayBuffer());
    let text = '';
    for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
    return btoa(text);
}"""


def png_digest(image) -> str:
    data = base64.b64decode(image.evaluate(IMAGE_BYTES))
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the explorer's image is not a PNG"
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_explorer_redraws_when_a_slider_moves(lab, context, watch, screenshot):
    base, notebook, cell_index = lab
    name = Path(notebook).stem
    tab = context.new_page()
    seen = watch(tab)  # blocks requests to other hosts; its record goes into failure messages
    try:
        tab.goto(f"{base}/lab/tree/{notebook}?token={TOKEN}", wait_until="domcontentloaded")
        tab.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        tab.wait_for_function(KERNEL_IDLE, timeout=60_000)

        tab.evaluate(RUN_UP_TO_CELL, cell_index)
        tab.wait_for_function("() => window.__courseRun", timeout=RUN_TIMEOUT_MS)
        outcome = tab.evaluate("() => window.__courseRun")
        # A learner copy's exercises are not written yet: the cells that fail until they are (the checks,
        # and cells that use the learner's function) are tagged raises-exception, and only those may fail.
        errors = tab.evaluate(ERRORS_IN_OUTPUTS)
        assert outcome == "done" and not errors, (
            f"running {notebook} up to cell {cell_index}: {outcome}, {errors}; page: {seen.problems()}"
        )

        cell = tab.locator(".jp-Notebook .jp-Cell").nth(cell_index)
        slider = cell.locator(".widget-slider", has=tab.locator(".widget-label", has_text=CONTROL)).first
        image = cell.locator(".jp-OutputArea img").first
        slider.wait_for(timeout=REDRAW_TIMEOUT_MS)
        image.wait_for(timeout=REDRAW_TIMEOUT_MS)
        readout = slider.locator(".widget-readout")
        value_before, png_before = readout.inner_text().strip(), png_digest(image)
        show_output = "el => el.scrollIntoView({block: 'start'})"  # the controls at the top of the screenshot
        cell.locator(".jp-OutputArea").first.evaluate(show_output)
        screenshot(tab, f"jupyterlab-{name}-1-before")

        handle = slider.locator(".noUi-handle").first
        now, top = handle.get_attribute("aria-valuenow"), handle.get_attribute("aria-valuemax")
        at_end = now is not None and now == top
        step = -1 if at_end else 1
        handle.focus()  # what a keyboard user does: focus the handle, then press an arrow key once
        tab.keyboard.press("ArrowLeft" if at_end else "ArrowRight")
        tab.wait_for_function(
            "([el, before]) => el.innerText.trim() !== before",
            arg=[readout.element_handle(), value_before],
            timeout=REDRAW_TIMEOUT_MS,
        )
        value_after = readout.inner_text().strip()
        assert int(value_after) == int(value_before) + step, (
            f"{CONTROL} slider went {value_before} -> {value_after}"
        )

        deadline = time.monotonic() + REDRAW_TIMEOUT_MS / 1000
        png_after = png_digest(image)
        while png_after == png_before and time.monotonic() < deadline:
            tab.wait_for_timeout(200)
            png_after = png_digest(image)
        screenshot(tab, f"jupyterlab-{name}-2-after")
        assert png_after != png_before, (
            f"moving {CONTROL} {value_before} -> {value_after} did not redraw the figure; "
            f"page: {seen.problems()}"
        )
        assert not tab.evaluate(ERRORS_IN_OUTPUTS), "the redraw raised an error in the kernel"
    finally:
        tab.close()
